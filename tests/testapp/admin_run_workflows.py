"""Workflows for the run page's tests and screenshots: a slow step, a flaky one, a goto loop, an into,
a foreach block, a branch block and compensable steps."""

from __future__ import annotations

import threading
from typing import Any

from durable_django import branch, error, foreach, goto, ok, parallel, step, workflow

Ctx = dict[str, Any]

#: Set to let the slow step of ``it_admin_slow`` finish.
SLOW_RELEASE = threading.Event()
#: Tokens whose flaky step succeeds from now on.
FLAKY_FIXED: set[str] = set()


def _load_rows(ctx: Ctx) -> Any:
    SLOW_RELEASE.wait(ctx.get("hold", 60))
    return ok({"loaded": 120})


admin_slow = workflow(
    "it_admin_slow",
    [
        step("fetch", lambda ctx: ok({"fetched": True})),
        step("load_rows", _load_rows, retry={"max_attempts": 3, "backoff": "exponential", "base": 2}, timeout=300),
        parallel(
            step("index", lambda ctx: ok({"indexed": True})),
            step("notify", lambda ctx: ok({"notified": True})),
            name="finish",
        ),
        step("publish", lambda ctx: ok({"published": True})),
    ],
)


def _call_upstream(ctx: Ctx) -> Any:
    if ctx["token"] not in FLAKY_FIXED:
        raise ConnectionError(f"upstream {ctx['token']!r} refused the connection")
    return ok({"called": True})


admin_flaky = workflow(
    "it_admin_flaky",
    [
        step("prepare", lambda ctx: ok({"prepared": True})),
        step("call_upstream", _call_upstream, retry={"max_attempts": 2, "backoff": "constant", "base": 0}),
        step("report", lambda ctx: ok({"reported": True})),
    ],
)


def _review(ctx: Ctx) -> Any:
    if ctx.get("drafts", 0) < 2:
        return goto("draft", {"reviewed": ctx.get("drafts", 0)})
    return ok({"approved": True})


def pick_channel(ctx: Ctx, results: dict[str, Any]) -> Any:
    status, _ = results["post_blog"]
    return ok({"channel": "blog"}) if status == "ok" else error({"code": "no_channel"})


admin_review = workflow(
    "it_admin_review",
    [
        step("draft", lambda ctx: ok({"drafts": ctx.get("drafts", 0) + 1})),
        step("review", _review),
        parallel(
            step("post_blog", lambda ctx: ok({"posted": "blog"})),
            step("post_social", lambda ctx: ok({"posted": "social"})),
            into=pick_channel,
            name="announce",
        ),
        step("archive", lambda ctx: ok({"archived": True})),
    ],
)


# -- control flow: a foreach block, a branch block, compensations ---------------------------------

#: (token, index) of the items of ``it_admin_foreach`` that have failed once (a flaky item then succeeds).
FLAKY_TRIED: set[tuple[str, int]] = set()


def _square(ctx: Ctx) -> Any:
    index = ctx["__index__"]
    if index in ctx.get("bad", ()):
        raise ValueError(f"item {index} ({ctx['item']!r}) cannot be squared")
    if index in ctx.get("flaky", ()) and (ctx["token"], index) not in FLAKY_TRIED:
        FLAKY_TRIED.add((ctx["token"], index))
        raise TimeoutError(f"item {index} timed out")
    return ok({"square": ctx["item"] * ctx["item"]})


def sum_squares(ctx: Ctx, results: list[tuple[str, Any]]) -> Any:
    return ok({"total": sum(data["square"] for status, data in results if status == "ok")})


admin_foreach = workflow(
    "it_admin_foreach",
    [
        step("load", lambda ctx: ok({"numbers": list(range(ctx.get("count", 12)))})),
        foreach(
            "squares",
            "numbers",
            _square,
            on_error="complete_all",
            into=sum_squares,
            retry={"max_attempts": 2, "backoff": "constant", "base": 0},
        ),
        step("report", lambda ctx: ok({"reported": ctx.get("total")})),
    ],
)

admin_branch = workflow(
    "it_admin_branch",
    [
        step("classify", lambda ctx: ok({"tier": ctx["tier"]})),
        branch(
            "route",
            "tier",
            {
                "gold": [
                    step("call_customer", lambda ctx: ok({"called": True})),
                    foreach("gifts", lambda ctx: ["mug", "pen", "tote"], lambda ctx: ok({"sent": ctx["item"]})),
                ],
                "silver": [step("send_email", lambda ctx: ok({"emailed": True}))],
            },
            default=[step("log_only", lambda ctx: ok({"logged": True}))],
        ),
        step("close", lambda ctx: ok({"closed": True})),
    ],
)


def _undo(ctx: Ctx) -> Any:
    return ok({"undone": True})


admin_saga = workflow(
    "it_admin_saga",
    [
        step("reserve_stock", lambda ctx: ok({"reserved": 3}), compensate=_undo),
        parallel(
            step("charge_card", lambda ctx: ok({"charged": 250}), compensate=_undo),
            step("notify_warehouse", lambda ctx: ok({"notified": True})),
            name="pay",
        ),
        step("ship", lambda ctx: error({"code": "carrier_down"})),
    ],
)
