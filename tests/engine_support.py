"""Helpers shared by the engine's unit tests: uniquely named workflows and run inspection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from durable_django import Workflow, workflow
from durable_django.definition import Node, unregister
from durable_django.models import StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue

# Retry without waiting: base 0 enqueues the next attempt at once, so run_until_idle never sleeps.
IMMEDIATE = {"backoff": "constant", "base": 0, "jitter": False}


class Definer:
    """Registers workflows under names no other test uses, and forgets them afterwards."""

    def __init__(self, prefix: str) -> None:
        # Workflow names are stored in a 200-character column: keep the test's name short.
        self.prefix = prefix[:60]
        self.names: list[str] = []

    def name(self) -> str:
        """Reserve a fresh workflow name (for tests that call ``workflow()`` themselves)."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def __call__(self, steps: list[Node], *, queue: str | None = None, timeout: float | None = None) -> Workflow:
        return workflow(self.name(), steps, queue=queue, timeout=timeout)

    def close(self) -> None:
        for name in self.names:
            unregister(name)


@contextmanager
def defining(prefix: str) -> Iterator[Definer]:
    """A :class:`Definer` whose workflows are unregistered on exit."""
    definer = Definer(prefix)
    try:
        yield definer
    finally:
        definer.close()


def finish(queue: EmbeddedQueue, run: WorkflowRun) -> WorkflowRun:
    """Drive every queued job to completion and return ``run`` as stored."""
    queue.run_until_idle(timeout=30)
    run.refresh_from_db()
    return run


def attempts(run: WorkflowRun) -> list[tuple[str, int, str]]:
    """``(step, attempt, status)`` of every StepResult row of ``run``, in creation order."""
    return list(StepResult.objects.filter(run=run).order_by("id").values_list("step", "attempt", "status"))


def recorder(log: list[Any], data: dict[str, Any] | None = None) -> Any:
    """A step that appends the context it received to ``log`` and returns ``data``."""

    def step_fn(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        log.append(ctx)
        return ("ok", dict(data or {}))

    return step_fn
