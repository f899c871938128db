"""Jobs delivered more than once to real rqworker processes change nothing twice.

Copies are sent under new job ids, as RQ would deliver a job again; a copy of a join that arrives
while the join executes finds the group's lease taken and does nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

import pytest
from redis import Redis
from rq.job import Job as RQJob

from durable_django import dispatch, start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from tests.testapp.recovery_workflows import executions
from tests.testapp.workflows import calls, key

from .support import WorkerPool, wait_for

BRANCHES = [f"gated_{i}" for i in range(3)]
RESULTS = {f"gated_{i}": ["ok", {"index": i}] for i in range(3)}


def branch_statuses(run: WorkflowRun) -> Counter[str]:
    return Counter(StepResult.objects.filter(run=run, group__isnull=False).values_list("status", flat=True))


def again(job: dispatch.Job) -> dispatch.Job:
    """Another delivery of ``job``, the job production sends, under a new id (as RQ may deliver it twice)."""
    return dataclasses.replace(job, job_id=dispatch.new_job_id())


def assert_everything_happened_once(run: WorkflowRun, token: str) -> None:
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert sorted(
        ParallelGroup.objects.filter(run=run).values_list("name", "status", "pending_count", "failed_count")
    ) == [("gated", "completed", 0, 0)]
    assert ParallelGroup.objects.get(run=run).results == RESULTS
    assert sorted(StepResult.objects.filter(run=run).values_list("step", "attempt", "status", "output")) == [
        ("after", 1, "completed", {"after_calls": 1}),
        ("gated_0", 1, "completed", {"index": 0}),
        ("gated_1", 1, "completed", {"index": 1}),
        ("gated_2", 1, "completed", {"index": 2}),
    ]
    assert {name: calls(token, name) for name in [*BRANCHES, "after"]} == dict.fromkeys([*BRANCHES, "after"], 1)
    assert run.context == {"token": token, "__results__": RESULTS, "after_calls": 1}


def wait_until_executed(pool: WorkerPool, connection: Redis, job_id: str) -> None:
    """Wait until RQ has executed ``job_id`` (successful jobs are deleted at once: RESULT_TTL is 0)."""
    wait_for(lambda: not RQJob.exists(job_id, connection=connection) or pool.failed_jobs(), 30, what=f"job {job_id}")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_duplicate_branch_and_join_jobs_record_one_result_and_join_once(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_duplicates", {"token": token})
    # Both workers hold a branch at the gate; the third branch waits in the queue.
    wait_for(lambda: branch_statuses(run) == {"running": 2, "pending": 1}, 30, what="two branches to start")
    rows = list(StepResult.objects.filter(run=run, group__isnull=False))
    group_id = rows[0].group_id

    for row in rows:
        # One copy jumps the queue, so that a copy claims the pending branch before its original.
        pool.queue.enqueue_call(dispatch.RUN_BRANCH, args=(row.pk,), at_front=True, result_ttl=0)
        dispatch.send([again(dispatch.run_branch_job(row.pk, run.pk, row.job_id, "default"))])
    redis_db.set(key(token, "gate"), 1)
    wait_for(lambda: branch_statuses(run) == {"completed": 3}, 30, what="every branch to complete")
    # These race the join job the last branch sent.
    dispatch.send([again(dispatch.join_group_job(group_id, run.pk, "default")) for _ in range(2)])
    pool.finish(run, timeout=30)

    assert_everything_happened_once(run, token)
    assert pool.failed_jobs() == []

    # Late copies, after the run completed, change nothing either.
    version = run.version
    dispatch.send(
        [
            *(again(dispatch.run_branch_job(row.pk, run.pk, row.job_id, "default")) for row in rows),
            again(dispatch.join_group_job(group_id, run.pk, "default")),
            again(dispatch.run_workflow_job(run.pk, "default", 0)),
        ]
    )
    pool.wait_until_quiet()

    assert_everything_happened_once(run, token)
    assert run.version == version
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_duplicate_run_job_while_block_is_open_does_not_fan_out_again(workers, redis_db):
    pool = workers(4)
    token = uuid.uuid4().hex
    run = start_workflow("it_duplicates", {"token": token})
    # Three workers hold the three branches at the gate; the fourth is idle.
    wait_for(lambda: branch_statuses(run) == {"running": 3}, 30, what="every branch to start")

    copy = again(dispatch.run_workflow_job(run.pk, "default", 0))
    dispatch.send([copy])
    wait_until_executed(pool, redis_db, copy.job_id)
    redis_db.set(key(token, "gate"), 1)
    pool.finish(run, timeout=30)

    assert_everything_happened_once(run, token)
    assert pool.failed_jobs() == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_join_and_branch_copies_delivered_while_the_join_executes_change_nothing(workers, redis_db):
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_join", {"token": token})
    # One worker holds the join (its into waits at a gate); the other is free for the copies.
    wait_for(lambda: executions(token).get("into") == 1, 30, what="the join's into to execute")
    group = ParallelGroup.objects.get(run=run)
    joined_by = group.lease_owner
    assert (group.status, group.pending_count, joined_by != "") == ("running", 0, True)

    copies = [
        *(again(dispatch.join_group_job(group.pk, run.pk, "default")) for _ in range(2)),
        *(
            again(dispatch.run_branch_job(row.pk, run.pk, row.job_id, "default"))
            for row in StepResult.objects.filter(group=group)
        ),
    ]
    dispatch.send(copies)
    for copy in copies:
        wait_until_executed(pool, redis_db, copy.job_id)
    group.refresh_from_db()
    assert (group.status, group.lease_owner) == ("running", joined_by)
    assert executions(token) == {"j_0": 1, "j_1": 1, "j_2": 1, "into": 1}

    redis_db.set(key(token, "into_gate"), 1)
    pool.finish(run, timeout=30)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert run.context == {"token": token, "into_executions": 1, "joined": ["j_0", "j_1", "j_2"], "after": True}
    assert executions(token) == {"j_0": 1, "j_1": 1, "j_2": 1, "into": 1, "after": 1}
    assert sorted(StepResult.objects.filter(run=run).values_list("step", "attempt", "status")) == [
        ("after", 1, "completed"),
        ("j_0", 1, "completed"),
        ("j_1", 1, "completed"),
        ("j_2", 1, "completed"),
    ]
    group.refresh_from_db()
    assert (group.status, group.lease_owner) == ("completed", "")
    assert pool.failed_jobs() == []
