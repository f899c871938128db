"""Workflows of the API's and the commands' tests of waits: each stops at one wait, then records what it got.

Every workflow ends with a step that copies what its wait put in the context, so that a test can
tell from the run's context that it moved on, and with what.
"""

from __future__ import annotations

from typing import Any

from durable_django import ok, parallel, step, workflow
from durable_django.waits import sleep, wait_for_any, wait_for_event, wait_for_input

Ctx = dict[str, Any]

# A permission that exists in every project using durable_django, other than provide_input.
RESTRICTED_PERMISSION = "durable_django.delete_workflowrun"


approval = workflow(
    "api_wait_approval",
    [
        step("ask", lambda ctx: wait_for_input("approve", prompt="Refund 12 EUR?", data={"asked": True})),
        step("after", lambda ctx: ok({"approved": ctx["approve"]["approved"]})),
    ],
)

restricted = workflow(
    "api_wait_restricted",
    [
        step("ask", lambda ctx: wait_for_input("refund", prompt="Refund?", permission=RESTRICTED_PERMISSION)),
        step("after", lambda ctx: ok({"refunded": ctx["refund"]["approved"]})),
    ],
)

form = workflow(
    "api_wait_form",
    [
        step(
            "ask",
            lambda ctx: wait_for_input(
                "details",
                kind="form",
                prompt="How much?",
                fields={
                    "amount": {"type": "integer", "required": True, "label": "Amount"},
                    "note": {"type": "string", "required": False},
                },
            ),
        ),
        step("after", lambda ctx: ok({"amount": ctx["details"]["amount"]})),
    ],
)

event = workflow(
    "api_wait_event",
    [
        step("wait", lambda ctx: wait_for_event("payment.settled")),
        step("after", lambda ctx: ok({"paid": ctx["payment.settled"]})),
    ],
)

any_event = workflow(
    "api_wait_any",
    [
        step("wait", lambda ctx: wait_for_any(["shipped", "lost"])),
        step("after", lambda ctx: ok({"outcome": ctx["__event__"]["event"]})),
    ],
)

sleeping = workflow(
    "api_wait_sleep",
    [
        step("nap", lambda ctx: sleep(3600)),
        step("after", lambda ctx: ok({"woke": True})),
    ],
)

branch = workflow(
    "api_wait_branch",
    [
        parallel(
            step("review", lambda ctx: wait_for_input("review", prompt="Looks right?")),
            step("notify", lambda ctx: ok({"notified": True})),
            name="checks",
        ),
        step("after", lambda ctx: ok({"done": True})),
    ],
)
