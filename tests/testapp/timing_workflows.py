"""Workflows of the delayed start and workflow timeout integration tests.

Every step body counts its executions (:func:`tests.testapp.recovery_workflows.effect`), before
and after its pause, so a test can tell that a step was still executing when its run timed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from durable_django import ok, parallel, step, workflow

from .recovery_workflows import effect

Ctx = dict[str, Any]
# Long enough after the workflow's timeout for the test to see the run failed while the step sleeps.
SLOW = 8.0
TIMEOUT = 2.0


def timed(name: str, pause: float = 0.0) -> Callable[[Ctx], Any]:
    """A step that records its start, takes ``pause`` seconds (no durable sleep) and records its end."""

    def run(ctx: Ctx) -> Any:
        effect(ctx, f"{name}:started")
        time.sleep(pause)
        effect(ctx, f"{name}:finished")
        return ok({name: True})

    return run


delayed = workflow("it_timing_delayed", [step("only", timed("only"))])

slow_step = workflow(
    "it_timing_slow_step",
    [step("slow", timed("slow", SLOW)), step("after", timed("after"))],
    timeout=TIMEOUT,
)

slow_block = workflow(
    "it_timing_slow_block",
    [
        parallel(
            step("first", timed("first", SLOW)),
            step("second", timed("second")),
            step("third", timed("third")),
            name="block",
        ),
        step("after", timed("after")),
    ],
    timeout=TIMEOUT,
)
