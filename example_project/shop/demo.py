"""The runs ``manage.py run_examples`` starts: every example of ``shop.workflows``, once per outcome.

Each :class:`Example` names its workflow, its input and what it must end with, so the demo is
also a check. :func:`examples` seeds the rows they need under a fresh ``tag``, which keeps
every invocation's customers and orders apart on a database that already holds earlier ones.
The examples of ``shop.waiting`` also say how the demo answers what their runs wait for
(see ``shop.responder``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_django import start_workflow
from durable_django.models import WorkflowRun

from .forking import Fork
from .responder import DIRECTOR, MANAGER, Answer, Response, Send, Webhook, staff_user
from .schedule_demo import fire_weekly_report
from .seed import ROOM_SKU, UNKNOWN_SKU, customer, order, seed_rooms, seed_stock
from .services.airline import FULL_FLIGHT
from .services.payment import DECLINED_TOKEN, REFUND_BLOCKED_TOKEN
from .timing import QUOTE_LATE, QUOTE_TIMEOUT, start_reminder
from .waiting import start_payment

COMPLETED = "completed"
FAILED = "failed"

# The guide's order_processing lists its handlers after fulfill_order, and steps run in the order
# they are listed: a goto only says where to go on from. Shown as the guide has it, and explained.
FALLS_THROUGH = (
    "the context holds needs_payment_retry and backordered together, as in the guide's example: steps "
    "run in the order they are listed, {how}. To run one handler only, make each path end with a goto "
    "past the others (as checkout and deliver_order do)."
)


@dataclass(frozen=True)
class Example:
    """One run to start, and what it must end with.

    ``expect`` lists keys and values the final context (for a completed run) or the error (for a
    failed one) must contain. ``responses``: what the demo does when the run waits at one of
    its steps (by the step's name); ``early``: what it sends right after the start, before the
    run waits for it. ``start``: how the run is started, ``start_workflow`` by default.
    ``note`` explains, under the run's output, what would look wrong. ``compensation``: how the
    compensations of a failed run must have gone (``completed`` or ``failed``; ``""``: none ran).
    """

    workflow: str
    label: str
    input: dict[str, Any]
    status: str
    expect: dict[str, Any] = field(default_factory=dict)
    responses: Mapping[str, Response] = field(default_factory=dict)
    early: tuple[Response, ...] = ()
    start: Callable[[dict[str, Any]], WorkflowRun] | None = None
    note: str = ""
    compensation: str = ""
    #: A rerun of this example's run from one of its steps, once it ended as expected (see shop.forking).
    fork: Fork | None = None

    def begin(self) -> WorkflowRun:
        """Start this example's run."""
        if self.start is not None:
            return self.start(self.input)
        return start_workflow(self.workflow, self.input)

    def problems(
        self, status: str, context: dict[str, Any] | None, error: dict[str, Any] | None, compensation: str = ""
    ) -> list[str]:
        """What differs between this expectation and a finished run (empty when it matches)."""
        if status != self.status:
            return [f"ended {status}, expected {self.status}"]
        seen = (context if status == COMPLETED else error) or {}
        where = "context" if status == COMPLETED else "error"
        problems = [
            f"{where}[{key!r}] is {seen.get(key, '<missing>')!r}, expected {value!r}"
            for key, value in self.expect.items()
            if seen.get(key) != value
        ]
        if compensation != self.compensation:
            problems.append(f"compensation is {compensation or 'none'!r}, expected {self.compensation or 'none'!r}")
        return problems


def examples(tag: str) -> list[Example]:
    """Seed what the examples need (accounts, orders, stock) under ``tag`` and list the runs."""
    seed_stock()
    ada = customer(f"ada.{tag}@example.com", "Ada Lovelace", "+44 20 7946 0001")
    grace = customer(f"grace.{tag}@example.com", "Grace Hopper")  # no phone: SMS fails
    nobody = customer(f"nobody.{tag}@example.invalid", "Nobody")  # no phone, and mail bounces
    edsger = customer(f"edsger.{tag}@example.com", "Edsger Dijkstra", unread=["Your keyboard shipped"])

    def new_order(name: str, account: Any = ada, **kwargs: Any) -> int:
        return order(f"{tag}-{name}", account, **kwargs).pk

    def order_input(name: str, **kwargs: Any) -> dict[str, Any]:
        return {"order_id": new_order(name, **kwargs)}

    ghost = {"sku": UNKNOWN_SKU, "total_cents": 4500}
    sold_out = {"sku": "MUG-01", "total_cents": 1200}
    declined = {"card": DECLINED_TOKEN}
    # Orders that the dashboard lists, and that place_order loads by reference.
    new_order("dashboard-1", edsger, total_cents=2500)
    new_order("dashboard-2", edsger, quantity=2, total_cents=17800)
    new_order("children-ok")
    new_order("children-sold-out", **sold_out)

    return [
        Example(
            "onboard_user",
            "new customer",
            {"email": f"linus.{tag}@example.com", "name": "Linus", "phone": "+1 555 0100"},
            COMPLETED,
            {"onboarded": True},
        ),
        Example(
            "onboard_user",
            "welcome mail bounces (fail_fast)",
            {"email": f"mallory.{tag}@example.invalid", "name": "Mallory"},
            FAILED,
            {"step": "send_welcome_email", "parallel": "parallel_1"},
        ),
        Example("checkout", "card authorized", order_input("checkout-ok"), COMPLETED, {"order_status": "confirmed"}),
        Example(
            "checkout",
            "card declined (goto handle_payment_failure)",
            order_input("checkout-declined", **declined),
            COMPLETED,
            {"order_status": "payment_failed", "payment_id": None},
        ),
        Example(
            "deliver_order",
            "paid and scheduled (into: ok)",
            order_input("deliver-ok"),
            COMPLETED,
            {"order_status": "confirmed", "delivery_status": "scheduled"},
        ),
        Example(
            "deliver_order",
            "unknown product (into: goto handle_backorder)",
            order_input("deliver-ghost", **ghost),
            COMPLETED,
            {"order_status": "backordered", "backordered": True},
        ),
        Example(
            "deliver_order",
            "card declined (into: error)",
            order_input("deliver-declined", **declined),
            FAILED,
            {"step": "parallel_1", "reason": "Critical failure"},
        ),
        Example(
            "order_summary",
            "results under returns= keys",
            {"user_id": ada.pk, **order_input("summary", quantity=2, total_cents=17800)},
            COMPLETED,
            {"summary": "Ada Lovelace ordered 2 item(s)"},
        ),
        Example("notify_user", "SMS and e-mail sent", {"user_id": ada.pk}, COMPLETED, {"all_sent": True}),
        Example("notify_user", "no phone number", {"user_id": grace.pk}, COMPLETED, {"partial_sent": True}),
        Example(
            "notify_user",
            "nothing can be sent",
            {"user_id": nobody.pk},
            FAILED,
            {"step": "check_notifications", "reason": "All notifications failed"},
        ),
        Example(
            "notify_user",
            "unknown account (fail_fast)",
            {"user_id": 0},
            FAILED,
            {"step": "critical_task", "parallel": "parallel_1", "reason": "account_not_found"},
            fork=Fork(
                "parallel_1",
                {"user_id": ada.pk},
                "unknown account, rerun from its block with the right account (fork)",
                COMPLETED,
                {"all_sent": True},
            ),
        ),
        Example("dashboard_data", "every source answers", {"user_id": edsger.pk}, COMPLETED, {"has_errors": False}),
        Example(
            "dashboard_data",
            "orders fail (complete_all)",
            {"user_id": edsger.pk, "orders_limit": 500},
            COMPLETED,
            {"has_errors": True},
        ),
        Example(
            "order_processing",
            "fulfilled",
            order_input("processing-ok"),
            COMPLETED,
            {"ready": True, "fulfilled": True, "needs_payment_retry": True, "backordered": True},
            note=FALLS_THROUGH.format(
                how="so after fulfill_order the run passes through handle_payment_issue and handle_backorder too"
            ),
        ),
        Example(
            "order_processing",
            "card declined (goto handle_payment_issue)",
            order_input("processing-declined", **declined),
            COMPLETED,
            {"needs_payment_retry": True, "backordered": True, "fulfilled": None},
            note=FALLS_THROUGH.format(
                how="and the goto to handle_payment_issue only says where to continue: handle_backorder, "
                "listed after it, runs too"
            ),
        ),
        Example(
            "order_processing",
            "out of stock (goto handle_backorder)",
            order_input("processing-sold-out", **sold_out),
            COMPLETED,
            {"backordered": True, "needs_payment_retry": None},
        ),
        Example(
            "order_processing",
            "unknown product (into: error)",
            order_input("processing-ghost", **ghost),
            FAILED,
            {"step": "parallel_1", "reason": "Order validation failed"},
        ),
        Example(
            "sync_external_data",
            "API fails twice, retried",
            {"request_key": f"{tag}-rates", "fail_first": 2},
            COMPLETED,
            {"rate": 1.0842},
        ),
        Example(
            "sync_external_data",
            "API keeps failing (5 attempts)",
            {"request_key": f"{tag}-down", "fail_first": 5},
            FAILED,
            {"step": "external_api_call", "parallel": "parallel_1"},
        ),
        Example(
            "place_order",
            "payment and shipping children succeed",
            {"reference": f"{tag}-children-ok"},
            COMPLETED,
            {"paid": True, "shipped": True},
        ),
        Example(
            "place_order",
            "shipping child fails (complete_all)",
            {"reference": f"{tag}-children-sold-out"},
            COMPLETED,
            {"paid": True, "shipped": False},
        ),
        *waiting_examples(tag),
        *control_flow_examples(tag),
        *saga_examples(),
        Example(
            "stock_report",
            "fired by its schedule weekly_stock_report",
            {"threshold": 5},
            COMPLETED,
            {"threshold": 5},
            start=fire_weekly_report,
            note="a worker fires it every Monday at 07:00, Berlin time; the demo fired it at that time without "
            "waiting for it (shop.schedule_demo). Its idempotency key names the schedule and the fire time, so "
            "any number of workers start one run for it.",
        ),
        Example(
            "cart_reminder",
            "started one second later (delay)",
            {"user_id": ada.pk},
            COMPLETED,
            {"reminded": True},
            start=start_reminder,
        ),
        Example(
            "supplier_quote",
            "the supplier never answers (workflow timeout)",
            {"item": "KB-01"},
            FAILED,
            {
                "step": "request_quote",
                "reason": {"type": "workflow_timeout", "timeout": QUOTE_TIMEOUT, "message": QUOTE_LATE},
            },
        ),
    ]


def control_flow_examples(tag: str) -> list[Example]:
    """The examples of ``shop.control_flow``: a foreach over order lines, a branch on the shipping kind."""
    margaret = customer(f"margaret.{tag}@example.com", "Margaret Hamilton")
    lines = [
        {"sku": "KB-01", "quantity": 1, "unit_cents": 8900},
        {"sku": "KB-01", "quantity": 2, "unit_cents": 8900},
        {"sku": "MUG-01", "quantity": 4, "unit_cents": 1200},
    ]

    def fulfilment(name: str, shipping: str, order_lines: list[dict[str, Any]] = lines) -> dict[str, Any]:
        placed = order(f"{tag}-{name}", margaret, quantity=3)
        return {"order_id": placed.pk, "lines": order_lines, "shipping": shipping}

    charged = 8900 + 2 * 8900 + 4 * 1200
    return [
        Example(
            "order_fulfilment",
            "three lines charged (foreach, into sums), express courier (branch), audit child",
            fulfilment("fulfilment-express", "express"),
            COMPLETED,
            {"charged_cents": charged, "lines_charged": 3, "carrier": "courier", "fulfilled": True},
        ),
        Example(
            "order_fulfilment",
            "standard shipping prints a label",
            fulfilment("fulfilment-standard", "standard"),
            COMPLETED,
            {"charged_cents": charged, "carrier": "postal", "fulfilled": True},
        ),
        Example(
            "order_fulfilment",
            "pick-up in store (an empty case)",
            fulfilment("fulfilment-pickup", "pickup"),
            COMPLETED,
            {"charged_cents": charged, "tracking_number": None, "fulfilled": True},
        ),
        Example(
            "order_fulfilment",
            "an unknown product on line 2 (into: error)",
            fulfilment(
                "fulfilment-ghost", "standard", [lines[0], {"sku": UNKNOWN_SKU, "quantity": 1, "unit_cents": 500}]
            ),
            FAILED,
            {"step": "charge_lines", "reason": {"type": "lines_not_charged", "lines": [1]}},
        ),
        Example(
            "order_fulfilment",
            "a shipping kind no case handles (no_branch_matched)",
            fulfilment("fulfilment-drone", "drone"),
            FAILED,
            {"step": "ship", "reason": {"type": "no_branch_matched", "value": "drone"}},
        ),
    ]


def saga_examples() -> list[Example]:
    """The examples of ``shop.sagas``: a trip booked, and a trip undone when its flight is full."""
    seed_rooms()

    def trip(flight: str, card: str = "tok_visa") -> dict[str, Any]:
        return {
            "passenger": "Ada Lovelace",
            "room": ROOM_SKU,
            "nights": 2,
            "amount_cents": 32000,
            "card": card,
            "flight": flight,
        }

    full = {"step": "confirm_flight", "reason": "flight_full"}
    return [
        Example(
            "book_trip", "flight confirmed", trip("BA117"), COMPLETED, {"booked": True, "confirmation": "BA117-ADA-1"}
        ),
        Example(
            "book_trip",
            "flight full: the charge is refunded, then the room released (compensations completed)",
            trip(FULL_FLIGHT),
            FAILED,
            full,
            compensation="completed",
        ),
        Example(
            "book_trip",
            "flight full, the refund refused twice: the room is released all the same (compensation failed)",
            trip(FULL_FLIGHT, REFUND_BLOCKED_TOKEN),
            FAILED,
            full,
            compensation="failed",
        ),
    ]


def waiting_examples(tag: str) -> list[Example]:
    """The examples of ``shop.waiting``, and the staff users who answer their inputs."""
    staff_user(MANAGER)
    staff_user(DIRECTOR)
    alan = customer(f"alan.{tag}@example.com", "Alan Turing")
    barbara = customer(f"barbara.{tag}@example.com", "Barbara Liskov")

    def claim(amount_cents: int, description: str, **options: Any) -> dict[str, Any]:
        return {"employee_id": alan.pk, "amount_cents": amount_cents, "description": description, **options}

    def order_of(name: str) -> dict[str, Any]:
        return {"order_id": order(f"{tag}-{name}", barbara).pk}

    packed = Send("warehouse.packed", {"weight_grams": 850})
    fulfilled = order_of("fulfil-ok")["order_id"]
    return [
        Example(
            "expense_approval",
            "manager approves (input answered)",
            claim(4200, "Train to the client"),
            COMPLETED,
            {"claim_status": "paid", "paid_cents": 4200, "employee_notified": True},
            responses={"ask_manager": Answer({"approved": True, "comment": "Fine"}, MANAGER)},
        ),
        Example(
            "expense_approval",
            "manager rejects",
            claim(25000, "Noise-cancelling headphones"),
            COMPLETED,
            {"claim_status": "rejected", "employee_notified": True},
            responses={"ask_manager": Answer({"approved": False, "comment": "Not a business expense"}, MANAGER)},
        ),
        Example(
            "expense_approval",
            "manager does not answer (timeout escalates to a director's form)",
            # A short timeout for the demo; the workflow's default is three days.
            claim(9000, "Flight to the conference", approval_timeout=1.0),
            COMPLETED,
            {"manager_approval": None, "escalated": True, "claim_status": "paid", "paid_cents": 6000},
            responses={"escalate": Answer({"approved_amount": 6000, "note": "Economy fare only"}, DIRECTOR)},
        ),
        Example(
            "payment_with_webhook",
            "webhook settles the payment (event delivered)",
            order_of("pay-settled"),
            COMPLETED,
            {"payment_status": "settled"},
            responses={"await_settlement": Webhook("payment.settled", {"amount_cents": 8900})},
            start=start_payment,
        ),
        Example(
            "payment_with_webhook",
            "webhook arrives before the run waits (event buffered)",
            order_of("pay-early"),
            COMPLETED,
            {"payment_status": "settled"},
            early=(Webhook("payment.settled", {"amount_cents": 8900}, expect="buffered"),),
            start=start_payment,
        ),
        Example(
            "payment_with_webhook",
            "webhook reports a failed payment (wait_for_any)",
            order_of("pay-failed"),
            COMPLETED,
            {"payment_status": "failed"},
            responses={"await_settlement": Webhook("payment.failed", {"reason": "insufficient_funds"})},
            start=start_payment,
        ),
        Example(
            "payment_with_webhook",
            "no webhook (timeout value: the intent expires)",
            {**order_of("pay-expired"), "settle_timeout": 1.0},
            COMPLETED,
            {"payment_status": "expired", "settlement": None},
            start=start_payment,
        ),
        Example(
            "follow_up_email",
            "follow-up mailed after a sleep",
            {"user_id": barbara.pk, "follow_up_after": 1.0},
            COMPLETED,
            {"welcomed": True, "follow_up_sent": True},
        ),
        Example(
            "fulfil_order",
            "a parallel branch waits for warehouse.packed",
            {"order_id": fulfilled},
            COMPLETED,
            {"tracking_number": f"TRK{fulfilled:08d}", "weight_grams": 850},
            responses={"packing": packed},
        ),
        Example(
            "fulfil_order",
            "the warehouse never answers (wait_timeout fails the run)",
            {**order_of("fulfil-late"), "packing_timeout": 1.0},
            FAILED,
            {
                "step": "packing",
                "parallel": "parallel_1",
                "reason": {
                    "type": "wait_timeout",
                    "wait": "warehouse.packed",
                    "message": "the wait for 'warehouse.packed' timed out",
                },
            },
        ),
    ]
