"""Signals sent by real worker processes: once per change, with duplicate jobs racing for each one.

The workers connect the receivers of tests/testapp/signal_receivers.py, which count every signal
in Redis by the row it is about; the test process connects none.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

import pytest

from durable_django import dispatch, start_workflow
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from tests.testapp import signal_receivers
from tests.testapp.workflows import key

from .support import wait_for

SIGNALS = {"DURABLE_IT_SIGNALS": "1"}


def branch_statuses(run: WorkflowRun) -> Counter[str]:
    return Counter(StepResult.objects.filter(run=run, group__isnull=False).values_list("status", flat=True))


def again(job: dispatch.Job) -> dispatch.Job:
    """Another delivery of ``job`` under a new id, as RQ may deliver a job twice."""
    return dataclasses.replace(job, job_id=dispatch.new_job_id())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_two_workers_send_each_signal_of_a_parallel_run_once_whatever_jobs_are_delivered_twice(workers, redis_db):
    pool = workers(2, env=SIGNALS)
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
    dispatch.send([again(dispatch.join_group_job(group_id, run.pk, "default")) for _ in range(2)])
    run = pool.finish(run, timeout=30)
    # Late copies of every job, once the run has finished.
    dispatch.send(
        [
            *(again(dispatch.run_branch_job(row.pk, run.pk, row.job_id, "default")) for row in rows),
            again(dispatch.join_group_job(group_id, run.pk, "default")),
            again(dispatch.run_workflow_job(run.pk, "default", 0)),
        ]
    )
    pool.wait_until_quiet()

    assert run.status == RunStatus.COMPLETED
    steps = StepResult.objects.filter(run=run).order_by("id").values_list("pk", flat=True)
    assert len(steps) == 4
    group = ParallelGroup.objects.get(run=run)
    assert signal_receivers.counts() == {
        **{f"step_finished:it_duplicates:{pk}:completed": 1 for pk in steps},
        f"group_finished:it_duplicates:{group.pk}:completed": 1,
        f"run_finished:it_duplicates:{run.pk}:completed": 1,
    }
    # Sent by the workers that made the changes: both of them recorded a branch.
    assert signal_receivers.pids() == pool.pids
    assert pool.failed_jobs() == []
