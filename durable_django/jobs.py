"""Entry points that RQ workers import. Each takes ids only and hands over to the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import engine


def run_workflow(run_id: str, queue: str) -> None:
    """Execute run ``run_id``'s sequential steps that belong on ``queue``."""
    engine.execute_run(run_id, queue)


def run_branch(step_result_id: int) -> None:
    """Execute one attempt of one parallel branch."""
    engine.execute_branch(step_result_id)


def join_group(group_id: int, queue: str) -> None:
    """Join a parallel group and continue its run."""
    engine.execute_join(group_id, queue)


ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "durable_django.jobs.run_workflow": run_workflow,
    "durable_django.jobs.run_branch": run_branch,
    "durable_django.jobs.join_group": join_group,
}
