"""The example shop's control flow: order_fulfilment charges each line (foreach), ships by kind
(branch) and leaves its audit trail to a child run it does not wait for (start_child)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from durable_django import start_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from example_project.shop.models import Account, AuditEntry, Charge, Shipment
from example_project.shop.seed import UNKNOWN_SKU, customer, order, seed_stock

pytestmark = pytest.mark.django_db(transaction=True)

LINES = [
    {"sku": "KB-01", "quantity": 1, "unit_cents": 8900},
    {"sku": "KB-01", "quantity": 2, "unit_cents": 8900},
    {"sku": "MUG-01", "quantity": 4, "unit_cents": 1200},
]


@pytest.fixture
def margaret() -> Account:
    seed_stock()
    return customer("margaret@example.com", "Margaret Hamilton")


def fulfil(queue: EmbeddedQueue, account: Account, shipping: str, lines: list[dict[str, Any]] = LINES) -> WorkflowRun:
    placed = order(f"cf-{shipping}-{len(lines)}", account)
    run = start_workflow("order_fulfilment", {"order_id": placed.pk, "lines": lines, "shipping": shipping})
    queue.run_until_idle(timeout=30)
    run.refresh_from_db()
    return run


def test_express_charges_every_line_books_a_courier_and_the_audit_child_writes_its_entry(embedded, margaret):
    run = fulfil(embedded, margaret, "express")
    assert run.status == "completed"
    assert (run.context["charged_cents"], run.context["lines_charged"], run.context["carrier"]) == (
        8900 + 17800 + 4800,
        3,
        "courier",
    )
    assert sorted(Charge.objects.values_list("amount_cents", flat=True)) == [4800, 8900, 17800]
    group = ParallelGroup.objects.get(run=run)
    assert (group.kind, group.items, group.status) == ("foreach", LINES, "completed")
    assert [row[1]["amount_cents"] for row in group.results] == [8900, 17800, 4800]
    assert StepResult.objects.get(run=run, kind="branch").output == {
        "case": "express",
        "default": False,
        "value": "express",
    }
    assert Shipment.objects.get().carrier == "courier"
    child = WorkflowRun.objects.get(parent=run)
    assert (child.workflow, child.detached, child.status, child.ref) == ("audit_trail", True, "completed", "fulfilled")
    assert str(child.pk) == run.context["audit_run"]
    entry = AuditEntry.objects.get()
    assert (entry.event, entry.detail) == ("fulfilled", {"charged_cents": 31500, "shipping": "express"})


def test_pickup_is_an_empty_case_and_no_shipment_is_made(embedded, margaret):
    run = fulfil(embedded, margaret, "pickup")
    assert run.status == "completed"
    assert "tracking_number" not in run.context
    assert not Shipment.objects.exists()
    assert [row.step for row in run.steps.filter(group__isnull=True).order_by("id")] == ["ship", "record_fulfilment"]


def test_an_unknown_product_fails_the_run_naming_the_line_after_its_retries(embedded, margaret):
    lines = [LINES[0], {"sku": UNKNOWN_SKU, "quantity": 1, "unit_cents": 500}]
    run = fulfil(embedded, margaret, "standard", lines)
    assert run.status == "failed"
    assert run.error == {"step": "charge_lines", "reason": {"type": "lines_not_charged", "lines": [1]}}
    assert list(run.steps.filter(item_index=1).values_list("attempt", "status")) == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert not WorkflowRun.objects.filter(parent=run).exists()


def test_a_shipping_kind_without_a_case_fails_the_run_with_the_value(embedded, margaret):
    run = fulfil(embedded, margaret, "drone")
    assert run.status == "failed"
    assert run.error == {"step": "ship", "reason": {"type": "no_branch_matched", "value": "drone"}}


def test_run_examples_runs_the_control_flow_examples_as_expected(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)

    call_command("run_examples", only=["order_fulfilment"])

    out = capsys.readouterr().out
    assert "All 5 runs ended as expected." in out
    assert "charge_lines[2]" in out
    assert "ship -> case 'express'" in out
    assert "child run of step 'record_fulfilment', ref 'fulfilled' (started with start_child, not waited for):" in out
