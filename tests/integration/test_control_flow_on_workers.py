"""Foreach and branch blocks on real durable_worker processes."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from durable_django import start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, StepStatus
from tests.testapp.workflows import key

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(180)
def test_a_foreach_of_a_thousand_items_runs_across_two_workers_and_joins_once(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_foreach", {"token": token, "count": 1000})

    pool.finish(run, timeout=120)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert run.context["total"] == sum(n * n for n in range(1000))
    assert run.context["done"] is True
    items = StepResult.objects.filter(run=run, group__isnull=False)
    assert Counter((row.attempt, row.status) for row in items) == {(1, StepStatus.COMPLETED): 1000}
    assert sorted(items.values_list("item_index", flat=True)) == list(range(1000))
    # Each item executed once, and both workers took some.
    assert [int(redis_db.get(key(token, "calls", str(i))) or 0) for i in range(1000)] == [1] * 1000
    assert len({row.output["pid"] for row in items}) == 2
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.branch_count, group.pending_count, group.failed_count) == ("completed", 1000, 0, 0)
    assert pool.failed_jobs() == []


@pytest.mark.timeout(180)
def test_max_concurrency_holds_across_four_workers(workers, redis_db):
    pool = workers(4)
    token = uuid.uuid4().hex
    # Slow items (0.3 s): every worker would take some at once if the block let it.
    run = start_workflow("it_foreach_limited", {"token": token, "numbers": list(range(12)), "seconds": 0.3})

    pool.finish(run, timeout=120)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert run.context["total"] == sum(n * n for n in range(12))
    peak = int(redis_db.get(key(token, "peak")) or 0)
    assert 1 <= peak <= 2, f"{peak} items executed at once; the block allows 2"
    assert [int(redis_db.get(key(token, "calls", str(i))) or 0) for i in range(12)] == [1] * 12
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_branch_block_takes_its_case_on_workers(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    fan = start_workflow("it_branch", {"token": token, "mode": "fan", "numbers": [1, 2, 3]})
    single = start_workflow("it_branch", {"token": token, "mode": "single"})

    pool.finish_all([fan, single])
    fan.refresh_from_db()
    single.refresh_from_db()

    assert (fan.status, fan.context["__results__"], fan.context["after"]) == (
        RunStatus.COMPLETED,
        [
            ["ok", {"square": n * n, "pid": row.output["pid"]}]
            for n, row in zip(
                [1, 2, 3], StepResult.objects.filter(run=fan, group__isnull=False).order_by("item_index"), strict=True
            )
        ],
        True,
    )
    assert (single.status, single.context) == (
        RunStatus.COMPLETED,
        {"token": token, "mode": "single", "one": True, "after": True},
    )
    assert list(StepResult.objects.filter(run=single).order_by("id").values_list("step", "kind")) == [
        ("route", "branch"),
        ("one", "step"),
        ("after", "step"),
    ]
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_foreach_item_whose_worker_is_killed_runs_again_with_its_item_and_the_block_joins_once(
    workers, redis_db, settings
):
    from durable_django.models import WorkflowRun
    from tests.testapp.recovery_workflows import executions

    from .support import lease_pid, settled_batch, wait_for

    lease = {"DURABLE_LEASE_SECONDS": "3", "DURABLE_RECOVER_INTERVAL": "1"}
    settings.DURABLE = {"LEASE_SECONDS": 3.0, "RECOVER_INTERVAL": 1.0}
    pool = workers(3, env=lease)
    token = uuid.uuid4().hex
    victim = 5
    run = start_workflow("it_killed_item", {"token": token, "victim": victim})

    wait_for(lambda: executions(token).get(f"item_{victim:02}") == 1, 60, what="the victim item to execute")
    held = StepResult.objects.get(run=run, item_index=victim)
    assert held.status == "running"
    batch = settled_batch(run.pk, held.lease_owner, "item_index")
    # The block's limit holds over what the killed worker had taken too.
    assert StepResult.objects.filter(run=run, status="running").count() <= 8
    pool.kill(pool.worker_of(lease_pid(held.lease_owner)))
    pool.finish(run, timeout=90)

    run = WorkflowRun.objects.get(pk=run.pk)
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert run.context["doubled"] == [2 * i for i in range(30)]
    items = StepResult.objects.filter(run=run, group__isnull=False)
    # Each item completed exactly once; those the killed worker held after one lost attempt, with their own item.
    completed = Counter(items.filter(status="completed").values_list("item_index", flat=True))
    assert completed == dict.fromkeys(range(30), 1)
    assert set(items.filter(status="failed").values_list("item_index", flat=True)) == batch
    assert {row.item_index: row.output for row in items.filter(status="completed", item_index__in=batch)} == {
        index: {"double": 2 * index} for index in batch
    }
    counts = executions(token)
    # Items outside the killed batch executed once; those in it at most twice (once before the kill).
    assert {i: counts[f"item_{i:02}"] for i in range(30) if i not in batch} == {
        i: 1 for i in range(30) if i not in batch
    }
    assert all(1 <= counts[f"item_{i:02}"] <= 2 for i in batch)
    assert counts[f"item_{victim:02}"] == 2
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.failed_count) == ("completed", 0, 0)
    assert pool.failed_jobs() == []
