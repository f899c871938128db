"""The jobs of a run's clock: its delayed start and its deadline, scheduled in RQ for their time.

Job kinds like those of :mod:`durable_django.dispatch` (which sends them: a job with a delay goes
to RQ's scheduled registry, rounded up to the next whole second, so it never comes early). Each
is only the prompt path: the recovery sweep starts a due run and times out an overdue one when
its job is lost or no RQ scheduler runs (:mod:`durable_django.timers`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .dispatch import Job

if TYPE_CHECKING:
    from .models import WorkflowRun

START_RUN = "durable_django.jobs.start_run"
TIME_OUT_RUN = "durable_django.jobs.time_out_run"
#: The clock's job kinds: sent to RQ for their time even for a child executing inline.
CLOCK = frozenset({START_RUN, TIME_OUT_RUN})

START_PREFIX = "durable-start-"
TIMEOUT_PREFIX = "durable-timeout-"


def _delay(at: datetime) -> float:
    return max((at - timezone.now()).total_seconds(), 0.0)


def start_job_id(run_id: Any) -> str:
    """The id of the job that starts delayed run ``run_id``."""
    return f"{START_PREFIX}{run_id}"


def start_run_job(run_id: Any, queue: str, run_at: datetime) -> Job:
    """Start the delayed run ``run_id`` at ``run_at``: a job scheduled for then."""
    return Job(START_RUN, (str(run_id),), queue, run_id, delay=_delay(run_at), job_id=start_job_id(run_id))


def timeout_job_id(run_id: Any, deadline: datetime) -> str:
    """The id of the job that fails run ``run_id`` at ``deadline`` (a retried run gets a new one)."""
    return f"{TIMEOUT_PREFIX}{run_id}-{int(deadline.timestamp())}"


def time_out_run_job(run_id: Any, queue: str, deadline: datetime) -> Job:
    """Fail run ``run_id`` with ``workflow_timeout`` at ``deadline``, if it has not finished by then."""
    return Job(
        TIME_OUT_RUN, (str(run_id),), queue, run_id, delay=_delay(deadline), job_id=timeout_job_id(run_id, deadline)
    )


def first_jobs(run: WorkflowRun, queue: str) -> list[Job]:
    """The clock's jobs of a new ``run`` on ``queue``: its start job (delayed) or its deadline's."""
    if run.run_at is not None:
        return [start_run_job(run.pk, queue, run.run_at)]
    if run.deadline_at is not None:
        return [time_out_run_job(run.pk, queue, run.deadline_at)]
    return []
