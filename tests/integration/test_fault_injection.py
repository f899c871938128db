"""Faults injected into rqworker processes, PostgreSQL and Redis: work resumes, state changes once.

Killed workers (SIGKILL of the worker and its work horse, as when a machine dies) while they
execute a branch, a sequential step or a join; a flushed Redis; a process that dies between the
database commit and the Redis enqueue; every database connection cut; sweepers racing each
other; many blocks finishing at once.

A worker can die at any moment of its work: before it claims the run of the job it took, in the
middle of a step, between the commits of a batch of branches, during a join, between a commit and
the enqueue of the next job. Those tests run the workers with the default settings (5 s leases, a
sweep every second): the run goes on within ``DEFAULT_BOUND`` seconds of the death. The tests of
other faults give the workers leases of ``LEASE`` seconds and sweeps every ``INTERVAL`` seconds
(``short_leases``), and the test process the same settings for the runs it starts and for its own
:func:`~durable_django.recovery.recover` passes. Each test prints the figures that
docs/reliability.md reports (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from redis import Redis
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

import durable_django
from durable_django import recovery, start_workflow
from durable_django.conf import DEFAULTS
from durable_django.dispatch import drain_job_id, join_job_id, run_job_id
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from durable_django.recovery import Report, recover
from tests.testapp.faults import claim_crash_key, crash_key
from tests.testapp.recovery_workflows import FAN_WIDTH, SLOW_WIDTH, WAVE_WIDTH, WIDE_WIDTH, executions
from tests.testapp.workflows import calls, key

from .support import WorkerPool, lease_pid, wait_for

# Frames of the engine in a worker's traceback start with this path, but for those of the worker
# module, which wraps rq's own bookkeeping of a job.
PACKAGE_DIR = os.path.dirname(durable_django.__file__) + os.sep
WORKER_MODULE = os.path.join(PACKAGE_DIR, "worker.py")
LEASE = 3.0
INTERVAL = 1.0
# A dead worker's lease runs out at most LEASE after its last renewal, and a sweep follows within
# INTERVAL (two, when the dead process had the sweep's turn); the rest is room for a loaded
# two-core machine.
RECOVERY_BOUND = LEASE + 2 * INTERVAL + 3.0
# The same with the default settings: within 10 s of its worker's death, a run goes on.
DEFAULT_BOUND = DEFAULTS["LEASE_SECONDS"] + 2 * DEFAULTS["RECOVER_INTERVAL"] + 3.0

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def short_leases(settings: Any) -> dict[str, str]:
    """Environment of workers with short leases and sweeps; the test process gets the same settings."""
    settings.DURABLE = {"LEASE_SECONDS": LEASE, "RECOVER_INTERVAL": INTERVAL}
    return {"DURABLE_LEASE_SECONDS": f"{LEASE:g}", "DURABLE_RECOVER_INTERVAL": f"{INTERVAL:g}"}


def figure(name: str, value: float, unit: str = "s") -> None:
    """Print one measured figure (collected by hand into docs/reliability.md)."""
    print(f"\nFIGURE {name}: {value:.2f} {unit}")


def seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def finished(*runs: Any) -> bool:
    return WorkflowRun.objects.filter(pk__in=[getattr(run, "pk", run) for run in runs]).finished().count() == len(runs)


def rows(run: Any) -> list[tuple[str, int, str]]:
    """Every attempt of a run (or run id): ``(step, attempt, status)`` by step name, then attempt."""
    attempts = StepResult.objects.filter(run_id=getattr(run, "pk", run)).order_by("step", "attempt")
    return list(attempts.values_list("step", "attempt", "status"))


def lost_reason(streak: int) -> dict[str, Any]:
    return {
        "type": "worker_lost",
        "message": "the worker executing this attempt went away: its lease expired",
        "lost_in_a_row": streak,
    }


def total(reports: list[Report]) -> Report:
    summed = Report()
    for report in reports:
        for name, value in vars(report).items():
            setattr(summed, name, getattr(summed, name) + value)
    return summed


def sweep_until_finished(*runs: Any, timeout: float) -> Report:
    """Run recovery passes in this process every INTERVAL until ``runs`` finish; what they did in all."""
    reports: list[Report] = []

    def swept_until_finished() -> bool:
        reports.append(recover())
        return finished(*runs)

    wait_for(swept_until_finished, timeout, interval=INTERVAL, what="the runs to finish")
    return total(reports)


def failed_job_ids(pool: WorkerPool) -> list[str]:
    return [job_id for queue in pool.queues for job_id in FailedJobRegistry(queue=queue).get_job_ids()]


# -- killed workers ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_worker_killed_between_the_commits_of_a_batch_loses_only_the_branch_it_was_executing(
    workers: Any,
) -> None:
    pool = workers(3)
    # In the first batch, which the run's job claims: the branches before it are executed, then it
    # hangs; the batch overruns its budget, records those (a commit of its own) and gives the rest
    # back. The worker dies before the batch's next commit, which would have recorded the victim.
    victim = 7
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_branch", {"token": token, "victim": victim})
    name = f"b_{victim:02}"
    before = [f"b_{i:02}" for i in range(victim)]

    wait_for(lambda: executions(token).get(name) == 1, 60, what=f"{name} to execute")
    wait_for(
        lambda: StepResult.objects.filter(run=run, step__in=before, status="completed").count() == victim,
        30,
        what="the batch's branches before the victim to be recorded",
    )
    held = StepResult.objects.get(run=run, step=name)
    assert held.status == "running"
    # Nothing else is the dying worker's any more.
    assert list(StepResult.objects.filter(run=run, lease_owner=held.lease_owner).values_list("step", flat=True)) == [
        name
    ]
    killed_at = pool.kill(pool.worker_of(lease_pid(held.lease_owner)))
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    names = [f"b_{i:02}" for i in range(FAN_WIDTH)]
    assert rows(run) == sorted(
        [
            ("before", 1, "completed"),
            *((branch, 1, "completed") for branch in names if branch != name),
            (name, 1, "failed"),
            (name, 2, "completed"),
            ("after", 1, "completed"),
        ]
    )
    lost = StepResult.objects.get(run=run, status="failed")
    assert lost.error == lost_reason(1)
    # The step after the block ran once: the block was joined once; only the victim ran twice.
    assert executions(token) == {"before": 1, **dict.fromkeys(names, 1), name: 2, "after": 1}
    group = ParallelGroup.objects.get(run=run)
    assert (group.name, group.status, group.pending_count, group.failed_count) == ("fan", "completed", 0, 0)
    assert group.results == {f"b_{i:02}": ["ok", {"index": i}] for i in range(FAN_WIDTH)}
    assert run.context == {
        "token": token,
        "victim": victim,
        "before": True,
        "__results__": group.results,
        "index_sum": sum(range(FAN_WIDTH)),
    }
    # Taken over only once its lease had run out (a lease read before the kill can only have grown).
    assert lost.finished_at > held.lease_expires_at
    resumed = StepResult.objects.get(run=run, step=name, attempt=2)
    latency = seconds(killed_at, resumed.created_at)
    figure("kill between a batch's commits -> new attempt of its branch (50 branches, 3 workers, defaults)", latency)
    figure("kill between a batch's commits -> run completed", seconds(killed_at, run.finished_at))
    assert 0 <= latency <= DEFAULT_BOUND
    assert seconds(killed_at, run.finished_at) <= DEFAULT_BOUND
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_worker_killed_in_the_step_after_the_block_it_joined_leaves_that_step_to_recovery(workers: Any) -> None:
    # One job entered the block, executed its branches, joined it and went on with the next step,
    # in whose first execution its worker dies: the join is committed, the step is taken over.
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_after_join", {"token": token})

    wait_for(lambda: executions(token).get("after") == 1, 60, what="the step after the block to execute")
    run.refresh_from_db()
    assert (run.status, run.current_step, run.lease_owner != "") == (RunStatus.RUNNING, "after", True)
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count) == ("completed", 0)
    killed_at = pool.kill(pool.worker_of(lease_pid(run.lease_owner)))
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [
        ("after", 1, "failed"),
        ("after", 2, "completed"),
        *((f"k_{i}", 1, "completed") for i in range(3)),
    ]
    assert executions(token) == {"k_0": 1, "k_1": 1, "k_2": 1, "after": 2}
    assert ParallelGroup.objects.filter(run=run).count() == 1
    lost = StepResult.objects.get(run=run, step="after", attempt=1)
    assert lost.error == lost_reason(1)
    latency = seconds(killed_at, lost.created_at)
    figure("kill in the step after an inline join -> taken over", latency)
    figure("kill in the step after an inline join -> run completed", seconds(killed_at, run.finished_at))
    assert 0 <= latency <= DEFAULT_BOUND
    assert seconds(killed_at, run.finished_at) <= DEFAULT_BOUND
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_branches_handed_over_by_a_process_that_died_before_sending_their_job_are_sent_by_the_sweeper(
    workers: Any, redis_db: Redis
) -> None:
    # h_0 overruns its batch: the watchdog gives h_1 and h_2 back (committed) and dies about to
    # send their drain job, taking the work horse executing h_0 with it.
    pool = workers(2, env={"DURABLE_IT_CRASH_BEFORE_SEND": "drain"}, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_handover", {"token": token})

    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    crash = json.loads(redis_db.get(crash_key(run.pk)))
    group = ParallelGroup.objects.get(run=run)
    h_1 = StepResult.objects.get(run=run, step="h_1")
    assert crash["jobs"] == [h_1.job_id]
    assert h_1.job_id == f"{drain_job_id(group.pk, 'default', 1)}-{h_1.pk}"
    assert rows(run) == [
        ("after", 1, "completed"),
        ("h_0", 1, "failed"),
        ("h_0", 2, "completed"),
        ("h_1", 1, "completed"),
        ("h_2", 1, "completed"),
    ]
    # The two handed-over branches ran once, after the sweeper sent their job; h_0 again, as lost.
    assert executions(token) == {"h_0": 2, "h_1": 1, "h_2": 1, "after": 1}
    latency = seconds(datetime.fromtimestamp(crash["at"], tz=UTC), h_1.started_at)
    figure("crash between a hand-over's commit and its drain job -> branches executing", latency)
    assert 0 <= latency <= DEFAULT_BOUND


@pytest.mark.timeout(120)
def test_a_sequential_step_whose_worker_is_killed_resumes_at_that_step(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_step", {"token": token})

    wait_for(lambda: executions(token).get("slow") == 1, 60, what="the slow step to execute")
    run.refresh_from_db()
    held_until = run.lease_expires_at
    assert (run.status, run.current_step, run.current_attempt) == (RunStatus.RUNNING, "slow", 1)
    killed_at = pool.kill(pool.worker_of(lease_pid(run.lease_owner)))
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [
        ("first", 1, "completed"),
        ("last", 1, "completed"),
        ("slow", 1, "failed"),
        ("slow", 2, "completed"),
    ]
    lost, resumed = StepResult.objects.filter(run=run, step="slow").order_by("attempt")
    assert (lost.error, resumed.output) == (lost_reason(1), {"slow": 2})
    assert executions(token) == {"first": 1, "slow": 2, "last": 1}
    assert run.context == {"token": token, "first": True, "slow": 2, "last": True}
    assert lost.finished_at > held_until
    latency = seconds(killed_at, lost.created_at)
    figure("sequential step kill -> taken over", latency)
    figure("sequential step kill -> step executing again", seconds(killed_at, resumed.started_at))
    figure("sequential step kill -> run completed", seconds(killed_at, run.finished_at))
    assert 0 <= latency <= DEFAULT_BOUND
    assert seconds(killed_at, run.finished_at) <= DEFAULT_BOUND
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_join_whose_worker_is_killed_is_joined_again_and_the_run_moves_on_once(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_join", {"token": token})

    wait_for(lambda: executions(token).get("into") == 1, 60, what="the join's into to execute")
    group = ParallelGroup.objects.get(run=run)
    assert group.status == "running"
    killed_at = pool.kill(pool.worker_of(lease_pid(group.lease_owner)))
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [
        ("after", 1, "completed"),
        ("j_0", 1, "completed"),
        ("j_1", 1, "completed"),
        ("j_2", 1, "completed"),
    ]
    # into is part of the join: at least once; what follows the join: exactly once.
    assert executions(token) == {"j_0": 1, "j_1": 1, "j_2": 1, "into": 2, "after": 1}
    assert run.context == {"token": token, "into_executions": 2, "joined": ["j_0", "j_1", "j_2"], "after": True}
    group.refresh_from_db()
    assert (group.status, group.pending_count, group.lease_owner) == ("completed", 0, "")
    rejoined = StepResult.objects.get(run=run, step="after").started_at
    figure("join kill -> step after the block executing", seconds(killed_at, rejoined))
    figure("join kill -> run completed", seconds(killed_at, run.finished_at))
    assert 0 <= seconds(killed_at, rejoined) <= DEFAULT_BOUND
    assert seconds(killed_at, run.finished_at) <= DEFAULT_BOUND
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_one_sweep_sends_the_join_of_a_killed_worker_once(workers: Any) -> None:
    # No sweeper in the workers: this test's own pass is the only one.
    pool = workers(2, env={"DURABLE_RECOVER_IN_WORKERS": "0"})
    token = uuid.uuid4().hex
    run = start_workflow("it_killed_join", {"token": token})
    wait_for(lambda: executions(token).get("into") == 1, 60, what="the join's into to execute")
    group = ParallelGroup.objects.get(run=run)
    pool.kill(pool.worker_of(lease_pid(group.lease_owner)))
    group.refresh_from_db()
    wait_for(
        lambda: timezone.now() > group.lease_expires_at,
        DEFAULTS["LEASE_SECONDS"] + 5,
        what="the join's lease to run out",
    )

    # The other worker is idle: it takes whatever this pass enqueues at once.
    report = recover()
    pool.finish(run)

    assert executions(token) == {"j_0": 1, "j_1": 1, "j_2": 1, "into": 2, "after": 1}
    assert report == Report(joins_taken_over=1)


@pytest.mark.timeout(120)
def test_a_step_that_kills_its_process_every_time_fails_with_worker_lost_after_three_losses(
    workers: Any, short_leases: dict[str, str]
) -> None:
    # rq's forking worker: the step kills the work horse, and the worker carries on with other jobs.
    pool = workers(2, env=short_leases, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_poison", {"token": token})

    pool.finish(run, timeout=90)

    # Lost workers do not use up its 5 attempts: MAX_WORKER_LOST (3) losses in a row end it.
    assert (run.status, run.error) == (RunStatus.FAILED, {"step": "poison", "reason": lost_reason(3)})
    attempts = StepResult.objects.filter(run=run).order_by("attempt")
    assert list(attempts.values_list("step", "attempt", "status", "error")) == [
        ("poison", n, "failed", lost_reason(n)) for n in (1, 2, 3)
    ]
    assert executions(token) == {"poison": 3}
    # Each loss is a job whose work horse died under it, which rq records as failed.
    assert sorted(failed_job_ids(pool)) == sorted(run_job_id(run.pk, version) for version in (0, 2, 4))
    figure("poison step: start -> run failed with worker_lost (3 losses)", seconds(run.created_at, run.finished_at))


# -- lost jobs ----------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_runs_in_flight_when_redis_is_flushed_complete_through_durable_recover_without_repeating_a_step(
    workers: Any, redis_db: Redis, short_leases: dict[str, str]
) -> None:
    # The workers do not sweep: durable_recover in this process has to find everything.
    pool = workers(2, env={**short_leases, "DURABLE_RECOVER_IN_WORKERS": "0"})
    tokens = [uuid.uuid4().hex for _ in range(10)]
    runs = [start_workflow("it_flushed", {"token": token}).pk for token in tokens]
    scheduled, started = ScheduledJobRegistry(queue=pool.queue), StartedJobRegistry(queue=pool.queue)

    # Flush while jobs wait in each place Redis keeps them: queued, executing and scheduled.
    wait_for(
        lambda: scheduled.count and pool.queue.count and started.count, 60, what="jobs queued, executing and scheduled"
    )
    in_flight = {"queued": pool.queue.count, "executing": started.count, "scheduled": scheduled.count}
    redis_db.flushdb()
    flushed_at = timezone.now()
    recovered = sweep_until_finished(*runs, timeout=120)
    completed_at = timezone.now()
    pool.wait_until_quiet()

    assert Counter(WorkflowRun.objects.filter(pk__in=runs).values_list("status", flat=True)) == {"completed": 10}
    once = ["start", *(f"p_{i}" for i in range(4)), "finish"]
    for run_id, token in zip(runs, tokens, strict=True):
        assert rows(run_id) == sorted(
            [
                *((name, 1, "completed") for name in once),
                ("p_retry", 1, "failed"),
                ("p_retry", 2, "completed"),
                ("s_retry", 1, "failed"),
                ("s_retry", 2, "completed"),
            ]
        )
        assert executions(token) == {**dict.fromkeys(once, 1), "p_retry": 2, "s_retry": 2}
    print(f"\nin flight when flushed: {in_flight}; recovered: {recovered}")
    figure("Redis flush -> 10 runs completed", seconds(flushed_at, completed_at))
    assert recovered.total > 0
    out = StringIO()
    call_command("durable_recover", stdout=out)
    assert out.getvalue() == "recovery: nothing to recover\n"
    # A job executing during the flush commits its step, but rq cannot finish the bookkeeping of a job
    # (or of an execution) whose hash was flushed and records it as failed, from rq's own frames;
    # no job may fail for any other reason.
    rq_bookkeeping = ("InvalidJobOperation: Failed to retrieve status for job", "ValueError: Execution ")
    for failure in pool.failed_jobs():
        assert any(message in failure for message in rq_bookkeeping), failure
        frames = [line for line in failure.splitlines() if f'File "{PACKAGE_DIR}' in line]
        assert [frame for frame in frames if f'File "{WORKER_MODULE}"' not in frame] == [], failure


@pytest.mark.parametrize("kind", ["run", "drain", "branch", "join"])
@pytest.mark.timeout(120)
def test_work_committed_by_a_process_that_died_before_enqueueing_it_is_sent_by_the_sweeper(
    workers: Any, redis_db: Redis, kind: str
) -> None:
    # The first process about to enqueue a `kind` job for the run dies after the commit: the work
    # horse of rq's forking worker, which then carries on with other jobs.
    pool = workers(2, env={"DURABLE_IT_CRASH_BEFORE_SEND": kind}, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_crash_points", {"token": token})

    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [
        ("begin", 1, "failed"),
        ("begin", 2, "completed"),
        ("end", 1, "completed"),
        ("point", 1, "failed"),
        ("point", 2, "completed"),
    ]
    assert executions(token) == {"begin": 2, "point": 2, "end": 1}
    crash = json.loads(redis_db.get(crash_key(run.pk)))
    group = ParallelGroup.objects.get(run=run)
    point = {row.attempt: row for row in StepResult.objects.filter(run=run, step="point")}
    # What the dead process had committed but not enqueued; the job it was executing; what ran next.
    lost, executing, resumed = {
        "run": (run_job_id(run.pk, 2), run_job_id(run.pk, 0), StepResult.objects.get(run=run, step="begin", attempt=2)),
        "drain": (drain_job_id(group.pk, "priority", 0), run_job_id(run.pk, 2), point[1]),
        "branch": (point[2].job_id, drain_job_id(group.pk, "priority", 0), point[2]),
        "join": (join_job_id(group.pk), point[2].job_id, StepResult.objects.get(run=run, step="end")),
    }[kind]
    assert crash["jobs"] == [lost]
    # The work horse died in the middle of that job: rq records it as failed, and nothing else failed.
    assert failed_job_ids(pool) == [executing]
    latency = seconds(datetime.fromtimestamp(crash["at"], tz=UTC), resumed.started_at)
    figure(f"crash between commit and enqueue ({kind} job) -> work executing", latency)
    assert 0 <= latency <= DEFAULT_BOUND


@pytest.mark.timeout(120)
def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_sent_again_by_the_sweeper(
    workers: Any, redis_db: Redis
) -> None:
    # No worker yet: the job waits in its queue. Moving it to rq's intermediate list is what a
    # worker does when it takes it; one killed right then never marks it started, and rq still
    # says "queued" until its own cleanup, many minutes later.
    token = uuid.uuid4().hex
    run = start_workflow("it_dequeued", {"token": token})
    queue = "rq:queue:default"
    taken = redis_db.lmove(queue, f"{queue}:intermediate", "RIGHT", "LEFT")
    assert taken == run_job_id(run.pk, 0).encode()
    died_at = timezone.now()
    run.refresh_from_db()
    wait_for(lambda: timezone.now() > run.lease_expires_at, 30, what="the run's pick-up deadline to pass")

    pool = workers(2)
    ready = timezone.now()
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [("first", 1, "completed"), ("second", 1, "completed")]
    assert executions(token) == {"first": 1, "second": 1}
    first = StepResult.objects.get(run=run, step="first")
    latency = seconds(ready, first.started_at)
    figure("job left in rq's intermediate list, workers up -> step executing", latency)
    figure("job left in rq's intermediate list, worker died -> step executing", seconds(died_at, first.started_at))
    assert 0 <= latency <= DEFAULT_BOUND
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_worker_that_died_after_starting_a_job_but_before_claiming_its_run_is_replaced_by_the_sweeper(
    workers: Any, redis_db: Redis
) -> None:
    # The worker took the run's job and rq marked it started; the process died before the claim.
    # The job stays "started" in rq's registries, the run pending with its pick-up deadline.
    # Without rq's scheduler: no child process outlives it.
    pool = workers(1, env={"DURABLE_IT_CRASH_BEFORE_CLAIM": "1"}, with_scheduler=False)
    token = uuid.uuid4().hex
    run = start_workflow("it_dequeued", {"token": token})
    wait_for(lambda: redis_db.exists(claim_crash_key(run.pk)), 60, what="the worker to die before the claim")
    crash = json.loads(redis_db.get(claim_crash_key(run.pk)))
    dead = pool.workers[0]
    assert (crash["pid"], pool.exited(dead)) == (dead.pid, 1)
    # What the dead worker's supervisor does: rq's registries say it is gone.
    pool.kill(dead)
    run.refresh_from_db()
    assert (run.status, run.lease_owner, rows(run)) == (RunStatus.PENDING, "", [])

    workers(2)
    # No worker lived between the crash and here: the engine's part of the delay starts now (or at
    # the crash, whichever is later), not while this process starts the new workers.
    died_at = datetime.fromtimestamp(crash["at"], tz=UTC)
    replaced_at = max(died_at, timezone.now())
    pool.finish(run)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    assert rows(run) == [("first", 1, "completed"), ("second", 1, "completed")]
    assert executions(token) == {"first": 1, "second": 1}
    first = StepResult.objects.get(run=run, step="first")
    figure("worker died before claiming its run -> first step executing", seconds(died_at, first.started_at))
    figure("workers replaced -> first step executing", seconds(replaced_at, first.started_at))
    figure("worker died before claiming its run -> run completed", seconds(died_at, run.finished_at))
    assert seconds(died_at, first.started_at) >= 0
    assert seconds(replaced_at, first.started_at) <= DEFAULT_BOUND
    assert seconds(replaced_at, run.finished_at) <= DEFAULT_BOUND


# -- cut database connections -------------------------------------------------------------------------


def cut_database_connections() -> int:
    """Terminate every backend of the test database but this process's own; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.timeout(150)
def test_a_run_completes_when_every_database_connection_is_cut_twice_while_it_executes(
    workers: Any, redis_db: Redis, short_leases: dict[str, str]
) -> None:
    pool = workers(3, env=short_leases)
    token = uuid.uuid4().hex
    run = start_workflow("it_db_cut", {"token": token})

    # Cut while two branches execute (the third one done), then while a sequential step executes.
    wait_for(
        lambda: (
            executions(token).get("g_0") == executions(token).get("g_1") == 1
            and StepResult.objects.filter(run=run, step="quick", status="completed").exists()
        ),
        60,
        what="both held branches to execute",
    )
    cuts = [cut_database_connections()]
    cut_at = timezone.now()
    redis_db.set(key(token, "branch_gate"), 1)
    wait_for(lambda: executions(token).get("held_step") == 1, 60, what="the held step to execute")
    cuts.append(cut_database_connections())
    redis_db.set(key(token, "step_gate"), 1)
    pool.finish(run, timeout=90)

    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    # The attempts whose commit met a dead connection lost their job; their leases ran out.
    assert rows(run) == [
        ("first", 1, "completed"),
        ("g_0", 1, "failed"),
        ("g_0", 2, "completed"),
        ("g_1", 1, "failed"),
        ("g_1", 2, "completed"),
        ("held_step", 1, "failed"),
        ("held_step", 2, "completed"),
        ("last", 1, "completed"),
        ("quick", 1, "completed"),
    ]
    lost = StepResult.objects.filter(run=run, status="failed").values_list("error", flat=True)
    assert list(lost) == [lost_reason(1)] * 3
    assert executions(token) == {"first": 1, "g_0": 2, "g_1": 2, "quick": 1, "held_step": 2, "last": 1}
    print(f"\nbackends terminated: {cuts}")
    figure("first cut -> run completed (two cuts)", seconds(cut_at, run.finished_at))
    assert min(cuts) >= 1
    # The three jobs whose commit met a dead connection failed in rq with it.
    failed = [pool.queue.fetch_job(job_id) for job_id in failed_job_ids(pool)]
    assert ["OperationalError" in (job.exc_info or "") if job else None for job in failed] == [True] * 3


# -- racing sweepers ----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_sweepers_racing_over_the_same_expired_leases_take_each_one_over_once(
    workers: Any, redis_db: Redis, short_leases: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No sweeper in the workers: only the racing sweepers of this test recover anything.
    env = {**short_leases, "DURABLE_RECOVER_IN_WORKERS": "0"}
    pool = workers(4, env=env)
    step_token, block_token = uuid.uuid4().hex, uuid.uuid4().hex
    step_run = start_workflow("it_killed_step", {"token": step_token})
    block_run = start_workflow("it_duplicates", {"token": block_token})
    gated = [f"gated_{i}" for i in range(3)]

    wait_for(
        lambda: (
            executions(step_token).get("slow") == 1
            and all(calls(block_token, name) == 1 for name in gated)
            and StepResult.objects.filter(run=block_run, status="running").count() == 3
        ),
        60,
        what="the slow step and three branches to execute",
    )
    for worker in list(pool.workers):
        pool.kill(worker)
    expiries = [
        WorkflowRun.objects.get(pk=step_run.pk).lease_expires_at,
        *StepResult.objects.filter(run=block_run).values_list("lease_expires_at", flat=True),
    ]
    wait_for(lambda: timezone.now() > max(expiries), LEASE + 5, what="every lease to run out")

    # Every sweeper reads the same expired work, then all of them try each takeover at the same moment.
    sweepers = 4
    barrier = threading.Barrier(sweepers, timeout=30)
    for name in ("_take_over_run", "_take_over_branch"):
        take_over = getattr(recovery, name)

        def in_step(*args: Any, take_over: Any = take_over) -> None:
            barrier.wait()
            take_over(*args)

        monkeypatch.setattr(recovery, name, in_step)
    reports: list[Report] = []

    def sweep() -> None:
        try:
            reports.append(recover())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()

    assert len(reports) == sweepers
    summed = total(reports)
    print(f"\ntakeovers per sweeper: {[report.total for report in reports]}")
    assert (summed.steps_taken_over, summed.branches_taken_over, summed.total) == (1, 3, 4)
    assert rows(step_run) == [("first", 1, "completed"), ("slow", 1, "failed")]
    assert rows(block_run) == sorted(
        [*((name, 1, "failed") for name in gated), *((name, 2, "pending") for name in gated)]
    )
    assert list(StepResult.objects.filter(status="failed").values_list("error", flat=True)) == [lost_reason(1)] * 4

    # The work they sent again completes on new workers.
    redis_db.set(key(block_token, "gate"), 1)
    workers(2, env=env)
    pool.finish_all([step_run, block_run])
    assert Counter(WorkflowRun.objects.values_list("status", flat=True)) == {"completed": 2}
    assert rows(step_run) == [
        ("first", 1, "completed"),
        ("last", 1, "completed"),
        ("slow", 1, "failed"),
        ("slow", 2, "completed"),
    ]
    assert executions(step_token) == {"first": 1, "slow": 2, "last": 1}
    assert {name: calls(block_token, name) for name in [*gated, "after"]} == {**dict.fromkeys(gated, 2), "after": 1}
    assert pool.failed_jobs() == []


# -- many blocks finishing at once --------------------------------------------------------------------


def wide_runs(count: int) -> dict[Any, str]:
    """Start ``count`` runs of ``it_wide`` in one transaction: their jobs reach Redis together."""
    tokens = [uuid.uuid4().hex for _ in range(count)]
    with transaction.atomic():
        return {start_workflow("it_wide", {"token": token}).pk: token for token in tokens}


def assert_every_wide_run_joined_once(runs: dict[Any, str]) -> None:
    assert Counter(WorkflowRun.objects.filter(pk__in=runs).values_list("status", flat=True)) == {"completed": len(runs)}
    assert Counter(ParallelGroup.objects.values_list("run_id", "name", "status", "pending_count", "failed_count")) == {
        (run_id, "wide", "completed", 0, 0): 1 for run_id in runs
    }
    branches = StepResult.objects.filter(group__isnull=False)
    assert Counter(branches.values_list("attempt", "status")) == {(1, "completed"): len(runs) * WIDE_WIDTH}
    assert Counter(branches.values_list("run_id", "step")) == {
        (run_id, f"w_{i:03}"): 1 for run_id in runs for i in range(WIDE_WIDTH)
    }
    after = StepResult.objects.filter(group__isnull=True)
    assert Counter(after.values_list("run_id", "step", "attempt", "status")) == {
        (run_id, "after", 1, "completed"): 1 for run_id in runs
    }
    # The step after each block ran once: one join per run.
    assert {token: executions(token) for token in runs.values()} == {token: {"after": 1} for token in runs.values()}
    for run in WorkflowRun.objects.filter(pk__in=runs):
        assert run.context["total"] == sum(range(WIDE_WIDTH))


@pytest.mark.timeout(240)
def test_twenty_runs_of_a_hundred_branches_join_exactly_twenty_times_with_no_result_lost(workers: Any) -> None:
    # Branches and joins racing each other, nothing else: no sweeper in the workers.
    pool = workers(4, env={"DURABLE_RECOVER_IN_WORKERS": "0"})
    began = time.monotonic()
    runs = wide_runs(20)
    wait_for(lambda: finished(*runs), 200, interval=0.1, what="20 runs to finish")
    elapsed = time.monotonic() - began
    pool.wait_until_quiet()

    assert_every_wide_run_joined_once(runs)
    figure("20 runs x 100 branches on 4 workers: start -> all completed", elapsed)
    figure("branch throughput", 20 * WIDE_WIDTH / elapsed, "branches/s")
    assert pool.failed_jobs() == []


# -- sweeps next to work that is only slow ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_block_that_runs_longer_than_a_lease_is_not_sent_again(workers: Any, short_leases: dict[str, str]) -> None:
    # Nothing is lost: the block's branches only take longer than a lease to get through.
    pool = workers(2, env={**short_leases, "DURABLE_RECOVER_IN_WORKERS": "0"})
    token = uuid.uuid4().hex
    run = start_workflow("it_slow_block", {"token": token})

    recovered = sweep_until_finished(run, timeout=90)
    pool.wait_until_quiet()

    names = [f"s_{i:02}" for i in range(SLOW_WIDTH)]
    assert rows(run) == sorted([("after", 1, "completed"), *((name, 1, "completed") for name in names)])
    assert executions(token) == {**dict.fromkeys(names, 1), "after": 1}
    print(f"\nsent again although nothing was lost: {recovered}")
    assert recovered == Report()


@pytest.mark.timeout(180)
def test_sweeps_over_a_backlog_of_retries_send_nothing_again(workers: Any, short_leases: dict[str, str]) -> None:
    # 500 branches fail once at the same time: their 500 retry jobs wait in the queue longer than a lease.
    pool = workers(2, env={**short_leases, "DURABLE_RECOVER_IN_WORKERS": "0"})
    tokens = [uuid.uuid4().hex for _ in range(5)]
    runs = [start_workflow("it_retry_wave", {"token": token}).pk for token in tokens]

    recovered = sweep_until_finished(*runs, timeout=150)
    pool.wait_until_quiet()

    names = [f"r_{i:03}" for i in range(WAVE_WIDTH)]
    for run_id, token in zip(runs, tokens, strict=True):
        assert rows(run_id) == sorted(
            [
                ("after", 1, "completed"),
                *((name, attempt, status) for name in names for attempt, status in ((1, "failed"), (2, "completed"))),
            ]
        )
        assert executions(token) == {**dict.fromkeys(names, 2), "after": 1}
    print(f"\nsent again although nothing was lost: {recovered}")
    # A sweep can still meet a job in the instant between rq removing it and its worker claiming
    # the row; such a copy is harmless (its claim finds the row taken). 500 retries must not
    # produce more than a couple.
    assert recovered.branches_sent_again <= 2
    assert replace(recovered, branches_sent_again=0) == Report()
