"""The runs ``manage.py run_examples`` starts: every example of ``shop.workflows``, once per outcome.

Each :class:`Example` names its workflow, its input and what it must end with, so the demo is
also a check. :func:`examples` seeds the rows they need under a fresh ``tag``, which keeps
every invocation's customers and orders apart on a database that already holds earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .seed import UNKNOWN_SKU, customer, order, seed_stock
from .services.payment import DECLINED_TOKEN

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
    failed one) must contain. ``note`` explains, under the run's output, what would look wrong.
    """

    workflow: str
    label: str
    input: dict[str, Any]
    status: str
    expect: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def problems(self, status: str, context: dict[str, Any] | None, error: dict[str, Any] | None) -> list[str]:
        """What differs between this expectation and a finished run (empty when it matches)."""
        if status != self.status:
            return [f"ended {status}, expected {self.status}"]
        seen = (context if status == COMPLETED else error) or {}
        where = "context" if status == COMPLETED else "error"
        return [
            f"{where}[{key!r}] is {seen.get(key, '<missing>')!r}, expected {value!r}"
            for key, value in self.expect.items()
            if seen.get(key) != value
        ]


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
    ]
