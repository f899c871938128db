"""Ending waits: an event sent to a run, a person's answer, a sleep or timeout that came due.

Each is one transaction that locks the run (its open groups first), then the wait, and resolves
the wait exactly once (see :mod:`durable_django.store.waits`); what comes next is decided here.
A sequential step's wait moves the run to its next step and sends the job that executes it; a
branch's wait records the branch's final result, and when that decides the block, the run runs
again and its join is sent. Nothing here executes a step: the caller may be a web request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import dispatch, join, leases, results, store
from .conf import durable_settings
from .context import Unserializable, roundtrip, text_problem
from .definition import Workflow, find_workflow, queue_for
from .exceptions import InvalidInput, RunStateError
from .leases import released_fields
from .logging import run_fields
from .models import RunStatus, Wait, WaitKind, WaitStatus, WorkflowRun
from .store.waits import Resolution, lock_run, resolve, with_value
from .waits import validate_answer

logger = logging.getLogger("durable_django")

RunRef = WorkflowRun | uuid.UUID | str

# A wake-up job that comes at most this early waits for its wait's due time itself.
EARLY_SECONDS = 1.5

DELIVERED = "delivered"
BUFFERED = "buffered"


def _run_pk(run: RunRef) -> uuid.UUID:
    pk = run.pk if isinstance(run, WorkflowRun) else run
    try:
        return uuid.UUID(str(pk))
    except ValueError:
        raise WorkflowRun.DoesNotExist(f"No workflow run has the id {pk!r}.") from None


def _locked(pk: uuid.UUID) -> WorkflowRun:
    run = lock_run(pk)
    if run is None:
        raise WorkflowRun.DoesNotExist(f"No workflow run has the id {str(pk)!r}.")
    return run


def send_event(run_id: RunRef, event: str, payload: Any = None) -> str:
    """Send ``event`` with ``payload`` to a run: ``"delivered"`` when one of its waits took it,
    ``"buffered"`` when none waits for it yet (the next wait of the run for it takes it).

    Each event is taken by exactly one wait, the oldest that waits for it. Raises
    ``WorkflowRun.DoesNotExist`` for an unknown run, :class:`RunStateError` for a finished one and
    :class:`InvalidInput` for a payload that is not JSON.
    """
    if not isinstance(event, str) or not event.strip() or len(event) > 200 or text_problem(event):
        raise InvalidInput(
            f"An event's name must be a non-empty string of at most 200 characters of text, got {event!r}."
        )
    try:
        payload = roundtrip(payload)
    except Unserializable as exc:
        raise InvalidInput(f"The payload of event {event!r} is not JSON-serializable: {exc}") from None
    pk = _run_pk(run_id)
    with transaction.atomic():
        run = _locked(pk)
        if run.is_finished or run.status == RunStatus.COMPENSATING:
            raise RunStateError(f"Run {pk} is {run.status}; it takes no more events.")
        for wait in store.waits.waits_for_event(pk, event):
            done = _resolve(run, wait, Resolution(WaitStatus.RESOLVED, event=event, payload=payload))
            logger.info("event %r delivered to run %s (%s)", event, pk, done, extra=run_fields(run.pk, run.workflow))
            return DELIVERED
        store.waits.buffer_event(pk, event, payload)
    logger.info("event %r buffered for run %s", event, pk, extra=run_fields(run.pk, run.workflow))
    return BUFFERED


def provide_input(run_id: RunRef, name: str, answer: dict[str, Any], *, user: Any = None) -> WorkflowRun:
    """Answer the input ``name`` a run waits for; returns the run as it is now.

    The answer is checked against the input's kind, choices and fields: :class:`InvalidInput`
    (``exc.field`` names the field) and nothing changed when it does not fit. Raises
    :class:`RunStateError` when the run does not wait for that input (inputs are not buffered).
    Who may answer is for the caller to check (:func:`durable_django.waits.can_answer`).
    """
    pk = _run_pk(run_id)
    with transaction.atomic():
        run = _locked(pk)
        wait = (
            Wait.objects.select_for_update(of=("self",))
            .select_related("step_result__group")
            .filter(run_id=pk, kind=WaitKind.INPUT, name=name, status=WaitStatus.WAITING)
            .order_by("created_at", "id")
            .first()
        )
        if wait is None:
            raise RunStateError(f"Run {pk} ({run.status}) does not wait for the input {name!r}.")
        cleaned = validate_answer(wait.input_kind, wait.spec, answer)
        by = user.get_username() if user is not None and getattr(user, "is_authenticated", False) else ""
        resolution = Resolution(WaitStatus.RESOLVED, answer={**cleaned, "by": by}, user=user if by else None)
        _resolve(run, wait, resolution)
    logger.info(
        "input %r of run %s answered by %s",
        name,
        pk,
        by or "an anonymous caller",
        extra=run_fields(run.pk, run.workflow),
    )
    run.refresh_from_db()
    return run


def wake(wait_id: int) -> str:
    """End a sleep, or time out a wait, that is due; returns what happened (for logs and tests)."""
    found = Wait.objects.filter(pk=wait_id).values_list("run_id", "due_at", "status").first()
    if found is None:
        return "missing"
    run_id, due_at, status = found
    early = (due_at - timezone.now()).total_seconds() if due_at is not None else 0.0
    if status == WaitStatus.WAITING and 0 < early <= EARLY_SECONDS:
        # RQ's scheduler works in whole seconds: the job came a little early. Wait here (outside
        # any transaction) rather than a scheduler tick more.
        time.sleep(early)
    with transaction.atomic():
        run = _locked(run_id)
        wait = (
            Wait.objects.select_for_update(of=("self",)).select_related("step_result__group").filter(pk=wait_id).first()
        )
        if wait is None or wait.status != WaitStatus.WAITING:
            return "not waiting"
        now = timezone.now()
        if wait.due_at is None:
            return "not due"
        if wait.due_at > now + timedelta(milliseconds=50):
            # Sent early (a clock ahead of the database's, a job sent by hand): come back when due.
            delay = (wait.due_at - now).total_seconds()
            dispatch.submit(dispatch.wake_wait_job(wait.pk, run.pk, durable_settings.QUEUE, delay))
            return "not due"
        status = WaitStatus.RESOLVED if wait.kind == WaitKind.SLEEP else WaitStatus.TIMED_OUT
        return _resolve(run, wait, Resolution(status), withdraw=False)


def _resolve(run: WorkflowRun, wait: Wait, resolution: Resolution, *, withdraw: bool = True) -> str:
    """Resolve the locked ``wait`` of the locked ``run``, then decide what its run does next."""
    if run.status == RunStatus.PENDING or run.is_finished:
        raise RunStateError(f"Run {run.pk} is {run.status}; its waits cannot be resolved.")
    wf = find_workflow(run.workflow)
    done = resolve(wait, run, resolution, _moving_on(run, wf))
    if done.status == "partial":
        return done.status
    if withdraw and wait.due_at is not None:
        dispatch.withdraw_after_commit([(durable_settings.QUEUE, dispatch.wake_job_id(wait.pk))])
    row = wait.step_result
    if row.group_id is not None and done.counts is not None:
        group_name = row.group.name if row.group is not None else ""
        block = wf.block(group_name) if wf is not None else None
        if join.decides(block, done.counts):
            store.waits.run_joins(run, row.group_id, queue_for(wf))
    logger.info(
        "wait %s (%s %r) of run %s %s",
        wait.pk,
        wait.kind,
        wait.name,
        run.pk,
        done.status,
        extra=run_fields(run.pk, run.workflow),
    )
    return done.status


def _moving_on(run: WorkflowRun, wf: Workflow | None) -> Callable[[Wait], tuple[dict[str, Any], Any]]:
    """How a sequential step's resolved ``wait`` moves ``run``: the fields, and the job to send."""

    def fields(wait: Wait) -> tuple[dict[str, Any], Any]:
        step_name = wait.step_result.step
        if wf is None:
            return store.failing_fields(run, step_name, results.workflow_not_found(run.workflow)), None
        position = wf.position(step_name)
        if position is None:
            reason = results.unknown_step(
                f"workflow {wf.name!r} has no step {step_name!r} (was the definition changed?)"
            )
            return store.failing_fields(run, step_name, reason), None
        has_value, _ = store.waits.value_of(wait)
        if wait.status == WaitStatus.TIMED_OUT and not has_value:
            logger.info(
                "run %s failed: its wait for %r timed out", run.pk, wait.name, extra=run_fields(run.pk, run.workflow)
            )
            return store.failing_fields(run, step_name, results.wait_timeout(wait.name)), None
        context = with_value(run.context, wait)
        target = wf.following(step_name)
        if target >= len(wf.flat):
            return store.move_fields(wf, None, context), None
        following = wf.flat[target]
        moved = {
            "context": context,
            "current_step": following.name,
            "current_attempt": 1,
            "status": RunStatus.RUNNING,
            **released_fields(leases.expiry()),
        }
        queue = queue_for(wf, following)
        return moved, lambda version: dispatch.run_workflow_job(run.pk, queue, version)

    return fields
