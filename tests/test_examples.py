"""The example project's workflows: one test per example of the guide and per outcome it shows.

Runs go through the embedded queue (RQ on fakeredis, executed in process). The tests need
``transaction=True``: the engine enqueues jobs with ``transaction.on_commit``, which never fires
inside the transaction a plain ``django_db`` test is wrapped in.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from durable_django import start_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from example_project.shop import workflows
from example_project.shop.demo import COMPLETED, FAILED, Example
from example_project.shop.models import (
    Account,
    BillingAccount,
    Charge,
    ExternalEndpoint,
    InventoryItem,
    PaymentAuthorization,
    SentMessage,
    Shipment,
    Workspace,
)
from example_project.shop.seed import ROOM_SKU, ROOMS, UNKNOWN_SKU, customer, order, seed_rooms, seed_stock
from example_project.shop.services.airline import FULL_FLIGHT
from example_project.shop.services.payment import DECLINED_TOKEN, REFUND_BLOCKED_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada() -> Account:
    seed_stock()
    return customer("ada@example.com", "Ada Lovelace", "+44 20 7946 0001")


def run_to_end(queue: EmbeddedQueue, name: str, input: dict[str, Any]) -> WorkflowRun:
    run = start_workflow(name, input)
    queue.run_until_idle()
    run.refresh_from_db()
    return run


def attempts(run: WorkflowRun) -> list[tuple[str, int, str]]:
    """(step, attempt, status) of every attempt, in the order the engine recorded them."""
    return [(row.step, row.attempt, row.status) for row in run.steps.order_by("id")]


# -- onboard_user ----------------------------------------------------------------------------


def test_onboard_user_runs_three_branches_and_marks_the_user_onboarded(embedded):
    run = run_to_end(embedded, "onboard_user", {"email": "linus@example.com", "name": "Linus", "phone": ""})

    account = Account.objects.get(email="linus@example.com")
    workspace = Workspace.objects.get(owner=account)
    assert run.status == "completed"
    assert run.context == {
        "email": "linus@example.com",
        "name": "Linus",
        "phone": "",
        "user_id": account.pk,
        "__results__": {
            "send_welcome_email": ["ok", {"email_sent": True}],
            "provision_workspace": ["ok", {"workspace_id": workspace.pk}],
            "setup_billing": ["ok", {"billing_ready": True}],
        },
        "onboarded": True,
    }
    assert attempts(run) == [
        ("create_user", 1, "completed"),
        ("send_welcome_email", 1, "completed"),
        ("provision_workspace", 1, "completed"),
        ("setup_billing", 1, "completed"),
        ("complete", 1, "completed"),
    ]
    assert list(SentMessage.objects.values_list("recipient", "subject")) == [
        ("linus@example.com", "Welcome to the shop")
    ]
    assert BillingAccount.objects.get(account=account).plan == "free"


def test_onboard_user_fails_fast_when_the_welcome_mail_bounces(embedded):
    run = run_to_end(embedded, "onboard_user", {"email": "mallory@example.invalid", "name": "Mallory"})

    assert run.status == "failed"
    assert run.error["step"] == "send_welcome_email"
    assert run.error["parallel"] == "parallel_1"
    assert run.error["reason"]["type"] == "MailerError"
    assert run.error["reason"]["message"] == "undeliverable address mallory@example.invalid"
    # The embedded queue runs jobs in order: the sibling branches ran before the join failed the run.
    assert attempts(run) == [
        ("create_user", 1, "completed"),
        ("send_welcome_email", 1, "failed"),
        ("provision_workspace", 1, "completed"),
        ("setup_billing", 1, "completed"),
    ]
    assert not SentMessage.objects.exists()


def test_complete_step_reports_incomplete_onboarding_when_a_branch_failed():
    ctx = {
        "user_id": 1,
        "__results__": {
            "send_welcome_email": ("error", "undeliverable_address"),
            "provision_workspace": ("ok", {"workspace_id": 1}),
            "setup_billing": ("ok", {"billing_ready": True}),
        },
    }

    assert workflows.complete_onboarding(ctx) == ("error", "Onboarding incomplete")


# -- checkout: parallel_* helpers and direct access with goto ---------------------------------


def test_checkout_records_the_payment_and_confirms_the_order(embedded, ada):
    placed = order("ORD-1", ada)

    run = run_to_end(embedded, "checkout", {"order_id": placed.pk})

    auth = PaymentAuthorization.objects.get(order=placed)
    tracking = Shipment.objects.get(order=placed).tracking_number
    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "__results__": {
            "payment": ["ok", {"id": auth.pk, "code": auth.code}],
            "delivery": ["ok", {"status": "scheduled", "tracking_number": tracking}],
        },
        "summary": {
            "branches": ["delivery", "payment"],
            "payment": f"authorized with code {auth.code}",
            "delivery_scheduled": True,
        },
        "payment_id": auth.pk,
        "order_status": "confirmed",
        "customer_notified": True,
    }
    assert [step for step, _, _ in attempts(run)] == [
        "open_checkout",
        "payment",
        "delivery",
        "handle_results",
        "record_payment",
        "confirm_order",
        "notify_customer",
    ]
    assert SentMessage.objects.get().subject == "Order ORD-1: confirmed"
    # What authorize_payment logged is kept with its attempt.
    (record,) = StepResult.objects.get(run=run, step="payment").logs
    assert (record["level"], record["logger"], record["message"]) == (
        "INFO",
        workflows.logger.name,
        f"order {placed.pk}: card authorized, code {auth.code}",
    )


def test_checkout_jumps_to_handle_payment_failure_when_the_card_is_declined(embedded, ada):
    placed = order("ORD-2", ada, card=DECLINED_TOKEN)

    run = run_to_end(embedded, "checkout", {"order_id": placed.pk})

    assert run.status == "completed"
    assert run.context["__results__"]["payment"] == ["error", "card_declined"]
    assert run.context["summary"]["payment"] == "not authorized: card_declined"
    assert run.context["order_status"] == "payment_failed"
    assert "payment_id" not in run.context
    assert [(r["level"], r["message"]) for r in StepResult.objects.get(run=run, step="payment").logs] == [
        ("INFO", f"order {placed.pk}: card not authorized (card_declined)")
    ]
    assert attempts(run) == [
        ("open_checkout", 1, "completed"),
        ("payment", 1, "failed"),
        ("delivery", 1, "completed"),
        ("handle_results", 1, "completed"),
        ("record_payment", 1, "completed"),
        ("handle_payment_failure", 1, "completed"),
        ("notify_customer", 1, "completed"),
    ]


# -- deliver_order: into ---------------------------------------------------------------------


def test_deliver_order_into_replaces_the_context_when_both_branches_succeed(embedded, ada):
    placed = order("ORD-3", ada)

    run = run_to_end(embedded, "deliver_order", {"order_id": placed.pk})

    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "payment_id": PaymentAuthorization.objects.get(order=placed).pk,
        "delivery_status": "scheduled",
        "order_status": "confirmed",
        "customer_notified": True,
    }
    assert "handle_backorder" not in [step for step, _, _ in attempts(run)]


def test_deliver_order_into_jumps_to_handle_backorder_when_delivery_is_not_found(embedded, ada):
    placed = order("ORD-4", ada, sku=UNKNOWN_SKU)

    run = run_to_end(embedded, "deliver_order", {"order_id": placed.pk})

    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "backordered": True,
        "order_status": "backordered",
        "customer_notified": True,
    }
    assert attempts(run)[-2:] == [("handle_backorder", 1, "completed"), ("notify_customer", 1, "completed")]


@pytest.mark.parametrize(
    ("card", "sku"), [(DECLINED_TOKEN, "KB-01"), ("tok_visa", "MUG-01")], ids=["declined", "out_of_stock"]
)
def test_deliver_order_into_fails_the_run_on_any_other_combination(embedded, ada, card, sku):
    placed = order("ORD-5", ada, card=card, sku=sku)

    run = run_to_end(embedded, "deliver_order", {"order_id": placed.pk})

    assert run.status == "failed"
    assert run.error == {"step": "parallel_1", "reason": "Critical failure"}
    assert ParallelGroup.objects.get(run=run).status == "failed"
    assert [step for step, _, _ in attempts(run)] == ["start_delivery", "payment", "delivery"]


# -- order_summary: returns= -----------------------------------------------------------------


def test_order_summary_stores_branch_results_under_their_returns_keys(embedded, ada):
    placed = order("ORD-6", ada, quantity=2)

    run = run_to_end(embedded, "order_summary", {"order_id": placed.pk, "user_id": ada.pk})

    assert run.status == "completed"
    assert run.context == {
        "order_id": placed.pk,
        "user_id": ada.pk,
        "__results__": {
            "order": ["ok", {"items": [{"sku": "KB-01", "quantity": 2}]}],
            "user": ["ok", {"name": "Ada Lovelace"}],
        },
        "summary": "Ada Lovelace ordered 2 item(s)",
    }
    # Attempts keep the step names; only the results are keyed by returns=.
    assert attempts(run) == [
        ("fetch_order", 1, "completed"),
        ("fetch_user", 1, "completed"),
        ("summarize", 1, "completed"),
    ]


# -- notify_user: fail_fast, then complete_all ------------------------------------------------


def test_notify_user_marks_all_sent_when_sms_and_email_succeed(embedded, ada):
    run = run_to_end(embedded, "notify_user", {"user_id": ada.pk})

    assert run.status == "completed"
    assert run.context == {
        "user_id": ada.pk,
        "__results__": {"send_sms": ["ok", {"sms_sent": True}], "send_email": ["ok", {"email_sent": True}]},
        "all_sent": True,
    }
    assert sorted(SentMessage.objects.values_list("channel", flat=True)) == ["email", "sms"]


def test_notify_user_marks_partial_sent_when_the_account_has_no_phone(embedded):
    grace = customer("grace@example.com", "Grace Hopper")

    run = run_to_end(embedded, "notify_user", {"user_id": grace.pk})

    assert run.status == "completed"
    assert run.context == {
        "user_id": grace.pk,
        "__results__": {"send_sms": ["error", "no_phone_number"], "send_email": ["ok", {"email_sent": True}]},
        "partial_sent": True,
    }


def test_notify_user_fails_when_no_notification_can_be_sent(embedded):
    nobody = customer("nobody@example.invalid", "Nobody")

    run = run_to_end(embedded, "notify_user", {"user_id": nobody.pk})

    assert run.status == "failed"
    assert run.error == {"step": "check_notifications", "reason": "All notifications failed"}
    assert run.context["__results__"] == {
        "send_sms": ["error", "no_phone_number"],
        "send_email": ["error", "undeliverable_address"],
    }


def test_notify_user_fails_fast_at_critical_task_for_an_unknown_account(embedded):
    run = run_to_end(embedded, "notify_user", {"user_id": 0})

    assert run.status == "failed"
    assert run.error == {"step": "critical_task", "parallel": "parallel_1", "reason": "account_not_found"}
    assert attempts(run) == [("critical_task", 1, "failed")]
    assert list(ParallelGroup.objects.filter(run=run).values_list("name", flat=True)) == ["parallel_1"]


# -- dashboard_data: complete_all and partial failure ----------------------------------------


@pytest.fixture
def dashboard_user() -> tuple[Account, list[int]]:
    edsger = customer("edsger@example.com", "Edsger Dijkstra", unread=["Your keyboard shipped"])
    first = order("ORD-7", edsger, total_cents=2500)
    second = order("ORD-8", edsger, quantity=2, total_cents=17800)
    return edsger, [first.pk, second.pk]


def test_dashboard_data_builds_the_dashboard_from_every_source(embedded, dashboard_user):
    edsger, (first, second) = dashboard_user

    run = run_to_end(embedded, "dashboard_data", {"user_id": edsger.pk})

    recent = [
        {"id": second, "reference": "ORD-8", "sku": "KB-01", "quantity": 2, "total_cents": 17800},
        {"id": first, "reference": "ORD-7", "sku": "KB-01", "quantity": 1, "total_cents": 2500},
    ]
    metrics = {"date": timezone.localdate().isoformat(), "orders": 2, "revenue_cents": 20300, "new_accounts": 1}
    assert run.status == "completed"
    assert run.context["dashboard"] == {"orders": recent, "metrics": metrics}
    assert run.context["has_errors"] is False
    notification = edsger.notifications.get()
    assert run.context["__results__"]["fetch_notifications"] == [
        "ok",
        {"notifications": [{"id": notification.pk, "message": "Your keyboard shipped"}]},
    ]


def test_dashboard_data_shows_partial_results_when_fetch_orders_fails(embedded, dashboard_user):
    edsger, _ = dashboard_user

    run = run_to_end(embedded, "dashboard_data", {"user_id": edsger.pk, "orders_limit": 500})

    assert run.status == "completed"
    assert run.context["__results__"]["fetch_orders"] == [
        "error",
        "limit must be an integer between 1 and 100, got 500",
    ]
    assert run.context["dashboard"]["orders"] == []
    assert run.context["dashboard"]["metrics"]["orders"] == 2
    assert run.context["has_errors"] is True
    assert attempts(run) == [
        ("init", 1, "completed"),
        ("fetch_orders", 1, "failed"),
        ("fetch_metrics", 1, "completed"),
        ("fetch_notifications", 1, "completed"),
        ("build_dashboard", 1, "completed"),
    ]


# -- order_processing: the guide's example, step order included ---------------------------------


def test_order_processing_fulfils_a_valid_order_and_falls_through_both_handlers(embedded, ada):
    placed = order("ORD-9", ada)

    run = run_to_end(embedded, "order_processing", {"order_id": placed.pk})

    assert run.status == "completed"
    # The guide lists the handlers after fulfill_order, so a fulfilled order runs them too.
    assert run.context == {
        "order_id": placed.pk,
        "inventory": {"available": True, "quantity": 25},
        "payment": {"authorized": True, "auth_code": f"AUTH-{placed.pk:06d}"},
        "ready": True,
        "fulfilled": True,
        "needs_payment_retry": True,
        "backordered": True,
    }
    assert [step for step, _, _ in attempts(run)] == [
        "validate",
        "check_inventory",
        "check_payment",
        "fulfill_order",
        "handle_payment_issue",
        "handle_backorder",
    ]


def test_order_processing_jumps_to_handle_payment_issue_when_the_card_is_declined(embedded, ada):
    placed = order("ORD-10", ada, card=DECLINED_TOKEN)

    run = run_to_end(embedded, "order_processing", {"order_id": placed.pk})

    assert run.status == "completed"
    assert run.context == {"order_id": placed.pk, "needs_payment_retry": True, "backordered": True}
    assert attempts(run) == [
        ("validate", 1, "completed"),
        ("check_inventory", 1, "completed"),
        ("check_payment", 1, "failed"),
        ("handle_payment_issue", 1, "completed"),
        ("handle_backorder", 1, "completed"),
    ]


def test_order_processing_jumps_to_handle_backorder_when_out_of_stock(embedded, ada):
    placed = order("ORD-11", ada, sku="MUG-01")

    run = run_to_end(embedded, "order_processing", {"order_id": placed.pk})

    assert run.status == "completed"
    assert run.context == {"order_id": placed.pk, "backordered": True}
    assert attempts(run) == [
        ("validate", 1, "completed"),
        ("check_inventory", 1, "failed"),
        ("check_payment", 1, "completed"),
        ("handle_backorder", 1, "completed"),
    ]


def test_order_processing_fails_validation_for_an_unknown_product(embedded, ada):
    placed = order("ORD-12", ada, sku=UNKNOWN_SKU)

    run = run_to_end(embedded, "order_processing", {"order_id": placed.pk})

    assert run.status == "failed"
    assert run.error == {"step": "parallel_1", "reason": "Order validation failed"}
    group = ParallelGroup.objects.get(run=run)
    assert group.results == {
        "check_inventory": ["error", "not_found"],
        "check_payment": ["ok", {"authorized": True, "auth_code": f"AUTH-{placed.pk:06d}"}],
    }


# -- sync_external_data: retry ---------------------------------------------------------------


def test_external_api_call_is_retried_until_the_api_answers(embedded, ada):
    run = run_to_end(embedded, "sync_external_data", {"request_key": "rates", "fail_first": 2})

    assert run.status == "completed"
    assert attempts(run) == [
        ("external_api_call", 1, "failed"),
        ("quick_local_task", 1, "completed"),
        ("external_api_call", 2, "failed"),
        ("external_api_call", 3, "completed"),
        ("combine", 1, "completed"),
    ]
    errors = [row.error for row in run.steps.filter(step="external_api_call", status="failed").order_by("attempt")]
    assert [(e["type"], e["message"]) for e in errors] == [
        ("ExternalAPIError", "503 Service Unavailable (call 1 of 'rates')"),
        ("ExternalAPIError", "503 Service Unavailable (call 2 of 'rates')"),
    ]
    assert run.context["__results__"] == {
        "external_api_call": ["ok", {"external": {"key": "rates", "rate": 1.0842, "served_on_call": 3}}],
        "quick_local_task": ["ok", {"local": {"units_in_stock": 25}}],
    }
    assert run.context["rate"] == 1.0842
    assert ExternalEndpoint.objects.get(key="rates").calls == 3


def test_external_api_call_fails_the_run_after_five_attempts(embedded):
    run = run_to_end(embedded, "sync_external_data", {"request_key": "down", "fail_first": 5})

    assert run.status == "failed"
    assert [(a, s) for step, a, s in attempts(run) if step == "external_api_call"] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "failed"),
        (5, "failed"),
    ]
    assert run.error["step"] == "external_api_call"
    assert run.error["parallel"] == "parallel_1"
    assert run.error["reason"]["message"] == "503 Service Unavailable (call 5 of 'down')"


# -- place_order: call_workflow inside parallel branches --------------------------------------


def test_place_order_runs_payment_and_shipping_as_linked_child_runs(embedded, ada):
    placed = order("ORD-13", ada, total_cents=8900)

    run = run_to_end(embedded, "place_order", {"reference": "ORD-13"})

    charge = Charge.objects.get()
    tracking = Shipment.objects.get(order=placed).tracking_number
    payment_ctx = {"amount": 8900, "charge_id": charge.pk, "charge_status": "captured", "receipt": f"R-{charge.pk:06d}"}
    shipping_ctx = {"order": placed.pk, "sku": "KB-01", "status": "scheduled", "tracking_number": tracking}
    base = {"reference": "ORD-13", "order_id": placed.pk, "total": 8900}
    assert run.status == "completed"
    assert run.context == {
        **base,
        "__results__": {
            "payment": ["ok", {**base, "payment": payment_ctx}],
            "shipping": ["ok", {**base, "shipping": shipping_ctx}],
        },
        "paid": True,
        "shipped": True,
    }
    children = {child.ref: child for child in WorkflowRun.objects.filter(parent=run)}
    assert {ref: (c.workflow, c.parent_step, c.status) for ref, c in children.items()} == {
        "payment": ("payment", "payment", "completed"),
        "shipping": ("shipping", "shipping", "completed"),
    }
    assert children["payment"].input == {"amount": 8900}
    assert children["payment"].context == payment_ctx
    assert children["shipping"].context == shipping_ctx
    assert attempts(children["payment"]) == [("capture", 1, "completed"), ("issue_receipt", 1, "completed")]


def test_place_order_completes_with_the_failed_shipping_child_in_its_results(embedded, ada):
    placed = order("ORD-14", ada, sku="MUG-01", total_cents=1200)

    run = run_to_end(embedded, "place_order", {"reference": "ORD-14"})

    assert run.status == "completed"
    assert run.context["__results__"]["shipping"] == ["error", {"step": "check_stock", "reason": "out_of_stock"}]
    assert run.context["paid"] is True
    assert run.context["shipped"] is False
    shipping = WorkflowRun.objects.get(parent=run, ref="shipping")
    assert shipping.status == "failed"
    assert shipping.error == {"step": "check_stock", "reason": "out_of_stock"}
    assert shipping.context == {"order": placed.pk}
    assert WorkflowRun.objects.get(parent=run, ref="payment").status == "completed"


# -- the demo command ------------------------------------------------------------------------


def test_run_examples_exits_non_zero_when_a_run_ends_unexpectedly(monkeypatch):
    from example_project.shop.management.commands import run_examples

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(
        run_examples,
        "examples",
        lambda tag: [Example("notify_user", "unknown account", {"user_id": 0}, COMPLETED)],
    )

    with pytest.raises(CommandError, match=r"1 of 1 runs did not end as expected:\n  notify_user \(unknown account\)"):
        call_command("run_examples", verbosity=0)


def test_run_examples_runs_the_order_processing_examples_as_expected(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["order_processing"])

    out = capsys.readouterr().out
    assert out.count("result: as expected") == 4
    assert "All 4 runs ended as expected." in out
    # The runs whose contexts hold needs_payment_retry and backordered together say why, just
    # before their verdict; the other two have no note.
    sections = {section.splitlines()[0]: section for section in out.split("== order_processing: ")[1:]}
    notes = {label: note_of(section) for label, section in sections.items()}
    assert list(notes.values())[2:] == ["", ""]
    why = "the context holds needs_payment_retry and backordered together, as in the guide's example"
    assert notes["fulfilled"].startswith(why)
    assert (
        "after fulfill_order the run passes through handle_payment_issue and handle_backorder too"
        in (notes["fulfilled"])
    )
    declined = notes["card declined (goto handle_payment_issue)"]
    assert declined.startswith(why)
    assert "the goto to handle_payment_issue only says where to continue: handle_backorder" in declined
    for label in ("fulfilled", "card declined (goto handle_payment_issue)"):
        section = sections[label]
        assert '"backordered": true' in section and '"needs_payment_retry": true' in section
        assert section.index("\nnote: ") < section.index("\nresult: as expected")


def test_run_examples_prints_what_a_step_logged_under_it(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["checkout"])

    sections = capsys.readouterr().out.split("== checkout: ")[1:]
    assert len(sections) == 2
    for section, authorized in zip(sections, (True, False), strict=True):
        lines = section.splitlines()
        (at,) = [n for n, line in enumerate(lines) if line.strip().startswith("parallel_1/payment ")]
        # The record follows its attempt's line, indented under it.
        assert lines[at + 1].startswith(f"    logged INFO {workflows.logger.name}: order ")
        assert ("card authorized, code" if authorized else "card not authorized (card_declined)") in lines[at + 1]


def note_of(section: str) -> str:
    """The note printed in one run's section of the demo's output, unwrapped ("" when none)."""
    lines = section.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("note: ")), None)
    if start is None:
        return ""
    end = next(n for n in range(start, len(lines)) if lines[n].startswith("result: "))
    return " ".join(line.strip() for line in lines[start:end]).removeprefix("note: ")


def test_run_examples_shows_that_each_onboarding_run_executed_in_one_job(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["onboard_user"])

    out = capsys.readouterr().out
    runs = out.count("== onboard_user:")
    assert runs == 2
    # A step, a block of three and a step: the job the run's start sent executed all of it.
    assert out.count("executed by 1 RQ job\n") == runs


# -- book_trip: a saga, whose completed steps are undone when a later one fails -----------------


@pytest.fixture
def rooms() -> None:
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


def rooms_free() -> int:
    return InventoryItem.objects.get(sku=ROOM_SKU).quantity


def compensation_attempts(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return [(row.step, row.attempt, row.status) for row in run.steps.filter(kind="compensation").order_by("id")]


def test_book_trip_reserves_charges_and_confirms_when_the_flight_has_a_seat(embedded, rooms):
    run = run_to_end(embedded, "book_trip", trip("BA117"))

    charge = Charge.objects.get()
    assert (run.status, run.compensation) == ("completed", "")
    assert run.context == {
        **trip("BA117"),
        "rooms_reserved": 2,
        "charge_id": charge.pk,
        "confirmation": "BA117-ADA-1",
        "booked": True,
    }
    assert (charge.amount_cents, charge.status, rooms_free()) == (32000, "captured", ROOMS - 2)
    assert compensation_attempts(run) == []


def test_book_trip_refunds_the_charge_then_releases_the_room_when_the_flight_is_full(embedded, rooms):
    run = run_to_end(embedded, "book_trip", trip(FULL_FLIGHT))

    charge = Charge.objects.get()
    assert (run.status, run.error, run.compensation) == (
        "failed",
        {"step": "confirm_flight", "reason": "flight_full"},
        "completed",
    )
    assert attempts(run) == [
        ("reserve_room", 1, "completed"),
        ("charge_card", 1, "completed"),
        ("confirm_flight", 1, "failed"),
        ("charge_card", 1, "completed"),
        ("reserve_room", 1, "completed"),
    ]
    assert compensation_attempts(run) == [("charge_card", 1, "completed"), ("reserve_room", 1, "completed")]
    undone = {row.step: row.output for row in run.steps.filter(kind="compensation")}
    assert undone == {
        "charge_card": {"charge_status": "refunded"},
        "reserve_room": {"rooms_free": ROOMS, "because": "flight_full"},
    }
    assert (charge.status, rooms_free()) == ("refunded", ROOMS)


def test_book_trip_releases_the_room_even_when_the_refund_is_refused(embedded, rooms):
    run = run_to_end(embedded, "book_trip", trip(FULL_FLIGHT, REFUND_BLOCKED_TOKEN))

    assert (run.status, run.error, run.compensation) == (
        "failed",
        {"step": "confirm_flight", "reason": "flight_full"},
        "failed",
    )
    # The refund follows charge_card's retry policy (two attempts), then the room is released.
    assert compensation_attempts(run) == [
        ("charge_card", 1, "failed"),
        ("charge_card", 2, "failed"),
        ("reserve_room", 1, "completed"),
    ]
    refused = run.steps.filter(kind="compensation", step="charge_card").values_list("error", flat=True)
    assert [(error["type"], error["message"]) for error in refused] == [
        ("RefundRefused", f"the provider refuses refunds to card {REFUND_BLOCKED_TOKEN}")
    ] * 2
    assert (Charge.objects.get().status, rooms_free()) == ("captured", ROOMS)


def test_run_examples_shows_the_compensations_of_each_booking(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["book_trip"])

    out = capsys.readouterr().out
    assert "All 3 runs ended as expected." in out
    sections = out.split("== book_trip: ")[1:]
    assert [section.count("compensation: ") for section in sections] == [0, 1, 1]
    assert "compensation: completed" in sections[1] and "compensation: failed" in sections[2]
    assert "  undo charge_card                     attempt 2  failed" in sections[2]
    assert "  undo reserve_room                    attempt 1  completed" in sections[2]


def test_run_examples_expects_how_the_compensations_went(monkeypatch):
    from example_project.shop.management.commands import run_examples

    monkeypatch.delenv("REDIS_URL", raising=False)

    def refund_expected_to_fail(tag: str) -> list[Example]:
        seed_rooms()
        return [Example("book_trip", "refund refused", trip(FULL_FLIGHT), FAILED, compensation="failed")]

    monkeypatch.setattr(run_examples, "examples", refund_expected_to_fail)

    with pytest.raises(CommandError, match=r"compensation is 'completed', expected 'failed'"):
        call_command("run_examples", verbosity=0)


def test_run_examples_reruns_the_failed_notify_user_run_from_its_block_as_a_fork(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["notify_user"])

    out = capsys.readouterr().out
    assert "All 5 runs ended as expected." in out
    section = out.split("== notify_user: unknown account, rerun from its block with the right account (fork)\n")[1]
    original = WorkflowRun.objects.get(workflow="notify_user", input={"user_id": 0}, forked_from=None)
    fork = WorkflowRun.objects.get(forked_from=original)
    assert section.splitlines()[:3] == [
        f"run {fork.pk}  workflow notify_user  status completed",
        f"forked from run {original.pk} at 'parallel_1'",
        'input: {"user_id": 0}',
    ]
    assert (original.status, fork.status, fork.context["all_sent"]) == ("failed", "completed", True)
