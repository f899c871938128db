"""Workflows for the run page's tests and screenshots: a slow step, a flaky one, a goto loop, an into."""

from __future__ import annotations

import threading
from typing import Any

from durable_django import error, goto, ok, parallel, step, workflow

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
