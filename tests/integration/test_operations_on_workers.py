"""Retry and cancel against real rqworker processes and concurrent operators."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connections
from django.db.models import Count
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from durable_django import start_workflow
from durable_django.dispatch import run_job_id
from durable_django.exceptions import RunStateError
from durable_django.models import ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from durable_django.operations import cancel_run, retry_run
from tests.testapp.recovery_workflows import CANCEL_WIDTH, executions
from tests.testapp.workflows import calls, key

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def status_is(run: WorkflowRun, status: str) -> bool:
    return WorkflowRun.objects.filter(pk=run.pk, status=status).exists()


def rows(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return list(StepResult.objects.filter(run=run).order_by("step", "attempt").values_list("step", "attempt", "status"))


def test_retry_on_workers_reruns_only_the_failed_branch_and_completes(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_repairable", {"token": token})
    wait_for(lambda: status_is(run, RunStatus.FAILED), 60, what="the run to fail")
    run.refresh_from_db()
    assert run.error == {
        "step": "needs_repair",
        "parallel": "repair_block",
        "reason": {"attempt": 1, "repaired": False},
    }

    redis_db.set(key(token, "repaired"), 1)
    retry_run(run.pk)
    pool.finish(run)

    assert run.status == RunStatus.COMPLETED
    results = {"needs_repair": ["ok", {"repaired_at_attempt": 2}], "steady": ["ok", {"steady_calls": 1}]}
    assert run.context == {"token": token, "__results__": results, "after_calls": 1}
    assert rows(run) == [
        ("after", 1, "completed"),
        ("needs_repair", 1, "failed"),
        ("needs_repair", 2, "completed"),
        ("steady", 1, "completed"),
    ]
    assert (calls(token, "needs_repair"), calls(token, "steady"), calls(token, "after")) == (2, 1, 1)
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.results, group.pending_count, group.failed_count) == ("completed", results, 0, 0)
    assert [entry["error"]["step"] for entry in run.error_history] == ["needs_repair"]
    assert pool.failed_jobs() == []


def test_cancel_while_branches_execute_on_workers_stops_the_run_where_it_is(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_duplicates", {"token": token})
    wait_for(
        lambda: sum(calls(token, f"gated_{i}") for i in range(3)) >= 2,
        60,
        what="two branches to be executing",
    )
    cancelled = cancel_run(run)
    assert cancelled.status == RunStatus.CANCELLED
    redis_db.set(key(token, "gate"), 1)
    wait_for(
        lambda: not StepResult.objects.filter(run=run, status__in=(StepStatus.RUNNING, StepStatus.PENDING)).exists(),
        60,
        what="every branch to settle",
    )
    pool.wait_until_quiet()

    run.refresh_from_db()
    assert (run.status, run.current_step, run.context) == (RunStatus.CANCELLED, "gated", {"token": token})
    branches = list(StepResult.objects.filter(run=run).values_list("status", "output"))
    # Every branch ends cancelled: those that were executing ran to their end and keep their
    # outputs; one not started by then never starts.
    assert {status for status, _ in branches} == {StepStatus.CANCELLED}
    executed = sorted(output["index"] for _, output in branches if output is not None)
    assert len(executed) in (2, 3)
    started = sum(calls(token, f"gated_{i}") for i in range(3))
    assert started == len(executed)
    assert ParallelGroup.objects.get(run=run).status == "cancelled"
    assert calls(token, "after") == 0
    assert pool.failed_jobs() == []


def test_a_step_executing_when_its_run_is_cancelled_is_recorded_cancelled_with_its_output(workers, redis_db):
    pool = workers(1)
    token = uuid.uuid4().hex
    run = start_workflow("it_cancel_sleeper", {"token": token})
    wait_for(lambda: calls(token, "sleeper") >= 1, 60, what="the step to be executing")
    assert cancel_run(run).status == RunStatus.CANCELLED
    assert rows(run) == []
    redis_db.set(key(token, "gate"), 1)
    wait_for(lambda: StepResult.objects.filter(run=run).exists(), 60, what="the step's attempt to be recorded")
    pool.wait_until_quiet()

    row = StepResult.objects.get(run=run)
    assert (row.step, row.attempt, row.status, row.output, row.error) == (
        "sleeper",
        1,
        StepStatus.CANCELLED,
        {"slept": True},
        None,
    )
    assert (row.started_at is not None, row.finished_at is not None, row.lease_owner) == (True, True, "")
    run.refresh_from_db()
    assert (run.status, run.current_step, run.context) == (RunStatus.CANCELLED, "sleeper", {"token": token})
    assert calls(token, "after") == 0
    assert pool.failed_jobs() == []


def test_no_branch_starts_once_a_cancel_has_committed_and_the_blocks_counters_are_final(workers, redis_db):
    pool = workers(3)
    token = uuid.uuid4().hex
    run = start_workflow("it_cancel_wide", {"token": token})
    # Three workers in full swing through the block's short branches.
    wait_for(lambda: len(executions(token)) >= 30, 60, what="30 branches to have executed")
    cancel_run(run)
    cancelled_at = timezone.now()  # the cancel has committed
    wait_for(
        lambda: not StepResult.objects.filter(run=run, status__in=(StepStatus.RUNNING, StepStatus.PENDING)).exists(),
        60,
        what="every branch to settle",
    )
    pool.wait_until_quiet()

    rows = StepResult.objects.filter(run=run)
    late = rows.filter(started_at__gt=cancelled_at).values_list("step", "started_at")
    assert list(late) == []
    executed = executions(token)
    started = set(rows.exclude(started_at=None).values_list("step", flat=True))
    print(f"\nbranches executed before the cancel: {len(executed)} of {CANCEL_WIDTH}")
    # Every branch that started ran once and has its result: recorded before the cancel, or
    # cancelled with it; none of the others started.
    assert started == set(executed) and set(executed.values()) == {1}
    assert len(executed) < CANCEL_WIDTH
    by_status = dict(rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    assert set(by_status) <= {StepStatus.COMPLETED, StepStatus.CANCELLED}
    assert rows.filter(status=StepStatus.CANCELLED, started_at=None, output__isnull=True).count() == CANCEL_WIDTH - len(
        executed
    )
    assert rows.filter(status=StepStatus.CANCELLED).exclude(started_at=None).exclude(output__isnull=True).count() == (
        by_status.get(StepStatus.CANCELLED, 0) - (CANCEL_WIDTH - len(executed))
    )
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.waiting_count, group.failed_count) == ("cancelled", 0, 0, 0)
    run.refresh_from_db()
    assert (run.status, run.current_step) == (RunStatus.CANCELLED, "wide")
    assert "after" not in executed
    assert pool.failed_jobs() == []


def test_a_forking_worker_stops_a_hung_step_of_a_cancelled_run(workers, redis_db):
    # rq's default worker class: each job in a work horse of its own, which the cancel has killed.
    pool = workers(1, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_step", {"token": token})
    wait_for(lambda: executions(token).get("slow") == 1, 60, what="the slow step to execute")

    cancel_run(run)
    job = Job.fetch(run_job_id(run.pk, 0), connection=redis_db)
    # Stopped, not finished: the step would hang for STEP_WAIT (30 s) otherwise.
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, 20, what="the job to be stopped")
    pool.wait_until_quiet()

    run.refresh_from_db()
    assert (run.status, run.current_step) == (RunStatus.CANCELLED, "slow")
    assert rows(run) == [("first", 1, "completed")]
    assert executions(token) == {"first": 1, "slow": 1}
    assert FailedJobRegistry(queue=pool.queue).get_job_ids() == [job.id]
    # The worker itself lives on and takes the next job.
    other = start_workflow("it_dequeued", {"token": uuid.uuid4().hex})
    assert pool.finish(other).status == RunStatus.COMPLETED


def test_a_forking_worker_stops_a_hung_branch_whose_row_ends_cancelled_once_its_lease_ran_out(workers, redis_db):
    pool = workers(2, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_branch", {"token": token, "victim": 7})
    wait_for(lambda: executions(token).get("b_07") == 1, 60, what="the hung branch to execute")

    cancel_run(run)
    # The branches whose work horses were stopped hold their leases until these run out; recovery
    # then records them, as cancelled.
    wait_for(
        lambda: not StepResult.objects.filter(run=run, status__in=(StepStatus.RUNNING, StepStatus.PENDING)).exists(),
        20,
        what="every branch to settle",
    )
    pool.wait_until_quiet()

    hung = StepResult.objects.get(run=run, step="b_07")
    assert (hung.attempt, hung.output, hung.error["type"]) == (1, None, "worker_lost")
    assert StepResult.objects.filter(run=run, step="b_07").count() == 1
    statuses = set(StepResult.objects.filter(run=run, group__isnull=False).values_list("status", flat=True))
    assert statuses <= {StepStatus.COMPLETED, StepStatus.CANCELLED}
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.waiting_count, group.failed_count) == ("cancelled", 0, 0, 0)
    assert "after" not in executions(token)
    stopped = [Job.fetch(job_id, connection=redis_db) for job_id in FailedJobRegistry(queue=pool.queue).get_job_ids()]
    assert run_job_id(run.pk, 0) in [job.id for job in stopped]
    assert {job.get_status() for job in stopped} == {JobStatus.STOPPED}


def race(operations: list[Any], run: WorkflowRun) -> list[str]:
    """Call every operation on ``run`` at the same moment, each in its own thread and connection."""
    barrier = threading.Barrier(len(operations))
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(operation: Any) -> None:
        try:
            barrier.wait(timeout=10)
            operation(run.pk)
            outcome = operation.__name__
        except RunStateError:
            outcome = "refused"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(operation,)) for operation in operations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(outcomes)


def test_concurrent_retries_of_one_failed_run_let_exactly_one_win(redis_db):
    run = WorkflowRun.objects.create(
        workflow="it_repairable", status=RunStatus.FAILED, current_step="after", error={"step": "after"}
    )
    assert race([retry_run] * 8, run) == ["refused"] * 7 + ["retry_run"]
    run.refresh_from_db()
    assert (run.status, run.current_attempt, run.version, len(run.error_history)) == (RunStatus.RUNNING, 2, 1, 1)


def test_a_retry_racing_a_cancel_leaves_one_consistent_outcome(redis_db):
    run = WorkflowRun.objects.create(
        workflow="it_repairable", status=RunStatus.FAILED, current_step="after", error={"step": "after"}
    )
    outcome = race([retry_run, cancel_run], run)
    run.refresh_from_db()
    # Either the cancel came first (refused: the run was failed) and the retry won, or the retry
    # won and the cancel then cancelled the running run.
    assert outcome in (["refused", "retry_run"], ["cancel_run", "retry_run"])
    expected = RunStatus.RUNNING if outcome == ["refused", "retry_run"] else RunStatus.CANCELLED
    assert (run.status, len(run.error_history)) == (expected, 1)
