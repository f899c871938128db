"""Delayed start and workflow timeout on real worker processes (``durable_worker``, with rq's scheduler).

Nothing here measures speed: each test asserts the order of what happened (the run failed while
its step was still sleeping; the branches not started never ran) and the state left behind.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from durable_django import start_workflow
from durable_django.dispatch import run_job_id
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from durable_django.timer_jobs import start_job_id
from tests.testapp.recovery_workflows import executions

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

TIMEOUT_REASON = {
    "type": "workflow_timeout",
    "timeout": 2.0,
    "message": "the run did not finish within its workflow's timeout of 2 s",
}


def status_is(run: WorkflowRun, status: str) -> bool:
    return WorkflowRun.objects.filter(pk=run.pk, status=status).exists()


def rows(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return list(StepResult.objects.filter(run=run).order_by("step", "attempt").values_list("step", "attempt", "status"))


def test_a_delayed_run_starts_at_its_time_on_a_worker_with_a_scheduler(workers: Any, redis_db: Any) -> None:
    pool = workers(1)
    token = uuid.uuid4().hex
    run = start_workflow("it_timing_delayed", {"token": token}, delay=3)
    run.refresh_from_db()
    assert run.run_at is not None
    # Pending, holding no worker: nothing in a queue, its start job in RQ's scheduled registry.
    assert (run.status, run.started_at, pool.queue.count) == ("pending", None, 0)
    assert pool.queue.scheduled_job_registry.get_job_ids() == [start_job_id(run.pk)]
    run = pool.finish(run, timeout=60)
    assert (run.status, rows(run)) == ("completed", [("only", 1, "completed")])
    assert run.started_at is not None and run.started_at >= run.run_at
    assert executions(token) == {"only:started": 1, "only:finished": 1}


def test_a_timeout_fails_the_run_while_its_step_still_sleeps_and_drops_the_late_result(
    workers: Any, redis_db: Any
) -> None:
    pool = workers(1)
    token = uuid.uuid4().hex
    run = start_workflow("it_timing_slow_step", {"token": token})
    wait_for(lambda: status_is(run, RunStatus.FAILED), 30, what="the run to time out")
    # Failed before the step ended: it is still sleeping.
    assert executions(token) == {"slow:started": 1}
    run.refresh_from_db()
    assert (run.error, run.current_step) == ({"step": "slow", "reason": TIMEOUT_REASON}, "slow")
    assert run.deadline_at is not None and run.finished_at is not None and run.finished_at >= run.deadline_at
    # The step ends later: its result is recorded as cancelled, and the run does not move on.
    wait_for(lambda: executions(token).get("slow:finished") == 1, 30, what="the slow step to end")
    wait_for(lambda: rows(run) == [("slow", 1, "cancelled")], 30, what="the late attempt to be recorded")
    pool.wait_until_quiet()
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", {"step": "slow", "reason": TIMEOUT_REASON})
    assert StepResult.objects.get(run=run).output == {"slow": True}
    assert executions(token) == {"slow:started": 1, "slow:finished": 1}


def test_a_timeout_during_a_block_stops_the_branches_not_started(workers: Any, redis_db: Any) -> None:
    # One worker: while the first branch sleeps, the others wait for their turn.
    pool = workers(1)
    token = uuid.uuid4().hex
    run = start_workflow("it_timing_slow_block", {"token": token})
    wait_for(lambda: status_is(run, RunStatus.FAILED), 30, what="the run to time out")
    assert executions(token) == {"first:started": 1}
    wait_for(lambda: executions(token).get("first:finished") == 1, 30, what="the slow branch to end")
    pool.wait_until_quiet()
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", {"step": "block", "reason": TIMEOUT_REASON})
    assert rows(run) == [("first", 1, "cancelled"), ("second", 1, "cancelled"), ("third", 1, "cancelled")]
    never = StepResult.objects.filter(run=run, step__in=("second", "third"))
    assert list(never.values_list("started_at", flat=True)) == [None, None]
    assert executions(token) == {"first:started": 1, "first:finished": 1}
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count) == ("cancelled", 0)


def test_a_forking_worker_stops_the_step_of_a_timed_out_run(workers: Any, redis_db: Any) -> None:
    # rq's default worker class: each job in a work horse of its own, which the timeout stops as a cancel does.
    pool = workers(1, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_timing_slow_step", {"token": token})
    wait_for(lambda: status_is(run, RunStatus.FAILED), 30, what="the run to time out")
    job = Job.fetch(run_job_id(run.pk, 0), connection=redis_db)
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, 20, what="the job to be stopped")
    pool.wait_until_quiet()
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", {"step": "slow", "reason": TIMEOUT_REASON})
    # The step never got to its end, and nothing of it moved the run.
    assert (rows(run), executions(token)) == ([], {"slow:started": 1})
    assert FailedJobRegistry(queue=pool.queue).get_job_ids() == [job.id]
