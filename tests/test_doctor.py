"""``manage.py durable_doctor``: what it finds wrong with workers, queues, runs, schedules and migrations."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone
from redis import Redis
from rq import Worker
from rq.scheduler import RQScheduler

from durable_django import doctor, ok, step
from durable_django.models import RunStatus, Schedule, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

runs = pytest.mark.django_db(transaction=True)


def findings(diagnosis: doctor.Diagnosis, check: str) -> list[tuple[str, str]]:
    return [(f.severity, f.message) for f in diagnosis.findings if f.check == check]


def listen(embedded: EmbeddedQueue, *queues: str, name: str = "w1", scheduler: bool = False) -> Worker:
    """Register an RQ worker listening to ``queues`` in the embedded Redis, as a live worker would."""
    worker = Worker(list(queues), connection=embedded.connection, name=name)
    worker.register_birth()
    if scheduler:
        for queue in queues:
            embedded.connection.set(RQScheduler.get_locking_key(queue), "somehost:1")
    return worker


def every_used_queue(embedded: EmbeddedQueue, *, scheduler: bool = True) -> None:
    listen(embedded, *(set(doctor.workflow_queues()) & set(settings.RQ_QUEUES)), scheduler=scheduler)


def run_doctor(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("durable_doctor", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


@runs
def test_a_queue_a_workflow_uses_without_a_worker_is_a_problem_naming_the_queue_and_workflows(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("s", lambda ctx: ok(), queue="priority")])
    listen(embedded, "default", scheduler=True)

    diagnosis = doctor.diagnose()

    users = ", ".join(sorted(doctor.workflow_queues()["priority"]))
    assert wf.name in users
    assert findings(diagnosis, "queues") == [
        (
            "problem",
            f"queue 'priority' is used by {users} but no worker listens to it; "
            "start one: manage.py durable_worker priority",
        )
    ]
    assert not diagnosis.healthy


@runs
def test_a_queue_missing_from_rq_queues_is_a_problem(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("s", lambda ctx: ok(), queue="doctor-only")])
    every_used_queue(embedded)

    assert findings(doctor.diagnose(), "queues") == [
        (
            "problem",
            f"queue 'doctor-only' is used by {wf.name} but is not in settings.RQ_QUEUES; "
            "add it there (manage.py check says the same)",
        )
    ]


@runs
def test_workers_per_queue_and_a_missing_scheduler_are_reported(embedded: EmbeddedQueue) -> None:
    every_used_queue(embedded, scheduler=False)

    diagnosis = doctor.diagnose()

    assert ("ok", "queue 'default': 1 worker(s), scheduler no") in findings(diagnosis, "workers")
    assert diagnosis.workers["default"] == ["w1"]
    assert (
        "warning",
        "queue 'default': no worker runs RQ's scheduler; delayed starts, delayed retries and wake-ups wait for "
        "recovery. Run a worker with it (manage.py durable_worker).",
    ) in findings(diagnosis, "scheduler")
    # A missing scheduler is a warning, not a problem.
    assert diagnosis.healthy


@runs
def test_a_healthy_installation_exits_0_and_says_so(embedded: EmbeddedQueue) -> None:
    every_used_queue(embedded)

    code, out = run_doctor()

    assert code == 0
    assert "[ok] workers: queue 'default': 1 worker(s), scheduler yes" in out
    assert out.splitlines()[-1] == "healthy"


@runs
def test_a_run_past_its_lease_is_a_problem_naming_it_and_exits_1(embedded: EmbeddedQueue, define: Definer) -> None:
    every_used_queue(embedded)
    wf = define([step("s", lambda ctx: ok())])
    run = wf.start({})
    embedded.run_commit_hooks()
    long_ago = timezone.now() - timedelta(hours=1)
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, lease_owner="gone:1", lease_expires_at=long_ago
    )

    code, out = run_doctor()

    assert code == 1
    assert (
        f"[problem] runs: 1 run(s) past their lease: {run.pk}; "
        "run manage.py durable_doctor --fix (or durable_recover) to send them again"
    ) in out
    assert out.splitlines()[-1] == "1 problem(s)"


@runs
def test_a_pending_run_without_a_job_is_found_and_fix_sends_it_again(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("s", lambda ctx: ok({"done": True}))])
    run = wf.start({})
    embedded.run_commit_hooks()
    embedded.connection.flushall()  # its job was lost: Redis restarted without persistence
    every_used_queue(embedded)
    WorkflowRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert findings(doctor.diagnose(), "runs") == [
        (
            "problem",
            f"1 pending run(s) with no job in Redis: {run.pk}; run manage.py durable_doctor --fix to send them again",
        )
    ]
    code, out = run_doctor("--fix")
    assert out.splitlines()[0] == "fix: runs sent again: 1"
    assert findings(doctor.diagnose(), "runs") == []
    assert code == 0
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == ("completed", {"done": True})


@runs
def test_a_run_that_starts_later_is_not_stuck(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("s", lambda ctx: ok())])
    run = wf.start({})
    embedded.run_commit_hooks()
    embedded.connection.flushall()
    every_used_queue(embedded)
    WorkflowRun.objects.filter(pk=run.pk).update(run_at=timezone.now() + timedelta(hours=1))

    assert findings(doctor.diagnose(), "runs") == []


@runs
def test_an_overdue_enabled_schedule_is_a_problem_and_a_disabled_one_is_not(embedded: EmbeddedQueue) -> None:
    every_used_queue(embedded)
    now = timezone.now()
    late = now - timedelta(seconds=doctor.SCHEDULE_GRACE + 5)
    Schedule.objects.create(name="nightly", workflow="w", cron="0 3 * * *", next_fire_at=late)
    Schedule.objects.create(name="paused", workflow="w", cron="0 3 * * *", next_fire_at=late, enabled=False)
    Schedule.objects.create(name="soon", workflow="w", cron="0 3 * * *", next_fire_at=now - timedelta(seconds=5))

    assert findings(doctor.diagnose(now), "schedules") == [
        ("problem", "1 schedule(s) overdue: nightly; check that a worker fires schedules")
    ]


@runs
def test_unapplied_migrations_are_listed(embedded: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    every_used_queue(embedded)

    class Migration:
        app_label, name = "durable_django", "0099_future"

    monkeypatch.setattr(doctor.MigrationExecutor, "migration_plan", lambda self, targets: [(Migration(), False)])

    assert findings(doctor.diagnose(), "migrations") == [
        ("problem", "1 unapplied migration(s): durable_django.0099_future; run manage.py migrate")
    ]


@runs
def test_redis_that_does_not_answer_is_one_problem_not_a_crash() -> None:
    with EmbeddedQueue(connection=Redis(port=1, socket_connect_timeout=0.2)):
        diagnosis = doctor.diagnose()

    [(severity, message)] = findings(diagnosis, "redis")
    assert severity == "problem"
    assert message.startswith("Redis does not answer (ConnectionError: ")
    assert message.endswith("; check REDIS_URL")


@runs
def test_a_database_that_does_not_answer_is_one_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(diagnosis: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(doctor, "check_migrations", down)

    diagnosis = doctor.diagnose()

    assert [(f.severity, f.check, f.message) for f in diagnosis.findings] == [
        ("problem", "database", "the database does not answer (OperationalError: connection refused)")
    ]


@runs
def test_json_output_holds_every_finding_and_the_workers(embedded: EmbeddedQueue) -> None:
    every_used_queue(embedded)

    code, out = run_doctor("--json")

    report = json.loads(out)
    assert code == 0
    assert report["healthy"] is True
    assert report["workers"]["default"] == ["w1"]
    assert {"severity": "ok", "check": "workers", "message": "queue 'default': 1 worker(s), scheduler yes"} in report[
        "findings"
    ]
