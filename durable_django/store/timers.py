"""Writes of a run's clock: a delayed run started once it is due; the runs due or overdue.

Failing a run whose deadline passed is :func:`durable_django.store.cancel_run` with a reason:
the same transaction as a cancel (its waits cancelled, its branches not started never start),
ending the run ``failed``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce

from .. import dispatch, leases
from ..leases import released_fields
from ..models import RunStatus, WorkflowRun
from .runs import CANCELLABLE


def start_delayed(
    run_id: Any, now: datetime, queue: str, deadline: datetime | None, jobs: list[dispatch.Job]
) -> int | None:
    """Start the delayed run ``run_id`` if it is still ``pending`` and due at ``now``: it moves to
    ``running`` with ``started_at`` = ``now`` and its ``deadline``, and its first job is sent on
    ``queue`` (with ``jobs``) once the transaction commits. The new version, or ``None`` when it
    was started already (by the scheduled job or the sweep, whichever came first), cancelled, or
    is not due yet."""
    with transaction.atomic():
        started = WorkflowRun.objects.filter(pk=run_id, status=RunStatus.PENDING, run_at__lte=now).update(
            status=RunStatus.RUNNING,
            started_at=now,
            deadline_at=deadline,
            version=F("version") + 1,
            **released_fields(leases.expiry(now)),
        )
        if not started:
            return None
        version: int = WorkflowRun.objects.filter(pk=run_id).values_list("version", flat=True).get()
        dispatch.submit(dispatch.run_workflow_job(run_id, queue, version), *jobs)
    return version


def due(now: datetime, grace: float) -> tuple[list[Any], list[Any]]:
    """What the clock has to do at ``now``, in one read (of the two partial indexes): the delayed
    runs due for ``grace`` seconds and not started (their start job did not run), and the
    unfinished runs whose deadline has passed; each oldest first, at most 500."""
    rows = (
        WorkflowRun.objects.filter(
            Q(status=RunStatus.PENDING, run_at__lte=now - timedelta(seconds=grace), parent__isnull=True)
            | Q(deadline_at__lte=now, status__in=CANCELLABLE)
        )
        .order_by(Coalesce("deadline_at", "run_at"))
        .values_list("pk", "deadline_at")[:500]
    )
    starts: list[Any] = []
    timeouts: list[Any] = []
    for pk, deadline in rows:
        (timeouts if deadline is not None and deadline <= now else starts).append(pk)
    return starts, timeouts
