"""Workflows that wait, for the admin's tests and screenshots, driven by the embedded queue."""

from __future__ import annotations

from typing import Any

from durable_django import ok, parallel, step, workflow
from durable_django.waits import sleep, wait_for_event, wait_for_input

Ctx = dict[str, Any]

REFUND_PROMPT = "Refund {amount} EUR to {customer}?"


def _ask(ctx: Ctx) -> Any:
    """The input the run's input describes: ``{"kind": ..., "choices"|"fields": ..., "permission": ...}``."""
    options = {key: ctx[key] for key in ("choices", "fields", "permission", "timeout") if ctx.get(key) is not None}
    return wait_for_input(
        ctx.get("name", "answer"), kind=ctx.get("kind", "approval"), prompt=ctx.get("prompt", ""), **options
    )


admin_ask = workflow(
    "it_admin_ask",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        step("ask", _ask),
        step("done", lambda ctx: ok({"done": True})),
    ],
)


def _approve_refund(ctx: Ctx) -> Any:
    prompt = REFUND_PROMPT.format(amount=ctx["amount"], customer=ctx.get("customer", "the customer"))
    return wait_for_input("refund_ok", kind="approval", prompt=prompt, timeout=3 * 86400)


def _pay(ctx: Ctx) -> Any:
    return ok({"paid": ctx["amount"] if ctx["refund_ok"]["approved"] else 0})


admin_refund = workflow(
    "it_admin_refund",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        step("approve", _approve_refund),
        step("pay", _pay),
    ],
)


admin_notify = workflow(
    "it_admin_notify",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        parallel(
            step("mail", lambda ctx: wait_for_event("mail_sent", timeout=600, timeout_value={"sent": False})),
            step("pause", lambda ctx: sleep(ctx.get("pause", 0.05))),
            name="notify",
        ),
        step("wait_paid", lambda ctx: wait_for_event("paid", returns="payment")),
        step("done", lambda ctx: ok({"done": True})),
    ],
)
