"""The example project's delayed start and workflow timeout (``shop.timing``) and their demo."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from durable_django import send_event
from durable_django.models import Wait
from durable_django.testing import EmbeddedQueue
from example_project.shop.models import SentMessage
from example_project.shop.seed import customer
from example_project.shop.timing import QUOTE_LATE, QUOTE_TIMEOUT, start_reminder, supplier_quote

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_cart_reminder_is_pending_until_its_delay_has_passed_then_sent(embedded: EmbeddedQueue) -> None:
    ada = customer("ada@example.com", "Ada Lovelace")
    run = start_reminder({"user_id": ada.pk})
    embedded.run_commit_hooks()
    embedded.run_queued()
    run.refresh_from_db()
    assert (run.status, embedded.pending_jobs(), SentMessage.objects.count()) == ("pending", 0, 0)
    embedded.run_until_idle(timeout=30)
    run.refresh_from_db()
    assert (run.status, run.context) == ("completed", {"user_id": ada.pk, "reminded": True})
    assert run.run_at is not None and run.started_at is not None and run.started_at >= run.run_at
    assert list(SentMessage.objects.values_list("recipient", "subject")) == [
        ("ada@example.com", "You left something in your cart")
    ]


def test_a_supplier_that_answers_in_time_gets_its_quote_recorded(embedded: EmbeddedQueue) -> None:
    run = supplier_quote.start({"item": "KB-01"})
    embedded.run_until_idle()
    send_event(run, "supplier.quoted", {"price_cents": 4100})
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context["quoted_cents"]) == ("completed", 4100)


def test_a_supplier_that_never_answers_fails_the_run_at_the_workflow_timeout(embedded: EmbeddedQueue) -> None:
    run = supplier_quote.start({"item": "KB-01"})
    embedded.run_until_idle()
    run.refresh_from_db()
    assert run.status == "waiting"
    # Its timeout job is scheduled for the deadline: run it once it is due.
    embedded.run_until_idle(timeout=30, include_waits=True)
    run.refresh_from_db()
    assert (run.status, run.error) == (
        "failed",
        {
            "step": "request_quote",
            "reason": {"type": "workflow_timeout", "timeout": QUOTE_TIMEOUT, "message": QUOTE_LATE},
        },
    )
    assert list(Wait.objects.filter(run=run).values_list("name", "status")) == [("supplier.quoted", "cancelled")]


def test_run_examples_shows_the_delayed_reminder_and_the_timed_out_quote(monkeypatch, capsys) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    call_command("run_examples", only=["cart_reminder", "supplier_quote"])
    out = capsys.readouterr().out
    assert "== cart_reminder: started one second later (delay)" in out
    assert "== supplier_quote: the supplier never answers (workflow timeout)" in out
    assert '"type": "workflow_timeout"' in out
    assert "All 2 runs ended as expected." in out
