"""The benchmark workflows, registered when Django starts (``benchmarks`` is an installed app).

Every step but the slow branches' is a no-op: the benchmarks measure what the engine costs around
a step, not the step. The slow branches measure whether slow branches run side by side.
"""

from __future__ import annotations

import time
from typing import Any

from durable_django import error, foreach, ok, parallel, step, workflow

from .common import SLOW_BRANCHES, SLOW_SECONDS

# Fan-out sizes with a workflow of their own; the runner accepts only these.
FANOUT_SIZES = (10, 100, 1000, 10000)
SEQUENTIAL_STEPS = 100


def noop(ctx: dict[str, Any]) -> Any:
    """A step that does nothing and adds nothing to the context."""
    return ok()


def sleep(ctx: dict[str, Any]) -> Any:
    """A slow branch: it sleeps, as a step waiting for an external service would."""
    time.sleep(SLOW_SECONDS)
    return ok()


def read_results(ctx: dict[str, Any]) -> Any:
    """The join: read every branch's result, as a real fan-in would."""
    results = ctx["__results__"]
    failed = [name for name, (kind, _) in results.items() if kind != "ok"]
    if failed:
        return error(f"{len(failed)} branches failed")
    return ok({"joined": len(results)})


def fanout_name(size: int) -> str:
    """Name of the workflow with one parallel block of ``size`` no-op branches."""
    return f"bench_fanout_{size}"


for _size in FANOUT_SIZES:
    workflow(
        fanout_name(_size),
        [
            parallel(*(step(f"b{i}", noop) for i in range(_size)), name="fan"),
            step("join", read_results),
        ],
    )

sequential = workflow("bench_sequential", [step(f"s{i}", noop) for i in range(SEQUENTIAL_STEPS)])

# The shape of the README's onboarding example: one step, a parallel block of three, one step.
onboarding = workflow(
    "bench_onboarding",
    [
        step("create_user", noop),
        parallel(step("send_welcome_email", noop), step("provision_workspace", noop), step("setup_billing", noop)),
        step("complete", read_results),
    ],
)

# The smallest workflow a worker can run: what its memory is measured with.
single = workflow("bench_single", [step("only", noop)])

# Slow branches: a block of three branches that each sleep for a second, then a step. With a
# worker process per branch the block takes a second if they run side by side, three if not.
slow = workflow(
    "bench_slow",
    [
        parallel(*(step(f"slow{i}", sleep) for i in range(SLOW_BRANCHES)), name="slow"),
        step("after", read_results),
    ],
)


def read_list(ctx: dict[str, Any]) -> Any:
    """The join of a foreach block: read every item's result."""
    failed = [index for index, (kind, _) in enumerate(ctx["__results__"]) if kind != "ok"]
    if failed:
        return error(f"{len(failed)} items failed")
    return ok({"joined": len(ctx["__results__"])})


def pause(ctx: dict[str, Any]) -> Any:
    """A slow item: it sleeps ``ctx["seconds"]``."""
    time.sleep(ctx["seconds"])
    return ok()


# A foreach over ``n`` no-op items, next to the static blocks above: what a dynamic fan-out costs.
bench_foreach = workflow(
    "bench_foreach",
    [foreach("fan", lambda ctx: list(range(ctx["n"])), noop), step("join", read_list)],
)

# Slow items under a concurrency limit: never more than the limit execute at once.
FOREACH_LIMITS = (2, 10)
for _limit in FOREACH_LIMITS:
    workflow(
        f"bench_foreach_limit_{_limit}",
        [foreach("fan", lambda ctx: [None] * ctx["n"], pause, max_concurrency=_limit), step("join", read_list)],
    )
