"""Workflows the integration tests run on real rqworker processes (which autodiscover this module)."""

from __future__ import annotations

import os
import time

from durable_django import ok, parallel, step, workflow


def _branch(index: int):
    def run(ctx: dict) -> tuple:
        # Long enough that several worker processes share the block.
        time.sleep(ctx.get("branch_sleep", 0.05))
        return ok({"index": index, "pid": os.getpid()})

    return run


fan_out = workflow(
    "it_fan_out",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        parallel(*(step(f"branch_{i}", _branch(i)) for i in range(12)), on_error="complete_all"),
        step("collect", lambda ctx: ok({"collected": sorted(ctx["__results__"])})),
    ],
)
