"""Workflows of the compensation tests on real workers: every step and compensation body records
its executions in the database (see :mod:`tests.testapp.recovery_workflows`)."""

from __future__ import annotations

from typing import Any

from durable_django import error, ok, parallel, step, workflow

from .recovery_workflows import IMMEDIATE_RETRY, effect, held, recorded

Ctx = dict[str, Any]


def undo(name: str) -> Any:
    """A compensation that records its execution and the context it was called with."""

    def run(ctx: Ctx) -> tuple[str, Ctx]:
        effect(ctx, name)
        return ok({"undone": name, "error_step": ctx["__error__"]["step"]})

    return run


def undo_fails(name: str) -> Any:
    """A compensation that records its execution and fails every time."""

    def run(ctx: Ctx) -> tuple[str, Any]:
        effect(ctx, name)
        return error(f"{name} is refused")

    return run


def confirm_fails(ctx: Ctx) -> tuple[str, Any]:
    effect(ctx, "confirm")
    return error({"code": "airline_down"})


# -- it_saga: a step and a block's branches with compensations, one of which keeps failing -----------

saga = workflow(
    "it_saga",
    [
        step("reserve", recorded("reserve"), compensate=undo("release")),
        parallel(
            step("hotel", recorded("hotel"), compensate=undo("cancel_hotel")),
            step("car", recorded("car"), compensate=undo_fails("cancel_car"), retry=IMMEDIATE_RETRY),
            name="book",
        ),
        step("confirm", confirm_fails),
    ],
)


# -- it_saga_killed: a compensation held until the test kills its worker ------------------------------

saga_killed = workflow(
    "it_saga_killed",
    [
        step("reserve", recorded("reserve"), compensate=undo("release")),
        step("charge", recorded("charge"), compensate=held("refund", "refund_gate")),
        step("confirm", confirm_fails),
    ],
)
