"""A hung branch on real workers holds nothing but itself: the rest of its block is recorded at once.

One branch of a 500-branch block hangs in the first batch of the job that entered the block. That
batch overruns its budget: the watchdog records the branches it finished and gives the rest back,
and the two other workers execute them. The block then waits for the hung branch alone, until the
test releases it or ``DURABLE["DEFAULT_TIMEOUT"]`` ends it. The workers run with the default
leases and sweeps. Each test prints its figures (``pytest -s``), reported in docs/reliability.md.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from django.utils import timezone
from redis import Redis

from durable_django import start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from tests.testapp.recovery_workflows import HUNG_WIDTH, executions
from tests.testapp.workflows import key

from .support import WorkerPool, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Among the first batch the run's job claims, after a few quick branches of that batch.
HUNG = 5
NAMES = [f"h_{i:03}" for i in range(HUNG_WIDTH)]
HUNG_NAME = NAMES[HUNG]


def figure(name: str, value: float) -> None:
    print(f"\nFIGURE {name}: {value:.2f} s")


def completed_count(run: WorkflowRun) -> int:
    return StepResult.objects.filter(run=run, status="completed").count()


def start_and_wait_for_the_others(pool: WorkerPool) -> tuple[WorkflowRun, str]:
    """Start the block, and wait until every branch but the hung one is recorded (the hung one still running)."""
    token = uuid.uuid4().hex
    began = time.monotonic()
    run = start_workflow("it_hung_branch", {"token": token, "hung": HUNG})
    wait_for(lambda: executions(token).get(HUNG_NAME) == 1, 60, what="the hung branch to start")
    hung_at = time.monotonic()
    wait_for(lambda: completed_count(run) == HUNG_WIDTH - 1, 120, interval=0.02, what="499 branches to be recorded")
    done_at = time.monotonic()
    hung = StepResult.objects.get(run=run, step=HUNG_NAME)
    group = ParallelGroup.objects.get(run=run)
    run.refresh_from_db()
    # The block waits for the hung branch alone.
    assert (hung.status, hung.attempt) == ("running", 1)
    assert (group.status, group.pending_count, group.failed_count) == ("running", 1, 0)
    assert (run.status, run.current_step) == (RunStatus.RUNNING, "wide")
    figure("hung branch among 500 on 3 workers: start -> the 499 others recorded", done_at - began)
    figure("hung branch started -> the 499 others recorded", done_at - hung_at)
    return run, token


def assert_every_branch_ran_once(run: WorkflowRun, token: str, hung_status: str) -> None:
    rows = StepResult.objects.filter(run=run, group__isnull=False)
    assert sorted(rows.values_list("step", "attempt", "status")) == [
        (name, 1, hung_status if name == HUNG_NAME else "completed") for name in NAMES
    ]
    assert executions(token) == {**dict.fromkeys(NAMES, 1), "after": 1}
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count) == ("completed", 0)


@pytest.mark.timeout(240)
def test_a_hung_branch_holds_none_of_the_499_others_and_its_block_waits_for_it_alone(
    workers: Any, redis_db: Redis
) -> None:
    pool = workers(3)
    run, token = start_and_wait_for_the_others(pool)

    released_at = timezone.now()
    redis_db.set(key(token, "hung_gate"), 1)
    pool.finish(run, timeout=60)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert run.context["__results__"] == {name: ["ok", {"index": i}] for i, name in enumerate(NAMES)}
    assert_every_branch_ran_once(run, token, "completed")
    after = StepResult.objects.get(run=run, step="after")
    figure("hung branch released -> step after the block started", (after.started_at - released_at).total_seconds())
    assert pool.failed_jobs() == []


@pytest.mark.timeout(240)
def test_a_hung_branch_ended_by_the_default_timeout_is_the_only_one_its_block_waited_for(
    workers: Any, redis_db: Redis
) -> None:
    pool = workers(3, env={"DURABLE_DEFAULT_TIMEOUT": "10"})
    run, token = start_and_wait_for_the_others(pool)

    # Never released: DEFAULT_TIMEOUT ends it, and the block (complete_all) completes with its error.
    pool.finish(run, timeout=60)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    timeout = {"type": "timeout", "message": f'step {HUNG_NAME!r} ran longer than DURABLE["DEFAULT_TIMEOUT"] of 10 s'}
    assert run.context["__results__"] == {
        name: ["error", timeout] if name == HUNG_NAME else ["ok", {"index": i}] for i, name in enumerate(NAMES)
    }
    assert_every_branch_ran_once(run, token, "failed")
    hung = StepResult.objects.get(run=run, step=HUNG_NAME)
    figure(
        "default timeout of 10 s: hung branch started -> failed", (hung.finished_at - hung.started_at).total_seconds()
    )
    assert pool.failed_jobs() == []
