"""Writes of parallel groups: opening one with its pending branches, counting finals, the join's lease and close."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.utils import timezone

from .. import dispatch, leases
from ..leases import held_fields, released_fields
from ..models import GroupStatus, ParallelGroup, StepResult, StepStatus, WorkflowRun
from .runs import transition


@dataclass(slots=True)
class Claimed:
    """A branch attempt a job took: its row, step and attempt number."""

    pk: int
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where the branches of a new group go: a first batch the opening job executes itself, and the
    rest per queue, left pending for that queue's drain jobs."""

    first: list[str]
    rest: dict[str, list[str]]
    # The queue of the opening job: its drain jobs start at index 1 (the opening job is index 0).
    here: str = ""


def open_group(
    run: WorkflowRun,
    name: str,
    on_error: str,
    plan: Plan,
    *,
    fields: dict[str, Any] | None = None,
    rows: list[StepResult] | None = None,
) -> tuple[ParallelGroup, list[Claimed]] | None:
    """Fan out: the run waits on block ``name``, whose group and branch rows are written at once.

    ``fields`` and ``rows``: the outcome of the step before the block, committed in the same
    transaction. The branches of ``plan.first`` are claimed by this process (they are returned);
    the others are pending, each naming the drain job sent on commit that will take it. ``None``
    when the run moved on meanwhile.
    """
    count = len(plan.first) + sum(map(len, plan.rest.values()))
    version = run.version
    try:
        with transaction.atomic():
            # The run now waits on its branches, whose rows carry their own leases.
            if not transition(run, {**(fields or {}), **released_fields()}, rows):
                return None
            group = ParallelGroup.objects.create(
                run=run, name=name, on_error=on_error, branch_count=count, pending_count=count
            )
            claimed = _open(run, group, plan)
    except IntegrityError:
        # The block is open already (the unique constraint on open groups): nothing was written.
        run.version = version
        return None
    return group, claimed


def _open(run: WorkflowRun, group: ParallelGroup, plan: Plan) -> list[Claimed]:
    """Insert a new group's branch rows and send the drain jobs its pending ones name."""
    jobs = [
        dispatch.run_branches_job(group.pk, run.pk, queue, 1 if queue == plan.here else 0)
        for queue, steps in plan.rest.items()
        if steps
    ]
    pending = [(step, job.job_id) for job in jobs for step in plan.rest[job.queue]]
    claimed = _insert_branches(group, plan.first, pending, timezone.now())
    dispatch.submit(*jobs)
    return claimed


def _insert_branches(
    group: ParallelGroup, first: list[str], pending: list[tuple[str, str]], now: datetime
) -> list[Claimed]:
    """Insert the first attempts: ``first`` running under this process's lease, ``pending`` (step,
    job id) waiting with a deadline. One statement on PostgreSQL, whatever the block's size."""
    deadline = leases.expiry(now)
    me, job_id = leases.owner(), dispatch.current_job_id()
    connection = connections[router.db_for_write(StepResult)]
    if connection.vendor != "postgresql":
        made = StepResult.objects.bulk_create(
            [
                StepResult(
                    run_id=group.run_id,
                    step=step,
                    group=group,
                    job_id=job_id,
                    status=StepStatus.RUNNING,
                    started_at=now,
                    lease_owner=me,
                    lease_expires_at=deadline,
                    created_at=now,
                )
                for step in first
            ]
            + [
                StepResult(
                    run_id=group.run_id, step=step, group=group, job_id=job, lease_expires_at=deadline, created_at=now
                )
                for step, job in pending
            ],
            batch_size=500,
        )
        return [Claimed(row.pk, row.step, 1) for row in made[: len(first)]]
    qn = connection.ops.quote_name
    columns = (
        *("run_id", "group_id", "step", "job_id", "status", "started_at", "lease_owner"),
        *("attempt", "created_at", "lease_expires_at"),
    )
    # One array per varying column instead of a dozen parameters per row: the statement stays small.
    sql = (
        f"INSERT INTO {qn(StepResult._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        "SELECT %s, %s, u.step, u.job_id, u.status, u.started_at, u.lease_owner, 1, %s, %s FROM "
        "unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[], %s::varchar[]) "
        "AS u(step, job_id, status, started_at, lease_owner) RETURNING id, step, status"
    )
    rows: list[tuple[str, str, str, datetime | None, str]] = [
        (step, job_id, StepStatus.RUNNING.value, now, me) for step in first
    ]
    rows += [(step, job, StepStatus.PENDING.value, None, "") for step, job in pending]
    params: list[Any] = [group.run_id, group.pk, now, deadline, *(list(column) for column in zip(*rows, strict=True))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchall()
    return sorted(
        (Claimed(pk, step, 1) for pk, step, status in inserted if status == StepStatus.RUNNING),
        key=lambda row: row.pk,
    )


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


@dataclass(frozen=True, slots=True)
class Closing:
    """How a decided group closes (``status``, ``results``, ``error``) and where its run goes."""

    status: str
    results: dict[str, Any] | None
    error: Any
    run_fields: dict[str, Any]
    # The block was decided early (fail_fast): its branches not started are cancelled.
    cancel_pending: bool = False


def close_group(run: WorkflowRun, group_id: int, closing: Closing) -> bool:
    """Close an open group and move its run in one transaction; only the first join to get here wins."""
    with transaction.atomic():
        return close_in_transaction(run, group_id, closing)


def close_in_transaction(run: WorkflowRun, group_id: int, closing: Closing) -> bool:
    """:func:`close_group` inside the caller's transaction (the one that recorded the deciding results).

    The run is moved first, then the group closed: every writer locks a run before its groups, so
    two of them never wait for each other. A group changes status only with its run (here, or
    when the run is cancelled), so once the run moved, the group is this transaction's to close.
    """
    if not transition(run, closing.run_fields):
        return False
    now = timezone.now()
    closed = ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING).update(
        status=closing.status, results=closing.results, error=closing.error, finished_at=now, **released_fields()
    )
    if not closed:
        raise RuntimeError(f"group {group_id} of run {run.pk} was closed without its run moving")
    if closing.cancel_pending:
        cancelled = StepResult.objects.filter(group_id=group_id, status=StepStatus.PENDING).update(
            status=StepStatus.CANCELLED, finished_at=now, **released_fields()
        )
        if cancelled:
            ParallelGroup.objects.filter(pk=group_id).update(pending_count=F("pending_count") - cancelled)
    return True


def release_claimed(group_id: int, row_ids: list[int], job_id: str) -> int:
    """Give back claimed branches this process has not started: pending again, for drain job ``job_id``."""
    return StepResult.objects.filter(
        pk__in=row_ids, group_id=group_id, status=StepStatus.RUNNING, lease_owner=leases.owner()
    ).update(status=StepStatus.PENDING, started_at=None, job_id=job_id, **released_fields(leases.expiry()))


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
