"""Workflows the integration tests run on real rqworker processes (which autodiscover this module).

Steps that must coordinate across processes (counting their executions, waiting for a sibling,
waiting for the test to open a gate) do it through keys of the Redis database the workers use,
named after the run's ``token`` input (see :func:`key`). Every wait is bounded, so a broken
engine makes a test fail instead of hanging a worker forever.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import django_rq
from redis import Redis

from durable_django import call_workflow, error, ok, parallel, step, workflow

# Upper bound of every wait inside a step; well below the tests' own timeouts.
STEP_WAIT = 30.0

Ctx = dict[str, Any]


def redis() -> Redis:
    """The Redis database of the ``default`` queue, shared by the tests and the workers."""
    return django_rq.get_connection("default")


def key(token: str, *parts: str) -> str:
    """The Redis key a test and the steps of its run ``token`` share."""
    return ":".join(("durable_it", token, *parts))


def calls(token: str, name: str) -> int:
    """How many times the step (or branch) ``name`` of run ``token`` was executed."""
    return int(redis().get(key(token, "calls", name)) or 0)


def _count(ctx: Ctx, name: str) -> int:
    """Record one execution of ``name``; returns how many there have been, this one included."""
    return int(redis().incr(key(ctx["token"], "calls", name)))


def _wait_until(condition: Callable[[], bool], timeout: float = STEP_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _wait_for_key(ctx: Ctx, name: str) -> bool:
    """Wait until the test (or a sibling) sets ``name`` for this run."""
    conn, wanted = redis(), key(ctx["token"], name)
    return _wait_until(lambda: bool(conn.exists(wanted)))


# -- it_fan_out: one block of 12 branches shared by several worker processes ---------------------


def worker_pid() -> int:
    """The pid of the worker executing this step: this process, or its parent when this is a work
    horse that rq's forking worker started for the job."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
            parent = cmdline.read().split(b"\0")
    except OSError:
        return os.getpid()
    return os.getppid() if any(arg in (b"rqworker", b"durable_worker") for arg in parent) else os.getpid()


def _rendezvous(ctx: Ctx) -> None:
    """Check in this worker process, then wait until ``min_workers`` distinct ones have checked in.

    A branch holds its worker until another worker takes a branch too, so the block provably runs
    on several processes at once. A timed-out wait marks the rendezvous as given up, so that the
    remaining branches do not each wait again (the test then fails on the recorded worker pids).
    """
    conn = redis()
    members, gave_up = key(ctx["token"], "rendezvous"), key(ctx["token"], "rendezvous_gave_up")
    conn.sadd(members, worker_pid())
    wanted = ctx.get("min_workers", 1)
    if not _wait_until(lambda: conn.scard(members) >= wanted or bool(conn.exists(gave_up))):
        conn.set(gave_up, 1)


def _fan_out_branch(index: int) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> tuple[str, Ctx]:
        _count(ctx, f"branch_{index}")
        _rendezvous(ctx)
        return ok({"index": index, "pid": os.getpid(), "worker_pid": worker_pid()})

    return run


def _collect(ctx: Ctx) -> tuple[str, Ctx]:
    results = ctx["__results__"]
    return ok({"collected": sorted(results), "index_sum": sum(data["index"] for _, data in results.values())})


fan_out = workflow(
    "it_fan_out",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        parallel(*(step(f"branch_{i}", _fan_out_branch(i)) for i in range(12)), on_error="complete_all"),
        step("collect", _collect),
    ],
)


# -- it_many: a small block, started many times at once -----------------------------------------


def _part(index: int) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> tuple[str, Ctx]:
        return ok({"value": ctx["n"] * 100 + index})

    return run


many = workflow(
    "it_many",
    [
        step("begin", lambda ctx: ok({"begun": ctx["n"]})),
        parallel(*(step(f"part_{i}", _part(i)) for i in range(10)), name="parts"),
        step("total", lambda ctx: ok({"total": sum(data["value"] for _, data in ctx["__results__"].values())})),
    ],
)


# -- it_retry: a step and a branch that fail twice, then succeed --------------------------------

RETRY = {"max_attempts": 3, "backoff": "exponential", "base": 0.2, "jitter": False}


def _flaky(ctx: Ctx) -> tuple[str, Ctx]:
    attempt = _count(ctx, "flaky")
    if attempt < 3:
        raise RuntimeError(f"flaky failure {attempt}")
    return ok({"flaky_attempts": attempt})


def _flaky_branch(ctx: Ctx) -> tuple[str, Any]:
    attempt = _count(ctx, "flaky_branch")
    if attempt < 3:
        return error({"attempt": attempt})
    return ok({"branch_attempts": attempt})


retrying = workflow(
    "it_retry",
    [
        step("flaky", _flaky, retry=RETRY),
        parallel(
            step("flaky_branch", _flaky_branch, retry=RETRY),
            step("steady", lambda ctx: ok({"steady": True})),
            name="retry_block",
        ),
        step("finish", lambda ctx: ok({"finished": True})),
    ],
)


# -- it_fail_fast: one branch fails while its sibling is still running --------------------------


def _slow(ctx: Ctx) -> tuple[str, Any]:
    redis().set(key(ctx["token"], "slow_started"), 1)
    if not _wait_for_key(ctx, "release_slow"):
        return error("the test never released the slow branch")
    return ok({"slow": "done"})


def _boom(ctx: Ctx) -> tuple[str, Any]:
    # Fail only once the sibling is running, so that its result arrives after the run failed.
    if not _wait_for_key(ctx, "slow_started"):
        return error("the slow branch never started")
    return error({"code": "boom"})


def _after(ctx: Ctx) -> tuple[str, Ctx]:
    return ok({"after_calls": _count(ctx, "after")})


fail_fast = workflow(
    "it_fail_fast",
    [
        parallel(step("slow", _slow), step("boom", _boom), name="race"),
        step("after", _after),
    ],
)


# -- it_parent / it_child: child workflows called from parallel branches -------------------------


def _child_sum(ctx: Ctx, results: dict[str, tuple[str, Any]]) -> tuple[str, Ctx]:
    return ok({**ctx, "sum": results["plus_one"][1]["value"] + results["plus_two"][1]["value"]})


child = workflow(
    "it_child",
    [
        step("double", lambda ctx: ok({"doubled": ctx["n"] * 2})),
        parallel(
            step("plus_one", lambda ctx: ok({"value": ctx["doubled"] + 1})),
            step("plus_two", lambda ctx: ok({"value": ctx["doubled"] + 2})),
            into=_child_sum,
        ),
    ],
)


def _call_child(ref: str, n: int) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> tuple[str, Any]:
        _count(ctx, f"call_{ref}")
        status, result = call_workflow("it_child", {"n": n}, ref=ref)
        if status != "ok":
            return error(result)
        return ok({"sum": result["sum"]})

    return run


parent = workflow(
    "it_parent",
    [
        parallel(
            *(step(f"call_{ref}", _call_child(ref, n)) for ref, n in (("a", 1), ("b", 2), ("c", 3))), name="calls"
        ),
        step(
            "grand_total", lambda ctx: ok({"grand_total": sum(data["sum"] for _, data in ctx["__results__"].values())})
        ),
    ],
)


# -- it_duplicates: branches held at a gate while the test delivers copies of their jobs ---------


def _gated(index: int) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> tuple[str, Any]:
        _count(ctx, f"gated_{index}")
        if not _wait_for_key(ctx, "gate"):
            return error("the test never opened the gate")
        return ok({"index": index})

    return run


duplicates = workflow(
    "it_duplicates",
    [
        parallel(*(step(f"gated_{i}", _gated(i)) for i in range(3)), name="gated"),
        step("after", _after),
    ],
)


# -- it_repairable: a branch that fails until the test repairs it (operator retry) ----------------


def _until_repaired(ctx: Ctx) -> tuple[str, Any]:
    attempt = _count(ctx, "needs_repair")
    if not redis().exists(key(ctx["token"], "repaired")):
        return error({"attempt": attempt, "repaired": False})
    return ok({"repaired_at_attempt": attempt})


def _steady(ctx: Ctx) -> tuple[str, Ctx]:
    return ok({"steady_calls": _count(ctx, "steady")})


repairable = workflow(
    "it_repairable",
    [
        parallel(step("needs_repair", _until_repaired), step("steady", _steady), name="repair_block"),
        step("after", _after),
    ],
)


# -- it_admin_*: runs the admin's tests look at, driven by the embedded queue (no Redis keys) ----

#: Tokens whose failing steps succeed from now on: an admin test adds its token before a retry.
ADMIN_FIXED: set[str] = set()


def _charge_card(ctx: Ctx) -> tuple[str, Any]:
    if ctx.get("decline") and ctx["token"] not in ADMIN_FIXED:
        return error({"code": "card_declined", "amount": ctx["amount"]})
    return ok({"charged": ctx["amount"]})


admin_order = workflow(
    "it_admin_order",
    [
        step("validate", lambda ctx: ok({"valid": True})),
        parallel(
            step("reserve_stock", lambda ctx: ok({"reserved": ctx["amount"] // 10})),
            step("charge_card", _charge_card, retry={"max_attempts": 2, "backoff": "constant", "base": 0}),
            step("send_receipt", lambda ctx: ok({"receipt": f"<b>{ctx['token']}</b>"})),
            name="fulfil",
        ),
        step("ship", lambda ctx: ok({"shipped": True})),
    ],
)


def _import_rows(ctx: Ctx) -> tuple[str, Any]:
    if ctx["token"] not in ADMIN_FIXED:
        raise RuntimeError(f"feed {ctx['feed']!r} is unreachable")
    return ok({"imported": 3})


admin_import = workflow(
    "it_admin_import",
    [
        step("connect", lambda ctx: ok({"connected": ctx["feed"]})),
        step("import_rows", _import_rows),
    ],
)


def _call_admin_import(ctx: Ctx) -> tuple[str, Any]:
    status, result = call_workflow("it_admin_import", {"token": ctx["token"], "feed": "prices"}, ref="prices")
    return ok({"prices": result["imported"]}) if status == "ok" else error(result)


admin_sync = workflow("it_admin_sync", [step("sync_prices", _call_admin_import)])


# -- it_cancel_sleeper: a sequential step held at a gate while the test cancels its run ------------


def _sleeper(ctx: Ctx) -> tuple[str, Any]:
    _count(ctx, "sleeper")
    if not _wait_for_key(ctx, "gate"):
        return error("the test never opened the gate")
    return ok({"slept": True})


cancel_sleeper = workflow("it_cancel_sleeper", [step("sleeper", _sleeper), step("after", _after)])


# -- it_checkout: a sequential step that fails until the test repairs it (forks, bulk retry) --------


def _charge_when_repaired(ctx: Ctx) -> tuple[str, Any]:
    _count(ctx, "charge")
    if ctx.get("price", 0) <= 0 and not redis().exists(key(ctx["token"], "repaired")):
        return error({"code": "bad_price", "price": ctx.get("price")})
    return ok({"charged": ctx["price"]})


checkout = workflow(
    "it_checkout",
    [
        step("price", lambda ctx: ok({"price": ctx["amount"] * 2})),
        step("charge", _charge_when_repaired),
        step("after", _after),
    ],
)
