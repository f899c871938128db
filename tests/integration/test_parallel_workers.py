"""Parallel blocks on real rqworker processes: fan-out across workers, many runs at once, children."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from durable_django import start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from tests.testapp.workflows import calls, key


def sequential_rows(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return list(
        StepResult.objects.filter(run=run, group__isnull=True).order_by("id").values_list("step", "attempt", "status")
    )


def groups(run: WorkflowRun) -> list[tuple[str, str, int, int]]:
    return list(
        ParallelGroup.objects.filter(run=run)
        .order_by("id")
        .values_list("name", "status", "pending_count", "failed_count")
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_branches_that_wait_for_each_other_spread_from_the_job_that_entered_their_block(workers, redis_db):
    # Each branch waits until three workers have taken branches of the block: the job that entered
    # it claimed all twelve, so they can only meet if it hands the ones it has not started to the others.
    pool = workers(3)
    token = uuid.uuid4().hex
    run = start_workflow("it_fan_out", {"token": token, "min_workers": 3})

    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert not redis_db.exists(key(token, "rendezvous_gave_up"))
    branches = StepResult.objects.filter(run=run, group__isnull=False)
    assert len({row.output["worker_pid"] for row in branches}) == 3
    assert {row.output["worker_pid"] for row in branches} == pool.pids
    assert Counter((row.attempt, row.status) for row in branches) == {(1, StepStatus.COMPLETED): 12}
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_parallel_block_runs_on_several_workers_and_joins_once(workers):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_fan_out", {"token": token, "min_workers": 2})

    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    names = [f"branch_{i}" for i in range(12)]
    branches = {row.step: row for row in StepResult.objects.filter(run=run, group__isnull=False)}
    assert sorted(branches) == sorted(names)
    assert Counter((row.attempt, row.status) for row in branches.values()) == {(1, StepStatus.COMPLETED): 12}
    assert {name: calls(token, name) for name in names} == dict.fromkeys(names, 1)
    assert {name: (row.output["index"], sorted(row.output)) for name, row in branches.items()} == {
        f"branch_{i}": (i, ["index", "pid", "worker_pid"]) for i in range(12)
    }
    worker_pids = {row.output["worker_pid"] for row in branches.values()}
    assert worker_pids <= pool.pids
    assert len(worker_pids) > 1, f"every branch ran on worker {worker_pids}"

    assert groups(run) == [("parallel_1", "completed", 0, 0)]
    assert sequential_rows(run) == [("prepare", 1, "completed"), ("collect", 1, "completed")]
    results = {name: ["ok", row.output] for name, row in branches.items()}
    assert ParallelGroup.objects.get(run=run).results == results
    assert run.context == {
        "token": token,
        "min_workers": 2,
        "prepared": True,
        "__results__": results,
        "collected": sorted(names),
        "index_sum": 66,
    }
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_many_runs_at_once_each_join_exactly_once(workers):
    pool = workers(3)
    runs = {start_workflow("it_many", {"n": n}).pk: n for n in range(20)}

    pool.finish_all(runs, timeout=150)

    assert Counter(WorkflowRun.objects.filter(pk__in=runs).values_list("status", flat=True)) == {"completed": 20}
    assert sorted(
        ParallelGroup.objects.filter(run__in=runs).values_list(
            "run_id", "name", "status", "pending_count", "failed_count"
        )
    ) == sorted((run_id, "parts", "completed", 0, 0) for run_id in runs)
    rows = StepResult.objects.filter(run__in=runs)
    assert rows.count() == 20 * 12
    assert Counter(rows.values_list("attempt", "status")) == {(1, "completed"): 240}
    steps = ["begin", "total", *(f"part_{i}" for i in range(10))]
    assert Counter(rows.values_list("run_id", "step")) == {(run_id, name): 1 for run_id in runs for name in steps}
    for run in WorkflowRun.objects.filter(pk__in=runs):
        n = runs[run.pk]
        assert run.context == {
            "n": n,
            "begun": n,
            "__results__": {f"part_{i}": ["ok", {"value": n * 100 + i}] for i in range(10)},
            "total": n * 1000 + 45,
        }
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_branches_call_child_workflows_that_are_persisted_with_their_refs(workers):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_parent", {"token": token})

    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    sums = {"a": 7, "b": 11, "c": 15}
    assert run.context == {
        "token": token,
        "__results__": {f"call_{ref}": ["ok", {"sum": total}] for ref, total in sums.items()},
        "grand_total": 33,
    }
    assert {ref: calls(token, f"call_{ref}") for ref in sums} == dict.fromkeys(sums, 1)
    assert groups(run) == [("calls", "completed", 0, 0)]
    assert sequential_rows(run) == [("grand_total", 1, "completed")]

    children = list(WorkflowRun.objects.filter(parent=run).order_by("ref"))
    assert [(c.workflow, c.parent_step, c.ref, c.status, c.input, c.context, c.error) for c in children] == [
        ("it_child", "call_a", "a", "completed", {"n": 1}, {"n": 1, "doubled": 2, "sum": 7}, None),
        ("it_child", "call_b", "b", "completed", {"n": 2}, {"n": 2, "doubled": 4, "sum": 11}, None),
        ("it_child", "call_c", "c", "completed", {"n": 3}, {"n": 3, "doubled": 6, "sum": 15}, None),
    ]
    for child in children:
        n = child.input["n"]
        assert groups(child) == [("parallel_1", "completed", 0, 0)]
        assert sorted(StepResult.objects.filter(run=child).values_list("step", "attempt", "status", "output")) == [
            ("double", 1, "completed", {"doubled": 2 * n}),
            ("plus_one", 1, "completed", {"value": 2 * n + 1}),
            ("plus_two", 1, "completed", {"value": 2 * n + 2}),
        ]
    assert WorkflowRun.objects.count() == 4
    assert pool.failed_jobs() == []
