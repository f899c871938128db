"""What an operator does to a run: retry it after a failure, or cancel it.

The admin, the REST API and the management commands all call these two functions; each is one
transaction whose conditional UPDATE on the run's ``version`` and ``status`` decides, so a retry
racing a cancel (or two retries racing each other) leaves exactly one of them in effect. What
to reopen is decided here; the writes are :mod:`durable_django.store`'s.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import dispatch, leases, store, timer_jobs
from .definition import Foreach, Workflow, find_workflow, queue_for
from .exceptions import AmbiguousRunId, RunStateError
from .leases import released_fields
from .logging import run_fields
from .models import ParallelGroup, RunStatus, StepResult, StepStatus, Wait, WaitStatus, WorkflowRun

logger = logging.getLogger("durable_django")

RunRef = WorkflowRun | uuid.UUID | str


#: The shortest id prefix :func:`find_run_id` takes: what the admin and the docs show.
MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef")


def find_run_id(text: str) -> uuid.UUID:
    """The id of the run ``text`` names: its whole id, or a prefix of it of at least MIN_PREFIX
    hex digits (``3f0c1a2b``, dashes allowed anywhere, any case) that no other run's id starts with.

    What the commands and the API resolve a run id with. A whole id is returned as it is (whoever
    loads the run finds out whether it exists); a prefix costs one indexed range read of the ids.
    Raises ``WorkflowRun.DoesNotExist`` for text that names no run (or is no id or prefix) and
    :class:`~durable_django.exceptions.AmbiguousRunId` when several runs' ids start with it.
    """
    given = str(text).strip()
    digits = given.replace("-", "").lower()
    if not MIN_PREFIX <= len(digits) <= 32 or not _HEX.issuperset(digits):
        raise WorkflowRun.DoesNotExist(
            f"No workflow run has the id {given!r} (an id, or at least {MIN_PREFIX} hex characters of one)."
        )
    if len(digits) == 32:
        return uuid.UUID(digits)
    # The ids starting with the prefix are one range of the primary key, on every database.
    matching = WorkflowRun.objects.filter(
        pk__gte=uuid.UUID(digits.ljust(32, "0")), pk__lte=uuid.UUID(digits.ljust(32, "f"))
    )
    found = list(matching.values_list("pk", flat=True)[:2])
    if not found:
        raise WorkflowRun.DoesNotExist(f"No workflow run has an id starting with {given!r}.")
    if len(found) > 1:
        raise AmbiguousRunId(given, matching.count())
    return found[0]


def load_run(run: RunRef) -> WorkflowRun:
    """The run as stored now (raises ``WorkflowRun.DoesNotExist`` for an unknown or malformed id)."""
    pk = run.pk if isinstance(run, WorkflowRun) else run
    try:
        pk = uuid.UUID(str(pk))
    except ValueError:
        raise WorkflowRun.DoesNotExist(f"No workflow run has the id {pk!r}.") from None
    return WorkflowRun.objects.get(pk=pk)


def retry_run(run: RunRef) -> WorkflowRun:
    """Set a failed run moving again from where it failed; returns the run as it is now.

    Everything recorded stays: earlier attempts keep their rows, the error moves to
    ``error_history`` and attempt numbers continue. A failed sequential step runs once more with
    the context it had; in a failed parallel block only the branches that failed or never ran run
    again, then the join runs with the whole result set; a failure in ``into`` or the join runs the
    join again. A failed child called by the failed step is retried with it. Raises
    :class:`~durable_django.exceptions.RunStateError` when the run is not failed.
    """
    current = load_run(run)
    with transaction.atomic():
        jobs = reopen(current)
        dispatch.submit(*jobs)
    logger.info(
        "run %s of workflow %r retried at %r",
        current.pk,
        current.workflow,
        current.current_step,
        extra=run_fields(current.pk, current.workflow, step=current.current_step),
    )
    current.refresh_from_db()
    return current


def reopen(run: WorkflowRun) -> list[dispatch.Job]:
    """Put a failed run back to ``running`` (inside the caller's transaction); the jobs that resume it,
    for :func:`durable_django.dispatch.submit` in that transaction."""
    if run.status != RunStatus.FAILED:
        raise RunStateError(f"Run {run.pk} is {run.status}; only a failed run can be retried.")
    if run.compensation:
        # Its completed steps were undone: going on from where it failed would build on undone work.
        raise RunStateError(
            f"Run {run.pk} ran its compensations (compensation {run.compensation}), which undid its completed "
            "steps; it cannot be retried. Start a new run instead."
        )
    now = timezone.now()
    history = [*run.error_history, {"error": run.error, "failed_at": run.finished_at, "retried_at": now}]
    wf = find_workflow(run.workflow)
    group = (
        ParallelGroup.objects.filter(run=run, name=run.current_step).order_by("-id").first()
        if run.current_step
        else None
    )
    fields: dict[str, Any] = {
        "error": None,
        "error_history": history,
        "finished_at": None,
        **released_fields(leases.expiry(now) if group is None else None),
    }
    # A workflow timeout counts again from the retry: a deadline that passed would fail it at once.
    deadline = now + timedelta(seconds=wf.timeout) if wf is not None and wf.timeout is not None else None
    fields["deadline_at"] = deadline
    clock = [timer_jobs.time_out_run_job(run.pk, queue_for(wf), deadline)] if deadline is not None else []
    timed_out = _timed_out_wait(run) if group is None else None
    if timed_out is not None:
        # The step completed and its wait timed out: the run waits again, with a fresh timeout.
        if not store.waits.wait_again(run, timed_out, {**fields, **released_fields()}):
            raise RunStateError(f"Run {run.pk} changed while it was being retried; look at it again.")
        return clock
    if group is None:
        # A sequential step (or a run that never reached its block): one more attempt of that step.
        fields["current_attempt"] = run.current_attempt + 1
    if not store.reopen_run(run, fields, group.pk if group is not None else None):
        raise RunStateError(f"Run {run.pk} changed while it was being retried; look at it again.")
    if group is None:
        _reopen_children(run, run.current_step)
        node = wf.node(run.current_step) if wf is not None else None
        return [dispatch.run_workflow_job(run.pk, queue_for(wf, node), run.version), *clock]
    return [*_reopen_group(run, wf, group), *clock]


def _timed_out_wait(run: WorkflowRun) -> Wait | None:
    """The wait whose timeout failed ``run`` at a sequential step, if that is how it failed."""
    reason = (run.error or {}).get("reason") if isinstance(run.error, dict) else None
    if not isinstance(reason, dict) or reason.get("type") != "wait_timeout":
        return None
    return (
        Wait.objects.filter(run=run, status=WaitStatus.TIMED_OUT, step_result__group__isnull=True)
        .select_related("step_result")
        .order_by("-id")
        .first()
    )


def _reopen_group(run: WorkflowRun, wf: Workflow | None, group: ParallelGroup) -> list[dispatch.Job]:
    """Give every branch without a completed result a new attempt and reopen ``group``."""
    latest: dict[tuple[str, int | None], StepResult] = {}
    for branch in StepResult.objects.filter(group=group).order_by("id"):
        latest[(branch.step, branch.item_index)] = branch
    block = wf.block(group.name) if wf else None
    if isinstance(block, Foreach):
        keys: list[tuple[str, int | None]] = [(block.name, index) for index in range(group.branch_count)]
    else:
        keys = [(member.name, None) for member in block.steps] if block else list(latest)
    fresh: list[store.NextAttempt] = []
    running = 0
    again: list[tuple[StepResult, Wait]] = []
    timed_out = {
        wait.step_result_id: wait for wait in Wait.objects.filter(step_result__group=group, status=WaitStatus.TIMED_OUT)
    }
    for name, index in keys:
        row = latest.get((name, index))
        if row is not None and row.status == StepStatus.COMPLETED:
            continue
        if row is not None and row.pk in timed_out:
            # The branch completed and its wait timed out: it waits again, with a fresh timeout.
            again.append((row, timed_out[row.pk]))
            continue
        if row is not None and row.status in (StepStatus.RUNNING, StepStatus.PENDING):
            # Still executing (or queued) from before: its result counts when it arrives.
            running += 1
            continue
        attempt = row.attempt + 1 if row is not None else 1
        queue = queue_for(wf, block.branch(name) if block else None)
        fresh.append(store.next_attempt(run.pk, group.pk, name, attempt, queue, 0.0, index))
    pending = len(fresh) + running + len(again)
    store.reopen_group(group, [nxt.row for nxt in fresh], pending)
    if again:
        store.waits.branches_wait_again(run, group.pk, again, all_wait=not fresh and not running)
    _reopen_children(run, *(nxt.row.step for nxt in fresh))
    jobs = [nxt.job() for nxt in fresh]
    if pending == 0:
        # Every branch had completed: the failure was in into or the join, which runs again.
        jobs.append(dispatch.join_group_job(group.pk, run.pk, queue_for(wf)))
    return jobs


def _reopen_children(run: WorkflowRun, *steps: str) -> None:
    """Reopen failed children called by ``steps`` of ``run``; the calling step resumes them inline."""
    for child in WorkflowRun.objects.filter(parent=run, parent_step__in=steps, status=RunStatus.FAILED, detached=False):
        reopen(child)


def cancel_run(run: RunRef, *, compensate: bool = False) -> WorkflowRun:
    """Cancel a pending, running or waiting run and its unfinished children; returns the run as it is now.

    Its waits are cancelled with it.

    No further step or branch of it starts. A step already executing may finish, but its result
    does not move the run. ``compensate``: the compensations of its completed steps and branches
    run first (the run is ``compensating`` meanwhile, then ``cancelled`` with ``compensation``
    set); without any to run, it is cancelled at once. Its children are cancelled without
    compensating. Raises :class:`~durable_django.exceptions.RunStateError` when the run has
    already finished, or is compensating.
    """
    current = load_run(run)
    with transaction.atomic():
        if not stop_run(current.pk, timezone.now(), compensate=compensate):
            current.refresh_from_db()
            raise RunStateError(
                f"Run {current.pk} is {current.status}; only a pending, running or waiting run can be cancelled."
            )
        if current.status == RunStatus.PENDING and current.run_at is not None:
            # A delayed run that never started: its scheduled start job has nothing left to do.
            # It was sent on the workflow's queue (engine.get_or_start_run).
            queue = queue_for(find_workflow(current.workflow))
            dispatch.withdraw_after_commit([(queue, timer_jobs.start_job_id(current.pk))])
    current.refresh_from_db()
    if current.status == RunStatus.COMPENSATING:
        logger.info(
            "run %s of workflow %r cancelled; running its compensations",
            current.pk,
            current.workflow,
            extra=run_fields(current.pk, current.workflow, outcome="compensating"),
        )
    else:
        logger.info(
            "run %s of workflow %r cancelled",
            current.pk,
            current.workflow,
            extra=run_fields(current.pk, current.workflow, outcome="cancelled"),
        )
    return current


def stop_run(run_id: Any, now: Any, *, compensate: bool = False, reason: Any = None) -> bool:
    """Cancel run ``run_id`` and its unfinished children in the caller's transaction; ``reason``:
    the run fails with it instead, if its deadline passed (see :func:`durable_django.store.cancel_run`),
    and its children are cancelled. Whether the run was stopped."""
    if not store.cancel_run(run_id, now, compensate=compensate, reason=reason):
        return False
    # Children started with start_child (detached) live on: they were never part of the parent's work.
    for child_id in (
        WorkflowRun.objects.filter(parent_id=run_id, detached=False).unfinished().values_list("pk", flat=True)
    ):
        stop_run(child_id, now)
    return True
