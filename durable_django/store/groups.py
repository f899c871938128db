"""Writes of parallel groups: opening one with its pending branches, counting finals, the join's lease and close."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from .. import dispatch, leases
from ..leases import held_fields, released_fields
from ..models import GroupStatus, ParallelGroup, StepResult, StepStatus, WorkflowRun
from .runs import transition


def open_group(run: WorkflowRun, name: str, on_error: str, by_queue: dict[str, list[str]]) -> ParallelGroup | None:
    """Fan out: the run waits on block ``name``, whose group and pending rows are written at once.

    ``by_queue`` lists the branches per queue; each queue's first drain job is named by its
    branches' rows and sent on commit. ``None`` when the run moved on meanwhile.
    """
    count = sum(map(len, by_queue.values()))
    with transaction.atomic():
        # The run now waits on its branches, whose rows carry their own leases.
        if not transition(run, released_fields()):
            return None
        group = ParallelGroup.objects.create(
            run=run, name=name, on_error=on_error, branch_count=count, pending_count=count
        )
        jobs = [dispatch.run_branches_job(group.pk, run.pk, queue) for queue in by_queue]
        rows = [(step, job.job_id) for job, steps in zip(jobs, by_queue.values(), strict=True) for step in steps]
        _insert_pending(group, rows, leases.expiry())
        dispatch.submit(*jobs)
    return group


def _insert_pending(group: ParallelGroup, rows: list[tuple[str, str]], deadline: datetime) -> None:
    """Insert one pending first attempt per ``(step, job id)``: one statement on PostgreSQL."""
    connection = connections[router.db_for_write(StepResult)]
    if connection.vendor != "postgresql":
        now = timezone.now()
        StepResult.objects.bulk_create(
            [
                StepResult(
                    run_id=group.run_id,
                    step=step,
                    group=group,
                    job_id=job_id,
                    lease_expires_at=deadline,
                    created_at=now,
                )
                for step, job_id in rows
            ],
            batch_size=500,
        )
        return
    qn = connection.ops.quote_name
    columns = (
        "run_id",
        "group_id",
        "step",
        "job_id",
        "attempt",
        "status",
        "created_at",
        "lease_owner",
        "lease_expires_at",
    )
    # Two array parameters instead of a dozen per row: the statement stays small at any block size.
    sql = (
        f"INSERT INTO {qn(StepResult._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        "SELECT %s, %s, u.step, u.job_id, 1, %s, %s, '', %s FROM unnest(%s::varchar[], %s::varchar[]) AS u(step, job_id)"
    )
    params: list[Any] = [group.run_id, group.pk, StepStatus.PENDING.value, timezone.now(), deadline]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, [step for step, _ in rows], [job_id for _, job_id in rows]])


@dataclass(frozen=True, slots=True)
class Counts:
    """A group's counters as one finishing batch left them, and what that batch added."""

    pending: int
    failed: int
    finals: int
    failures: int


def count_finals(group_id: int, finals: int, failures: int) -> Counts:
    """Take ``finals`` final results (``failures`` of them failed) off the group's counters.

    Runs inside the transaction that stored those results. The row lock of this UPDATE serialises
    finishing branches: each caller sees exactly the counts its own results made.
    """
    connection = connections[router.db_for_write(ParallelGroup)]
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET pending_count = pending_count - %s, failed_count = failed_count + %s "
            "WHERE id = %s RETURNING pending_count, failed_count",
            [finals, failures, group_id],
        )
        pending, failed = cursor.fetchone()
    return Counts(pending, failed, finals, failures)


def fail_pending_branches(group_id: int, reason: Any) -> Counts | None:
    """Fail every pending first attempt of a group with ``reason`` (its definition lost the block)."""
    with transaction.atomic():
        failed = StepResult.objects.filter(group_id=group_id, status=StepStatus.PENDING, attempt=1).update(
            status=StepStatus.FAILED, error=reason, finished_at=timezone.now(), **released_fields()
        )
        return count_finals(group_id, failed, failed) if failed else None


def claim_join(group_id: int) -> bool:
    """Take the lease of an open group's join: a duplicate join job (or one sent again) claims nothing."""
    return bool(
        ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING, lease_owner="").update(**held_fields())
    )


def release_join(group_id: int, owner: str | None = None) -> bool:
    """Let go of a join's lease held by ``owner`` (this process by default) without closing the group."""
    return bool(
        ParallelGroup.objects.filter(pk=group_id, lease_owner=owner or leases.owner()).update(**released_fields())
    )


def close_group(
    run: WorkflowRun,
    group_id: int,
    status: str,
    group_results: dict[str, Any] | None,
    error: Any,
    run_fields: dict[str, Any],
    *,
    cancel_pending: bool = False,
) -> bool:
    """Close an open group and move its run in one transaction; only the first join to get here wins.

    ``cancel_pending``: the block was decided early (fail_fast): branches not started are cancelled.
    """
    now = timezone.now()
    with transaction.atomic():
        closed = ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING).update(
            status=status, results=group_results, error=error, finished_at=now, **released_fields()
        )
        if not closed:
            return False
        if not transition(run, run_fields):
            transaction.set_rollback(True)
            return False
        if cancel_pending:
            cancelled = StepResult.objects.filter(group_id=group_id, status=StepStatus.PENDING).update(
                status=StepStatus.CANCELLED, finished_at=now, **released_fields()
            )
            if cancelled:
                ParallelGroup.objects.filter(pk=group_id).update(pending_count=F("pending_count") - cancelled)
    return True


def reopen_group(group_id: int, fresh: list[StepResult], pending: int) -> None:
    """Reopen a failed group with the new attempts ``fresh``; ``pending`` branches are left to finish."""
    StepResult.objects.bulk_create(fresh)
    ParallelGroup.objects.filter(pk=group_id).update(
        status=GroupStatus.RUNNING,
        results=None,
        error=None,
        finished_at=None,
        pending_count=pending,
        failed_count=0,
        **released_fields(),
    )
