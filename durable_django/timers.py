"""A run's clock: a delayed run started when it is due; a run failed when its workflow's timeout passes.

Each has a job scheduled in RQ for its time (:mod:`durable_django.timer_jobs`) and the recovery
sweep as safety net (:func:`sweep`, every ``DURABLE["RECOVER_INTERVAL"]``). Both paths make the
same conditional change, so of the two only one acts:

- a delayed run moves from ``pending`` to ``running`` once (``started_at`` = now, ``deadline_at``
  = now + the workflow's ``timeout``), and its first job is sent;
- a run whose ``deadline_at`` passed, still pending, running or waiting, fails with
  ``{"type": "workflow_timeout"}`` in the transaction of a cancel (see
  :func:`durable_django.operations.stop_run`): its waits are cancelled, its branches not started
  never start, its unfinished children are cancelled, and it compensates first when completed
  steps of it have compensations. A step still executing finishes, and its result is recorded
  as ``cancelled``: it moves the run no more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import dispatch, results, store, timer_jobs
from .conf import durable_settings
from .definition import find_workflow, queue_for
from .logging import run_fields, run_finished
from .models import RunStatus, WorkflowRun
from .operations import stop_run

logger = logging.getLogger("durable_django")


def _run_id(run_id: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(run_id))
    except ValueError:
        logger.error("clock job with a malformed run id %r; dropping it", run_id)
        return None


def start_run(run_id: Any, now: datetime | None = None, *, withdraw: bool = False) -> bool:
    """Start the delayed run ``run_id`` if it is due and still pending; whether this call started it.

    ``withdraw``: also delete its scheduled start job, which has nothing left to do (the sweep
    started the run in its stead)."""
    key = _run_id(run_id)
    if key is None:
        return False
    found = WorkflowRun.objects.filter(pk=key).values_list("workflow", "current_step").first()
    if found is None:
        return False
    now = now or timezone.now()
    wf = find_workflow(found[0])
    queue = queue_for(wf, wf.node(found[1]) if wf is not None else None)
    deadline = now + timedelta(seconds=wf.timeout) if wf is not None and wf.timeout is not None else None
    clock = [timer_jobs.time_out_run_job(key, queue_for(wf), deadline)] if deadline is not None else []
    if store.timers.start_delayed(key, now, queue, deadline, clock) is None:
        return False
    if withdraw:
        # Its start job was sent on the workflow's queue (engine.get_or_start_run).
        dispatch.withdraw_after_commit([(queue_for(wf), timer_jobs.start_job_id(key))])
    logger.info("delayed run %s of workflow %r started", key, found[0], extra=run_fields(key, found[0]))
    return True


def time_out_run(run_id: Any, now: datetime | None = None) -> bool:
    """Fail run ``run_id`` with ``workflow_timeout`` if its deadline has passed and it has not
    finished (nor is compensating); whether this call timed it out."""
    key = _run_id(run_id)
    if key is None:
        return False
    found = WorkflowRun.objects.filter(pk=key).values_list("workflow", flat=True).first()
    if found is None:
        return False
    now = now or timezone.now()
    wf = find_workflow(found)
    reason = results.workflow_timeout(wf.timeout if wf is not None else None)
    with transaction.atomic():
        if not stop_run(key, now, compensate=True, reason=reason):
            return False
        run = WorkflowRun.objects.values_list("status", "error").get(pk=key)
        if run[0] == RunStatus.FAILED:
            transaction.on_commit(partial(run_finished, logger, key, found, "failed", run[1]))
        else:
            transaction.on_commit(
                partial(
                    logger.warning,
                    "run %s of workflow %r timed out; running its compensations",
                    key,
                    found,
                    extra=run_fields(key, found, outcome="compensating"),
                )
            )
    return True


def sweep(now: datetime) -> tuple[int, int]:
    """The safety net, called by every recovery pass: start the delayed runs whose start job has
    not come, fail the runs whose deadline passed. How many it started and timed out."""
    # A deadline has no grace: a run times out within about a second, its job or not.
    starts, timeouts = store.timers.due(now, max(durable_settings.RECOVER_INTERVAL, 2.0))
    started = sum(_isolated(start_run, pk, now, withdraw=True) for pk in starts)
    timed_out = sum(_isolated(time_out_run, pk, now) for pk in timeouts)
    return started, timed_out


def _isolated(action: Callable[..., bool], run_id: Any, now: datetime, **options: Any) -> bool:
    """``action`` on one run; an error is logged, not raised: the other runs of the sweep go on."""
    try:
        return action(run_id, now, **options)
    except dispatch.QUEUE_UNAVAILABLE:
        raise  # Redis is down: the sweeper says so once, and every run waits for the next sweep
    except Exception:
        logger.exception("%s of run %s failed; the next sweep tries again", action.__name__, run_id)
        return False
