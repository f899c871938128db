"""Writes of branch attempts: claiming a batch or one attempt, recording results, next attempts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from .. import dispatch, leases
from ..attempts import Attempt
from ..context import dumps
from ..leases import held_fields, released_fields
from ..models import GroupStatus, ParallelGroup, StepResult, StepStatus, WorkflowRun
from . import notify, sql
from .groups import Claimed, Closing, Counts, close_in_transaction, count_finals
from .runs import apply_move
from .waits import settle, suspend_branches

# Asked, inside the transaction that counted a batch's final results, whether they decided the
# block and how it closes then: the run to move and how, or None to leave the group open.
Decide = Callable[[Counts], tuple[WorkflowRun, Closing] | None]


def claim_batch(group_id: int, names: list[str] | None, size: int, limit: int | None = None) -> list[Claimed]:
    """Take up to ``size`` pending first attempts of a group (among ``names``): one statement.

    ``limit`` (a foreach block's ``max_concurrency``): at most that many of the group's attempts
    are running once the claim commits. The group's row is locked first, so that claims (and
    finishing batches, which lock it to count) take turns, and the running rows are counted.
    """
    if limit is not None:
        with transaction.atomic(savepoint=False):
            running = _running_under_lock(group_id)
            return _claim(group_id, names, min(size, limit - running)) if running < limit else []
    return _claim(group_id, names, size)


def _running_under_lock(group_id: int) -> int:
    """Lock the group's row and count its running attempts (in the caller's transaction)."""
    list(ParallelGroup.objects.select_for_update().filter(pk=group_id).values_list("pk"))
    return StepResult.objects.filter(group_id=group_id, status=StepStatus.RUNNING).count()


def hold_back_branch(row_id: int, group_id: int, limit: int, run_id: Any, queue: str, delay: float) -> bool:
    """After claiming attempt ``row_id`` of a block with ``max_concurrency`` ``limit``: if more than
    ``limit`` of its attempts now run, give this one back (pending again, to a new job sent in
    ``delay`` seconds) and say so; ``False``: it may execute.

    Checked under the group's row lock, like every claim of a limited block, so that of two
    claims made at once at most ``limit`` stand.
    """
    with transaction.atomic(savepoint=False):
        if _running_under_lock(group_id) <= limit:
            return False
        job_id = dispatch.new_job_id()
        StepResult.objects.filter(pk=row_id, status=StepStatus.RUNNING, lease_owner=leases.owner()).update(
            status=StepStatus.PENDING,
            started_at=None,
            job_id=job_id,
            lease_owner="",
            lease_expires_at=leases.retry_deadline(delay),
        )
        dispatch.submit(dispatch.run_branch_job(row_id, run_id, job_id, queue, delay))
    return True


def _claim(group_id: int, names: list[str] | None, size: int) -> list[Claimed]:
    connection = connections[router.db_for_write(StepResult)]
    qn = connection.ops.quote_name
    table = qn(StepResult._meta.db_table)
    now = timezone.now()
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    only: list[Any] = []
    among = ""
    if names is not None:
        # A block whose branches use several queues: each queue's drain jobs take their own branches.
        among = f" AND {qn('step')} IN ({', '.join(['%s'] * len(names))})"
        only = list(names)
    sql = (
        f"UPDATE {table} SET {qn('status')} = %s, {qn('started_at')} = %s, {qn('lease_owner')} = %s, "
        f"{qn('lease_expires_at')} = %s WHERE {qn('id')} IN (SELECT {qn('id')} FROM {table} "
        f"WHERE {qn('group_id')} = %s AND {qn('status')} = %s AND {qn('attempt')} = 1{among} "
        f"ORDER BY {qn('id')} LIMIT %s{lock}) RETURNING {qn('id')}, {qn('step')}, {qn('attempt')}, {qn('item_index')}"
    )
    time_field = StepResult._meta.get_field("started_at")
    stamp = time_field.get_db_prep_value(now, connection)
    expires = time_field.get_db_prep_value(leases.expiry(now), connection)
    params = [StepStatus.RUNNING.value, stamp, leases.owner(), expires, group_id, StepStatus.PENDING.value]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *only, size])
        rows = cursor.fetchall()
    return sorted((Claimed(pk, step, attempt, item) for pk, step, attempt, item in rows), key=lambda row: row.pk)


@dataclass
class Recorded:
    """What :func:`record_batch` did: the rows it recorded, the counters it left, whether it closed
    the group, and the next batch it claimed."""

    mine: set[int]
    counts: Counts | None = None
    closed: bool = False
    next_batch: list[Claimed] = field(default_factory=list)


def record_batch(
    group_id: int,
    outcomes: list[tuple[Claimed, Attempt]],
    retries: dict[int, NextAttempt],
    claim_next: tuple[list[str] | None, int, int | None] | None,
    decide: Decide | None = None,
    waits: list[tuple[Claimed, Attempt]] | None = None,
    run_id: Any = None,
) -> Recorded:
    """Store a batch of attempts, count its final ones, close the group if they decided it, and
    claim the next batch: one transaction.

    ``retries`` maps a row to its next attempt: those rows are not final. Rows recovery took over
    meanwhile (this worker looked dead) are no longer this worker's to record: they are left out,
    as are their retries. ``decide`` is asked whether the counted results decided the block.
    ``waits``: attempts of run ``run_id`` that returned a wait; their branches wait (one over at
    once is recorded as final with the rest), and when every unfinished branch of the block waits,
    so does the run.
    """
    connection = connections[router.db_for_write(StepResult)]
    with transaction.atomic():
        if waits:
            outcomes = [*outcomes, *suspend_branches(group_id, run_id, waits)]
        if connection.vendor == "postgresql" and outcomes and not retries and not waits:
            # Every result is final: stored and counted in one statement.
            mine, recorded_counts = _store_and_count(group_id, outcomes, connection)
            recorded = Recorded(mine, recorded_counts)
        else:
            recorded = Recorded(_store_batch(outcomes) if outcomes else set())
            finals = failures = 0
            again: list[NextAttempt] = []
            for row, attempt in outcomes:
                if row.pk not in recorded.mine:
                    continue
                if row.pk in retries:
                    again.append(retries[row.pk])
                    continue
                finals += 1
                failures += int(attempt.failed)
            if again:
                StepResult.objects.bulk_create([nxt.row for nxt in again])
                dispatch.submit(*(nxt.job() for nxt in again))
            if finals:
                recorded.counts = count_finals(group_id, finals, failures)
        if recorded.counts is not None and recorded.counts.status == GroupStatus.CANCELLED:
            # The run was cancelled while these branches executed: they ran, and are cancelled.
            mark_cancelled(recorded.mine)
        else:
            notify.branches(group_id, run_id, outcomes, recorded.mine)
        if recorded.counts is not None:
            closing = decide(recorded.counts) if decide is not None else None
            if closing is not None:
                recorded.closed = close_in_transaction(closing[0], group_id, closing[1])
        if claim_next is not None and not recorded.closed:
            recorded.next_batch = claim_batch(group_id, *claim_next)
        if not recorded.closed and not recorded.next_batch and (waits or (recorded.counts and recorded.counts.waiting)):
            settle(group_id, run_id if run_id is not None else _run_of(group_id), None if waits else recorded.counts)
    return recorded


def _run_of(group_id: int) -> Any:
    return ParallelGroup.objects.filter(pk=group_id).values_list("run_id", flat=True).first()


def _store_and_count(
    group_id: int, outcomes: list[tuple[Claimed, Attempt]], connection: Any
) -> tuple[set[int], Counts | None]:
    """Store a batch of final results and take them off the group's counters: one PostgreSQL statement.

    The counters move by what was stored (rows recovery took over meanwhile are not), and not at
    all when nothing was.
    """
    store, params = _store_batch_sql(outcomes, connection)
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    failed = StepStatus.FAILED.value
    statement = (
        f"WITH stored AS ({store}), counted AS (UPDATE {table} SET "
        "pending_count = pending_count - CASE WHEN status = %s THEN 0 ELSE (SELECT count(*) FROM stored) END, "
        "failed_count = failed_count + CASE WHEN status = %s THEN 0 "
        "ELSE (SELECT count(*) FROM stored WHERE stored.status = %s) END "
        "WHERE id = %s AND EXISTS (SELECT 1 FROM stored) RETURNING pending_count, failed_count, status, waiting_count) "
        "SELECT (SELECT array_agg(stored.id) FROM stored), (SELECT count(*) FROM stored), "
        "(SELECT count(*) FROM stored WHERE stored.status = %s), (SELECT pending_count FROM counted), "
        "(SELECT failed_count FROM counted), (SELECT status FROM counted), (SELECT waiting_count FROM counted)"
    )
    with connection.cursor() as cursor:
        cancelled = GroupStatus.CANCELLED.value
        cursor.execute(statement, [*params, cancelled, cancelled, failed, group_id, failed])
        ids, stored, stored_failed, pending, failed_count, status, waiting = cursor.fetchone()
    if not stored:
        return set(), None
    return set(ids), Counts(pending, failed_count, stored, stored_failed, status, waiting)


def record_block_and_join(
    group_id: int, run: WorkflowRun, outcomes: list[tuple[Claimed, Attempt]], closing: Closing
) -> Recorded:
    """Record the final result of every branch of a block, and close it as ``closing`` says.

    For a job that executed every branch of the block itself (a short block): everything is known
    before anything is written, so on PostgreSQL it is one statement. It closes the group only if
    every result was still this worker's to store (none was taken over meanwhile), and moves the
    run only if it closed the group; the counters move by what was stored, as always.
    """
    connection = connections[router.db_for_write(StepResult)]
    if connection.vendor != "postgresql" or closing.cancel_pending:
        whole = len(outcomes)
        return record_batch(
            group_id,
            outcomes,
            {},
            None,
            lambda counts: (run, closing) if counts.finals == whole and counts.status == GroupStatus.RUNNING else None,
        )
    store, params = _store_batch_sql(outcomes, connection)
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    failed = StepStatus.FAILED.value
    # The group is closed exactly when every branch was stored here, and it is still open.
    closes = "(status = %s AND (SELECT count(*) FROM stored) = %s)"
    whole_params = [GroupStatus.RUNNING.value, len(outcomes)]
    closed_values: list[tuple[str, str, list[Any]]] = [
        ("status", "%s", [closing.status]),
        ("results", "%s::jsonb", [_json(closing.results)]),
        ("error", "%s::jsonb", [_json(closing.error)]),
        ("finished_at", "%s", [timezone.now()]),
        ("lease_owner", "''", []),
        ("lease_expires_at", "NULL", []),
    ]
    set_closed = ", ".join(
        f"{column} = CASE WHEN {closes} THEN {value} ELSE {column} END" for column, value, _ in closed_values
    )
    closed_params: list[Any] = [param for _, _, value in closed_values for param in (*whole_params, *value)]
    # A cancelled group's counters are final: results arriving later leave them.
    grouped = (
        f"grouped AS (UPDATE {table} SET pending_count = pending_count - "
        "CASE WHEN status = %s THEN 0 ELSE (SELECT count(*) FROM stored) END, "
        "failed_count = failed_count + CASE WHEN status = %s THEN 0 "
        "ELSE (SELECT count(*) FROM stored WHERE stored.status = %s) END, "
        f"{set_closed} WHERE id = %s AND EXISTS (SELECT 1 FROM stored) RETURNING pending_count, failed_count, status)"
    )
    # The run moves after the group is locked and closed: the group first, as for every writer.
    moved, move_params = sql.move_run(
        "moved",
        run,
        closing.run_fields,
        connection,
        when="EXISTS (SELECT 1 FROM grouped WHERE grouped.status = %s)",
        when_params=(closing.status,),
    )
    statement = (
        f"WITH stored AS ({store}), {grouped}, {moved} "
        "SELECT (SELECT array_agg(stored.id) FROM stored), (SELECT count(*) FROM stored), "
        "(SELECT count(*) FROM stored WHERE stored.status = %s), (SELECT pending_count FROM grouped), "
        "(SELECT failed_count FROM grouped), (SELECT status FROM grouped), (SELECT count(*) FROM moved)"
    )
    with connection.cursor() as cursor:
        cancelled = GroupStatus.CANCELLED.value
        cursor.execute(
            statement, [*params, cancelled, cancelled, failed, *closed_params, group_id, *move_params, failed]
        )
        ids, stored, stored_failed, pending, failed_count, status, moved_count = cursor.fetchone()
    if not stored:
        return Recorded(set())
    recorded = Recorded(set(ids), Counts(pending, failed_count, stored, stored_failed, GroupStatus.RUNNING))
    if moved_count:
        recorded.closed = True
        # The branches with the run as their results found it; the join's move is the next change.
        notify.steps(run, notify.branch_rows(run.pk, group_id, outcomes, recorded.mine))
        apply_move(run, closing.run_fields, group_id=group_id)
    elif status == GroupStatus.CANCELLED:
        # The run was cancelled while the block executed. The statement committed the results
        # already: they are marked cancelled by a second one, which only this path costs.
        recorded.counts = Counts(pending, failed_count, stored, stored_failed, status)
        mark_cancelled(recorded.mine)
    elif status != GroupStatus.RUNNING:
        raise RuntimeError(f"group {group_id} of run {run.pk} was closed without its run moving")
    else:
        notify.branches(group_id, run.pk, outcomes, recorded.mine)
    return recorded


def mark_cancelled(row_ids: set[int]) -> int:
    """Results just stored for branches of a cancelled group are ``cancelled``, keeping their
    output or error: they ran, but count for nothing. In the transaction that stored them."""
    if not row_ids:
        return 0
    return StepResult.objects.filter(
        pk__in=row_ids, status__in=(StepStatus.COMPLETED, StepStatus.FAILED), group__status=GroupStatus.CANCELLED
    ).update(status=StepStatus.CANCELLED)


def _json(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _store_batch(outcomes: list[tuple[Claimed, Attempt]]) -> set[int]:
    """Write a batch of results in one statement; returns the ids of the rows this worker still held."""
    connection = connections[router.db_for_write(StepResult)]
    sql, params = _store_batch_sql(outcomes, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk for pk, _ in cursor.fetchall()}


def _store_batch_sql(outcomes: list[tuple[Claimed, Attempt]], connection: Any) -> tuple[str, list[Any]]:
    """The UPDATE that writes a batch of results (each with the logs of its attempt), only to rows this
    worker still holds, ``RETURNING id, status``."""
    qn = connection.ops.quote_name
    table = qn(StepResult._meta.db_table)
    json_field = StepResult._meta.get_field("output")
    time_field = StepResult._meta.get_field("started_at")
    postgres = connection.vendor == "postgresql"

    def as_json(value: Any) -> Any:
        if value is None:
            return None
        # PostgreSQL takes JSON text and casts it (cheaper to send than jsonb values in an array).
        return dumps(value) if postgres else json_field.get_db_prep_value(value, connection)

    values = [
        (
            row.pk,
            StepStatus.FAILED.value if attempt.failed else StepStatus.COMPLETED.value,
            None if attempt.failed else as_json(attempt.output),
            as_json(attempt.reason) if attempt.failed else None,
            time_field.get_db_prep_value(attempt.started_at, connection),
            time_field.get_db_prep_value(attempt.finished_at, connection),
            as_json(attempt.logs),
        )
        for row, attempt in outcomes
    ]
    columns = ("status", "output", "error", "started_at", "finished_at", "logs")
    if postgres:
        # One array per column: the statement's size does not grow with the batch.
        source = (
            "(SELECT id, status, output::jsonb, error::jsonb, started_at, finished_at, logs::jsonb FROM "
            "unnest(%s::bigint[], %s::varchar[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], "
            "%s::text[]) AS u (id, status, output, error, started_at, finished_at, logs)) "
            f"AS v (id, {', '.join(qn(c) for c in columns)})"
        )
        params: list[Any] = [list(column) for column in zip(*values, strict=True)]
    else:
        rows_sql = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(values))
        names = ", ".join(f"column{index + 1} AS {name}" for index, name in enumerate(("id", *columns)))
        source = f"(SELECT {names} FROM (VALUES {rows_sql})) AS v"
        params = [value for row in values for value in row]
    sql = (
        f"UPDATE {table} SET {', '.join(f'{qn(c)} = v.{qn(c)}' for c in columns)}, "
        f"{qn('lease_owner')} = '', {qn('lease_expires_at')} = NULL FROM {source} "
        f"WHERE {table}.{qn('id')} = v.id AND {table}.{qn('status')} = %s AND {table}.{qn('lease_owner')} = %s "
        f"RETURNING {table}.{qn('id')}, {table}.{qn('status')}"
    )
    return sql, [*params, StepStatus.RUNNING.value, leases.owner()]


def claim_branch(row_id: int, job_id: str) -> bool:
    """Take the pending attempt ``row_id`` by id (its own job ``job_id``, when in a worker)."""
    now = timezone.now()
    return bool(
        StepResult.objects.filter(pk=row_id, status=StepStatus.PENDING).update(
            status=StepStatus.RUNNING, started_at=now, job_id=job_id or F("job_id"), **held_fields(now)
        )
    )


def cancel_claimed(row_ids: list[int]) -> int:
    """Claimed branches this process will not start (their run was cancelled meanwhile) are
    cancelled, without a start time: they never started."""
    return StepResult.objects.filter(pk__in=row_ids, status=StepStatus.RUNNING, lease_owner=leases.owner()).update(
        status=StepStatus.CANCELLED, started_at=None, finished_at=timezone.now(), **released_fields()
    )


def cancel_branch(row_id: int) -> None:
    """A claimed branch whose run or block is no longer running is not executed: it is cancelled
    (without a start time: it never started)."""
    StepResult.objects.filter(pk=row_id, status=StepStatus.RUNNING).update(
        status=StepStatus.CANCELLED, started_at=None, finished_at=timezone.now(), **released_fields()
    )


@dataclass(frozen=True, slots=True)
class NextAttempt:
    """A branch's next attempt, not saved yet: its row, the queue of its job and the job's delay."""

    row: StepResult
    queue: str
    delay: float

    def job(self) -> dispatch.Job:
        """The attempt's own job (once the row is saved)."""
        return dispatch.run_branch_job(self.row.pk, self.row.run_id, self.row.job_id, self.queue, self.delay)


def next_attempt(
    run_id: Any, group_id: int | None, step: str, attempt: int, queue: str, delay: float, index: int | None = None
) -> NextAttempt:
    """Attempt ``attempt`` of branch ``step``, due in ``delay`` seconds with a job of its own on ``queue``.

    Its row's deadline (by when a worker must have picked the job up) is the delay plus a lease.
    """
    deadline = leases.retry_deadline(delay)
    row = StepResult(
        run_id=run_id,
        step=step,
        attempt=attempt,
        group_id=group_id,
        job_id=dispatch.new_job_id(),
        lease_expires_at=deadline,
        item_index=index,
    )
    return NextAttempt(row, queue, delay)


def retry_branch(row_id: int, attempt: Attempt, nxt: NextAttempt) -> bool:
    """Record the running attempt ``row_id`` as failed and insert its next attempt ``nxt``, sending its job.

    ``False`` (nothing written) when the attempt is no longer running: somebody recorded it first.
    """
    with transaction.atomic():
        updated = StepResult.objects.filter(pk=row_id, status=StepStatus.RUNNING).update(
            status=StepStatus.FAILED,
            error=attempt.reason,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            logs=attempt.logs,
            **released_fields(),
        )
        if not updated:
            return False
        nxt.row.save(force_insert=True)
        dispatch.submit(nxt.job())
        notify.branch(row_id)
    return True


def record_branch(row_id: int, group_id: int, attempt: Attempt, decide: Decide | None = None) -> Recorded | None:
    """Store the final result of the running attempt ``row_id``, count it and close the group if it
    decided the block (see :func:`record_batch`); ``None`` if it was recorded already."""
    failed = attempt.failed
    with transaction.atomic():
        updated = StepResult.objects.filter(pk=row_id, status=StepStatus.RUNNING).update(
            status=StepStatus.FAILED if failed else StepStatus.COMPLETED,
            output=None if failed else attempt.output,
            error=attempt.reason if failed else None,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            logs=attempt.logs,
            **released_fields(),
        )
        if not updated:
            return None
        recorded = Recorded({row_id}, count_finals(group_id, 1, int(failed)))
        if recorded.counts is not None and recorded.counts.status == GroupStatus.CANCELLED:
            mark_cancelled(recorded.mine)
        else:
            notify.branch(row_id)
        closing = decide(recorded.counts) if decide is not None and recorded.counts is not None else None
        if closing is not None:
            recorded.closed = close_in_transaction(closing[0], group_id, closing[1])
        if not recorded.closed and recorded.counts is not None and recorded.counts.waiting:
            settle(group_id, _run_of(group_id), recorded.counts)
    return recorded


# -- recovery: deadlines of waiting branches ----------------------------------------------------


def postpone_branch(row: StepResult, until: datetime) -> bool:
    """Move the deadline of the pending attempt ``row`` if it still waits as when it was read."""
    return bool(
        StepResult.objects.filter(pk=row.pk, status=StepStatus.PENDING, lease_expires_at=row.lease_expires_at).update(
            lease_expires_at=until
        )
    )


def postpone_drain(group_id: int, job_id: str, until: datetime, overdue_at: datetime | None = None) -> bool:
    """Move the deadline of the pending rows that drain job ``job_id`` takes (only overdue ones, if given)."""
    waiting = StepResult.objects.filter(group_id=group_id, job_id=job_id, status=StepStatus.PENDING)
    if overdue_at is not None:
        waiting = waiting.filter(lease_expires_at__lt=overdue_at)
    return bool(waiting.update(lease_expires_at=until))
