"""Workflows of the control-flow integration tests: foreach blocks and branch blocks on real workers.

Each item counts its executions and how many items of its block execute at once in Redis keys
named after the run's ``token`` (see :func:`tests.testapp.workflows.key`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from durable_django import branch, error, foreach, ok, step, workflow

from .workflows import key, redis

Ctx = dict[str, Any]


def _item(ctx: Ctx) -> Any:
    """One item: counted, and measured against the other items executing at the same moment."""
    conn, token = redis(), ctx["token"]
    now = conn.incr(key(token, "executing"))
    try:
        # The highest number of items executing at once, kept with a compare-and-set script.
        conn.eval(
            "if tonumber(redis.call('get', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) end",
            1,
            key(token, "peak"),
            now,
        )
        conn.incr(key(token, "calls", str(ctx["__index__"])))
        time.sleep(ctx.get("seconds", 0))
        return ok({"square": ctx["item"] * ctx["item"], "pid": os.getpid()})
    finally:
        conn.decr(key(token, "executing"))


def _total(ctx: Ctx, results: list[tuple[str, Any]]) -> Any:
    return ok({**ctx, "total": sum(data["square"] for status, data in results if status == "ok")})


workflow(
    "it_foreach",
    [
        step("load", lambda ctx: ok({"numbers": list(range(ctx["count"]))})),
        foreach("squares", "numbers", _item, into=_total),
        step("done", lambda ctx: ok({"done": True})),
    ],
)

workflow(
    "it_foreach_limited",
    [foreach("squares", "numbers", _item, max_concurrency=2, into=_total)],
)

workflow(
    "it_branch",
    [
        branch(
            "route",
            "mode",
            {"fan": [foreach("fan_items", "numbers", _item)], "single": [step("one", lambda ctx: ok({"one": True}))]},
        ),
        step("after", lambda ctx: ok({"after": True})),
    ],
)


# -- it_killed_item: a foreach of 30 items whose ``victim`` item holds its worker until it is killed --


def _held_item(ctx: Ctx) -> Any:
    from .recovery_workflows import effect, wait_for_gate

    execution = effect(ctx, f"item_{ctx['__index__']:02}")
    if ctx["__index__"] == ctx["victim"] and execution == 1 and not wait_for_gate(ctx, "victim_gate"):
        return error("the test never killed the victim's worker")
    return ok({"double": ctx["item"] * 2})


workflow(
    "it_killed_item",
    [
        foreach("items", lambda ctx: list(range(30)), _held_item, max_concurrency=8),
        step("after", lambda ctx: ok({"doubled": [data["double"] for _, data in ctx["__results__"]]})),
    ],
)
