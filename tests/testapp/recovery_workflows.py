"""Workflows of the fault-injection tests: every step body counts its executions in the database.

A step first writes an :class:`~tests.testapp.models.Effect` row, so that a test can tell how many
times each body ran (at least once per recorded result) even after flushing Redis. A step the
test must catch in the middle of its execution waits, on its first execution only, until the test
sets a gate key in Redis (a bounded wait, like every wait of :mod:`tests.testapp.workflows`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from django.db.models import Count

from durable_django import error, ok, parallel, step, workflow

from .models import Effect
from .workflows import STEP_WAIT, key, redis

Ctx = dict[str, Any]
StepFn = Callable[[Ctx], Any]

# A retry that waits in RQ's scheduled registry long enough to be caught there.
SCHEDULED_RETRY = {"max_attempts": 2, "backoff": "constant", "base": 2.0, "jitter": False}
# A retry whose job is sent at once, with the commit of the failed attempt.
IMMEDIATE_RETRY = {"max_attempts": 2, "backoff": "constant", "base": 0, "jitter": False}


def effect(ctx: Ctx, name: str) -> int:
    """Record one execution of step ``name`` of run ``ctx["token"]``; returns how many there have been."""
    Effect.objects.create(token=ctx["token"], step=name, pid=os.getpid())
    return Effect.objects.filter(token=ctx["token"], step=name).count()


def executions(token: str) -> dict[str, int]:
    """How many times each step body of run ``token`` was executed, by step name."""
    counts = Effect.objects.filter(token=token).values("step").annotate(n=Count("id")).values_list("step", "n")
    return dict(counts)


def wait_for_gate(ctx: Ctx, gate: str) -> bool:
    """Wait until the test sets ``gate`` for this run; ``False`` if it did not within ``STEP_WAIT``."""
    conn, wanted = redis(), key(ctx["token"], gate)
    deadline = time.monotonic() + STEP_WAIT
    while not conn.exists(wanted):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def recorded(name: str, pause: float = 0.0) -> StepFn:
    """A step that records its execution, takes ``pause`` seconds and succeeds."""

    def run(ctx: Ctx) -> tuple[str, Ctx]:
        effect(ctx, name)
        time.sleep(pause)
        return ok({name: True})

    return run


def held(name: str, gate: str) -> StepFn:
    """A step whose first execution waits for the test to set ``gate``; later ones go straight through."""

    def run(ctx: Ctx) -> tuple[str, Any]:
        execution = effect(ctx, name)
        if execution == 1 and not wait_for_gate(ctx, gate):
            return error(f"the test never set {gate!r}")
        return ok({name: execution})

    return run


def fails_once(name: str) -> StepFn:
    """A step whose first execution fails; the retry succeeds."""

    def run(ctx: Ctx) -> tuple[str, Any]:
        execution = effect(ctx, name)
        if execution == 1:
            return error({"execution": execution})
        return ok({name: execution})

    return run


# -- it_killed_branch: a 50-branch block whose ``victim`` branch is held until its worker is killed --

FAN_WIDTH = 50


def _fan_branch(index: int) -> StepFn:
    def run(ctx: Ctx) -> tuple[str, Any]:
        execution = effect(ctx, f"b_{index:02}")
        if index == ctx["victim"] and execution == 1 and not wait_for_gate(ctx, "victim_gate"):
            return error("the test never killed the victim's worker")
        return ok({"index": index})

    return run


def _index_sum(ctx: Ctx) -> tuple[str, Ctx]:
    effect(ctx, "after")
    return ok({"index_sum": sum(data["index"] for _, data in ctx["__results__"].values())})


killed_branch = workflow(
    "it_killed_branch",
    [
        step("before", recorded("before")),
        parallel(*(step(f"b_{i:02}", _fan_branch(i)) for i in range(FAN_WIDTH)), name="fan"),
        step("after", _index_sum),
    ],
)


# -- it_killed_step: a sequential step held until its worker is killed ------------------------------

killed_step = workflow(
    "it_killed_step",
    [
        step("first", recorded("first")),
        step("slow", held("slow", "slow_gate")),
        step("last", recorded("last")),
    ],
)


# -- it_killed_join: a join whose into is held until its worker is killed ---------------------------


def _held_into(ctx: Ctx, results: dict[str, tuple[str, Any]]) -> tuple[str, Any]:
    execution = effect(ctx, "into")
    if execution == 1 and not wait_for_gate(ctx, "into_gate"):
        return error("the test never set 'into_gate'")
    return ok({**ctx, "into_executions": execution, "joined": sorted(results)})


killed_join = workflow(
    "it_killed_join",
    [
        parallel(*(step(f"j_{i}", recorded(f"j_{i}")) for i in range(3)), name="joined", into=_held_into),
        step("after", recorded("after")),
    ],
)


# -- it_flushed: runs in every state a Redis flush can catch (queued, executing, scheduled) --------

flushed = workflow(
    "it_flushed",
    [
        step("start", recorded("start")),
        parallel(
            *(step(f"p_{i}", recorded(f"p_{i}", pause=0.2)) for i in range(4)),
            step("p_retry", fails_once("p_retry"), retry=SCHEDULED_RETRY),
            name="block",
        ),
        step("s_retry", fails_once("s_retry"), retry=SCHEDULED_RETRY),
        step("finish", recorded("finish")),
    ],
)


# -- it_crash_points: each kind of job a worker sends (a step's retry, a block's drain job, a
# branch's retry, a join), each sent exactly once per run: the branch runs on another queue than its
# workflow, so that its drain job and its join job cross queues -----------------------------------

crash_points = workflow(
    "it_crash_points",
    [
        step("begin", fails_once("begin"), retry=IMMEDIATE_RETRY),
        parallel(step("point", fails_once("point"), retry=IMMEDIATE_RETRY, queue="priority"), name="points"),
        step("end", recorded("end")),
    ],
)


# -- it_wide: a 100-branch block, started many times at once ----------------------------------------

WIDE_WIDTH = 100


def _wide_branch(index: int) -> StepFn:
    def run(ctx: Ctx) -> tuple[str, Ctx]:
        return ok({"i": index})

    return run


def _wide_total(ctx: Ctx) -> tuple[str, Ctx]:
    effect(ctx, "after")
    return ok({"total": sum(data["i"] for _, data in ctx["__results__"].values())})


wide = workflow(
    "it_wide",
    [
        parallel(*(step(f"w_{i:03}", _wide_branch(i)) for i in range(WIDE_WIDTH)), name="wide"),
        step("after", _wide_total),
    ],
)


# -- it_slow_block: a block that takes longer than a lease to run through ----------------------------

SLOW_WIDTH = 24

slow_block = workflow(
    "it_slow_block",
    [
        parallel(*(step(f"s_{i:02}", recorded(f"s_{i:02}", pause=0.5)) for i in range(SLOW_WIDTH)), name="slow"),
        step("after", recorded("after")),
    ],
)


# -- it_retry_wave: a block whose every branch fails once: a wave of retry jobs at once ------------

WAVE_WIDTH = 100

retry_wave = workflow(
    "it_retry_wave",
    [
        parallel(
            *(step(f"r_{i:03}", fails_once(f"r_{i:03}"), retry=IMMEDIATE_RETRY) for i in range(WAVE_WIDTH)),
            name="wave",
        ),
        step("after", recorded("after")),
    ],
)


# -- it_db_cut: branches and a step held while the test cuts every database connection -------------

db_cut = workflow(
    "it_db_cut",
    [
        step("first", recorded("first")),
        parallel(
            step("g_0", held("g_0", "branch_gate")),
            step("g_1", held("g_1", "branch_gate")),
            step("quick", recorded("quick")),
            name="cut",
        ),
        step("held_step", held("held_step", "step_gate")),
        step("last", recorded("last")),
    ],
)


# -- it_poison: a step that kills the process executing it, every time ------------------------------


def _kills_its_process(ctx: Ctx) -> tuple[str, Ctx]:
    effect(ctx, "poison")
    # Like a segfault or the OOM killer: the process dies on the spot, whatever the step's retry policy.
    os._exit(1)


poison = workflow(
    "it_poison",
    [
        step("poison", _kills_its_process, retry={"max_attempts": 5, "backoff": "constant", "base": 0}),
        step("never", recorded("never")),
    ],
)


# -- it_killed_after_join: the step after a block, executed by the job that joined it, held until
# its worker is killed --------------------------------------------------------------------------

killed_after_join = workflow(
    "it_killed_after_join",
    [
        parallel(*(step(f"k_{i}", recorded(f"k_{i}")) for i in range(3)), name="block"),
        step("after", held("after", "after_gate")),
    ],
)


# -- it_handover: a branch that overruns its batch, so that the branches after it are handed over ----

handover = workflow(
    "it_handover",
    [
        parallel(
            step("h_0", recorded("h_0", pause=1.0)),
            step("h_1", recorded("h_1")),
            step("h_2", recorded("h_2")),
            name="handed",
        ),
        step("after", recorded("after")),
    ],
)


# -- it_dequeued: a run whose job a worker took from its queue and died before starting --------------

dequeued = workflow(
    "it_dequeued",
    [
        step("first", recorded("first")),
        step("second", recorded("second")),
    ],
)


# -- it_redis_restart: short steps and a block, started many times while Redis restarts ------------

RESTART_WIDTH = 4

redis_restart = workflow(
    "it_redis_restart",
    [
        step("first", recorded("first", pause=0.01)),
        step("second", recorded("second", pause=0.01)),
        parallel(*(step(f"r_{i}", recorded(f"r_{i}", pause=0.01)) for i in range(RESTART_WIDTH)), name="block"),
        step("last", recorded("last")),
    ],
)


# -- it_hung_branch: a 500-branch block whose ``hung`` branch hangs until the test releases it -----

HUNG_WIDTH = 500


def _maybe_hung(index: int) -> StepFn:
    def run(ctx: Ctx) -> tuple[str, Any]:
        execution = effect(ctx, f"h_{index:03}")
        if index == ctx["hung"] and execution == 1 and not wait_for_gate(ctx, "hung_gate"):
            return error("the test never released the hung branch")
        return ok({"index": index})

    return run


hung_branch = workflow(
    "it_hung_branch",
    [
        parallel(
            *(step(f"h_{i:03}", _maybe_hung(i)) for i in range(HUNG_WIDTH)),
            name="wide",
            # Every branch counts, whatever became of the hung one.
            on_error="complete_all",
        ),
        step("after", recorded("after")),
    ],
)


# -- it_cancel_wide: a block of many short branches, cancelled while workers execute it ----------

CANCEL_WIDTH = 300

cancel_wide = workflow(
    "it_cancel_wide",
    [
        parallel(*(step(f"c_{i:03}", recorded(f"c_{i:03}", pause=0.02)) for i in range(CANCEL_WIDTH)), name="wide"),
        step("after", recorded("after")),
    ],
)
