"""Branches executed in batches: how a parallel block's first attempts reach the workers.

A block of N branches is not N RQ jobs. Its fan-out sends one *drain job* per queue, which brings
in more (up to ``DURABLE["PARALLEL_JOBS"]``) while branches are left; each drain job claims pending branches of the block in batches
(``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING``), executes them,
and records the whole batch in one transaction. Drain jobs on several workers share a block
without ever taking the same branch, and a batch grows while its branches are quick (up to
:data:`MAX_BATCH`) and shrinks to one branch at a time when they are slow, so slow branches still
spread over every worker while a thousand no-op branches cost a handful of commits.

A retry of a branch, and a branch that recovery or an operator sends again, is its own job
(:func:`durable_django.blocks.execute_branch`): its row is claimed by id.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from . import dispatch, leases, results
from .attempts import Attempt, call_step, has_budget, lost_attempts
from .blocks import next_attempt
from .conf import durable_settings
from .context import dumps, to_step_context
from .definition import Parallel, Step, Workflow, find_workflow, queue_for
from .leases import released_fields
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun

logger = logging.getLogger("durable_django")

# A batch grows while executing it takes less than half of TARGET_SECONDS and shrinks above twice.
TARGET_SECONDS = 0.05
MAX_BATCH = 500


def plan(group: ParallelGroup, wf: Workflow, block: Parallel) -> list[dispatch.Job]:
    """Insert a new group's pending rows, each naming the drain job that will take it; those jobs."""
    by_queue: dict[str, list[Step]] = {}
    for member in block.steps:
        by_queue.setdefault(queue_for(wf, member), []).append(member)
    rows: list[tuple[str, str]] = []
    jobs: list[dispatch.Job] = []
    for queue, members in by_queue.items():
        # One drain job per queue to begin with; it brings in more while there is work left for them.
        jobs.append(dispatch.run_branches_job(group.pk, group.run_id, queue))
        rows.extend((member.name, jobs[-1].job_id) for member in members)
    _insert_pending(group, rows, leases.expiry())
    return jobs


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
    table = qn(StepResult._meta.db_table)
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
        f"INSERT INTO {table} ({', '.join(qn(c) for c in columns)}) "
        "SELECT %s, %s, u.step, u.job_id, 1, %s, %s, '', %s FROM unnest(%s::varchar[], %s::varchar[]) AS u(step, job_id)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                group.run_id,
                group.pk,
                StepStatus.PENDING.value,
                timezone.now(),
                deadline,
                [step for step, _ in rows],
                [job_id for _, job_id in rows],
            ],
        )


@dataclass(slots=True)
class Claimed:
    pk: int
    step: str
    attempt: int


def _claim(group: ParallelGroup, names: list[str] | None, size: int) -> list[Claimed]:
    """Take up to ``size`` pending first attempts of ``group`` (among ``names``): one statement."""
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
        f"ORDER BY {qn('id')} LIMIT %s{lock}) RETURNING {qn('id')}, {qn('step')}, {qn('attempt')}"
    )
    field = StepResult._meta.get_field("started_at")
    stamp = field.get_db_prep_value(now, connection)
    expires = field.get_db_prep_value(leases.expiry(now), connection)
    params = [StepStatus.RUNNING.value, stamp, leases.owner(), expires, group.pk, StepStatus.PENDING.value]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *only, size])
        rows = cursor.fetchall()
    return sorted((Claimed(pk, step, attempt) for pk, step, attempt in rows), key=lambda row: row.pk)


def execute_drain(group_id: int, queue: str, index: int = 0) -> None:
    """Entry point of a drain job: execute the block's pending first attempts on ``queue`` in batches.

    Drain job ``index`` sends drain job ``index + 1`` as soon as it has claimed work and some is
    left, up to ``DURABLE["PARALLEL_JOBS"]`` jobs: slow branches spread over idle workers within
    moments, while quick ones are mostly done by the first job and leave few idle jobs behind.
    """
    unclaimed = StepResult.objects.filter(group=OuterRef("pk"), status=StepStatus.PENDING, attempt=1)
    group = (
        ParallelGroup.objects.select_related("run").annotate(unclaimed=Exists(unclaimed)).filter(pk=group_id).first()
    )
    if group is None or group.status != GroupStatus.RUNNING or group.run.status != RunStatus.RUNNING:
        return
    if not group.unclaimed:
        # The other drain jobs of the block took every branch already: a job that cost one read.
        return
    run = group.run
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    if wf is None or block is None:
        _fail_unknown(group, wf, queue)
        return
    steps = {member.name: member for member in block.steps if queue_for(wf, member) == queue}
    if not steps:
        return
    names = None if len(steps) == len(block.steps) else list(steps)
    ctx = to_step_context(run.context)
    size = 1
    batch = _claim(group, names, size)
    if batch and index + 1 < durable_settings.PARALLEL_JOBS and _unclaimed(group, names):
        dispatch.submit(dispatch.run_branches_job(group.pk, run.pk, queue, index + 1))
    while batch:
        started = time.monotonic()
        outcomes: list[tuple[Claimed, Step, Attempt]] = []
        with leases.heartbeat.hold_many(StepResult, [row.pk for row in batch]):
            for row in batch:
                step = steps[row.step]
                attempt = call_step(step, copy.deepcopy(ctx), run.pk, in_parallel=True)
                outcomes.append((row, step, attempt))
        elapsed = time.monotonic() - started
        # A short batch means nothing was left to claim: no need to ask again.
        more = len(batch) == size
        if elapsed < TARGET_SECONDS / 2:
            size = min(size * 2, MAX_BATCH)
        elif elapsed > TARGET_SECONDS * 2:
            size = max(size // 2, 1)
        # Recording a batch and claiming the next one is one transaction: one commit per batch.
        with transaction.atomic():
            _record(group, run, wf, block, outcomes)
            batch = _claim(group, names, size) if more else []


def _unclaimed(group: ParallelGroup, names: list[str] | None) -> bool:
    pending = StepResult.objects.filter(group=group, status=StepStatus.PENDING, attempt=1)
    return (pending.filter(step__in=names) if names is not None else pending).exists()


def _record(
    group: ParallelGroup,
    run: WorkflowRun,
    wf: Workflow,
    block: Parallel,
    outcomes: list[tuple[Claimed, Step, Attempt]],
) -> None:
    """Store a batch of attempts (inside the caller's transaction), count the final ones, send the join if due."""
    retry_of: dict[int, tuple[Step, float]] = {}
    group_open: bool | None = None
    for row, step, attempt in outcomes:
        if (
            attempt.failed
            and attempt.retryable
            and has_budget(step, row.attempt, functools.partial(lost_attempts, run.pk, row.step, group.pk))
        ):
            if group_open is None:
                group_open = ParallelGroup.objects.filter(pk=group.pk, status=GroupStatus.RUNNING).exists()
            if group_open:
                retry_of[row.pk] = (step, step.retry.delay(row.attempt))
    # Rows recovery took over meanwhile (this worker looked dead) are no longer this worker's to record.
    mine = _store(outcomes)
    finals = failures = 0
    retries: list[tuple[StepResult, Step, float]] = []
    for row, _, attempt in outcomes:
        if row.pk not in mine:
            continue
        if row.pk in retry_of:
            step, delay = retry_of[row.pk]
            retries.append((next_attempt(run.pk, group.pk, row.step, row.attempt + 1, delay), step, delay))
            continue
        finals += 1
        failures += int(attempt.failed)
    if retries:
        StepResult.objects.bulk_create([nxt for nxt, _, _ in retries])
        dispatch.submit(
            *(
                dispatch.run_branch_job(nxt.pk, nxt.run_id, nxt.job_id, queue_for(wf, step), delay)
                for nxt, step, delay in retries
            )
        )
    if finals:
        _count(group, block, finals, failures, queue_for(wf))


def _store(outcomes: list[tuple[Claimed, Step, Attempt]]) -> set[int]:
    """Write a batch of results in one statement; returns the ids of the rows this worker still held."""
    connection = connections[router.db_for_write(StepResult)]
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
        )
        for row, _, attempt in outcomes
    ]
    columns = ("status", "output", "error", "started_at", "finished_at")
    if postgres:
        # One array per column: the statement's size does not grow with the batch.
        source = (
            "(SELECT id, status, output::jsonb, error::jsonb, started_at, finished_at FROM "
            "unnest(%s::bigint[], %s::varchar[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
            f"AS u (id, status, output, error, started_at, finished_at)) AS v (id, {', '.join(qn(c) for c in columns)})"
        )
        params: list[Any] = [list(column) for column in zip(*values, strict=True)]
    else:
        rows_sql = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(values))
        names = ", ".join(f"column{index + 1} AS {name}" for index, name in enumerate(("id", *columns)))
        source = f"(SELECT {names} FROM (VALUES {rows_sql})) AS v"
        params = [value for row in values for value in row]
    sql = (
        f"UPDATE {table} SET {', '.join(f'{qn(c)} = v.{qn(c)}' for c in columns)}, "
        f"{qn('lease_owner')} = '', {qn('lease_expires_at')} = NULL FROM {source} "
        f"WHERE {table}.{qn('id')} = v.id AND {table}.{qn('status')} = %s AND {table}.{qn('lease_owner')} = %s "
        f"RETURNING {table}.{qn('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, StepStatus.RUNNING.value, leases.owner()])
        return {pk for (pk,) in cursor.fetchall()}


def _count(group: ParallelGroup, block: Parallel | None, finals: int, failures: int, join_queue: str) -> None:
    """Decrement the group's counters by a batch of final results; send the join if they decide it."""
    connection = connections[router.db_for_write(ParallelGroup)]
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    # The row lock of this UPDATE serialises finishing batches: each one sees its own counts.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET pending_count = pending_count - %s, failed_count = failed_count + %s "
            "WHERE id = %s RETURNING pending_count, failed_count",
            [finals, failures, group.pk],
        )
        pending, failed = cursor.fetchone()
    fail_fast = block is not None and block.on_error == "fail_fast" and block.into is None
    # Under fail_fast (without into) the batch with the first failure decides; otherwise the last one.
    first_failure = failures > 0 and failed == failures
    decides = (first_failure or (pending == 0 and failed == 0)) if fail_fast else pending == 0
    if decides:
        dispatch.submit(dispatch.join_group_job(group.pk, group.run_id, join_queue))


def _fail_unknown(group: ParallelGroup, wf: Workflow | None, queue: str) -> None:
    """The definition lost this block: every pending branch fails with ``unknown_step``, then the join decides."""
    reason = results.unknown_step(
        f"workflow {group.run.workflow!r} has no parallel block {group.name!r} with these branches"
    )
    with transaction.atomic():
        failed = StepResult.objects.filter(group=group, status=StepStatus.PENDING, attempt=1).update(
            status=StepStatus.FAILED, error=reason, finished_at=timezone.now(), **released_fields()
        )
        if failed:
            _count(group, None, failed, failed, queue_for(wf))
