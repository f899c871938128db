"""The worker the docs tell users to run, as a real process: recycling, warm shutdown, spreading slow branches."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from redis import Redis

from durable_django import start_workflow
from durable_django.models import RunStatus, StepResult, WorkflowRun
from tests.testapp.recovery_workflows import executions
from tests.testapp.workflows import key

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(120)
def test_a_durable_worker_starts_afresh_in_the_same_process_after_its_job_limit(workers: Any) -> None:
    pool = workers(1, env={"DURABLE_WORKER_MAX_JOBS": "2"})
    worker = pool.workers[0]
    runs = [start_workflow("it_many", {"n": n}) for n in range(5)]

    pool.finish_all(runs)

    assert Counter(WorkflowRun.objects.values_list("status", flat=True)) == {"completed": 5}
    # Five one-job runs with a limit of two: it started three times, always as the same process.
    assert worker.process.poll() is None
    log = worker.log_path.read_text()
    assert log.count(f"started with PID {worker.pid},") == 3


@pytest.mark.timeout(120)
def test_a_durable_worker_asked_to_stop_finishes_the_job_it_is_executing(workers: Any, redis_db: Redis) -> None:
    pool = workers(1)
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_step", {"token": token})
    wait_for(lambda: executions(token).get("slow") == 1, 60, what="the held step to execute")

    worker = pool.workers[0]
    worker.process.send_signal(15)  # SIGTERM: a warm shutdown
    redis_db.set(key(token, "slow_gate"), 1)
    assert pool.exited(worker) == 0

    run.refresh_from_db()
    # The job in progress ran to its end: the held step and the one after it, in the same job.
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert list(StepResult.objects.filter(run=run).values_list("step", "attempt", "status")) == [
        ("first", 1, "completed"),
        ("slow", 1, "completed"),
        ("last", 1, "completed"),
    ]
    assert executions(token) == {"first": 1, "slow": 1, "last": 1}
