"""Retrying and cancelling many runs at once: counts, a bounded number of queries, concurrent callers."""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from durable_django import bulk, call_workflow, cancel_runs, dispatch, error, ok, parallel, retry_runs, step, timer_jobs
from durable_django.models import ParallelGroup, RunStatus, WorkflowRun
from durable_django.store.bulk import REOPENED_FIELDS
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


class Switch:
    def __init__(self, data: dict[str, Any]) -> None:
        self.on = False
        self.data = data

    def __call__(self, ctx: dict[str, Any]) -> Any:
        return ok(self.data) if self.on else error({"code": "not_yet"})


def failed_runs(name: str, count: int, **fields: Any) -> list[WorkflowRun]:
    """``count`` runs of workflow ``name`` stored as failed at its step ``charge``."""
    now = timezone.now()
    made = [
        WorkflowRun(
            workflow=name,
            status=RunStatus.FAILED,
            input={"n": index},
            context={"n": index},
            current_step="charge",
            error={"step": "charge", "reason": {"code": "not_yet"}},
            version=3,
            started_at=now,
            finished_at=now,
            created_at=now - timedelta(seconds=index),
            **fields,
        )
        for index in range(count)
    ]
    return WorkflowRun.objects.bulk_create(made)


def expected_queries(count: int) -> int:
    """What retrying ``count`` runs that failed at a sequential step costs (see the test below)."""
    chunks = [min(bulk.CHUNK, count - start) for start in range(0, count, bulk.CHUNK)]
    fields = ["pk", "pk", *REOPENED_FIELDS]  # as bulk_update counts them
    return sum(6 + math.ceil(size / connection.ops.bulk_batch_size(fields, [None] * size)) for size in chunks) + 1


def queries_to_retry(name: str, count: int) -> int:
    failed_runs(name, count)
    with CaptureQueriesContext(connection) as captured:
        assert retry_runs(WorkflowRun.objects.filter(workflow=name)) == count
    return len(captured.captured_queries)


@runs
def test_a_bulk_retry_of_500_failed_runs_takes_a_constant_number_of_queries_per_chunk(
    embedded: EmbeddedQueue, define: Definer, monkeypatch: pytest.MonkeyPatch
) -> None:
    charge = Switch({"charged": True})
    wf = define([step("charge", charge)])
    few = define([step("charge", charge)])
    sent: list[int] = []
    send = dispatch.send
    monkeypatch.setattr(dispatch, "send", lambda jobs: (sent.append(len(jobs)), send(jobs)))

    # Per chunk: its ids; BEGIN, the lock, its runs' groups, their failed children, one UPDATE (as
    # many as the database's limit on parameters needs: one on PostgreSQL), COMMIT. Then the read that finds no more.
    assert queries_to_retry(few.name, 50) == expected_queries(50)
    assert queries_to_retry(wf.name, 500) == expected_queries(500)
    if connection.vendor == "postgresql":
        assert (expected_queries(50), expected_queries(500)) == (8, 22)
    assert sent == [50, 200, 200, 100]

    retried = WorkflowRun.objects.filter(workflow=wf.name)
    assert set(retried.values_list("status", "version", "current_attempt", "error", "finished_at")) == {
        ("running", 4, 2, None, None)
    }
    history = retried.values_list("error_history", flat=True)[0]
    assert [entry["error"] for entry in history] == [{"step": "charge", "reason": {"code": "not_yet"}}]
    charge.on = True
    embedded.run_until_idle(timeout=120)
    assert set(retried.values_list("status", flat=True)) == {"completed"}
    assert retried.filter(context__charged=True).count() == 500


@runs
def test_a_bulk_retry_counts_only_the_failed_runs_it_retried(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("charge", lambda ctx: ok())])
    failed_runs(wf.name, 3)
    failed_runs(wf.name, 2, compensation="completed")  # their completed steps were undone
    WorkflowRun.objects.create(workflow=wf.name, status=RunStatus.COMPLETED)
    WorkflowRun.objects.create(workflow=wf.name, status=RunStatus.WAITING)
    everything = WorkflowRun.objects.filter(workflow=wf.name)
    assert bulk.retryable(everything).count() == 3

    assert retry_runs(everything) == 3
    assert retry_runs(everything) == 0
    embedded.run_until_idle()
    assert sorted(everything.values_list("status", "compensation")) == [
        ("completed", ""),
        ("completed", ""),
        ("completed", ""),
        ("completed", ""),
        ("failed", "completed"),
        ("failed", "completed"),
        ("waiting", ""),
    ]


@runs
def test_a_bulk_retry_reopens_runs_failed_in_a_block_like_a_single_retry(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    flaky = Switch({"b": 2})
    wf = define(
        [
            step("charge", Switch({"c": 1})),
            parallel(step("a", lambda ctx: ok({"a": 1})), step("b", flaky), name="fan"),
        ]
    )
    sequential = finish(embedded, wf.start({"x": 1}))
    assert (sequential.status, sequential.current_step) == ("failed", "charge")
    in_block = define([parallel(step("a", lambda ctx: ok({"a": 1})), step("b", flaky), name="fan")])
    blocked = finish(embedded, in_block.start({"x": 2}))
    assert (blocked.status, blocked.current_step) == ("failed", "fan")

    assert retry_runs(WorkflowRun.objects.filter(workflow__in=[wf.name, in_block.name])) == 2
    flaky.on = True
    blocked = finish(embedded, blocked)
    assert blocked.status == "completed"
    assert sorted(attempts(blocked)) == [("a", 1, "completed"), ("b", 1, "failed"), ("b", 2, "completed")]
    sequential = finish(embedded, sequential)
    assert (sequential.status, sequential.current_attempt) == ("failed", 2)
    assert attempts(sequential) == [("charge", 1, "failed"), ("charge", 2, "failed")]


@runs
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
def test_two_bulk_retries_at_once_retry_each_run_once(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("charge", Switch({}))])
    failed_runs(wf.name, 600)
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def retry() -> None:
        try:
            barrier.wait()
            counts.append(retry_runs(WorkflowRun.objects.filter(workflow=wf.name)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == 600
    rows = WorkflowRun.objects.filter(workflow=wf.name)
    assert set(rows.values_list("status", "version", "current_attempt")) == {("running", 4, 2)}
    assert {len(history) for history in rows.values_list("error_history", flat=True)} == {1}


@runs
def test_a_bulk_cancel_cancels_the_unfinished_runs_and_counts_them(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: ok())])
    done = finish(embedded, wf.start({}))
    pending = [wf.start({"i": i}) for i in range(3)]  # their jobs are not executed yet
    failed_runs(wf.name, 1)
    everything = WorkflowRun.objects.filter(workflow=wf.name)
    assert bulk.cancellable(everything).count() == 3

    assert cancel_runs(everything) == 3
    assert cancel_runs(everything) == 0
    assert set(WorkflowRun.objects.filter(pk__in=[r.pk for r in pending]).values_list("status", flat=True)) == {
        "cancelled"
    }
    embedded.run_until_idle()
    assert attempts(pending[0]) == []
    done.refresh_from_db()
    assert done.status == "completed"
    assert everything.filter(status="failed").count() == 1


@runs
def test_a_bulk_retry_counts_a_workflow_timeout_again_from_the_retry(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("charge", lambda ctx: ok())], timeout=60)
    [run] = failed_runs(wf.name, 1, deadline_at=timezone.now() - timedelta(hours=1))

    before = timezone.now()
    assert retry_runs(WorkflowRun.objects.filter(pk=run.pk)) == 1

    run.refresh_from_db()
    assert run.status == "running"
    assert before + timedelta(seconds=59) <= run.deadline_at <= timezone.now() + timedelta(seconds=60)
    embedded.run_commit_hooks()
    scheduled = [job_id for queue in embedded.queues() for job_id in queue.scheduled_job_registry.get_job_ids()]
    assert scheduled == [timer_jobs.timeout_job_id(run.pk, run.deadline_at)]
    run = finish(embedded, run)
    assert run.status == "completed"


@runs
def test_a_bulk_retry_of_a_parent_and_its_failed_child_runs_the_childs_step_once_more(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    flaky = Switch({"inner": True})
    calls: list[int] = []

    def inner(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return flaky(ctx)

    child = define([step("inner", inner)])

    def call(ctx: dict[str, Any]) -> Any:
        outcome, value = call_workflow(child.name, {})
        return ok({"result": value}) if outcome == "ok" else error(value)

    parent = define([step("call", call)])
    run = finish(embedded, parent.start({}))
    child_run = WorkflowRun.objects.get(parent=run)
    assert (run.status, child_run.status, len(calls)) == ("failed", "failed", 1)
    flaky.on = True

    # The child comes first in id order or not: either way the parent's retry resumes it.
    assert retry_runs(WorkflowRun.objects.filter(pk__in=[run.pk, child_run.pk])) == 1

    # Only the parent's job is sent: a job of the child's own would execute it next to the parent's step.
    embedded.run_commit_hooks()
    run.refresh_from_db()
    queued = [job_id for queue in embedded.queues() for job_id in queue.job_ids]
    assert queued == [dispatch.run_job_id(run.pk, run.version)]
    run = finish(embedded, run)
    child_run.refresh_from_db()
    assert (run.status, child_run.status) == ("completed", "completed")
    assert len(calls) == 2


@runs
def test_a_bulk_cancel_of_a_delayed_run_withdraws_its_start_job(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: ok())])
    later = wf.start({}, delay=3600)
    embedded.run_commit_hooks()
    assert [job for queue in embedded.queues() for job in queue.scheduled_job_registry.get_job_ids()] == [
        timer_jobs.start_job_id(later.pk)
    ]

    assert cancel_runs(WorkflowRun.objects.filter(pk=later.pk)) == 1

    embedded.run_commit_hooks()
    assert [job for queue in embedded.queues() for job in queue.scheduled_job_registry.get_job_ids()] == []
    later.refresh_from_db()
    assert later.status == "cancelled"


@runs
@pytest.mark.timeout(60)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: PostgreSQL")
def test_a_bulk_retry_leaves_a_run_whose_block_another_transaction_holds_without_waiting_for_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    flaky = Switch({"b": 2})
    wf = define([parallel(step("a", lambda ctx: ok({"a": 1})), step("b", flaky), name="fan")])
    blocked = finish(embedded, wf.start({}))
    assert (blocked.status, blocked.current_step) == ("failed", "fan")
    held, release = threading.Event(), threading.Event()

    def hold_the_group() -> None:
        # What retry_run's reopen does first: lock the run's group, then (later) write the run.
        try:
            with transaction.atomic():
                list(ParallelGroup.objects.select_for_update().filter(run_id=blocked.pk))
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_group)
    holder.start()
    try:
        assert held.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # a bulk retry that waited would fail here
        assert retry_runs(WorkflowRun.objects.filter(pk=blocked.pk)) == 0
        blocked.refresh_from_db()
        assert blocked.status == "failed"
    finally:
        release.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")

    assert retry_runs(WorkflowRun.objects.filter(pk=blocked.pk)) == 1
    flaky.on = True
    assert finish(embedded, blocked).status == "completed"
