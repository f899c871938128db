"""A finished run whose steps logged: what the admin tests of per-step logs look at."""

from __future__ import annotations

import logging
from typing import Any

from durable_django import ok, parallel, step
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish

shop = logging.getLogger("shop.orders")


def charge(ctx: dict[str, Any]) -> Any:
    shop.info("charging %s for <script>alert(1)</script>", ctx["amount"])
    shop.warning("gateway answered in %d ms", 900)
    return ok({"charged": True})


def chatty(ctx: dict[str, Any]) -> Any:
    for index in range(9):
        shop.info("line %d", index)
    shop.error("and one error")
    return ok()


def logged_run(embedded: EmbeddedQueue, define: Definer) -> WorkflowRun:
    """``charge`` (2 records), then a block of ``chatty`` (10 records) and ``silent`` (none)."""
    wf = define([step("charge", charge), parallel(step("chatty", chatty), step("silent", lambda ctx: ok()))])
    run = finish(embedded, wf.start({"amount": 8900}))
    assert run.status == "completed"
    return run
