"""Decisions for a run: starting it, claiming it, and the sequential loop (blocks: blocks.py).

Every transition is one transaction of :mod:`durable_django.store` whose winner is decided by a
conditional UPDATE: a run's ``version`` (bumped by every transition) or a row's ``status``. A
stale or duplicate worker's update matches no row and its work is dropped, so the engine can be
driven at least once by RQ while every state change happens exactly once. Jobs are sent only
after their state commits.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from . import blocks, dispatch, leases, results, store, timer_jobs, tracing
from .attempts import Attempt, call_step, retry_delay
from .context import StepScope, Unserializable, merge, roundtrip, step_scope, to_step_context
from .deadlines import start_at
from .definition import Branch, Foreach, Parallel, Step, Workflow, find_workflow, queue_for
from .exceptions import InvalidInput
from .leases import released_fields
from .logging import log_attempt, run_fields, seconds
from .models import RunStatus, StepKind, StepResult, StepStatus, WorkflowRun
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
    detached: bool = False,
    delay: Any = None,
    run_at: Any = None,
) -> tuple[WorkflowRun, bool]:
    """Save a run of ``wf`` and dispatch it after the surrounding transaction commits.

    Returns the run and whether this call created it (``True``), or found the one already started
    with the same idempotency key or child reference (``False``), like ``get_or_create``.
    ``delay`` / ``run_at``: a delayed run is saved ``pending`` and started by its start job then
    (see :func:`durable_django.deadlines.start_at`).
    """
    now = timezone.now()
    due = start_at(wf.name, delay, run_at, now)
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
    run_id = run_id or uuid.uuid4()
    run = WorkflowRun(
        id=run_id,
        trace_context=tracing.start_context(wf.name, run_id, parent.trace_context if parent else None),
        workflow=wf.name,
        input=stored,
        context=stored,
        current_step=first.name,
        idempotency_key=idempotency_key,
        parent=parent,
        parent_step=parent_step,
        ref=ref,
        detached=detached,
        # A delayed run waits for its start job, not for a worker: recovery leaves it to the timers.
        lease_expires_at=leases.expiry(now) if due is None else None,
        run_at=due,
        deadline_at=now + timedelta(seconds=wf.timeout) if wf.timeout is not None and due is None else None,
    )
    if not store.create_run(run, queue_for(wf, first), timer_jobs.first_jobs(run, queue_for(wf))):
        # Lost a race against a run with the same idempotency key (or child ref): that one wins.
        if idempotency_key is not None:
            return WorkflowRun.objects.get(workflow=wf.name, idempotency_key=idempotency_key), False
        if parent is not None:
            return WorkflowRun.objects.get(parent=parent, parent_step=parent_step, ref=ref), False
        raise IntegrityError(f"a run with the id {run.pk} exists already")
    logger.info("started run %s of workflow %r", run.pk, wf.name, extra=run_fields(run.pk, wf.name))
    return run, True


def start_fork(wf: Workflow, node_name: str, context: dict[str, Any], forked_from: WorkflowRun) -> WorkflowRun:
    """Save a new run of ``wf`` that starts at its top-level step or block ``node_name`` with
    ``context`` (stored JSON already), forked from ``forked_from`` whose input it keeps; it is
    dispatched after the surrounding transaction commits. See :func:`durable_django.forks.fork_run`."""
    node = wf.node(node_name)
    run_id = uuid.uuid4()
    now = timezone.now()
    run = WorkflowRun(
        id=run_id,
        trace_context=tracing.start_context(wf.name, run_id, None),
        workflow=wf.name,
        input=forked_from.input,
        context=context,
        current_step=node_name,
        forked_from=forked_from,
        forked_from_step=node_name,
        lease_expires_at=leases.expiry(now),
        # A fork is a new run: its workflow's timeout counts from now.
        deadline_at=now + timedelta(seconds=wf.timeout) if wf.timeout is not None else None,
    )
    if not store.create_run(run, queue_for(wf, node), timer_jobs.first_jobs(run, queue_for(wf))):
        raise IntegrityError(f"a run with the id {run.pk} exists already")
    logger.info(
        "started run %s of workflow %r at %r, forked from run %s",
        run.pk,
        wf.name,
        node_name,
        forked_from.pk,
        extra=run_fields(run.pk, wf.name, step=node_name),
    )
    return run


# -- executing ------------------------------------------------------------------------------------


def run_workflow(run_id: Any, queue: str, version: int) -> None:
    """Execute the sequential steps of a run that waits for job ``version``, from where it stands."""
    run = store.claim_run(run_id, version)
    if run is None:
        return
    wf = find_workflow(run.workflow)
    if wf is None:
        store.fail_run(run, run.current_step, results.workflow_not_found(run.workflow))
        logger.error(
            "run %s failed: its workflow %r is not registered",
            run.pk,
            run.workflow,
            extra=run_fields(run.pk, run.workflow, outcome="failed"),
        )
        return
    advance(run, wf, queue)


def advance(run: WorkflowRun, wf: Workflow, queue: str) -> None:
    """Execute the run's steps in this job until it finishes, waits for other workers or is handed over.

    Sequential steps run back to back; a parallel block is entered here (its first batch of
    branches executes in this job, and when it is decided here too, the run goes on after it).
    Steps that belong on another queue are handed over to that queue's workers.
    """
    while run.status == RunStatus.RUNNING:
        node = wf.node(run.current_step)
        if node is None:
            reason = results.unknown_step(
                f"workflow {wf.name!r} has no step {run.current_step!r} (was the definition changed?)"
            )
            store.fail_run(run, run.current_step, reason)
            return
        if isinstance(node, Parallel | Foreach):
            moved = blocks.enter(run, wf, node, queue)
            if moved is None:
                break
            run = moved.run
            continue
        if isinstance(node, Branch):
            chosen = _take_branch(run, wf, node, queue)
            if chosen is None:
                break
            run = chosen
            continue
        wanted = queue_for(wf, node)
        if wanted != queue:
            # Hand the run over to that queue's workers: release the lease with the job.
            store.transition(run, released_fields(leases.expiry()), resume_on=wanted)
            return
        moved_on = _run_sequential_step(run, wf, node, queue)
        if moved_on is None:
            break
        run = moved_on


def _run_sequential_step(run: WorkflowRun, wf: Workflow, step: Step, queue: str) -> WorkflowRun | None:
    """Execute one sequential step and commit its outcome; the run when it moved on in this job.

    A step followed by a parallel block commits its outcome together with the block's group.
    """
    attempt_no = run.current_attempt
    started = timezone.now()
    if not store.may_start(run.pk):
        _log_not_started(run, step.name)
        return None
    with (
        store.heartbeat.hold(WorkflowRun, run.pk),
        tracing.span(f"durable.step {step.name}", run, step=step.name, attempt=attempt_no) as span,
    ):
        attempt = call_step(step, to_step_context(run.context), run.pk, started_at=started)
        tracing.record_attempt(span, attempt)
    row = StepResult(
        run=run,
        step=step.name,
        attempt=attempt_no,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        job_id=dispatch.current_job_id(),
        logs=attempt.logs,
        # What a fork from this step starts with; written by the same INSERT, once per entry into the step.
        context_before=run.context if attempt_no == 1 and wf.is_top_level(step.name) else None,
    )
    if attempt.waits:
        return _suspend(run, wf, step, row, attempt)
    if not attempt.failed:
        target: int | None = wf.following(step.name)
        if attempt.outcome.kind == GOTO:
            target = wf.goto_position(attempt.outcome.target)
            if target is None:
                row.status, row.error = StepStatus.FAILED, results.goto_error(step.name, attempt.outcome.target)
                _log_step(run, step.name, row)
                _lost_to_cancel(run, row, store.fail_run(run, step.name, row.error, [row]))
                return None
        row.status, row.output = StepStatus.COMPLETED, attempt.output
        _log_step(run, step.name, row)
        assert target is not None
        context = merge(run.context, attempt.output)
        if step.compensate is not None:
            row.context = context  # what its compensation is called with, should the run fail later
        return _move_on(run, wf, row, target, context, queue)
    row.status, row.error = StepStatus.FAILED, attempt.reason
    delay = retry_delay(step, attempt, attempt_no, run.pk)
    _log_step(run, step.name, row, retry_in=delay)
    if delay is not None:
        fields = {"current_attempt": attempt_no + 1, **released_fields(leases.retry_deadline(delay))}
        _lost_to_cancel(run, row, store.transition(run, fields, [row], resume_on=queue, delay=delay))
        return None
    _lost_to_cancel(run, row, store.fail_run(run, step.name, attempt.reason, [row]))
    return None


def _move_on(
    run: WorkflowRun, wf: Workflow, row: StepResult, target: int, context: dict[str, Any], queue: str
) -> WorkflowRun | None:
    """Record ``row`` and move the run to position ``target`` with ``context``: one transaction,
    which also opens the group when the run moves on to a block. The run when it moved on."""
    fields = store.move_fields(wf, target, context)
    following = wf.flat[target] if target < len(wf.flat) else None
    if isinstance(following, Parallel | Foreach):
        version = run.version
        moved = blocks.enter(run, wf, following, queue, fields=fields, rows=[row])
        if moved is None and run.version == version:
            _lost_to_cancel(run, row, False)  # the block was not entered: the run had moved on
        return moved.run if moved is not None else None
    return run if _lost_to_cancel(run, row, store.transition(run, fields, [row])) else None


def _take_branch(run: WorkflowRun, wf: Workflow, node: Branch, queue: str) -> WorkflowRun | None:
    """Choose the case of branch block ``node`` and move the run to its first step (past the block
    for an empty case), recording the choice as a row of kind ``branch``; the run when it moved on."""
    ctx = to_step_context(run.context)
    row = StepResult(
        run=run,
        step=node.name,
        kind=StepKind.BRANCH,
        attempt=run.current_attempt,
        started_at=timezone.now(),
        job_id=dispatch.current_job_id(),
        context_before=run.context if wf.is_top_level(node.name) else None,
    )
    if not store.may_start(run.pk):
        _log_not_started(run, node.name)
        return None
    try:
        with step_scope(StepScope(run.pk, node.name, ctx)):
            value = ctx.get(node.on) if isinstance(node.on, str) else node.on(ctx)
        value = roundtrip(value)
    except Unserializable as exc:
        reason: dict[str, Any] | None = results.unserializable_output(
            f"on of branch block {node.name!r} returned a value that cannot be stored as JSON: {exc}"
        )
    except Exception as exc:
        reason = results.exception_reason(exc, "branch_error")
    else:
        reason = None
    row.finished_at = timezone.now()
    arm = None if reason is not None else node.case(str(value))
    if reason is None and arm is None:
        reason = results.no_branch_matched(value)
    if reason is not None or arm is None:
        row.status, row.error = StepStatus.FAILED, reason
        _log_step(run, node.name, row)
        _lost_to_cancel(run, row, store.fail_run(run, node.name, reason, [row]))
        return None
    matched = any(key == str(value) for key, _ in node.cases)
    row.status = StepStatus.COMPLETED
    row.output = {"case": str(value) if matched else None, "default": not matched, "value": value}
    _log_step(run, node.name, row)
    target = wf.position(arm[0].name) if arm else wf.following(node.name)
    assert target is not None
    return _move_on(run, wf, row, target, run.context, queue)


def _lost_to_cancel(run: WorkflowRun, row: StepResult, moved: bool) -> bool:
    """After the transition recording ``row`` (``moved``: whether it won): a transition that lost
    because the run was cancelled meanwhile still records the attempt, as cancelled.

    Only the lost race costs anything: a conditional insert, when the cancel is what moved the run.
    """
    if not moved and store.record_cancelled_attempt(run, row):
        logger.info(
            "run %s (%s): step %r finished after the run was cancelled; its attempt %d is recorded as cancelled",
            run.pk,
            run.workflow,
            row.step,
            row.attempt,
            extra=run_fields(run.pk, run.workflow, step=row.step, attempt=row.attempt, outcome="cancelled"),
        )
    return moved


def _log_not_started(run: WorkflowRun, step: str) -> None:
    logger.info(
        "run %s (%s) was cancelled: step %r does not start",
        run.pk,
        run.workflow,
        step,
        extra=run_fields(run.pk, run.workflow, step=step, outcome="cancelled"),
    )


def _log_step(run: WorkflowRun, step: str, row: StepResult, *, retry_in: float | None = None) -> None:
    """The line of a sequential step's outcome (see :func:`durable_django.logging.log_attempt`)."""
    log_attempt(
        logger,
        run.pk,
        run.workflow,
        step,
        row.attempt,
        str(row.status),
        seconds(row.started_at, row.finished_at),
        reason=row.error,
        retry_in=retry_in,
    )


def _suspend(run: WorkflowRun, wf: Workflow, step: Step, row: StepResult, attempt: Attempt) -> WorkflowRun | None:
    """The step returned a wait: it is completed, and the run waits; the run when the wait was over at once."""
    request = attempt.outcome.wait
    if dispatch.executes_inline(run.pk):
        # A child called by a step runs inside that step, which cannot be suspended.
        reason = results.invalid_step_return(
            f"step {step.name!r} returned a wait, but its run is a child workflow executed inside its parent's "
            "step by call_workflow, which cannot wait; wait in the parent workflow instead"
        )
        row.status, row.error = StepStatus.FAILED, reason
        _log_step(run, step.name, row)
        _lost_to_cancel(run, row, store.fail_run(run, step.name, reason, [row]))
        return None
    row.status, row.output = StepStatus.COMPLETED, attempt.output
    _log_step(run, step.name, row)
    context = merge(run.context, attempt.output)
    if step.compensate is not None:
        row.context = context  # the wait's value is added when it resolves
    target = wf.following(step.name)
    waiting = {"context": context, "status": RunStatus.WAITING, **released_fields()}
    suspended = store.waits.suspend_run(
        run, row, request, waiting, lambda wait: store.move_fields(wf, target, store.waits.with_value(context, wait))
    )
    if suspended is None:
        _lost_to_cancel(run, row, False)
        return None
    if suspended.resumed:
        logger.info(
            "run %s: the wait of step %r was over at once", run.pk, step.name, extra=run_fields(run.pk, run.workflow)
        )
        return run
    logger.info(
        "run %s waits (%s %r) after step %r",
        run.pk,
        request.kind,
        suspended.wait.name,
        step.name,
        extra=run_fields(run.pk, run.workflow, step=step.name),
    )
    return None
