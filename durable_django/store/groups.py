"""Writes of parallel groups: opening one with its pending branches, counting finals, the join's lease and close."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from .. import dispatch, leases
from ..leases import held_fields, released_fields
from ..models import (
    BlockKind,
    GroupStatus,
    ParallelGroup,
    StepKind,
    StepResult,
    StepStatus,
    WorkflowRun,
)
from ..signals import listening, step_finished
from . import notify, sql
from .runs import apply_move, cancel_waits, move_if_unchanged, transition


@dataclass(slots=True)
class Claimed:
    """A branch attempt a job took: its row, step and attempt number."""

    pk: int
    step: str
    attempt: int
    # A foreach item's position in its list (None for a branch of a parallel block).
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Where the branches of a new group go: a first batch the opening job executes itself, and the
    rest per queue, left pending for that queue's drain jobs."""

    first: list[str]
    rest: dict[str, list[str]]
    # The queue of the opening job: its drain jobs start at index 1 (the opening job is index 0).
    here: str = ""
    # A foreach block: its rows are its items, numbered from 0 in the order of first, then rest.
    indexed: bool = False

    def indexes(self) -> tuple[list[int | None], dict[str, list[int | None]]]:
        """The item index of each row of ``first`` and of ``rest`` (``None`` for a parallel block)."""
        if not self.indexed:
            return [None] * len(self.first), {queue: [None] * len(steps) for queue, steps in self.rest.items()}
        first: list[int | None] = list(range(len(self.first)))
        rest: dict[str, list[int | None]] = {}
        start = len(self.first)
        for queue, steps in self.rest.items():
            rest[queue] = list(range(start, start + len(steps)))
            start += len(steps)
        return first, rest


@dataclass(frozen=True, slots=True)
class Opening:
    """What a new group is besides its name: a foreach block's kind and items, the context kept for
    compensations."""

    kind: str = BlockKind.PARALLEL
    items: list[Any] | None = None
    context: dict[str, Any] | None = None


#: The unique constraint that makes a block open at most once per run (see the model's Meta).
OPEN_GROUP_CONSTRAINT = "durable_group_one_open_per_block"


def open_group(
    run: WorkflowRun,
    name: str,
    on_error: str,
    plan: Plan,
    *,
    fields: dict[str, Any] | None = None,
    rows: list[StepResult] | None = None,
    opening: Opening = Opening(),
) -> tuple[ParallelGroup, list[Claimed]] | None:
    """Fan out: the run waits on block ``name``, whose group and branch rows are written at once.

    ``fields`` and ``rows``: the outcome of the step before the block, committed in the same
    transaction; ``context``: kept on the group (the block's branches have compensations). The branches of ``plan.first`` are claimed by this process (they are returned);
    the others are pending, each naming the drain job sent on commit that will take it. ``None``
    when the run moved on meanwhile.
    """
    count = len(plan.first) + sum(map(len, plan.rest.values()))
    version = run.version
    connection = connections[router.db_for_write(ParallelGroup)]
    if connection.vendor == "postgresql" and len(rows or ()) <= 1 and not connection.in_atomic_block and count:
        try:
            return _open_statement(
                run, name, on_error, plan, {**(fields or {}), **released_fields()}, rows, connection, opening
            )
        except IntegrityError as exc:
            if not _already_open(exc):
                raise
            return None
    try:
        with transaction.atomic():
            # The run now waits on its branches, whose rows carry their own leases.
            if not transition(run, {**(fields or {}), **released_fields()}, rows):
                return None
            group = _new_group(run, name, on_error, count, opening)
            group.save(force_insert=True)
            claimed = _open(run, group, plan)
    except IntegrityError as exc:
        # Nothing was written: the block is open already (the unique constraint on open groups),
        # or the error is raised.
        run.version = version
        if not _already_open(exc):
            raise
        return None
    return group, claimed


def _already_open(error: IntegrityError) -> bool:
    """Whether ``error`` is the unique constraint on open groups (a duplicate fan-out), rather than
    a mistake that must not pass for one (a NOT NULL column a statement left out, say).

    PostgreSQL names the constraint; SQLite names the table and columns of the unique index."""
    text = str(error)
    table = ParallelGroup._meta.db_table
    return OPEN_GROUP_CONSTRAINT in text or f"UNIQUE constraint failed: {table}.run_id, {table}.name" in text


def _new_group(
    run: WorkflowRun, name: str, on_error: str, count: int, opening: Opening, **fields: Any
) -> ParallelGroup:
    """The (unsaved) group row of block ``name`` opening with ``count`` branches."""
    return ParallelGroup(
        run=run,
        name=name,
        on_error=on_error,
        branch_count=count,
        pending_count=count,
        kind=opening.kind,
        items=opening.items,
        context=opening.context,
        **fields,
    )


def _open_statement(
    run: WorkflowRun,
    name: str,
    on_error: str,
    plan: Plan,
    fields: dict[str, Any],
    rows: list[StepResult] | None,
    connection: Any,
    opening: Opening,
) -> tuple[ParallelGroup, list[Claimed]] | None:
    """:func:`open_group` as one PostgreSQL statement: the run's move, the previous step's row, the
    group and every branch row, each inserted only when the one before it was."""
    now = timezone.now()
    count = len(plan.first) + sum(map(len, plan.rest.values()))
    group = _new_group(run, name, on_error, count, opening, created_at=now)
    moved, params = sql.move_run("moved", run, fields, connection)
    parts, source = [moved], "moved"
    if rows:
        # Inserted before the group (which selects from it), so the step's row keeps the lower id.
        stepped, step_params = sql.insert_row("stepped", rows[0], "moved", connection, returning="id")
        parts.append(stepped)
        params += step_params
        source = "stepped"
    opened, group_params = sql.insert_row("opened", group, source, connection, returning="id")
    parts.append(opened)
    params += group_params
    me, job_id = leases.owner(), dispatch.current_job_id()
    indexes = {queue: 1 if queue == plan.here else 0 for queue in plan.rest}
    first_items, rest_items = plan.indexes()
    branches: list[tuple[str, str, str, datetime | None, str, int | None]] = [
        (step, StepStatus.RUNNING.value, job_id, now, me, item)
        for step, item in zip(plan.first, first_items, strict=True)
    ]
    branches += [
        (step, StepStatus.PENDING.value, f"-{queue}-{indexes[queue]}", None, "", item)
        for queue, steps in plan.rest.items()
        for step, item in zip(steps, rest_items[queue], strict=True)
    ]
    qn = connection.ops.quote_name
    columns = (
        *("run_id", "group_id", "step", "status", "job_id", "started_at", "lease_owner", "item_index"),
        *("attempt", "created_at", "lease_expires_at", "kind"),
    )
    # A pending branch names its queue's drain job, whose id (dispatch.drain_job_id) holds the
    # group's id: composed here from the id the group was just given.
    parts.append(
        f"branches AS (INSERT INTO {qn(StepResult._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        "SELECT %s, opened.id, u.step, u.status, "
        "CASE WHEN u.status = %s THEN u.job ELSE %s || opened.id || u.job END, u.started_at, u.owner, u.item, "
        "1, %s, %s, %s FROM opened, unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[], "
        "%s::varchar[], %s::integer[]) AS u(step, status, job, started_at, owner, item) "
        "RETURNING id, step, status, item_index)"
    )
    params += [run.pk, StepStatus.RUNNING.value, dispatch.DRAIN_PREFIX, now, leases.expiry(now), StepKind.STEP.value]
    params += [list(column) for column in zip(*branches, strict=True)]
    step_id = ", (SELECT id FROM stepped)" if rows else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {', '.join(parts)} SELECT opened.id, branches.id, branches.step, branches.status, "
            f"branches.item_index{step_id} FROM opened JOIN branches ON true",
            params,
        )
        inserted = cursor.fetchall()
    if not inserted:
        return None
    group.pk = inserted[0][0]
    if rows:
        rows[0].pk = inserted[0][5]
    apply_move(run, fields, rows or ())
    claimed = sorted(
        (Claimed(pk, step, 1, item) for _, pk, step, status, item, *_ in inserted if status == StepStatus.RUNNING),
        key=lambda row: row.pk,
    )
    dispatch.submit(
        *(
            dispatch.run_branches_job(group.pk, run.pk, queue, indexes[queue])
            for queue, steps in plan.rest.items()
            if steps
        )
    )
    return group, claimed


def _open(run: WorkflowRun, group: ParallelGroup, plan: Plan) -> list[Claimed]:
    """Insert a new group's branch rows and send the drain jobs its pending ones name."""
    jobs = [
        dispatch.run_branches_job(group.pk, run.pk, queue, 1 if queue == plan.here else 0)
        for queue, steps in plan.rest.items()
        if steps
    ]
    first_items, rest_items = plan.indexes()
    pending = [
        (step, job.job_id, item)
        for job in jobs
        for step, item in zip(plan.rest[job.queue], rest_items[job.queue], strict=True)
    ]
    claimed = _insert_branches(group, list(zip(plan.first, first_items, strict=True)), pending, timezone.now())
    dispatch.submit(*jobs)
    return claimed


def _insert_branches(
    group: ParallelGroup,
    first: list[tuple[str, int | None]],
    pending: list[tuple[str, str, int | None]],
    now: datetime,
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
                    item_index=item,
                )
                for step, item in first
            ]
            + [
                StepResult(
                    run_id=group.run_id,
                    step=step,
                    group=group,
                    job_id=job,
                    lease_expires_at=deadline,
                    created_at=now,
                    item_index=item,
                )
                for step, job, item in pending
            ],
            batch_size=500,
        )
        return [Claimed(row.pk, row.step, 1, row.item_index) for row in made[: len(first)]]
    qn = connection.ops.quote_name
    if not first and not pending:
        return []
    columns = (
        *("run_id", "group_id", "step", "job_id", "status", "started_at", "lease_owner", "item_index"),
        *("attempt", "created_at", "lease_expires_at", "kind"),
    )
    # One array per varying column instead of a dozen parameters per row: the statement stays small.
    sql = (
        f"INSERT INTO {qn(StepResult._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        "SELECT %s, %s, u.step, u.job_id, u.status, u.started_at, u.lease_owner, u.item, 1, %s, %s, %s FROM "
        "unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[], %s::varchar[], %s::integer[]) "
        "AS u(step, job_id, status, started_at, lease_owner, item) RETURNING id, step, status, item_index"
    )
    rows: list[tuple[str, str, str, datetime | None, str, int | None]] = [
        (step, job_id, StepStatus.RUNNING.value, now, me, item) for step, item in first
    ]
    rows += [(step, job, StepStatus.PENDING.value, None, "", item) for step, job, item in pending]
    params: list[Any] = [group.run_id, group.pk, now, deadline, StepKind.STEP.value]
    params += [list(column) for column in zip(*rows, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchall()
    return sorted(
        (Claimed(pk, step, 1, item) for pk, step, status, item in inserted if status == StepStatus.RUNNING),
        key=lambda row: row.pk,
    )


@dataclass(frozen=True, slots=True)
class Counts:
    """A group's counters as one finishing batch left them, and what that batch added."""

    pending: int
    failed: int
    finals: int
    failures: int
    # The group's status as the batch found it: a closed (cancelled) group is decided by nobody.
    status: str = GroupStatus.RUNNING
    # Branches that wait (for a sleep, an event, an input): when all pending ones do, the run waits.
    waiting: int = 0


# Every counter update locks its group's row. Whoever also moves the run locks the group first
# (by counting, or explicitly), then the run: writers never wait for each other in a circle. The
# counters of a cancelled group are final (cancel_run set them): results arriving later leave them.
COUNT = (
    "UPDATE {table} SET pending_count = pending_count - CASE WHEN status = %s THEN 0 ELSE %s END, "
    "failed_count = failed_count + CASE WHEN status = %s THEN 0 ELSE %s END WHERE id = %s"
)


def count_finals(group_id: int, finals: int, failures: int) -> Counts:
    """Take ``finals`` final results (``failures`` of them failed) off the group's counters.

    Runs inside the transaction that stored those results. The row lock of this UPDATE serialises
    finishing branches: each caller sees exactly the counts its own results made.
    """
    connection = connections[router.db_for_write(ParallelGroup)]
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            COUNT.format(table=table) + " RETURNING pending_count, failed_count, status, waiting_count",
            [GroupStatus.CANCELLED.value, finals, GroupStatus.CANCELLED.value, failures, group_id],
        )
        pending, failed, status, waiting = cursor.fetchone()
    return Counts(pending, failed, finals, failures, status, waiting)


def fail_pending_branches(group_id: int, reason: Any) -> Counts | None:
    """Fail every pending first attempt of a group with ``reason`` (its definition lost the block)."""
    with transaction.atomic():
        pending = StepResult.objects.filter(group_id=group_id, status=StepStatus.PENDING, attempt=1)
        ids: list[int] = []
        if listening(step_finished):
            # Which rows fail, for the signals: locked, so that they are exactly those the UPDATE fails.
            ids = list(pending.select_for_update().values_list("pk", flat=True))
            pending = StepResult.objects.filter(pk__in=ids, status=StepStatus.PENDING)
        failed = pending.update(status=StepStatus.FAILED, error=reason, finished_at=timezone.now(), **released_fields())
        notify.attempts_by_id(ids)
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
    # The block was decided early (fail_fast): its branches not started are cancelled,
    cancel_pending: bool = False
    # and so are those that wait, with their waits.
    cancel_waits: bool = False


def close_group(run: WorkflowRun, group_id: int, closing: Closing) -> bool:
    """Close an open group and move its run in one transaction; only the first join to get here wins."""
    with transaction.atomic():
        # The group first, like every writer that moves a run on from a block.
        locked = ParallelGroup.objects.select_for_update().filter(pk=group_id, status=GroupStatus.RUNNING)
        return bool(list(locked.values_list("pk", flat=True))) and close_in_transaction(run, group_id, closing)


def close_in_transaction(run: WorkflowRun, group_id: int, closing: Closing) -> bool:
    """:func:`close_group` inside a transaction that holds the group's row lock (it counted the
    deciding results, or locked it): move the run, then close the group.

    A group changes status only with its run (here, or when the run is cancelled, which takes the
    group's lock first too), so once the run moved, the open group is this transaction's to close.
    """
    connection = connections[router.db_for_write(ParallelGroup)]
    now = timezone.now()
    closed_fields = {
        "status": closing.status,
        "results": closing.results,
        "error": closing.error,
        "finished_at": now,
        **released_fields(),
    }
    if connection.vendor == "postgresql":
        moved = _close_statement(run, group_id, closing.run_fields, closed_fields, connection)
        if moved is None:
            return False
        closed = moved
    else:
        if not move_if_unchanged(run, closing.run_fields):
            return False
        closed = ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING).update(**closed_fields)
    if not closed:
        raise RuntimeError(f"group {group_id} of run {run.pk} was closed without its run moving")
    if closing.cancel_pending:
        cancelled = StepResult.objects.filter(group_id=group_id, status=StepStatus.PENDING).update(
            status=StepStatus.CANCELLED, finished_at=now, **released_fields()
        )
        if cancelled:
            ParallelGroup.objects.filter(pk=group_id).update(pending_count=F("pending_count") - cancelled)
    ended = notify.collecting_waits() if closing.cancel_waits else None
    if closing.cancel_waits:
        dispatch.withdraw_after_commit(cancel_waits(run.pk, now, group_id=group_id, ended=ended))
    # The run's move is applied once the group is closed: its signals come after the group's.
    apply_move(run, closing.run_fields, resolved=ended or (), group_id=group_id)
    return True


def _close_statement(
    run: WorkflowRun, group_id: int, run_fields: dict[str, Any], group_fields: dict[str, Any], connection: Any
) -> int | None:
    """The run's move and the group's close as one PostgreSQL statement (the close only if the run
    moved); ``None`` when the run did not move, else how many groups were closed (the caller
    applies the move)."""
    moved, params = sql.move_run("moved", run, run_fields, connection)
    query = ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING).query
    update = cast(UpdateQuery, query.chain(UpdateQuery))
    update.add_update_values(group_fields)
    close_sql, close_params = update.get_compiler(connection.alias).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {moved}, closed AS ({close_sql} AND EXISTS (SELECT 1 FROM moved) RETURNING 1) "
            "SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM closed)",
            [*params, *close_params],
        )
        moved_count, closed_count = cursor.fetchone()
    return int(closed_count) if moved_count else None


def release_claimed(group_id: int, row_ids: list[int], job_id: str) -> int:
    """Give back claimed branches this process has not started: pending again, for drain job ``job_id``."""
    return StepResult.objects.filter(
        pk__in=row_ids, group_id=group_id, status=StepStatus.RUNNING, lease_owner=leases.owner()
    ).update(status=StepStatus.PENDING, started_at=None, job_id=job_id, **released_fields(leases.expiry()))


def reopen_group(group: ParallelGroup, fresh: list[StepResult], pending: int) -> None:
    """Reopen a failed group with the new attempts ``fresh``; ``pending`` branches are left to finish.

    The outcome it had (status, error, counters, when it finished) is kept in its ``history``.
    """
    StepResult.objects.bulk_create(fresh)
    earlier = {
        "status": group.status,
        "error": group.error,
        "branches": group.branch_count,
        "failed": group.failed_count,
        "finished_at": group.finished_at.isoformat() if group.finished_at else None,
        "retried_at": timezone.now().isoformat(),
    }
    ParallelGroup.objects.filter(pk=group.pk).update(
        history=[*group.history, earlier],
        status=GroupStatus.RUNNING,
        results=None,
        error=None,
        finished_at=None,
        pending_count=pending,
        failed_count=0,
        **released_fields(),
    )
