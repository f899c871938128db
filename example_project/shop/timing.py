"""A run that starts later, and a workflow with a timeout.

``cart_reminder`` is started with a delay (``start_workflow(..., delay=...)``): the run is saved
``pending`` at once and holds no worker until its time comes, then sends the reminder.
``supplier_quote`` asks a supplier for a quote and waits for the answer as an event, but the whole
run may take only ``QUOTE_TIMEOUT`` seconds: a supplier that never answers fails the run with
``{"type": "workflow_timeout"}``, and its wait is cancelled. (Seconds, so that the demo shows it;
a real shop would give its suppliers a day.)
"""

from __future__ import annotations

from typing import Any

from durable_django import ok, start_workflow, step, wait_for_event, workflow
from durable_django.models import WorkflowRun

from .models import Account
from .services import mailer

QUOTE_TIMEOUT = 2.0
QUOTE_LATE = f"the run did not finish within its workflow's timeout of {QUOTE_TIMEOUT:g} s"
# How long after an abandoned cart the reminder goes out: a few hours in a real shop.
REMINDER_DELAY = 1.0


def send_reminder(ctx: dict[str, Any]) -> Any:
    account = Account.objects.get(pk=ctx["user_id"])
    mailer.deliver(account, "You left something in your cart", f"Hello {account.name}, your cart is waiting.")
    return ok({"reminded": True})


cart_reminder = workflow("cart_reminder", [step("send_reminder", send_reminder)])


def start_reminder(input: dict[str, Any]) -> WorkflowRun:
    """Start a cart reminder ``REMINDER_DELAY`` seconds from now."""
    return start_workflow("cart_reminder", input, delay=REMINDER_DELAY)


def request_quote(ctx: dict[str, Any]) -> Any:
    # The supplier answers with the event supplier.quoted (its webhook), or not at all.
    return wait_for_event("supplier.quoted")


def record_quote(ctx: dict[str, Any]) -> Any:
    return ok({"quoted_cents": ctx["supplier.quoted"]["price_cents"]})


supplier_quote = workflow(
    "supplier_quote",
    [step("request_quote", request_quote), step("record_quote", record_quote)],
    timeout=QUOTE_TIMEOUT,
)
