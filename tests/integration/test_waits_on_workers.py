"""Durable waits on real worker processes: sleeps, events, inputs, timeouts, branches, races, crashes.

Each test prints the figures docs/reliability.md and docs/waits.md report (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from redis import Redis

from durable_django import send_event, start_workflow
from durable_django.models import Event, ParallelGroup, RunStatus, StepResult, Wait, WorkflowRun
from tests.testapp.faults import crash_key
from tests.testapp.recovery_workflows import executions

from .support import REPO_ROOT, database_url, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

LEASE = 3.0
INTERVAL = 1.0


@pytest.fixture
def short_leases(settings: Any) -> dict[str, str]:
    settings.DURABLE = {"LEASE_SECONDS": LEASE, "RECOVER_INTERVAL": INTERVAL}
    return {"DURABLE_LEASE_SECONDS": f"{LEASE:g}", "DURABLE_RECOVER_INTERVAL": f"{INTERVAL:g}"}


def figure(name: str, value: float, unit: str = "s") -> None:
    print(f"\nFIGURE {name}: {value:.2f} {unit}")


def status_is(run: WorkflowRun, status: str) -> bool:
    return WorkflowRun.objects.filter(pk=run.pk, status=status).exists()


def rows(run: WorkflowRun) -> list[tuple[str, int, str]]:
    return list(StepResult.objects.filter(run=run).order_by("step", "attempt").values_list("step", "attempt", "status"))


def waiting(run: WorkflowRun, timeout: float = 30) -> WorkflowRun:
    wait_for(lambda: status_is(run, RunStatus.WAITING), timeout, what="the run to wait")
    run.refresh_from_db()
    return run


def senders(run: WorkflowRun, payloads: list[Any], *, at: float = 0.0, env: dict[str, str] | None = None) -> list[str]:
    """Send event ``go`` to ``run`` from one process per payload, all at once once every one of
    them is ready (and not before the Unix time ``at``)."""
    barrier = f"durable_it:senders:{uuid.uuid4().hex}"
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url(connection.settings_dict),
        **(env or {}),
    }
    environ.pop("DURABLE_TEST_DATABASE", None)
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.integration.senders", str(run.pk), "go", json.dumps(p)),
                *(barrier, str(len(payloads)), str(at)),
            ],
            env=environ,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in payloads
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        out.append(stdout.strip() or f"exit {proc.returncode}: {stderr[-500:]}")
    return out


# -- the basics on workers ------------------------------------------------------------------------------


def test_a_sleep_ends_about_a_second_after_it_is_due_and_the_step_runs_once(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_sleep", {"token": token, "seconds": 1.5})
    pool.finish(run, timeout=30)
    assert run.status == RunStatus.COMPLETED
    assert run.context == {"token": token, "seconds": 1.5, "began": True, "napped": True, "ended": True}
    assert executions(token) == {"begin": 1, "nap": 1, "end": 1}
    wait = run.waits.get()
    assert wait.status == "resolved"
    late = (wait.resolved_at - wait.due_at).total_seconds()
    figure("sleep of 1.5 s: ended after its due time by", late)
    assert 0 <= late <= 2.5
    assert pool.failed_jobs() == []


def test_an_event_sent_before_the_wait_is_buffered_and_one_sent_after_is_delivered(workers: Any) -> None:
    token = uuid.uuid4().hex
    early = start_workflow("it_event", {"token": token})
    # No worker yet: the run has not reached its wait.
    assert send_event(early.pk, "go", {"n": 1}) == "buffered"
    pool = workers(2)
    pool.finish(early, timeout=30)
    assert early.context == {"token": token, "go": {"n": 1}, "ended": True}

    token2 = uuid.uuid4().hex
    late = waiting(start_workflow("it_event", {"token": token2}))
    assert send_event(late.pk, "go", {"n": 2}) == "delivered"
    pool.finish(late, timeout=30)
    assert late.context == {"token": token2, "go": {"n": 2}, "ended": True}
    assert executions(token2) == {"await_go": 1, "end": 1}
    assert pool.failed_jobs() == []


def test_an_input_answered_through_the_api_moves_the_run_on(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = waiting(start_workflow("it_input", {"token": token}))
    boss = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(boss)
    answer = client.post(
        f"/api/durable/runs/{run.pk}/inputs/approval/",
        {"approved": True, "comment": "go"},
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["id"] == str(run.pk)
    pool.finish(run, timeout=30)
    assert run.context == {"token": token, "approval": {"approved": True, "comment": "go", "by": "boss"}, "ended": True}
    assert Wait.objects.get(run=run).resolved_by == boss


@pytest.mark.parametrize("with_value", [False, True])
def test_a_timeout_fires_within_about_a_second(workers: Any, with_value: bool) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    ctx: dict[str, Any] = {"token": token, "timeout": 1}
    if with_value:
        ctx["timeout_value"] = "gave up"
    run = start_workflow("it_event", ctx)
    pool.finish(run, timeout=30)
    wait = run.waits.get()
    assert wait.status == "timed_out"
    late = (wait.resolved_at - wait.due_at).total_seconds()
    figure(f"timeout of 1 s ({'with' if with_value else 'without'} timeout_value): fired after its due time by", late)
    assert 0 <= late <= 2.5
    if with_value:
        assert (run.status, run.context["go"], run.context["ended"]) == (RunStatus.COMPLETED, "gave up", True)
    else:
        assert run.status == RunStatus.FAILED
        assert run.error["reason"] == {"type": "wait_timeout", "wait": "go", "message": "the wait for 'go' timed out"}
        assert executions(token) == {"await_go": 1}


def test_waits_inside_branches_keep_the_block_open_until_each_is_resolved(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = waiting(start_workflow("it_branch_waits", {"token": token, "seconds": 0.5}))
    group = ParallelGroup.objects.get(run=run)
    # The nap ends by itself; the run waits on for the event.
    wait_for(lambda: Wait.objects.filter(run=run, kind="sleep", status="resolved").exists(), 20, what="the nap")
    assert status_is(run, RunStatus.WAITING)
    assert send_event(run.pk, "go", "went") == "delivered"
    pool.finish(run, timeout=30)
    assert run.status == RunStatus.COMPLETED
    assert run.context["__results__"] == {
        "branch_go": ["ok", {"branch": "go", "go": "went"}],
        "branch_nap": ["ok", {"branch": "nap"}],
        "branch_now": ["ok", {"branch": "now"}],
    }
    group.refresh_from_db()
    assert (group.status, group.pending_count, group.waiting_count) == ("completed", 0, 0)
    assert executions(token) == {"branch_go": 1, "branch_nap": 1, "branch_now": 1, "end": 1}


def test_a_waiting_run_holds_no_worker(workers: Any) -> None:
    pool = workers(1)
    token = uuid.uuid4().hex
    blocked = waiting(start_workflow("it_event", {"token": token}))
    others = [start_workflow("it_quick", {"token": uuid.uuid4().hex}) for _ in range(5)]
    pool.finish_all(others, timeout=30)
    assert all(WorkflowRun.objects.get(pk=o.pk).status == RunStatus.COMPLETED for o in others)
    assert status_is(blocked, RunStatus.WAITING)
    send_event(blocked.pk, "go")
    pool.finish(blocked, timeout=30)
    assert blocked.status == RunStatus.COMPLETED


# -- races -----------------------------------------------------------------------------------------------


def test_four_processes_sending_the_same_event_at_once_resolve_the_wait_once(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    # The run waits again after the event, so every sender finds it unfinished.
    run = waiting(start_workflow("it_event_twice", {"token": token}))
    results = senders(run, [1, 2, 3, 4])
    assert sorted(results) == ["buffered", "buffered", "buffered", "delivered"], results
    wait_for(lambda: Wait.objects.filter(run=run, name="stop", status="waiting").exists(), 30, what="the 2nd wait")
    assert send_event(run.pk, "stop") == "delivered"
    pool.finish(run, timeout=30)
    wait = run.waits.get(name="go")
    buffered = list(Event.objects.filter(run=run, name="go").values_list("payload", flat=True))
    # The wait took one of the four, the other three are kept for a later wait.
    assert sorted([wait.payload, *buffered]) == [1, 2, 3, 4]
    assert run.context["go"] == wait.payload
    assert executions(token) == {"await_go": 1, "await_stop": 1, "end": 1}


def test_an_event_racing_the_timeout_ends_the_wait_exactly_once(workers: Any) -> None:
    pool = workers(2)
    outcomes = []
    # Senders fire a little before, at and a little after the due time, when the wake-up job fires.
    for offset in (-0.1, 0.0, 0.1):
        token = uuid.uuid4().hex
        run = waiting(start_workflow("it_event_twice", {"token": token, "timeout": 2, "timeout_value": "timeout"}))
        due = run.waits.get().due_at.timestamp()
        results = senders(run, ["a", "b"], at=due + offset)
        wait_for(lambda r=run: Wait.objects.filter(run=r, name="stop", status="waiting").exists(), 30, what="2nd wait")
        send_event(run.pk, "stop")
        pool.finish(run, timeout=30)
        wait = run.waits.get(name="go")
        assert run.status == RunStatus.COMPLETED
        assert executions(token) == {"await_go": 1, "await_stop": 1, "end": 1}
        buffered = sorted(
            Event.objects.filter(run=run, name="go", consumed_at__isnull=True).values_list("payload", flat=True)
        )
        if wait.status == "timed_out":
            assert run.context["go"] == "timeout"
            assert (sorted(results), buffered) == (["buffered", "buffered"], ["a", "b"])
        else:
            assert wait.status == "resolved"
            assert run.context["go"] == wait.payload
            assert sorted(results) == ["buffered", "delivered"]
            assert buffered == sorted({"a", "b"} - {wait.payload})
        outcomes.append(wait.status)
    print(f"\nevent vs timeout outcomes: {outcomes}")


# -- crashes between commits -----------------------------------------------------------------------------


def test_a_sleep_whose_wake_up_job_was_never_sent_is_ended_by_the_sweeper(
    workers: Any, redis_db: Redis, short_leases: dict[str, str]
) -> None:
    # The process that commits the wait dies before its wake-up job reaches Redis.
    pool = workers(2, env={**short_leases, "DURABLE_IT_CRASH_BEFORE_SEND": "wake"}, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow("it_sleep", {"token": token, "seconds": 0.5})
    pool.finish(run, timeout=60)
    assert run.status == RunStatus.COMPLETED
    assert redis_db.get(crash_key(run.pk)) is not None
    assert executions(token) == {"begin": 1, "nap": 1, "end": 1}
    wait = run.waits.get()
    late = (wait.resolved_at - wait.due_at).total_seconds()
    figure("crash before a sleep's wake-up job is sent -> sleep ended after its due time by", late)
    assert late <= 2.0 + 2 * INTERVAL + 3.0


@pytest.mark.parametrize(("workflow", "kind"), [("it_sleep", "run"), ("it_branch_nap", "join")])
def test_a_wake_up_whose_next_job_was_never_sent_is_finished_by_recovery(
    workers: Any, redis_db: Redis, short_leases: dict[str, str], workflow: str, kind: str
) -> None:
    # The wake-up job commits the end of the sleep, then dies before the run's next job (the run
    # job of the step after it, or the join of the block the branch decided) reaches Redis.
    pool = workers(2, env={**short_leases, "DURABLE_IT_CRASH_BEFORE_SEND": kind}, command="rqworker")
    token = uuid.uuid4().hex
    run = start_workflow(workflow, {"token": token, "seconds": 0.5})
    pool.finish(run, timeout=60)
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    crash = json.loads(redis_db.get(crash_key(run.pk)))
    wait = run.waits.get()
    assert wait.status == "resolved"
    nap = "nap" if workflow == "it_sleep" else "branch_nap"
    assert executions(token) == ({"begin": 1, nap: 1, "end": 1} if workflow == "it_sleep" else {nap: 1, "end": 1})
    end = StepResult.objects.get(run=run, step="end")
    latency = end.started_at.timestamp() - crash["at"]
    figure(f"crash after a wake-up committed, before its {kind} job was sent -> next step executing", latency)
    assert 0 <= latency <= LEASE + 2 * INTERVAL + 3.0


def test_a_sender_that_dies_after_its_commit_leaves_the_run_to_recovery(
    workers: Any, redis_db: Redis, short_leases: dict[str, str]
) -> None:
    pool = workers(2, env=short_leases)
    token = uuid.uuid4().hex
    run = waiting(start_workflow("it_event", {"token": token}))
    # The sending process commits the delivery, then dies before the run's next job is sent.
    results = senders(run, ["x"], at=time.time(), env={**short_leases, "DURABLE_IT_CRASH_BEFORE_SEND": "run"})
    assert results[0].startswith("exit 1"), results
    assert Wait.objects.get(run=run).status == "resolved"
    pool.finish(run, timeout=60)
    assert run.status == RunStatus.COMPLETED
    assert run.context["go"] == "x"
    assert executions(token) == {"await_go": 1, "end": 1}
    crash = json.loads(redis_db.get(crash_key(run.pk)))
    end = StepResult.objects.get(run=run, step="end")
    figure("crash of a sender after its commit -> next step executing", end.started_at.timestamp() - crash["at"])
