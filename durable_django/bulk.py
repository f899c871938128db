"""Retrying or cancelling many runs at once: what the admin's actions and the API's bulk endpoints call.

Runs are taken a chunk at a time, in id order, each chunk one transaction. A retry locks the
chunk's failed runs (skipping those another transaction holds: whoever holds one decides what
becomes of it, so two bulk retries at once retry each run once) and reopens those that failed at
a sequential step, the common case, with one ``UPDATE`` for the whole chunk; their jobs are sent
together once it commits. A run that failed in a block, at a wait's timeout or with a failed
child needs more to be reopened, and is reopened as :func:`~durable_django.retry_run` does it,
inside the chunk's transaction. A cancel is :func:`~durable_django.cancel_run`'s for each run of
the chunk (its groups, waits, branches and children each need their own writes). Both return how
many runs they changed, which a run changed meanwhile by someone else is not counted in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import dispatch, leases, operations, timer_jobs
from .definition import find_workflow, queue_for
from .exceptions import RunStateError
from .models import ParallelGroup, RunStatus, WorkflowRun
from .store import bulk
from .store.runs import CANCELLABLE

logger = logging.getLogger("durable_django")

#: How many runs one transaction retries or cancels.
CHUNK = 200


def retryable(queryset: QuerySet[WorkflowRun]) -> QuerySet[WorkflowRun]:
    """The runs of ``queryset`` that :func:`retry_runs` would retry now: failed, without compensations run."""
    return queryset.filter(status=RunStatus.FAILED, compensation="")


def cancellable(queryset: QuerySet[WorkflowRun]) -> QuerySet[WorkflowRun]:
    """The runs of ``queryset`` that :func:`cancel_runs` would cancel now: pending, running or waiting."""
    return queryset.filter(status__in=CANCELLABLE)


def retry_runs(queryset: QuerySet[WorkflowRun]) -> int:
    """Retry every failed run of ``queryset``, as :func:`~durable_django.retry_run` does each; how many were retried.

    Runs that are not failed, or ran their compensations, are left alone (and not counted). The
    queries do not grow with the number of runs that failed at a sequential step: a constant
    number per chunk of :data:`CHUNK` runs.
    """
    total = 0
    for ids in _chunks(retryable(queryset)):
        total += _retry_chunk(ids)
    return total


def cancel_runs(queryset: QuerySet[WorkflowRun], *, compensate: bool = False) -> int:
    """Cancel every pending, running or waiting run of ``queryset`` (and their unfinished children),
    as :func:`~durable_django.cancel_run` does each; how many of the queryset's runs were cancelled.

    ``compensate``: as for :func:`~durable_django.cancel_run`.
    """
    total = 0
    for ids in _chunks(cancellable(queryset)):
        now = timezone.now()
        with transaction.atomic():
            delayed = dict(
                WorkflowRun.objects.filter(pk__in=ids, status=RunStatus.PENDING, run_at__isnull=False).values_list(
                    "pk", "workflow"
                )
            )
            stopped = [pk for pk in ids if operations.stop_run(pk, now, compensate=compensate)]
            # A delayed run that never started: its scheduled start job has nothing left to do.
            dispatch.withdraw_after_commit(
                [
                    (queue_for(find_workflow(delayed[pk])), timer_jobs.start_job_id(pk))
                    for pk in stopped
                    if pk in delayed
                ]
            )
            cancelled = len(stopped)
        total += cancelled
        logger.info("cancelled %d runs of a chunk of %d", cancelled, len(ids), extra={"count": cancelled})
    return total


def _chunks(queryset: QuerySet[WorkflowRun]) -> Iterator[list[Any]]:
    """The ids of ``queryset``'s runs, :data:`CHUNK` at a time in id order: one indexed read per chunk."""
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _retry_chunk(ids: list[Any]) -> int:
    """Retry the failed runs among ``ids`` that nobody else holds: one transaction; how many it retried."""
    now = timezone.now()
    with transaction.atomic():
        # Groups before runs: the order of every writer that moves a run on from a block (retry_run's
        # among them), so that a bulk retry and a retry of the same run never wait for each other.
        # A run one of whose groups another transaction holds is left to it, as a run it holds is.
        groups = list(ParallelGroup.objects.filter(run_id__in=ids).order_by("pk").values_list("pk", "run_id", "name"))
        busy: set[Any] = set()
        if groups:
            free = set(
                ParallelGroup.objects.select_for_update(skip_locked=True)
                .filter(pk__in=[pk for pk, _, _ in groups])
                .values_list("pk", flat=True)
            )
            busy = {run_id for pk, run_id, _ in groups if pk not in free}
        runs = bulk.lock_failed([pk for pk in ids if pk not in busy])
        if not runs:
            return 0
        locked = {run.pk for run in runs}
        in_blocks = {(run_id, name) for _, run_id, name in groups}
        failed_children = set(
            WorkflowRun.objects.filter(parent_id__in=locked, status=RunStatus.FAILED, detached=False)
            .order_by()
            .values_list("parent_id", "parent_step")
            .distinct()
        )
        simple: list[WorkflowRun] = []
        jobs: list[dispatch.Job] = []
        others = 0
        for run in runs:
            if run.parent_id in locked and not run.detached:
                # Its parent, retried in this chunk too, reopens it and resumes it inline.
                continue
            place = (run.pk, run.current_step)
            if place in in_blocks or place in failed_children or _failed_at_a_wait(run):
                others += _reopen_one(run, jobs)
                continue
            run.error_history = [
                *run.error_history,
                {"error": run.error, "failed_at": run.finished_at, "retried_at": now},
            ]
            run.status, run.error, run.finished_at = RunStatus.RUNNING, None, None
            # A workflow timeout counts again from the retry, as retry_run counts it.
            wf = find_workflow(run.workflow)
            timeout = wf.timeout if wf is not None else None
            run.deadline_at = now + timedelta(seconds=timeout) if timeout is not None else None
            run.current_attempt += 1
            run.version += 1
            run.lease_owner, run.lease_expires_at = "", leases.expiry(now)  # sent again by recovery if its job is lost
            simple.append(run)
        moved = bulk.reopen_runs(simple)
        for run in simple:
            wf = find_workflow(run.workflow)
            node = wf.node(run.current_step) if wf is not None else None
            jobs.append(dispatch.run_workflow_job(run.pk, queue_for(wf, node), run.version))
            if run.deadline_at is not None:
                jobs.append(timer_jobs.time_out_run_job(run.pk, queue_for(wf), run.deadline_at))
        dispatch.submit(*jobs)
    logger.info("retried %d runs of a chunk of %d", moved + others, len(ids), extra={"count": moved + others})
    return moved + others


def _failed_at_a_wait(run: WorkflowRun) -> bool:
    """Whether ``run`` failed because a wait timed out (it waits again when retried)."""
    reason = run.error.get("reason") if isinstance(run.error, dict) else None
    return isinstance(reason, dict) and reason.get("type") == "wait_timeout"


def _reopen_one(run: WorkflowRun, jobs: list[dispatch.Job]) -> int:
    """Reopen ``run`` (locked) as a single retry does, adding its jobs to ``jobs``; 1 if it was reopened."""
    try:
        with transaction.atomic():
            jobs.extend(operations.reopen(run))
    except RunStateError:
        return 0
    return 1
