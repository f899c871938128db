"""Entry points that RQ workers import: each takes ids only and composes the decision modules.

Each is named in :mod:`durable_django.dispatch` (its job kind, id and constructor) and calls the
decision function of the same name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec

from django.db import DatabaseError, InterfaceError, OperationalError, connections

from . import blocks, compensation, dispatch, engine, firing, join, resume, timer_jobs, timers

P = ParamSpec("P")


def _fresh_connections_after_db_errors(fn: Callable[P, None]) -> Callable[P, None]:
    """Drop the worker's database connections when a job died of a connection problem.

    A restarted PostgreSQL leaves every pooled connection broken; closing them lets the next job
    reconnect. The interrupted work itself is taken over once its lease runs out.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except (OperationalError, InterfaceError):
            connections.close_all()
            raise
        except DatabaseError:
            for connection in connections.all(initialized_only=True):
                connection.close_if_unusable_or_obsolete()
            raise

    return wrapper


@_fresh_connections_after_db_errors
def run_workflow(run_id: str, queue: str, version: int) -> None:
    """Execute run ``run_id``'s sequential steps that belong on ``queue``, if it waits for ``version``."""
    engine.run_workflow(run_id, queue, version)


def _go_on(moved: join.Moved | None) -> None:
    """A job that joined a block continues its run with the steps after it."""
    if moved is not None:
        engine.advance(moved.run, moved.wf, moved.queue)


@_fresh_connections_after_db_errors
def run_branch(step_result_id: int) -> None:
    """Execute one attempt of one parallel branch (and the join, when its result decides the block)."""
    _go_on(blocks.run_branch(step_result_id))


@_fresh_connections_after_db_errors
def run_branches(group_id: int, queue: str, index: int = 0, tag: str = "") -> None:
    """Execute the pending first attempts of a parallel group's branches on ``queue``, in batches."""
    _go_on(blocks.run_branches(group_id, queue, index, tag))


@_fresh_connections_after_db_errors
def join_group(group_id: int, queue: str) -> None:
    """Join a parallel group, then continue its run with the steps after the block."""
    _go_on(join.join_group(group_id))


@_fresh_connections_after_db_errors
def wake_wait(wait_id: int) -> None:
    """End a sleep or time a wait out once it is due; the run's next job is sent from there."""
    resume.wake(wait_id)


@_fresh_connections_after_db_errors
def compensate(run_id: str, queue: str, version: int) -> None:
    """Execute the compensations of run ``run_id``, which failed (or was cancelled), if it waits for ``version``."""
    compensation.compensate(run_id, queue, version)


@_fresh_connections_after_db_errors
def start_run(run_id: str) -> None:
    """Start the delayed run ``run_id`` once it is due (its first job is sent from there)."""
    timers.start_run(run_id)


@_fresh_connections_after_db_errors
def time_out_run(run_id: str) -> None:
    """Fail run ``run_id`` with ``workflow_timeout`` if it has not finished by its deadline."""
    timers.time_out_run(run_id)


ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    dispatch.RUN_WORKFLOW: run_workflow,
    dispatch.RUN_BRANCH: run_branch,
    dispatch.RUN_BRANCHES: run_branches,
    dispatch.JOIN_GROUP: join_group,
    dispatch.WAKE_WAIT: wake_wait,
    dispatch.COMPENSATE: compensate,
    timer_jobs.START_RUN: start_run,
    timer_jobs.TIME_OUT_RUN: time_out_run,
}


# Not a job kind of durable_django.dispatch: durable_django.schedule_jobs sends it.
@_fresh_connections_after_db_errors
def fire_schedule(schedule_id: int) -> None:
    """Fire schedule ``schedule_id`` if it is due (its job runs at the schedule's next fire time)."""
    firing.fire_due(schedule_id=schedule_id)
