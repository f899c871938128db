"""Forks and bulk retries against real rqworker processes."""

from __future__ import annotations

import uuid

import pytest

from durable_django import fork_run, retry_runs, start_workflow
from durable_django.models import RunStatus, StepResult, WorkflowRun
from tests.testapp.workflows import calls, key

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def failed(runs: list[WorkflowRun]) -> bool:
    return WorkflowRun.objects.filter(pk__in=[run.pk for run in runs], status=RunStatus.FAILED).count() == len(runs)


def test_a_fork_of_a_failed_run_with_a_corrected_context_completes_on_workers(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_checkout", {"token": token, "amount": 0})
    wait_for(lambda: failed([run]), 60, what="the run to fail")
    run.refresh_from_db()
    assert (run.current_step, run.error) == ("charge", {"step": "charge", "reason": {"code": "bad_price", "price": 0}})

    fork = fork_run(run.pk, from_step="charge", context={"token": token, "amount": 0, "price": 7})
    fork = pool.finish(fork)
    assert fork.status == RunStatus.COMPLETED
    assert fork.context == {"token": token, "amount": 0, "price": 7, "charged": 7, "after_calls": 1}
    assert list(StepResult.objects.filter(run=fork).order_by("id").values_list("step", "attempt", "status")) == [
        ("charge", 1, "completed"),
        ("after", 1, "completed"),
    ]
    run.refresh_from_db()
    assert (run.status, run.context) == (RunStatus.FAILED, {"token": token, "amount": 0, "price": 0})
    assert (calls(token, "charge"), calls(token, "after")) == (2, 1)
    assert pool.failed_jobs() == []


def test_a_bulk_retry_of_failed_runs_completes_them_on_workers(workers, redis_db):
    pool = workers(2)
    tokens = [uuid.uuid4().hex for _ in range(12)]
    sequential = [start_workflow("it_checkout", {"token": token, "amount": 0}) for token in tokens[:8]]
    in_block = [start_workflow("it_repairable", {"token": token}) for token in tokens[8:]]
    wait_for(lambda: failed([*sequential, *in_block]), 90, what="the runs to fail")

    for token in tokens:
        redis_db.set(key(token, "repaired"), 1)
    chosen = WorkflowRun.objects.filter(pk__in=[run.pk for run in [*sequential, *in_block]])
    assert retry_runs(chosen) == 12
    assert retry_runs(chosen) == 0
    pool.finish_all([*sequential, *in_block], timeout=120)

    assert set(chosen.values_list("status", flat=True)) == {RunStatus.COMPLETED}
    for run in sequential:
        run.refresh_from_db()
        assert run.context["charged"] == 0
        assert [entry["error"]["step"] for entry in run.error_history] == ["charge"]
    assert [calls(token, "charge") for token in tokens[:8]] == [2] * 8
    assert [calls(token, "after") for token in tokens] == [1] * 12
    assert pool.failed_jobs() == []
