"""The example shop's workflows that wait: for a person's answer, a webhook, time to pass.

Imported by ``shop.workflows``, so durable_django's autodiscovery registers these too. A step
returns a wait as it returns ``ok()``: the step is completed, the run's status becomes
``waiting`` (no worker is held) and, once the wait is over, the run goes on with the next step.
``python manage.py run_examples`` answers the inputs and sends the events itself.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from durable_django import (
    error,
    goto,
    ok,
    parallel,
    parallel_result,
    sleep,
    start_workflow,
    step,
    wait_for_any,
    wait_for_event,
    wait_for_input,
    workflow,
)
from durable_django.models import WorkflowRun

from .models import Order, PaymentIntent
from .services import expenses, mailer, payment, shipping

Ctx = dict[str, Any]
Result = Any

DAY = 24 * 3600.0
# Who may answer the expense inputs: the custom permission of shop.models.ExpenseClaim.
APPROVE_EXPENSES = "shop.approve_expenses"


# -- expense_approval: an approval input, and a timeout that escalates to a director's form ------


def record_claim(data: Ctx) -> Result:
    claim = expenses.submit(data["employee_id"], data["amount_cents"], data["description"])
    return ok({"claim_id": claim.pk})


def ask_manager(ctx: Ctx) -> Result:
    return wait_for_input(
        "manager_approval",
        kind="approval",
        prompt=f"Approve {ctx['amount_cents'] / 100:.2f} for {ctx['description']!r}?",
        timeout=ctx.get("approval_timeout", 3 * DAY),
        # Without a timeout value a timeout would fail the run; with one it goes on, and the next
        # step reads None as "nobody answered in time".
        timeout_value=None,
        permission=APPROVE_EXPENSES,
    )


def route_manager_decision(ctx: Ctx) -> Result:
    match ctx["manager_approval"]:
        case None:
            return goto("escalate")
        case {"approved": approved, "comment": comment, "by": by}:
            decision = {"approved": approved, "by": by, "note": comment, "amount_cents": ctx["amount_cents"]}
            return goto("approve" if approved else "reject", {"decision": decision})


def escalate(ctx: Ctx) -> Result:
    expenses.escalate(ctx["claim_id"])
    return wait_for_input(
        "director_decision",
        kind="form",
        prompt=f"The manager did not answer: how much of {ctx['amount_cents'] / 100:.2f} do we pay?",
        fields={
            "approved_amount": {"type": "integer", "label": "Approved amount (cents)", "help": "0 rejects the claim"},
            "note": {"type": "string", "required": False},
        },
        permission=APPROVE_EXPENSES,
        data={"escalated": True},
    )


def route_director_decision(ctx: Ctx) -> Result:
    answer = ctx["director_decision"]  # {"approved_amount": 3000, "note": "...", "by": "director"}
    amount = max(0, min(answer["approved_amount"], ctx["amount_cents"]))  # never more than claimed
    decision = {"approved": amount > 0, "by": answer["by"], "note": answer["note"] or "", "amount_cents": amount}
    return goto("approve" if amount > 0 else "reject", {"decision": decision})


def approve(ctx: Ctx) -> Result:
    decision = ctx["decision"]
    expenses.decide(
        ctx["claim_id"], approved=True, by=decision["by"], note=decision["note"], amount_cents=decision["amount_cents"]
    )
    return ok()


def pay(ctx: Ctx) -> Result:
    claim = expenses.pay(ctx["claim_id"])
    # Jump over reject: steps otherwise run in the order they are listed.
    return goto("notify_employee", {"claim_status": claim.status, "paid_cents": claim.approved_cents})


def reject(ctx: Ctx) -> Result:
    decision = ctx["decision"]
    claim = expenses.decide(ctx["claim_id"], approved=False, by=decision["by"], note=decision["note"])
    return ok({"claim_status": claim.status})


def notify_employee(ctx: Ctx) -> Result:
    expenses.notify(ctx["claim_id"])
    return ok({"employee_notified": True})


expense_approval = workflow(
    "expense_approval",
    [
        step("record_claim", record_claim),
        step("ask_manager", ask_manager),
        step("route_manager_decision", route_manager_decision),
        # Reached only by the goto of a timed-out approval.
        step("escalate", escalate),
        step("route_director_decision", route_director_decision),
        step("approve", approve),
        step("pay", pay),
        step("reject", reject),
        step("notify_employee", notify_employee),
    ],
)


# -- payment_with_webhook: the provider's webhook resolves the wait ------------------------------

SETTLEMENT_EVENTS = ["payment.settled", "payment.failed"]


def start_payment(input: Ctx) -> WorkflowRun:
    """Create the payment intent of ``input["order_id"]`` and start the run that waits for its webhook.

    Both are written in one transaction, so the intent knows its run before the provider can
    call back: the webhook view finds the run from the intent.
    """
    with transaction.atomic():
        intent = payment.create_intent(input["order_id"])
        run = start_workflow("payment_with_webhook", {**input, "intent_id": intent.pk})
        PaymentIntent.objects.filter(pk=intent.pk).update(run=run)
    return run


def confirm_payment(data: Ctx) -> Result:
    intent = payment.confirm_intent(data["intent_id"])
    return ok({"provider_ref": intent.provider_ref, "amount_cents": intent.amount_cents})


def await_settlement(ctx: Ctx) -> Result:
    # The first of the two events resolves the wait. One sent before the run got here (a fast
    # provider) was kept for it, so this step takes it at once.
    return wait_for_any(
        SETTLEMENT_EVENTS, timeout=ctx.get("settle_timeout", DAY), timeout_value=None, returns="settlement"
    )


def record_outcome(ctx: Ctx) -> Result:
    match ctx["settlement"]:
        case {"event": "payment.settled"}:
            intent = payment.close_intent(ctx["intent_id"], PaymentIntent.Status.SETTLED)
        case {"event": "payment.failed", "payload": payload}:
            reason = str(payload.get("reason") or "unknown")
            intent = payment.close_intent(ctx["intent_id"], PaymentIntent.Status.FAILED, reason)
        case None:  # the timeout value: the provider never called back
            intent = payment.close_intent(ctx["intent_id"], PaymentIntent.Status.EXPIRED)
    return ok({"payment_status": intent.status})


payment_with_webhook = workflow(
    "payment_with_webhook",
    [
        step("confirm_payment", confirm_payment),
        step("await_settlement", await_settlement),
        step("record_outcome", record_outcome),
    ],
)


# -- follow_up_email: a sleep between two mails ---------------------------------------------------


def send_welcome(data: Ctx) -> Result:
    mailer.send_welcome(data["user_id"])
    return ok({"welcomed": True})


def wait_before_follow_up(ctx: Ctx) -> Result:
    # The run sleeps in the database, not in a worker: a deploy or a restart in between is harmless.
    return sleep(ctx.get("follow_up_after", 3 * DAY))


def send_follow_up(ctx: Ctx) -> Result:
    mailer.send_follow_up(ctx["user_id"])
    return ok({"follow_up_sent": True})


follow_up_email = workflow(
    "follow_up_email",
    [
        step("send_welcome", send_welcome),
        step("wait_before_follow_up", wait_before_follow_up),
        step("send_follow_up", send_follow_up),
    ],
)


# -- fulfil_order: one branch of a parallel block waits for the warehouse ------------------------


def authorize(ctx: Ctx) -> Result:
    match payment.authorize(ctx["order_id"]):
        case ("ok", auth):
            return ok({"auth_code": auth.code})
        case ("error", reason):
            return error(reason)


def request_packing(ctx: Ctx) -> Result:
    # Only this branch waits: the block is joined once the warehouse's scanner sends the event.
    return wait_for_event("warehouse.packed", timeout=ctx.get("packing_timeout", DAY), returns="parcel")


def ship(ctx: Ctx) -> Result:
    # fail_fast: reaching this step means the payment is authorized and the parcel is packed.
    _, packed = parallel_result("packing")  # ("ok", {"parcel": <the event's payload>})
    match shipping.schedule(ctx["order_id"]):
        case ("ok", shipment):
            order = Order.objects.select_related("account").get(pk=ctx["order_id"])
            mailer.deliver(order.account, f"Order {order.reference} shipped", f"Tracking {shipment.tracking_number}.")
            return ok({"tracking_number": shipment.tracking_number, "weight_grams": packed["parcel"]["weight_grams"]})
        case ("error", reason):
            return error(reason)


fulfil_order = workflow(
    "fulfil_order",
    [
        parallel(
            step("authorize", authorize),
            step("packing", request_packing),
        ),
        step("ship", ship),
    ],
)
