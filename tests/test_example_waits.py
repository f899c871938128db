"""The example project's workflows that wait (``shop.waiting``), its payment webhook and their demo.

Runs go through the embedded queue. ``run_until_idle`` returns with a run ``waiting``; the tests
answer it (``provide_input``, ``send_event``, the webhook) or end its sleep or timeout with
``make_due`` and ``run_due``, then look at the run, its waits and the shop's rows.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse

from durable_django import InvalidInput, RunStateError, provide_input, send_event, start_workflow
from durable_django.models import Event, WorkflowRun
from durable_django.testing import EmbeddedQueue, make_due
from example_project.shop.demo import COMPLETED, Example
from example_project.shop.models import Account, ExpenseClaim, PaymentIntent, SentMessage, Shipment
from example_project.shop.responder import DIRECTOR, MANAGER, Webhook, staff_user
from example_project.shop.seed import customer, order, seed_stock
from example_project.shop.waiting import start_payment
from example_project.shop.webhooks import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK = "/shop/webhooks/payments/"


@pytest.fixture
def alan() -> Account:
    return customer("alan@example.com", "Alan Turing")


@pytest.fixture
def manager() -> Any:
    return staff_user(MANAGER)


@pytest.fixture
def director() -> Any:
    return staff_user(DIRECTOR)


def start(queue: EmbeddedQueue, name: str, input: dict[str, Any]) -> WorkflowRun:
    run = start_workflow(name, input)
    queue.run_until_idle()
    run.refresh_from_db()
    return run


def resume(queue: EmbeddedQueue, run: WorkflowRun) -> WorkflowRun:
    queue.run_until_idle()
    run.refresh_from_db()
    return run


def time_out(queue: EmbeddedQueue, run: WorkflowRun) -> WorkflowRun:
    """End the run's open wait now, as its timeout (or the end of its sleep) would."""
    make_due(run.waits.get(status="waiting"))
    queue.run_due()
    queue.run_until_idle()
    run.refresh_from_db()
    return run


def steps(run: WorkflowRun) -> list[str]:
    return list(run.steps.order_by("id").values_list("step", flat=True))


# -- expense_approval ------------------------------------------------------------------------


def claim_input(alan: Account, **options: Any) -> dict[str, Any]:
    return {"employee_id": alan.pk, "amount_cents": 4200, "description": "Train to the client", **options}


def test_expense_approval_waits_for_the_managers_approval(embedded, alan):
    run = start(embedded, "expense_approval", claim_input(alan))

    claim = ExpenseClaim.objects.get()
    wait = run.waits.get()
    assert run.status == "waiting"
    assert (wait.kind, wait.name, wait.status, wait.input_kind) == ("input", "manager_approval", "waiting", "approval")
    assert wait.prompt == "Approve 42.00 for 'Train to the client'?"
    assert wait.permission == "shop.approve_expenses"
    assert wait.has_timeout_value is True and wait.timeout_value is None
    assert wait.due_at - wait.created_at == timedelta(days=3)
    assert (claim.employee, claim.amount_cents, claim.status) == (alan, 4200, "submitted")
    assert steps(run) == ["record_claim", "ask_manager"]


def test_expense_approval_pays_an_approved_claim_and_tells_the_employee(embedded, alan, manager):
    run = start(embedded, "expense_approval", claim_input(alan))

    provide_input(run.pk, "manager_approval", {"approved": True, "comment": "Fine"}, user=manager)
    run = resume(embedded, run)

    claim = ExpenseClaim.objects.get()
    answer = {"approved": True, "comment": "Fine", "by": MANAGER}
    assert run.status == "completed"
    assert run.context == {
        **claim_input(alan),
        "claim_id": claim.pk,
        "manager_approval": answer,
        "decision": {"approved": True, "by": MANAGER, "note": "Fine", "amount_cents": 4200},
        "claim_status": "paid",
        "paid_cents": 4200,
        "employee_notified": True,
    }
    assert steps(run) == ["record_claim", "ask_manager", "route_manager_decision", "approve", "pay", "notify_employee"]
    assert (claim.status, claim.decided_by, claim.approved_cents, claim.note) == ("paid", MANAGER, 4200, "Fine")
    assert claim.decided_at is not None and claim.paid_at is not None
    wait = run.waits.get()
    assert (wait.status, wait.payload, wait.resolved_by) == ("resolved", answer, manager)
    assert list(SentMessage.objects.values_list("recipient", "subject")) == [
        ("alan@example.com", f"Expense claim {claim.pk} paid")
    ]


def test_expense_approval_rejects_a_claim_the_manager_turns_down(embedded, alan, manager):
    run = start(embedded, "expense_approval", claim_input(alan))

    provide_input(run.pk, "manager_approval", {"approved": False, "comment": "Not a business expense"}, user=manager)
    run = resume(embedded, run)

    claim = ExpenseClaim.objects.get()
    assert run.status == "completed"
    assert run.context["decision"] == {
        "approved": False,
        "by": MANAGER,
        "note": "Not a business expense",
        "amount_cents": 4200,
    }
    assert run.context["claim_status"] == "rejected"
    assert "paid_cents" not in run.context
    assert steps(run)[2:] == ["route_manager_decision", "reject", "notify_employee"]
    assert (claim.status, claim.decided_by, claim.approved_cents, claim.paid_at) == ("rejected", MANAGER, None, None)
    assert SentMessage.objects.get().body == (
        "Your claim for 'Train to the client' was rejected by demo-manager. Note: Not a business expense"
    )


def test_expense_approval_escalates_to_a_directors_form_when_the_manager_does_not_answer(embedded, alan, director):
    run = start(embedded, "expense_approval", claim_input(alan, amount_cents=9000, approval_timeout=60))

    run = time_out(embedded, run)

    assert run.status == "waiting"
    assert run.context["manager_approval"] is None
    assert run.context["escalated"] is True
    assert ExpenseClaim.objects.get().status == "escalated"
    timed_out, form = run.waits.order_by("id")
    assert (timed_out.name, timed_out.status) == ("manager_approval", "timed_out")
    assert (form.name, form.status, form.input_kind, form.due_at) == ("director_decision", "waiting", "form", None)
    assert form.spec == {
        "fields": {
            "approved_amount": {
                "type": "integer",
                "required": True,
                "label": "Approved amount (cents)",
                "help": "0 rejects the claim",
            },
            "note": {"type": "string", "required": False, "label": "Note"},
        },
        "order": ["approved_amount", "note"],
    }
    assert steps(run) == ["record_claim", "ask_manager", "route_manager_decision", "escalate"]

    provide_input(run.pk, "director_decision", {"approved_amount": "6000", "note": "Economy fare only"}, user=director)
    run = resume(embedded, run)

    claim = ExpenseClaim.objects.get()
    assert run.status == "completed"
    assert run.context["director_decision"] == {"approved_amount": 6000, "note": "Economy fare only", "by": DIRECTOR}
    assert run.context["decision"] == {
        "approved": True,
        "by": DIRECTOR,
        "note": "Economy fare only",
        "amount_cents": 6000,
    }
    assert (run.context["claim_status"], run.context["paid_cents"]) == ("paid", 6000)
    assert steps(run)[4:] == ["route_director_decision", "approve", "pay", "notify_employee"]
    assert (claim.status, claim.decided_by, claim.amount_cents, claim.approved_cents) == ("paid", DIRECTOR, 9000, 6000)


def test_expense_approval_director_rejects_with_an_amount_of_zero(embedded, alan, director):
    run = time_out(embedded, start(embedded, "expense_approval", claim_input(alan, approval_timeout=60)))

    provide_input(run.pk, "director_decision", {"approved_amount": 0}, user=director)
    run = resume(embedded, run)

    assert run.status == "completed"
    assert run.context["decision"] == {"approved": False, "by": DIRECTOR, "note": "", "amount_cents": 0}
    assert run.context["claim_status"] == "rejected"
    assert ExpenseClaim.objects.get().status == "rejected"


def test_expense_approval_director_pays_no_more_than_was_claimed(embedded, alan, director):
    run = time_out(embedded, start(embedded, "expense_approval", claim_input(alan, approval_timeout=60)))

    provide_input(run.pk, "director_decision", {"approved_amount": 99999, "note": "Generous"}, user=director)
    run = resume(embedded, run)

    assert (run.context["decision"]["amount_cents"], run.context["paid_cents"]) == (4200, 4200)
    assert ExpenseClaim.objects.get().approved_cents == 4200


def test_expense_approval_refuses_a_form_answer_that_does_not_fit(embedded, alan, director):
    run = time_out(embedded, start(embedded, "expense_approval", claim_input(alan, approval_timeout=60)))

    with pytest.raises(InvalidInput, match="approved_amount must be a whole number") as caught:
        provide_input(run.pk, "director_decision", {"approved_amount": "lots"}, user=director)

    assert caught.value.field == "approved_amount"
    assert run.waits.get(name="director_decision").status == "waiting"


# -- payment_with_webhook and its webhook view ---------------------------------------------------


@pytest.fixture
def placed() -> Any:
    seed_stock()
    return order("ORD-PAY", customer("barbara@example.com", "Barbara Liskov"))


def post_webhook(client: Any, body: Any, *, signature: str | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {SIGNATURE_HEADER: sign(raw) if signature is None else signature}
    return client.post(WEBHOOK, raw, content_type="application/json", headers=headers)


def settled(intent: PaymentIntent, **data: Any) -> dict[str, Any]:
    return {"type": "payment.settled", "data": {"provider_ref": intent.provider_ref, **data}}


def test_payment_with_webhook_waits_until_the_webhook_settles_the_intent(embedded, client, placed):
    run = start_payment({"order_id": placed.pk})
    embedded.run_until_idle()
    run.refresh_from_db()
    intent = PaymentIntent.objects.get()
    assert run.status == "waiting"
    assert (intent.run, intent.status, intent.amount_cents) == (run, "processing", 8900)
    wait = run.waits.get()
    assert (wait.kind, wait.mode, wait.events, wait.returns) == (
        "event",
        "any",
        ["payment.settled", "payment.failed"],
        "settlement",
    )

    response = post_webhook(client, settled(intent, amount_cents=8900))
    run = resume(embedded, run)

    assert (response.status_code, response.json()) == (200, {"result": "delivered"})
    intent.refresh_from_db()
    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "intent_id": intent.pk,
        "provider_ref": intent.provider_ref,
        "amount_cents": 8900,
        "settlement": {
            "event": "payment.settled",
            "payload": {"provider_ref": intent.provider_ref, "amount_cents": 8900},
        },
        "payment_status": "settled",
    }
    assert (intent.status, intent.failure_reason) == ("settled", "")
    assert intent.settled_at is not None


def test_payment_with_webhook_keeps_a_webhook_sent_before_the_run_waits(embedded, client, placed):
    run = start_payment({"order_id": placed.pk})
    intent = PaymentIntent.objects.get()

    # The run has not executed a step yet: nothing waits for the event, so it is kept.
    response = post_webhook(client, settled(intent))
    assert (response.status_code, response.json()) == (200, {"result": "buffered"})
    assert Event.objects.get().consumed_at is None

    run = resume(embedded, run)

    event = Event.objects.get()
    assert run.status == "completed"
    assert run.context["settlement"] == {"event": "payment.settled", "payload": {"provider_ref": intent.provider_ref}}
    assert run.context["payment_status"] == "settled"
    assert event.consumed_by == run.waits.get()
    assert event.consumed_at is not None


def test_payment_with_webhook_records_a_failed_payment(embedded, client, placed):
    run = start_payment({"order_id": placed.pk})
    embedded.run_until_idle()
    intent = PaymentIntent.objects.get()

    body = {"type": "payment.failed", "data": {"provider_ref": intent.provider_ref, "reason": "insufficient_funds"}}
    assert post_webhook(client, body).json() == {"result": "delivered"}
    run = resume(embedded, run)

    intent.refresh_from_db()
    assert run.context["settlement"] == {"event": "payment.failed", "payload": body["data"]}
    assert run.context["payment_status"] == "failed"
    assert (intent.status, intent.failure_reason, intent.settled_at) == ("failed", "insufficient_funds", None)


def test_payment_with_webhook_expires_the_intent_when_no_webhook_comes(embedded, placed):
    run = start_payment({"order_id": placed.pk, "settle_timeout": 60})
    embedded.run_until_idle()

    run = time_out(embedded, run)

    assert run.status == "completed"
    assert run.context["settlement"] is None
    assert run.context["payment_status"] == "expired"
    assert PaymentIntent.objects.get().status == "expired"
    assert run.waits.get().status == "timed_out"


@pytest.mark.parametrize(
    "signature",
    ["", "sha256=" + "0" * 64, sign(b"another body"), "md5=abc", "sha256=é"],
    ids=["missing", "zeros", "other_body", "other_scheme", "not_ascii"],
)
def test_payment_webhook_refuses_a_bad_signature(embedded, client, placed, signature):
    start_payment({"order_id": placed.pk})
    intent = PaymentIntent.objects.get()

    response = post_webhook(client, settled(intent), signature=signature)

    assert response.status_code == 403
    assert response.json() == {"error": "the X-Shop-Signature header does not match the body"}
    assert not Event.objects.exists()


def test_payment_webhook_refuses_a_body_signed_with_another_secret(client, placed):
    start_payment({"order_id": placed.pk})
    body = json.dumps(settled(PaymentIntent.objects.get())).encode()

    response = post_webhook(client, body, signature=sign(body, "guessed-secret"))

    assert response.status_code == 403


@override_settings(SHOP_WEBHOOK_SECRET="")
def test_payment_webhook_refuses_everything_without_a_secret(client):
    response = post_webhook(client, {"type": "payment.settled", "data": {"provider_ref": "pi_1"}})

    assert response.status_code == 403
    assert response.json() == {"error": "SHOP_WEBHOOK_SECRET is not set: webhooks are refused"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1, 2]", "type must be one of payment.settled, payment.failed, got None"),
        (
            {"type": "payment.refunded", "data": {}},
            "type must be one of payment.settled, payment.failed, got 'payment.refunded'",
        ),
        ({"type": "payment.settled"}, "data must be an object with the intent's provider_ref"),
        (
            {"type": "payment.settled", "data": {"provider_ref": 7}},
            "data must be an object with the intent's provider_ref",
        ),
    ],
    ids=["not_json", "not_an_object", "unknown_type", "no_data", "ref_not_a_string"],
)
def test_payment_webhook_answers_400_to_a_bad_body(client, body, message):
    response = post_webhook(client, body)

    assert (response.status_code, response.json()) == (400, {"error": message})


def test_payment_webhook_answers_404_for_an_unknown_intent(client):
    response = post_webhook(client, {"type": "payment.settled", "data": {"provider_ref": "pi_unknown"}})

    assert (response.status_code, response.json()) == (404, {"error": "no payment intent 'pi_unknown'"})


def test_payment_webhook_answers_409_once_the_run_is_finished(embedded, client, placed):
    run = start_payment({"order_id": placed.pk})
    intent = PaymentIntent.objects.get()
    post_webhook(client, settled(intent))
    resume(embedded, run)

    response = post_webhook(client, settled(intent))

    assert response.status_code == 409
    assert "completed" in response.json()["error"]


def test_payment_webhook_takes_post_only(client):
    assert client.get(WEBHOOK).status_code == 405
    assert reverse("shop:payment-webhook") == WEBHOOK


# -- follow_up_email -------------------------------------------------------------------------


def test_follow_up_email_sleeps_between_the_welcome_and_the_follow_up(embedded, alan):
    run = start(embedded, "follow_up_email", {"user_id": alan.pk})

    wait = run.waits.get()
    assert run.status == "waiting"
    assert (wait.kind, wait.status) == ("sleep", "waiting")
    assert wait.due_at - wait.created_at == timedelta(days=3)
    assert list(SentMessage.objects.values_list("subject", flat=True)) == ["Welcome to the shop"]

    run = time_out(embedded, run)

    assert run.status == "completed"
    assert run.context == {"user_id": alan.pk, "welcomed": True, "follow_up_sent": True}
    assert run.waits.get().status == "resolved"
    assert steps(run) == ["send_welcome", "wait_before_follow_up", "send_follow_up"]
    assert list(SentMessage.objects.values_list("subject", flat=True)) == [
        "Welcome to the shop",
        "How are you getting on?",
    ]


def test_follow_up_email_sleeps_as_long_as_asked(embedded, alan):
    run = start(embedded, "follow_up_email", {"user_id": alan.pk, "follow_up_after": 0.2})

    embedded.run_until_idle(include_waits=True)
    run.refresh_from_db()

    assert run.status == "completed"
    assert SentMessage.objects.count() == 2


# -- fulfil_order: a branch waits ----------------------------------------------------------------


def test_fulfil_order_ships_once_the_waiting_branch_gets_warehouse_packed(embedded, placed):
    run = start(embedded, "fulfil_order", {"order_id": placed.pk})

    assert run.status == "waiting"
    branches = {row.step: row.status for row in run.steps.all()}
    assert branches == {"authorize": "completed", "packing": "waiting"}
    assert run.waits.get().step_result.step == "packing"

    assert send_event(run.pk, "warehouse.packed", {"weight_grams": 850}) == "delivered"
    run = resume(embedded, run)

    tracking = Shipment.objects.get(order=placed).tracking_number
    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "__results__": {
            "authorize": ["ok", {"auth_code": f"AUTH-{placed.pk:06d}"}],
            "packing": ["ok", {"parcel": {"weight_grams": 850}}],
        },
        "tracking_number": tracking,
        "weight_grams": 850,
    }
    assert SentMessage.objects.get().subject == "Order ORD-PAY shipped"


def test_fulfil_order_fails_when_the_warehouse_never_packs(embedded, placed):
    run = start(embedded, "fulfil_order", {"order_id": placed.pk, "packing_timeout": 60})

    run = time_out(embedded, run)

    assert run.status == "failed"
    assert run.error["step"] == "packing"
    assert run.error["reason"]["type"] == "wait_timeout"
    assert run.error["reason"]["wait"] == "warehouse.packed"
    assert not Shipment.objects.exists()
    with pytest.raises(RunStateError):
        send_event(run.pk, "warehouse.packed", {})


# -- the demo ----------------------------------------------------------------------------------

WAITING_WORKFLOWS = ["expense_approval", "payment_with_webhook", "follow_up_email", "fulfil_order"]


def test_run_examples_answers_the_waiting_examples_and_each_ends_as_expected(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=WAITING_WORKFLOWS)

    out = capsys.readouterr().out
    assert "All 10 runs ended as expected." in out
    assert out.count("result: as expected") == 10
    for line in [
        """the demo answered input 'manager_approval' as demo-manager: {"approved": true, "comment": "Fine"}""",
        """the demo posted the provider's webhook payment.settled to /shop/webhooks/payments/: 200"""
        """ {"result": "buffered"}""",
        """the demo sent event warehouse.packed {"weight_grams": 850}: delivered""",
    ]:
        assert f"\n{line}\n" in out, line
    # How long a wait took varies: "... after 1.4 s".
    for line in [
        r"waited for input 'manager_approval' \(approval\) in step ask_manager: timed out after \d+\.\d s",
        r"waited for input 'director_decision' \(form\) in step escalate: resolved after \d+\.\d s by demo-director",
        r"waited for any of the events payment.settled, payment.failed in step await_settlement: timed out"
        r" after \d+\.\d s",
        r"waited for 1.0 s in step wait_before_follow_up: resolved after \d+\.\d s",
        r"waited for event warehouse.packed in step packing: resolved after \d+\.\d s",
    ]:
        assert re.search(f"\n{line}\n", out), line


def test_run_examples_fails_when_a_webhook_is_not_answered_as_expected(monkeypatch, capsys):
    from example_project.shop.management.commands import run_examples

    monkeypatch.delenv("REDIS_URL", raising=False)
    seed_stock()
    placed = order("ORD-DEMO", customer("barbara@example.com", "Barbara Liskov"))
    # Sent once the run waits, so it is delivered, not buffered.
    late = Webhook("payment.settled", expect="buffered")
    example = Example(
        "payment_with_webhook",
        "late webhook",
        {"order_id": placed.pk},
        COMPLETED,
        {"payment_status": "settled"},
        responses={"await_settlement": late},
        start=start_payment,
    )
    monkeypatch.setattr(run_examples, "examples", lambda tag: [example])

    with pytest.raises(CommandError, match=r"expected buffered"):
        call_command("run_examples", verbosity=0)


def test_only_users_allowed_to_approve_expenses_may_answer_the_expense_inputs(manager):
    from django.contrib.auth import get_user_model

    from durable_django.waits import can_answer

    clerk = get_user_model().objects.create_user("clerk")

    assert can_answer(manager, "shop.approve_expenses") is True
    assert can_answer(clerk, "shop.approve_expenses") is False
