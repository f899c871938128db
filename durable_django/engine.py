"""State transitions: start a run, execute its sequential steps, move it on (parallel blocks: blocks.py).

Every transition is one transaction whose winner is decided by a conditional UPDATE: a run's
``version`` (bumped by every transition) or a row's ``status``. A stale or duplicate worker's
update matches no row and its work is dropped, so the engine can be driven at least once by RQ
while every state change happens exactly once. Jobs are sent only after their state commits.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import timedelta
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from . import dispatch, leases, results
from .attempts import call_step, has_budget, lost_attempts
from .context import Unserializable, merge, roundtrip, to_step_context
from .definition import Parallel, Step, Workflow, get_workflow, queue_for
from .exceptions import InvalidInput, WorkflowNotFound
from .leases import held_fields, released_fields
from .models import RunStatus, StepResult, StepStatus, WorkflowRun
from .results import GOTO

logger = logging.getLogger("durable_django")


# -- starting -----------------------------------------------------------------------------------


def get_or_start_run(
    wf: Workflow,
    input: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    parent: WorkflowRun | None = None,
    parent_step: str = "",
    ref: str = "",
    run_id: Any = None,
) -> tuple[WorkflowRun, bool]:
    """Save a run of ``wf`` and dispatch it after the surrounding transaction commits.

    Returns the run and whether this call created it (``True``), or found the one already started
    with the same idempotency key or child reference (``False``), like ``get_or_create``.
    """
    if input is None:
        input = {}
    if not isinstance(input, dict):
        raise InvalidInput(f"Input of workflow {wf.name!r} must be a dict, got {type(input).__name__}.")
    try:
        stored = roundtrip(input)
    except Unserializable as exc:
        raise InvalidInput(f"Input of workflow {wf.name!r} is not JSON-serializable: {exc}") from None
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key or len(idempotency_key) > 255:
            raise InvalidInput("idempotency_key must be a non-empty string of at most 255 characters.")
        existing = WorkflowRun.objects.filter(workflow=wf.name, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    first = wf.steps[0]
    run = WorkflowRun(
        id=run_id or uuid.uuid4(),
        workflow=wf.name,
        input=stored,
        context=stored,
        current_step=first.name,
        idempotency_key=idempotency_key,
        parent=parent,
        parent_step=parent_step,
        ref=ref,
        lease_expires_at=leases.expiry(),
    )
    try:
        with transaction.atomic(using=router.db_for_write(WorkflowRun)):
            run.save(force_insert=True)
    except IntegrityError:
        # Lost a race against a run with the same idempotency key (or child ref): that one wins.
        if idempotency_key is not None:
            return WorkflowRun.objects.get(workflow=wf.name, idempotency_key=idempotency_key), False
        if parent is not None:
            return WorkflowRun.objects.get(parent=parent, parent_step=parent_step, ref=ref), False
        raise
    logger.info("started run %s of workflow %r", run.pk, wf.name)
    dispatch.submit(dispatch.run_workflow_job(run.pk, queue_for(wf, first), run.version))
    return run, True


def start_workflow(
    name: str, input: dict[str, Any] | None = None, *, idempotency_key: str | None = None
) -> WorkflowRun:
    """Start the workflow registered under ``name``; see :meth:`Workflow.start`."""
    return get_workflow(name).start(input, idempotency_key=idempotency_key)


# -- run transitions ----------------------------------------------------------------------------


def _transition(
    run: WorkflowRun,
    fields: dict[str, Any],
    rows: list[StepResult] | None = None,
    jobs: list[dispatch.Job] | None = None,
) -> bool:
    """Apply ``fields`` to ``run`` if nobody moved it since it was read; store ``rows``, send ``jobs``.

    One transaction. Returns ``False`` (and writes nothing) when the run's version moved on:
    another worker advanced it, or it was cancelled.
    """
    connection = connections[router.db_for_write(WorkflowRun)]
    if connection.vendor == "postgresql" and len(rows or ()) <= 1 and not connection.in_atomic_block:
        # The common case, a sequential step: one statement, one round trip, one commit.
        if not _transition_statement(run, fields, rows[0] if rows else None, connection):
            logger.info("run %s moved on while this worker held version %s; dropping its update", run.pk, run.version)
            return False
        dispatch.submit(*(jobs or ()))  # committed already: sent at once
    else:
        # No savepoint when nested (the join closes its group in the same transaction): a lost race writes nothing.
        with transaction.atomic(savepoint=False):
            updated = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.RUNNING).update(
                version=run.version + 1, **fields
            )
            if not updated:
                logger.info(
                    "run %s moved on while this worker held version %s; dropping its update", run.pk, run.version
                )
                return False
            if rows:
                StepResult.objects.bulk_create(rows)
            dispatch.submit(*(jobs or ()))
    run.version += 1
    for name, value in fields.items():
        setattr(run, name, value)
    return True


def _transition_statement(run: WorkflowRun, fields: dict[str, Any], row: StepResult | None, connection: Any) -> bool:
    """``_transition`` as one PostgreSQL statement: the conditional UPDATE and the row's INSERT in one CTE."""
    query = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.RUNNING).query
    update = cast(UpdateQuery, query.chain(UpdateQuery))
    update.add_update_values({"version": run.version + 1, **fields})
    update_sql, update_params = update.get_compiler(connection.alias).as_sql()
    sql = f"WITH moved AS ({update_sql} RETURNING 1)"
    params = list(update_params)
    if row is not None:
        columns = [f for f in StepResult._meta.concrete_fields if not f.primary_key]
        qn = connection.ops.quote_name
        select = ", ".join(f"%s::{f.db_type(connection)}" for f in columns)
        sql += (
            f", inserted AS (INSERT INTO {qn(StepResult._meta.db_table)} ({', '.join(qn(f.column) for f in columns)}) "
            f"SELECT {select} FROM moved)"
        )
        params += [f.get_db_prep_save(f.pre_save(row, True), connection) for f in columns]
    with connection.cursor() as cursor:
        cursor.execute(sql + " SELECT count(*) FROM moved", params)
        return bool(cursor.fetchone()[0])


def _fail_fields(step_name: str, reason: Any, **extra: Any) -> dict[str, Any]:
    return {
        "status": RunStatus.FAILED,
        "error": results.run_error(step_name, reason, **extra),
        "finished_at": timezone.now(),
        **released_fields(),
    }


def _move_fields(wf: Workflow, position: int | None, context: dict[str, Any]) -> dict[str, Any]:
    """Fields that put the run at step ``position`` (completing it past the last step)."""
    if position is None or position >= len(wf.steps):
        return {
            "context": context,
            "current_step": "",
            "current_attempt": 1,
            "status": RunStatus.COMPLETED,
            "finished_at": timezone.now(),
            **released_fields(),
        }
    # The process that moves the run on executes its next step: it holds the run's lease.
    return {"context": context, "current_step": wf.steps[position].name, "current_attempt": 1, **held_fields()}


def claim_run(run_id: Any, version: int | None = None) -> WorkflowRun | None:
    """Take the lease of a run that waits for job ``version`` and load it; ``None`` if it does not.

    A stale or duplicate job (the run moved on, finished, was cancelled, or another worker holds
    it) claims nothing. ``version=None`` (jobs sent before versions were part of them) skips that check.
    """
    now = timezone.now()
    try:
        runs = WorkflowRun.objects.filter(pk=run_id, status__in=(RunStatus.PENDING, RunStatus.RUNNING), lease_owner="")
        if version is not None:
            runs = runs.filter(version=version)
        claimed = runs.update(
            status=RunStatus.RUNNING,
            started_at=Coalesce(F("started_at"), Value(now)),
            version=F("version") + 1,
            **held_fields(now),
        )
    except (ValidationError, ValueError):
        logger.error("run job with a malformed run id %r; dropping it", run_id)
        return None
    if not claimed:
        if not WorkflowRun.objects.filter(pk=run_id).exists():
            logger.warning("run %s does not exist; dropping its job", run_id)
        else:
            logger.debug("run %s is not waiting for job version %s; nothing to do", run_id, version)
        return None
    return WorkflowRun.objects.filter(pk=run_id).first()


def _load_workflow(run: WorkflowRun) -> Workflow | None:
    try:
        return get_workflow(run.workflow)
    except WorkflowNotFound as exc:
        _transition(run, _fail_fields(run.current_step, results.workflow_not_found(run.workflow)))
        logger.error("run %s failed: %s", run.pk, exc)
        return None


def execute_run(run_id: Any, queue: str, version: int | None = None) -> None:
    """Entry point of a run job: execute the run's sequential steps from where it stands."""
    run = claim_run(run_id, version)
    if run is None:
        return
    wf = _load_workflow(run)
    if wf is not None:
        advance(run, wf, queue)


def advance(run: WorkflowRun, wf: Workflow, queue: str) -> None:
    """Execute sequential steps back to back until the run finishes, waits or reaches a parallel block.

    Steps that belong on another queue are handed over to that queue's workers.
    """
    while run.status == RunStatus.RUNNING:
        position = wf.position(run.current_step)
        if position is None:
            reason = results.unknown_step(
                f"workflow {wf.name!r} has no step {run.current_step!r} (was the definition changed?)"
            )
            _transition(run, _fail_fields(run.current_step, reason))
            return
        node = wf.steps[position]
        if isinstance(node, Parallel):
            from .blocks import fan_out  # blocks builds on this module

            if not fan_out(run, wf, node):
                # Its branches are already out (this was a duplicate job): just let go of the run.
                WorkflowRun.objects.filter(pk=run.pk, version=run.version, lease_owner=leases.owner()).update(
                    **released_fields()
                )
            return
        wanted = queue_for(wf, node)
        if wanted != queue:
            # Hand the run over to that queue's workers: release the lease with the job.
            _transition(
                run, released_fields(leases.expiry()), jobs=[dispatch.run_workflow_job(run.pk, wanted, run.version + 1)]
            )
            return
        if not _run_sequential_step(run, wf, node, position, queue):
            return
    if run.status == RunStatus.COMPLETED:
        logger.info("run %s of workflow %r completed", run.pk, wf.name)


def _run_sequential_step(run: WorkflowRun, wf: Workflow, step: Step, position: int, queue: str) -> bool:
    """Execute one sequential step and commit its outcome; ``True`` when the run moved to another step."""
    attempt_no = run.current_attempt
    with leases.heartbeat.hold(WorkflowRun, run.pk):
        attempt = call_step(step, to_step_context(run.context), run.pk)
    row = StepResult(
        run=run,
        step=step.name,
        attempt=attempt_no,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        job_id=dispatch.current_job_id(),
    )
    if not attempt.failed:
        target: int | None = position + 1
        if attempt.outcome.kind == GOTO:
            target = wf.position(attempt.outcome.target)
            if target is None:
                row.status, row.error = StepStatus.FAILED, results.goto_error(step.name, attempt.outcome.target)
                _transition(run, _fail_fields(step.name, row.error), [row])
                return False
        row.status, row.output = StepStatus.COMPLETED, attempt.output
        return _transition(run, _move_fields(wf, target, merge(run.context, attempt.output)), [row])
    row.status, row.error = StepStatus.FAILED, attempt.reason
    if attempt.retryable and has_budget(step, attempt_no, lambda: lost_attempts(run.pk, step.name)):
        delay = step.retry.delay(attempt_no)
        job = dispatch.run_workflow_job(run.pk, queue, run.version + 1, delay)
        logger.info("step %r of run %s failed (attempt %d); retrying in %.2fs", step.name, run.pk, attempt_no, delay)
        deadline = leases.expiry(timezone.now() + timedelta(seconds=math.ceil(delay)))
        _transition(run, {"current_attempt": attempt_no + 1, **released_fields(deadline)}, [row], [job])
        return False
    logger.info("run %s failed at step %r", run.pk, step.name)
    _transition(run, _fail_fields(step.name, attempt.reason), [row])
    return False
