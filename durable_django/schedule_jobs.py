"""The transport of schedules: the fire job, scheduled in RQ for a schedule's next fire time.

Like :mod:`durable_django.dispatch`, whose queues it uses, it is sent after commit and only
carries an id. A fire job that is lost (Redis flushed, no worker running RQ's scheduler) costs
nothing but promptness: the recovery sweeper fires what is due too, within its interval.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction

from . import dispatch
from .conf import durable_settings

logger = logging.getLogger("durable_django.dispatch")

FIRE_SCHEDULE = "durable_django.jobs.fire_schedule"


def fire_job_id(schedule_id: Any, fire_at: datetime) -> str:
    """The id of the job that fires schedule ``schedule_id`` at ``fire_at``: one per fire time."""
    return f"durable-schedule-{schedule_id}-{int(fire_at.timestamp())}"


def send_fire_job(schedule_id: Any, fire_at: datetime, queue: str) -> None:
    """Schedule the job that fires ``schedule_id`` at ``fire_at`` on ``queue``, once the transaction commits.

    Sending it twice (two processes syncing, a sweeper and a job) writes the same job id and the
    same due time again: RQ keeps one.
    """
    transaction.on_commit(lambda: _send(schedule_id, fire_at, queue))


def _send(schedule_id: Any, fire_at: datetime, queue: str) -> None:
    try:
        dispatch.get_queue(queue).enqueue_at(
            fire_at,
            FIRE_SCHEDULE,
            schedule_id,
            job_timeout=durable_settings.JOB_TIMEOUT,
            result_ttl=durable_settings.RESULT_TTL,
            failure_ttl=durable_settings.FAILURE_TTL,
            job_id=fire_job_id(schedule_id, fire_at),
            description=f"fire schedule {schedule_id} at {fire_at.isoformat()}",
        )
    except Exception:
        logger.warning(
            "could not schedule the fire job of schedule %s at %s; the recovery sweeper fires it",
            schedule_id,
            fire_at.isoformat(),
            exc_info=True,
        )


def withdraw_fire_job(schedule_id: Any, fire_at: datetime, queue: str) -> None:
    """Delete the fire job of ``fire_at`` once the transaction commits (the schedule was disabled or changed).

    Only tidiness: a fire job that runs anyway finds nothing due.
    """
    dispatch.withdraw_after_commit([(queue, fire_job_id(schedule_id, fire_at))])
