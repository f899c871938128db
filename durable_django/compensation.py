"""Compensations (sagas): undoing the completed steps of a run that failed, or was cancelled so.

A run that fails while steps or branches of it with a ``compensate`` function have completed
does not end ``failed`` at once: the transaction that fails it moves it to ``compensating``
(:func:`durable_django.store.failing_fields`) and its compensate job is sent on commit. That job
(:func:`compensate`) executes the compensations one after another, the latest completed step's
first, each with the context as it was right after its step plus ``__error__``, the run's error.

What is left to do is read from the database every time, never carried in the job: a completed
compensable row without a final compensation attempt (completed, or failed with its step's retry
budget used up). Each attempt is a row of kind ``compensation`` (``compensates`` = the undone row),
stored ``running`` before it executes and finished after, each write its own transaction. A failed
attempt with attempts left lets the run go with a delayed compensate job, as a sequential step's
retry does; a final failure is recorded and the others still run. When nothing is left, one
transition ends the run: ``failed`` (``cancelled`` after ``cancel_run(..., compensate=True)``),
its error unchanged, ``compensation`` = ``failed`` if any compensation finally failed, else
``completed``.

A compensation returns ``ok(data)`` (or a dict, or ``None``) when it completed, ``error(reason)``
or raises when it failed; its data is stored as the row's output and changes no context. A goto
or a wait is a bug of the compensation: it fails, without retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.utils import timezone

from . import dispatch, leases, results, store, tracing
from .attempts import Attempt, call_step, has_budget
from .conf import durable_settings
from .context import to_step_context
from .definition import Step, Workflow, find_workflow
from .leases import released_fields
from .logging import describe_reason, run_fields, seconds
from .models import Compensation, RunStatus, StepKind, StepResult, StepStatus, WorkflowRun
from .nodes import ERROR_KEY
from .results import ERROR, OK

logger = logging.getLogger("durable_django")

# Failures the engine never retries (a step that returned something that is not a result):
# told apart by their stored type when a later job reads what is left to do.
NOT_RETRIED = ("invalid_step_return", "unserializable_output")


@dataclass(frozen=True, slots=True)
class Todo:
    """The next compensation to execute: of completed row ``row`` (of ``step``), attempt ``attempt``."""

    row: StepResult
    step: Step
    attempt: int
    lost: int


def compensate(run_id: Any, queue: str, version: int) -> None:
    """Execute the compensations of a run that waits for its compensate job ``version``, then end it."""
    run = store.compensations.claim_compensation(run_id, version)
    if run is None:
        logger.debug("run %s is not waiting for compensate job %s; nothing to do", run_id, version)
        return
    wf = find_workflow(run.workflow)
    while True:
        todo, failed = plan(run, wf)
        if todo is None:
            _finish(run, failed)
            return
        if not _attempt(run, todo, queue):
            return


def plan(run: WorkflowRun, wf: Workflow | None) -> tuple[Todo | None, bool]:
    """What is left to do: the next compensation (``None`` when none is left), and whether any
    compensation has finally failed. Two reads: the completed rows and the compensation attempts."""
    compensable = wf.compensable() if wf is not None else {}
    if wf is None:
        logger.error(
            "run %s: its workflow %r is not registered; its compensations cannot run",
            run.pk,
            run.workflow,
            extra=run_fields(run.pk, run.workflow, outcome="failed"),
        )
        return None, True
    done = (
        StepResult.objects.filter(run=run, kind=StepKind.STEP, status=StepStatus.COMPLETED, step__in=list(compensable))
        .select_related("group")
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
    )
    attempts: dict[int, list[tuple[int, str, Any]]] = {}
    for compensates, attempt, status, error in (
        StepResult.objects.filter(run=run, kind=StepKind.COMPENSATION)
        .order_by("id")
        .values_list("compensates_id", "attempt", "status", "error")
    ):
        attempts.setdefault(compensates, []).append((attempt, status, error))
    failed = False
    for row in done:
        step = compensable[row.step]
        history = attempts.get(row.pk, [])
        if not history:
            return Todo(row, step, 1, 0), failed
        last_attempt, last_status, last_error = history[-1]
        if last_status == StepStatus.COMPLETED:
            continue
        lost = sum(1 for _, status, error in history if _lost(status, error))
        if _retried(step, history, last_attempt, lost, last_error):
            return Todo(row, step, last_attempt + 1, lost), failed
        failed = True
    return None, failed


def _lost(status: str, error: Any) -> bool:
    return status == StepStatus.FAILED and isinstance(error, dict) and error.get("type") == "worker_lost"


def _retried(step: Step, history: list[tuple[int, str, Any]], attempt: int, lost: int, error: Any) -> bool:
    """Whether a compensation whose latest attempt ``attempt`` failed with ``error`` runs again."""
    if isinstance(error, dict) and error.get("type") in NOT_RETRIED:
        return False
    streak = 0
    for _, status, reason in reversed(history):
        if not _lost(status, reason):
            break
        streak += 1
    if streak:
        # Lost workers do not use up the budget, up to MAX_WORKER_LOST in a row (as for steps).
        return streak < durable_settings.MAX_WORKER_LOST
    return has_budget(step, attempt, lambda: lost)


def context_of(row: StepResult, run: WorkflowRun) -> dict[str, Any]:
    """The context a compensation of ``row`` is called with: as it was after its step, and the run's error."""
    if row.group is not None:
        base = {**(row.group.context or {}), **(row.output or {})}
    else:
        base = row.context if row.context is not None else {**run.context, **(row.output or {})}
    return {**to_step_context(base), ERROR_KEY: run.error}


def _attempt(run: WorkflowRun, todo: Todo, queue: str) -> bool:
    """Execute one compensation attempt and record it; whether the job goes on with the next one."""
    step = todo.step
    assert step.compensate is not None
    row = StepResult(
        run=run,
        step=step.name,
        kind=StepKind.COMPENSATION,
        attempt=todo.attempt,
        status=StepStatus.RUNNING,
        compensates=todo.row,
        started_at=timezone.now(),
        job_id=dispatch.current_job_id(),
    )
    if not store.compensations.start_compensation(run, row):
        return False
    # Its own name in the step scope: what it logs, and children it calls, are not the step's.
    undo = Step(f"{step.name} (compensation)", _none_is_ok(step.compensate), step.retry, None, None, step.timeout)
    with (
        store.heartbeat.hold(WorkflowRun, run.pk),
        tracing.span(f"durable.compensate {step.name}", run, step=step.name, attempt=todo.attempt) as span,
    ):
        attempt = _checked(call_step(undo, context_of(todo.row, run), run.pk), step)
        tracing.record_attempt(span, attempt)
    row.finished_at = attempt.finished_at
    row.logs = attempt.logs
    if attempt.failed:
        row.status, row.error = StepStatus.FAILED, attempt.reason
    else:
        row.status, row.output = StepStatus.COMPLETED, attempt.output
    delay = None
    if attempt.failed and attempt.retryable and has_budget(step, todo.attempt, lambda: todo.lost):
        delay = step.retry.delay(todo.attempt)
    _log(run, row, delay)
    if delay is None:
        return store.compensations.record_compensation(run, row)
    # Retried later, like a sequential step: the run lets go, and its next compensate job waits.
    job = dispatch.compensate_job(run.pk, queue, run.version + 1, delay)
    store.compensations.record_compensation(run, row, released_fields(leases.retry_deadline(delay)), (job,))
    return False


def _none_is_ok(fn: Any) -> Any:
    """A compensation that returns nothing completed: ``None`` counts as ``ok()``."""

    def undo(ctx: dict[str, Any]) -> Any:
        value = fn(ctx)
        return {} if value is None else value

    return undo


def _checked(attempt: Attempt, step: Step) -> Attempt:
    """A compensation that returned a goto or a wait failed: there is nothing to go to, nor to wait in."""
    if attempt.outcome.kind in (OK, ERROR) or attempt.failed:
        return attempt
    reason = results.invalid_step_return(
        f"the compensation of step {step.name!r} returned a {attempt.outcome.kind}; "
        "a compensation returns ok(data), error(reason) or None, or raises"
    )
    return attempt.failing(reason)


def _log(run: WorkflowRun, row: StepResult, retry_in: float | None) -> None:
    """The line of a compensation attempt's outcome, like a step's (INFO, or WARNING when it failed)."""
    failed = row.status == StepStatus.FAILED
    duration = seconds(row.started_at, row.finished_at)
    extra = run_fields(run.pk, run.workflow, step=row.step, attempt=row.attempt, duration=duration, outcome=row.status)
    if not failed:
        logger.info(
            "run %s (%s): compensation of step %r completed in %.3fs (attempt %d)",
            run.pk,
            run.workflow,
            row.step,
            duration,
            row.attempt,
            extra=extra,
        )
        return
    logger.warning(
        "run %s (%s): compensation of step %r failed in %.3fs (attempt %d, %s): %s",
        run.pk,
        run.workflow,
        row.step,
        duration,
        row.attempt,
        "final" if retry_in is None else f"retrying in {retry_in:.2f}s",
        describe_reason(row.error),
        extra=extra,
    )


def _finish(run: WorkflowRun, failed: bool) -> None:
    """End the run once no compensation is left: failed (or cancelled), its error unchanged."""
    # A failure always leaves an error on the run; a cancel never does.
    status = RunStatus.FAILED if run.error is not None else RunStatus.CANCELLED
    outcome = Compensation.FAILED if failed else Compensation.COMPLETED
    fields = {"status": status, "compensation": outcome, "finished_at": timezone.now(), **released_fields()}
    if not store.compensations.finish_compensation(run, fields):
        return
    log = logger.warning if failed else logger.info
    log(
        "run %s of workflow %r: compensations %s; the run is %s",
        run.pk,
        run.workflow,
        outcome,
        status,
        extra=run_fields(run.pk, run.workflow, outcome=str(status)),
    )
