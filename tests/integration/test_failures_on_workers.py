"""Failures on real rqworker processes: retries with backoff through RQ's scheduler, fail_fast."""

from __future__ import annotations

import uuid

import pytest
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from durable_django import start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from tests.testapp.workflows import calls, key

from .support import wait_for


def attempts(run: WorkflowRun, step: str) -> list[tuple[int, str]]:
    return list(StepResult.objects.filter(run=run, step=step).order_by("attempt").values_list("attempt", "status"))


def assert_retried_twice_then_completed(run: WorkflowRun, token: str) -> None:
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert attempts(run, "flaky") == [(1, "failed"), (2, "failed"), (3, "completed")]
    flaky = list(StepResult.objects.filter(run=run, step="flaky").order_by("attempt"))
    for row in flaky[:2]:
        message = f"flaky failure {row.attempt}"
        assert (row.error["type"], row.error["message"], row.output) == ("RuntimeError", message, None)
        assert f"RuntimeError: {message}" in row.error["traceback"]
    assert (flaky[2].output, flaky[2].error) == ({"flaky_attempts": 3}, None)

    group = ParallelGroup.objects.get(run=run)
    assert attempts(run, "flaky_branch") == [(1, "failed"), (2, "failed"), (3, "completed")]
    assert list(
        StepResult.objects.filter(run=run, step="flaky_branch")
        .order_by("attempt")
        .values_list("group", "error", "output")
    ) == [
        (group.pk, {"attempt": 1}, None),
        (group.pk, {"attempt": 2}, None),
        (group.pk, None, {"branch_attempts": 3}),
    ]
    assert attempts(run, "steady") == [(1, "completed")]
    results = {"flaky_branch": ["ok", {"branch_attempts": 3}], "steady": ["ok", {"steady": True}]}
    assert (group.name, group.status, group.results, group.pending_count, group.failed_count) == (
        "retry_block",
        "completed",
        results,
        0,
        0,
    )
    assert attempts(run, "finish") == [(1, "completed")]
    assert run.context == {"token": token, "flaky_attempts": 3, "__results__": results, "finished": True}
    assert (calls(token, "flaky"), calls(token, "flaky_branch")) == (3, 3)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_step_and_branch_retry_with_backoff_through_the_rq_scheduler(workers):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_retry", {"token": token})

    pool.finish(run)

    assert_retried_twice_then_completed(run, token)
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_retry_waits_in_rq_scheduled_registry_until_a_scheduler_runs(workers):
    pool = workers(1, with_scheduler=False)
    token = uuid.uuid4().hex
    run = start_workflow("it_retry", {"token": token})
    scheduled = ScheduledJobRegistry(queue=pool.queue)

    # Once the first attempt's job is done, the retry can only be in the scheduled registry:
    # no process of this pool moves scheduled jobs onto the queue.
    wait_for(
        lambda: scheduled.count == 1 and StartedJobRegistry(queue=pool.queue).count == 0 and pool.queue.count == 0,
        30,
        what="the retry of the first attempt to be scheduled",
    )
    retry = pool.queue.fetch_job(scheduled.get_job_ids()[0])
    # Version 2: the claim of the first job made it 1, storing the failed attempt made it 2.
    assert (retry.func_name, retry.args) == ("durable_django.jobs.run_workflow", (str(run.pk), "default", 2))
    run.refresh_from_db()
    assert (run.status, run.current_step, run.current_attempt) == (RunStatus.RUNNING, "flaky", 2)
    assert attempts(run, "flaky") == [(1, "failed")]
    assert calls(token, "flaky") == 1

    # The worker said at its start what it does not do.
    assert "this worker runs without RQ's scheduler (durable_worker --without-scheduler)" in pool.output()

    workers(1)  # this one runs RQ's scheduler
    pool.finish(run)

    assert_retried_twice_then_completed(run, token)
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_fail_fast_fails_run_before_slow_branch_finishes_and_keeps_its_late_result(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_fail_fast", {"token": token})

    wait_for(
        lambda: WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.FAILED).exists(), 60, what="the run to fail"
    )
    slow = StepResult.objects.get(run=run, step="slow")
    assert slow.status == StepStatus.RUNNING  # the run failed without waiting for it
    run.refresh_from_db()
    failure = {"step": "boom", "parallel": "race", "reason": {"code": "boom"}}
    assert run.error == failure
    failed_version = run.version
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.results) == ("failed", {"boom": ["error", {"code": "boom"}]})

    redis_db.set(key(token, "release_slow"), 1)
    wait_for(
        lambda: StepResult.objects.filter(pk=slow.pk, status=StepStatus.COMPLETED).exists(),
        60,
        what="the slow branch's late result",
    )
    pool.wait_until_quiet()

    slow.refresh_from_db()
    assert (slow.attempt, slow.output, slow.error) == (1, {"slow": "done"}, None)
    assert list(StepResult.objects.filter(run=run).order_by("step").values_list("step", "status", "error")) == [
        ("boom", "failed", {"code": "boom"}),
        ("slow", "completed", None),
    ]
    run.refresh_from_db()
    assert (run.status, run.error, run.current_step, run.version) == (
        RunStatus.FAILED,
        failure,
        "race",
        failed_version,
    )
    group.refresh_from_db()
    assert (group.status, group.results, group.pending_count, group.failed_count) == (
        "failed",
        {"boom": ["error", {"code": "boom"}]},
        0,
        1,
    )
    assert calls(token, "after") == 0
    assert pool.failed_jobs() == []
