"""Writes of compensations: claiming a compensating run, each attempt, releasing it for a retry, ending it.

A compensating run is executed by one process at a time, the holder of its lease: every write
here is conditional on the run still being ``compensating`` at the version that process claimed,
under its lease, so a process that lost its lease (recovery took the run over) writes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction

from .. import dispatch, leases, results
from ..leases import held_fields, released_fields
from ..models import RunStatus, StepKind, StepResult, StepStatus, WorkflowRun
from . import notify
from .runs import apply_move

logger = logging.getLogger("durable_django")


def claim_compensation(run_id: Any, version: int) -> WorkflowRun | None:
    """Take the lease of a run that waits for its compensate job ``version`` and load it.

    ``None`` when it does not: a stale or duplicate job, or a run another process compensates.
    """
    with transaction.atomic():
        claimed = WorkflowRun.objects.filter(
            pk=run_id, version=version, status=RunStatus.COMPENSATING, lease_owner=""
        ).update(version=version + 1, **held_fields())
        if not claimed:
            return None
        return WorkflowRun.objects.get(pk=run_id)


def _held(run: WorkflowRun) -> Any:
    """The run's row, if this process still holds it as claimed (for a conditional write)."""
    return WorkflowRun.objects.filter(
        pk=run.pk, version=run.version, status=RunStatus.COMPENSATING, lease_owner=leases.owner()
    )


def start_compensation(run: WorkflowRun, row: StepResult) -> bool:
    """Store ``row``, a compensation attempt about to execute (``running``); ``False`` when the
    run is no longer this process's to compensate."""
    with transaction.atomic():
        if not list(_held(run).select_for_update().values_list("pk", flat=True)):
            return False
        row.save(force_insert=True)
    return True


def record_compensation(
    run: WorkflowRun, row: StepResult, fields: dict[str, Any] | None = None, jobs: tuple[dispatch.Job, ...] = ()
) -> bool:
    """Store the outcome of compensation attempt ``row``, and with ``fields`` move the run (to let
    it go for a retry, sending ``jobs``): one transaction; ``False`` when it was not this process's."""
    with transaction.atomic():
        if fields is None:
            won = bool(list(_held(run).select_for_update().values_list("pk", flat=True)))
        else:
            won = bool(_held(run).update(version=run.version + 1, **fields))
        if not won:
            return False
        StepResult.objects.filter(pk=row.pk, status=StepStatus.RUNNING).update(
            status=row.status, output=row.output, error=row.error, finished_at=row.finished_at, logs=row.logs
        )
        dispatch.submit(*jobs)
    if fields is not None:
        apply_move(run, fields, [row])
    else:
        notify.steps(run, [row])
    return True


def finish_compensation(run: WorkflowRun, fields: dict[str, Any]) -> bool:
    """Move the run from ``compensating`` to its final status with ``fields``; whether this process did."""
    with transaction.atomic():
        if not _held(run).update(version=run.version + 1, **fields):
            return False
        apply_move(run, fields)
    return True


def take_over_compensation(run: WorkflowRun, now: datetime, queue: str) -> bool:
    """Set a compensating run whose executor is gone moving again from ``run.version``.

    The compensation attempt it was executing (if any) is recorded as ``worker_lost``; its
    compensate job is sent on ``queue``. One transaction, conditional on the run being exactly
    as it was read (same version and lease owner), so of two sweepers only one takes it over.
    """
    with transaction.atomic():
        moved = WorkflowRun.objects.filter(
            pk=run.pk, version=run.version, status=RunStatus.COMPENSATING, lease_owner=run.lease_owner
        ).update(version=run.version + 1, **released_fields(leases.expiry(now)))
        if not moved:
            return False
        running = StepResult.objects.filter(run_id=run.pk, kind=StepKind.COMPENSATION, status=StepStatus.RUNNING)
        lost = []
        for row in running.only("pk", "compensates_id"):
            streak = lost_streak(run.pk, row.compensates_id) + 1
            StepResult.objects.filter(pk=row.pk).update(
                status=StepStatus.FAILED, error=results.worker_lost(streak), finished_at=now
            )
            lost.append(row.pk)
        run.version += 1
        run.lease_owner, run.lease_expires_at = "", leases.expiry(now)
        notify.attempts_by_id(lost, run)
        dispatch.submit(dispatch.compensate_job(run.pk, queue, run.version))
    return True


def lost_streak(run_id: Any, compensated_id: int | None) -> int:
    """How many of the latest finished compensation attempts of a row ended with their worker lost, in a row."""
    latest = (
        StepResult.objects.filter(run_id=run_id, kind=StepKind.COMPENSATION, compensates_id=compensated_id)
        .exclude(status=StepStatus.RUNNING)
        .order_by("-id")
        .values_list("status", "error")
    )
    streak = 0
    for status, error in latest:
        if status != StepStatus.FAILED or not isinstance(error, dict) or error.get("type") != "worker_lost":
            break
        streak += 1
    return streak
