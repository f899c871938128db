"""Writes of runs: starting, claiming, moving, failing, reopening and cancelling one."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import dispatch, leases, results, tracing
from ..conf import durable_settings
from ..definition import Foreach, Parallel, Workflow, find_workflow, queue_for
from ..leases import held_fields, released_fields
from ..logging import run_fields, run_finished
from ..models import (
    FINISHED_RUN_STATUSES,
    Compensation,
    GroupStatus,
    ParallelGroup,
    RunStatus,
    StepKind,
    StepResult,
    StepStatus,
    Wait,
    WaitStatus,
    WorkflowRun,
)
from . import notify, sql

logger = logging.getLogger("durable_django")

UNFINISHED = (RunStatus.PENDING, RunStatus.RUNNING)
CANCELLABLE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


# -- fields of a run ------------------------------------------------------------------------------


def fail_fields(step_name: str, reason: Any, **where: Any) -> dict[str, Any]:
    """Fields of a run that failed at ``step_name`` (``where``: e.g. the parallel block)."""
    return {
        "status": RunStatus.FAILED,
        "error": results.run_error(step_name, reason, **where),
        "finished_at": timezone.now(),
        **released_fields(),
    }


def failing_fields(
    run: WorkflowRun, step_name: str, reason: Any, *, done: Iterable[str] = (), **where: Any
) -> dict[str, Any]:
    """Fields of ``run`` failing at ``step_name``: those of :func:`fail_fields`, or, when completed
    steps or branches of it have compensations to run, those of a run that compensates first.

    ``done``: steps or branches completed by the transition that fails the run (a fail-fast block
    recording its results), which the database does not hold yet. A workflow without compensations
    costs nothing; one with them, at most one ``EXISTS`` query.
    """
    fields = fail_fields(step_name, reason, **where)
    wf = find_workflow(run.workflow)
    if wf is None or not wf.has_compensations or not to_compensate(run.pk, wf, done):
        return fields
    return compensating_fields(fields)


def compensating_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of a run that ends (failed, or cancelled), turned into those of a run that runs
    its compensations first: it waits for its compensate job, unfinished (see :func:`apply_move`)."""
    compensating = {name: value for name, value in fields.items() if name != "finished_at"}
    return {
        **compensating,
        "status": RunStatus.COMPENSATING,
        "compensation": Compensation.RUNNING,
        **released_fields(leases.expiry()),
    }


def to_compensate(run_id: Any, wf: Workflow, done: Iterable[str] = ()) -> bool:
    """Whether a completed step or branch of the run (or one of ``done``) has a compensation to run."""
    compensable = wf.compensable()
    if any(name in compensable for name in done):
        return True
    return (
        StepResult.objects.filter(
            run_id=run_id, kind=StepKind.STEP, status=StepStatus.COMPLETED, step__in=list(compensable)
        )
        .filter(compensations__isnull=True)
        .exists()
    )


def move_fields(wf: Workflow, position: int | None, context: dict[str, Any]) -> dict[str, Any]:
    """Fields that put a run at step ``position`` of ``wf`` (completing it past the last step)."""
    if position is None or position >= len(wf.flat):
        return {
            "context": context,
            "current_step": "",
            "current_attempt": 1,
            "status": RunStatus.COMPLETED,
            "finished_at": timezone.now(),
            **released_fields(),
        }
    # The process that moves the run on executes its next step: it holds the run's lease.
    return {"context": context, "current_step": wf.flat[position].name, "current_attempt": 1, **held_fields()}


# -- runs -----------------------------------------------------------------------------------------


def create_run(run: WorkflowRun, queue: str, timers: Iterable[dispatch.Job] = ()) -> bool:
    """Insert the new ``run`` and send its first job on ``queue`` (none for a delayed run: its
    start job is among ``timers``, with its deadline's); ``False`` if a unique key was taken."""
    try:
        with transaction.atomic(using=router.db_for_write(WorkflowRun)):
            run.save(force_insert=True)
            notify.started(run)
    except IntegrityError:
        return False
    first = [] if run.run_at is not None else [dispatch.run_workflow_job(run.pk, queue, run.version)]
    dispatch.submit(*first, *timers)
    return True


def claim_run(run_id: Any, version: int) -> WorkflowRun | None:
    """Take the lease of a run that waits for job ``version`` and load it; ``None`` if it does not.

    One statement (``UPDATE ... RETURNING``): the claim and the read of the claimed row. A stale or
    duplicate job (the run moved on, finished, was cancelled, or another worker holds it) claims nothing.
    """
    try:
        key = WorkflowRun._meta.pk.to_python(run_id)
    except (ValidationError, ValueError):
        logger.error("run job with a malformed run id %r; dropping it", run_id)
        return None
    connection = connections[router.db_for_write(WorkflowRun)]
    qn = connection.ops.quote_name
    stamp = WorkflowRun._meta.get_field("started_at")
    now = timezone.now()
    # Written out rather than compiled by the ORM: the first statement of every job.
    sql = (
        f"UPDATE {qn(WorkflowRun._meta.db_table)} SET {qn('status')} = %s, "
        f"{qn('started_at')} = COALESCE({qn('started_at')}, %s), {qn('version')} = {qn('version')} + 1, "
        f"{qn('lease_owner')} = %s, {qn('lease_expires_at')} = %s "
        f"WHERE {qn('id')} = %s AND {qn('status')} IN (%s, %s) AND {qn('lease_owner')} = '' AND {qn('version')} = %s"
    )
    params = [
        RunStatus.RUNNING.value,
        stamp.get_db_prep_value(now, connection),
        leases.owner(),
        stamp.get_db_prep_value(leases.expiry(now), connection),
        WorkflowRun._meta.pk.get_db_prep_value(key, connection),
        RunStatus.PENDING.value,
        RunStatus.RUNNING.value,
        version,
    ]
    claimed = list(WorkflowRun.objects.raw(f"{sql} RETURNING *", params))
    if not claimed:
        if not WorkflowRun.objects.filter(pk=key).exists():
            logger.warning("run %s does not exist; dropping its job", run_id, extra={"run_id": str(run_id)})
        else:
            logger.debug(
                "run %s is not waiting for job version %s; nothing to do",
                run_id,
                version,
                extra={"run_id": str(run_id)},
            )
        return None
    return claimed[0]


def transition(
    run: WorkflowRun,
    fields: dict[str, Any],
    rows: list[StepResult] | None = None,
    jobs: Iterable[dispatch.Job] = (),
    *,
    resume_on: str | None = None,
    delay: float = 0.0,
) -> bool:
    """Apply ``fields`` to ``run`` if nobody moved it since it was read; store ``rows``, send ``jobs``.

    ``resume_on``: also send the job that executes the run from its new version on that queue
    (after ``delay`` seconds). One transaction; ``False`` (and nothing written) when the run's
    version moved on: another worker advanced it, or it was cancelled.
    """
    new_version = run.version + 1
    sent = [*jobs]
    if resume_on is not None:
        sent.append(dispatch.run_workflow_job(run.pk, resume_on, new_version, delay))
    connection = connections[router.db_for_write(WorkflowRun)]
    if connection.vendor == "postgresql" and len(rows or ()) <= 1 and not connection.in_atomic_block:
        # The common case, a sequential step: one statement, one round trip, one commit.
        if not _transition_statement(run, fields, rows[0] if rows else None, connection):
            logger.info(
                "run %s moved on while this worker held version %s; dropping its update",
                run.pk,
                run.version,
                extra=run_fields(run.pk, run.workflow),
            )
            return False
        dispatch.submit(*sent)  # committed already: sent at once
    else:
        # No savepoint when nested (a join closes its group in the same transaction): a lost race writes nothing.
        with transaction.atomic(savepoint=False):
            if not move_if_unchanged(run, fields):
                return False
            if rows:
                StepResult.objects.bulk_create(rows)
            dispatch.submit(*sent)
    apply_move(run, fields, rows or ())
    return True


def move_if_unchanged(run: WorkflowRun, fields: dict[str, Any]) -> bool:
    """The conditional ``UPDATE`` of a transition: ``fields`` and the next version, if ``run`` is
    still running at the version this worker read; ``False`` (logged) when it moved on meanwhile.
    For :func:`apply_move` to follow."""
    updated = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.RUNNING).update(
        version=run.version + 1, **fields
    )
    if not updated:
        logger.info(
            "run %s moved on while this worker held version %s; dropping its update",
            run.pk,
            run.version,
            extra=run_fields(run.pk, run.workflow),
        )
    return bool(updated)


def apply_move(
    run: WorkflowRun,
    fields: dict[str, Any],
    rows: Iterable[StepResult] = (),
    *,
    started: Iterable[Wait] = (),
    resolved: Iterable[Wait] = (),
    group_id: int | None = None,
) -> None:
    """Leave on ``run`` the version and ``fields`` a transition of it wrote.

    A run that finished with it (completed or failed) is logged once the transaction commits, and
    the span of a run that ended (cancelled too) is emitted then (:mod:`durable_django.tracing`). A
    run that now compensates is sent its compensate job then: every move of a run goes through
    here, so this is the one place that sends it. The receivers of :mod:`durable_django.signals`
    hear of it once the transaction commits: of the attempts ``rows`` it finished, the waits it
    ``started`` and ``resolved``, the group ``group_id`` it closed, and the run's end, in that
    order (:func:`durable_django.store.notify.moved`).
    """
    run.version += 1
    for name, value in fields.items():
        setattr(run, name, value)
    status = fields.get("status")
    if status in FINISHED_RUN_STATUSES and (traced := tracing.run_ended(run)) is not None:
        transaction.on_commit(traced, using=router.db_for_write(WorkflowRun))
    if status == RunStatus.COMPLETED or status == RunStatus.FAILED:
        # The error as stored: a run that ends after its compensations keeps the one it failed with.
        announce = partial(run_finished, logger, run.pk, run.workflow, str(status), run.error)
        transaction.on_commit(announce, using=router.db_for_write(WorkflowRun))
    elif status == RunStatus.COMPENSATING:
        dispatch.submit(dispatch.compensate_job(run.pk, queue_for(find_workflow(run.workflow)), run.version))
        transaction.on_commit(
            partial(run_compensates, run.pk, run.workflow, fields.get("error")), using=router.db_for_write(WorkflowRun)
        )
    notify.moved(run, rows, started=started, resolved=resolved, group_id=group_id)


def run_compensates(run_id: Any, workflow: str, error: Any) -> None:
    """The line of a run that failed (or was cancelled) and now runs its compensations."""
    where = f"failed at {error.get('step')!r}" if isinstance(error, dict) else "was cancelled"
    logger.warning(
        "run %s of workflow %r %s; running its compensations",
        run_id,
        workflow,
        where,
        extra=run_fields(run_id, workflow, outcome="compensating"),
    )


def record_cancelled_attempt(run: WorkflowRun, row: StepResult) -> bool:
    """Store ``row``, an attempt that finished after its run was cancelled, as ``cancelled`` with
    what it returned (its output, or its error): the run's history shows that it ran.

    For a transition of ``run`` that lost its race. Only when the cancel is what moved the run
    from the version the attempt ran under (the run is cancelled at the next version, and a
    cancelled run moves no more): any other winner (recovery took the attempt over, say) recorded
    the attempt its own way. One transaction, which locks the run first.
    """
    with transaction.atomic(using=router.db_for_write(WorkflowRun)):
        # Cancelled, or compensating after a cancel (a failure leaves an error; a cancel does not),
        # or timed out: failed (or compensating) with a workflow timeout.
        cancelled = WorkflowRun.objects.select_for_update().filter(
            Q(status=RunStatus.CANCELLED)
            | Q(status=RunStatus.COMPENSATING, error__isnull=True)
            | Q(status__in=(RunStatus.FAILED, RunStatus.COMPENSATING), error__reason__type=results.WORKFLOW_TIMEOUT),
            pk=run.pk,
            version=run.version + 1,
        )
        if not list(cancelled.values_list("pk", flat=True)):
            return False
        row.status = StepStatus.CANCELLED
        row.lease_owner, row.lease_expires_at = "", None
        row.save(force_insert=True)
    return True


def _transition_statement(run: WorkflowRun, fields: dict[str, Any], row: StepResult | None, connection: Any) -> bool:
    """:func:`transition` as one PostgreSQL statement: the conditional UPDATE and the row's INSERT in one CTE."""
    moved, params = sql.move_run("moved", run, fields, connection)
    statement = f"WITH {moved}"
    if row is not None:
        inserted, row_params = sql.insert_row("inserted", row, "moved", connection, returning="id")
        statement += f", {inserted}"
        params += row_params
    selected = "(SELECT count(*) FROM moved)"
    if row is not None:
        selected += ", (SELECT id FROM inserted)"
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} SELECT {selected}", params)
        found = cursor.fetchone()
    if row is not None and found[0]:
        row.pk = found[1]  # as bulk_create leaves it on the other path
    return bool(found[0])


def fail_run(
    run: WorkflowRun,
    step_name: str,
    reason: Any,
    rows: list[StepResult] | None = None,
    *,
    context: dict[str, Any] | None = None,
) -> bool:
    """Fail ``run`` at ``step_name`` with ``reason`` (storing ``rows`` with it, and ``context``
    when the step before it changed it); it compensates first when completed steps of it have
    compensations (see :func:`failing_fields`)."""
    done = [row.step for row in rows or () if row.status == StepStatus.COMPLETED]
    fields = failing_fields(run, step_name, reason, done=done)
    if context is not None:
        fields["context"] = context
    return transition(run, fields, rows)


def release_run(run: WorkflowRun) -> None:
    """Let go of the lease this process holds on ``run`` without moving it (its work is out already)."""
    WorkflowRun.objects.filter(pk=run.pk, version=run.version, lease_owner=leases.owner()).update(**released_fields())


def take_over_child(run: WorkflowRun, lost_step: str | None, queue: str) -> bool:
    """Set an unfinished child run moving again from version ``run.version``, its executor being gone.

    ``lost_step``: the step it was executing, whose attempt is recorded as ``worker_lost``. Sends
    the run's job on ``queue`` (the calling step collects it: it executes the child inline).
    """
    now = timezone.now()
    fields: dict[str, Any] = {"status": RunStatus.RUNNING, **released_fields(leases.expiry(now))}
    if lost_step is not None:
        fields["current_attempt"] = run.current_attempt + 1
    with transaction.atomic():
        moved = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status__in=UNFINISHED).update(
            version=run.version + 1, **fields
        )
        if not moved:
            return False
        lost = []
        if lost_step is not None:
            lost.append(
                StepResult.objects.create(
                    run=run,
                    step=lost_step,
                    attempt=run.current_attempt,
                    status=StepStatus.FAILED,
                    error=results.worker_lost(),
                    finished_at=now,
                )
            )
        apply_move(run, fields, lost)
        dispatch.submit(dispatch.run_workflow_job(run.pk, queue, run.version))
    return True


# -- retry and cancel -------------------------------------------------------------------


def reopen_run(run: WorkflowRun, fields: dict[str, Any], group_id: int | None = None) -> bool:
    """Put the failed ``run`` back to running with ``fields``, if nobody moved it since it was read.

    ``group_id``: the block it failed in, which is reopened in the same transaction: locked first,
    as by every writer that moves a run on from a block.
    """
    if group_id is not None:
        list(ParallelGroup.objects.select_for_update().filter(pk=group_id).values_list("pk"))
    moved = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.FAILED).update(
        version=run.version + 1, status=RunStatus.RUNNING, **fields
    )
    if moved:
        run.version += 1
    return bool(moved)


def cancel_run(run_id: Any, now: datetime, *, compensate: bool = False, reason: Any = None) -> bool:
    """Cancel a pending, running or waiting run, its branches not started, its waits and its open
    groups (not its children). ``reason``: the run fails with it instead, and only if its
    ``deadline_at`` has passed at ``now`` (a workflow timeout).

    ``compensate``: when completed steps of the run have compensations, it moves to
    ``compensating`` instead, and its compensate job is sent on commit (the run ends
    ``cancelled`` once they ran). Runs inside the caller's transaction. The run's open groups are
    locked first, as by every writer that moves a run on from a block; then, to decide whether it
    compensates, the run.
    """
    groups = list(
        ParallelGroup.objects.select_for_update()
        .filter(run_id=run_id, status=GroupStatus.RUNNING)
        .values_list("pk", flat=True)
    )
    locked = WorkflowRun.objects.select_for_update().filter(pk=run_id, status__in=CANCELLABLE)
    if reason is not None:
        locked = locked.filter(deadline_at__lte=now)
    # What its run span needs too (tracing), in the same read.
    found = locked.values_list("workflow", "current_step", "trace_context", "started_at", "created_at").first()
    if found is None:
        return False
    name, step, carrier, started, created = found
    fields: dict[str, Any] = (
        {"status": RunStatus.CANCELLED, "finished_at": now, **released_fields()}
        if reason is None
        else {**fail_fields(step, reason), "finished_at": now}
    )
    wf = find_workflow(name)
    if compensate and wf is not None and wf.has_compensations and to_compensate(run_id, wf):
        fields = compensating_fields(fields)
    if dispatch.raise_cancel_flag(run_id, dispatch.CANCEL_PENDING_TTL):
        transaction.on_commit(partial(dispatch.raise_cancel_flag, run_id, dispatch.CANCEL_FLAG_TTL))
    updated = WorkflowRun.objects.filter(pk=run_id, status__in=CANCELLABLE).update(version=F("version") + 1, **fields)
    if not updated:
        return False
    if fields["status"] == RunStatus.COMPENSATING:
        version = WorkflowRun.objects.filter(pk=run_id).values_list("version", flat=True).get()
        dispatch.submit(dispatch.compensate_job(run_id, queue_for(wf), version))
    StepResult.objects.filter(run_id=run_id, status=StepStatus.PENDING).update(
        status=StepStatus.CANCELLED, finished_at=now, **released_fields()
    )
    ended = notify.collecting_waits()
    dispatch.withdraw_after_commit(cancel_waits(run_id, now, ended=ended))
    # Its counters are final: nothing is pending or waits any more (results of branches still
    # executing are recorded as cancelled, and counted by nobody).
    ParallelGroup.objects.filter(pk__in=groups).update(
        status=GroupStatus.CANCELLED, finished_at=now, pending_count=0, waiting_count=0, **released_fields()
    )
    notify.cancelled(run_id, groups, ended or ())
    if fields["status"] != RunStatus.COMPENSATING:
        status, error = str(fields["status"]), fields.get("error")
        traced = tracing.ended(run_id, name, carrier, status, started or created, now, error)
        if traced is not None:
            transaction.on_commit(traced, using=router.db_for_write(WorkflowRun))
    executing = StepResult.objects.filter(run_id=run_id, status=StepStatus.RUNNING).values_list("job_id", flat=True)
    transaction.on_commit(partial(dispatch.stop_jobs, run_id, groups, list(executing), queues_of(wf)))
    return True


def queues_of(wf: Workflow | None) -> set[str]:
    """Every queue the jobs of ``wf``'s runs may be on."""
    queues = {queue_for(wf)}
    for node in wf.flat if wf is not None else ():
        queues.add(queue_for(wf, node))
        if isinstance(node, Parallel | Foreach):
            queues.update(queue_for(wf, member) for member in node.steps)
    return queues


def may_start(run_id: Any) -> bool:
    """Whether a step or branch of run ``run_id`` may start now: no cancel of it has committed.

    Asked right before every start. While no cancel is under way it costs one Redis read and no
    statement: :func:`cancel_run` raises the run's flag before it commits. A raised flag (or Redis
    unable to say) is settled by the run's row, read now: a cancel that committed before this read
    is seen, one that commits after it did not precede the start.
    """
    if dispatch.cancel_flag_raised(run_id) is False:
        return True
    return WorkflowRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).exists()


def cancel_waits(
    run_id: Any, now: datetime, *, group_id: int | None = None, ended: list[Wait] | None = None
) -> list[tuple[str, str]]:
    """Cancel the run's waiting waits (only those of branches of ``group_id``, if given) and their
    waiting rows, in the caller's transaction; returns the wake jobs ``(queue, id)`` that have
    nothing left to do, for :func:`durable_django.dispatch.withdraw_after_commit`.

    Of a group (a fail_fast block decided while branches waited), the counters move with the rows.
    ``ended``: filled with the cancelled waits (one more query), for the signals.
    """
    waiting = Wait.objects.filter(run_id=run_id, status=WaitStatus.WAITING)
    if group_id is not None:
        waiting = waiting.filter(step_result__group_id=group_id)
    due = list(waiting.exclude(due_at=None).values_list("pk", flat=True))
    # The callers hold the run's lock: no other writer ends these waits meanwhile.
    found = list(waiting.order_by("pk")) if ended is not None else []
    if not waiting.update(status=WaitStatus.CANCELLED, resolved_at=now):
        return []
    for wait in found:
        wait.status, wait.resolved_at = WaitStatus.CANCELLED, now
    if ended is not None:
        ended.extend(found)
    rows = StepResult.objects.filter(run_id=run_id, status=StepStatus.WAITING)
    if group_id is not None:
        rows = rows.filter(group_id=group_id)
    cancelled = rows.update(status=StepStatus.CANCELLED, finished_at=now)
    if cancelled and group_id is not None:
        ParallelGroup.objects.filter(pk=group_id).update(
            pending_count=F("pending_count") - cancelled, waiting_count=F("waiting_count") - cancelled
        )
    return [(durable_settings.QUEUE, dispatch.wake_job_id(pk)) for pk in due]


# -- recovery: deadlines of waiting runs ---------------------------------------------------------
#
# Work nobody executes carries a deadline in ``lease_expires_at``: by when a worker must have
# picked its job up. Recovery moves it out while the job is on its way; each move is conditional
# on the row still waiting exactly as the sweep read it, so of two sweepers only one acts.


def postpone_runs(run_ids: list[Any], now: datetime, until: datetime) -> int:
    """Move the deadline of waiting runs whose jobs are still queued: one statement for a chunk."""
    return WorkflowRun.objects.filter(pk__in=run_ids, lease_owner="", lease_expires_at__lt=now).update(
        lease_expires_at=until
    )


def postpone_run(run: WorkflowRun, until: datetime) -> bool:
    """Move the deadline of ``run`` if it still waits for the same job as when it was read."""
    return bool(
        WorkflowRun.objects.filter(
            pk=run.pk, version=run.version, lease_owner="", lease_expires_at=run.lease_expires_at
        ).update(lease_expires_at=until)
    )
