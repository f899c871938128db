"""Workflows of the waits' integration tests: sleeps, events, inputs and waits in branches.

Every step body counts its executions (:func:`tests.testapp.recovery_workflows.effect`), so a
test can tell that a step that returned a wait never ran again for it.
"""

from __future__ import annotations

from typing import Any

from durable_django import (
    ok,
    parallel,
    sleep,
    step,
    wait_for_event,
    wait_for_input,
    workflow,
)

from .recovery_workflows import effect

Ctx = dict[str, Any]


def begin(ctx: Ctx) -> Any:
    effect(ctx, "begin")
    return ok({"began": True})


def nap(ctx: Ctx) -> Any:
    effect(ctx, "nap")
    return sleep(ctx.get("seconds", 1.0), data={"napped": True})


def await_go(ctx: Ctx) -> Any:
    effect(ctx, "await_go")
    options: dict[str, Any] = {}
    if "timeout" in ctx:
        options["timeout"] = ctx["timeout"]
    if "timeout_value" in ctx:
        options["timeout_value"] = ctx["timeout_value"]
    return wait_for_event("go", **options)


def await_stop(ctx: Ctx) -> Any:
    effect(ctx, "await_stop")
    return wait_for_event("stop")


def ask(ctx: Ctx) -> Any:
    effect(ctx, "ask")
    return wait_for_input("approval", prompt="Go on?")


def end(ctx: Ctx) -> Any:
    effect(ctx, "end")
    return ok({"ended": True})


def quick(ctx: Ctx) -> Any:
    effect(ctx, "quick")
    return ok({"quick": True})


def branch_go(ctx: Ctx) -> Any:
    effect(ctx, "branch_go")
    return wait_for_event("go", data={"branch": "go"})


def branch_nap(ctx: Ctx) -> Any:
    effect(ctx, "branch_nap")
    return sleep(ctx.get("seconds", 1.0), data={"branch": "nap"})


def branch_now(ctx: Ctx) -> Any:
    effect(ctx, "branch_now")
    return ok({"branch": "now"})


workflow("it_sleep", [step("begin", begin), step("nap", nap), step("end", end)])
workflow("it_event", [step("await_go", await_go), step("end", end)])
workflow("it_event_twice", [step("await_go", await_go), step("await_stop", await_stop), step("end", end)])
workflow("it_input", [step("ask", ask), step("end", end)])
workflow("it_quick", [step("quick", quick)])
workflow(
    "it_branch_waits",
    [
        parallel(
            step("branch_go", branch_go), step("branch_nap", branch_nap), step("branch_now", branch_now), name="fan"
        ),
        step("end", end),
    ],
)
workflow("it_branch_nap", [parallel(step("branch_nap", branch_nap), name="fan"), step("end", end)])
