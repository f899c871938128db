"""The durable worker: connections it keeps or discards, the limits that make it start afresh, its command."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from durable_django import ok, step, worker
from durable_django.management.commands.durable_worker import workflow_queues
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from durable_django.worker import DurableWorker, tidy_connections
from tests.engine_support import Definer

runs = pytest.mark.django_db(transaction=True)


def durable_worker(embedded: EmbeddedQueue) -> DurableWorker:
    return DurableWorker(embedded.queues(), connection=embedded.connection)


# -- connections ----------------------------------------------------------------------------------


class Calls:
    """Stands in for a connection's methods and records which were called."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, usable: bool = True) -> None:
        self.called: list[str] = []
        monkeypatch.setattr(connection, "close", lambda: self.called.append("close"))
        monkeypatch.setattr(connection, "is_usable", lambda: self.called.append("is_usable") or usable)
        monkeypatch.setattr(
            connection, "close_if_unusable_or_obsolete", lambda: self.called.append("close_if_unusable_or_obsolete")
        )


@runs
def test_a_healthy_connection_is_kept_for_the_next_job(monkeypatch: pytest.MonkeyPatch) -> None:
    connection.ensure_connection()
    calls = Calls(monkeypatch)
    tidy_connections()
    assert calls.called == []


@runs
@pytest.mark.parametrize(("usable", "expected"), [(True, ["is_usable"]), (False, ["is_usable", "close"])])
def test_a_connection_that_saw_an_error_is_kept_only_while_it_still_answers(
    monkeypatch: pytest.MonkeyPatch, usable: bool, expected: list[str]
) -> None:
    connection.ensure_connection()
    monkeypatch.setattr(connection, "errors_occurred", True)
    calls = Calls(monkeypatch, usable=usable)
    tidy_connections()
    assert calls.called == expected
    assert connection.errors_occurred is not usable


@runs
def test_a_connection_a_job_left_outside_autocommit_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    connection.ensure_connection()
    monkeypatch.setattr(connection, "get_autocommit", lambda: False)
    calls = Calls(monkeypatch)
    tidy_connections()
    assert calls.called == ["close"]


@runs
def test_a_positive_conn_max_age_is_left_to_django(monkeypatch: pytest.MonkeyPatch) -> None:
    connection.ensure_connection()
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    calls = Calls(monkeypatch)
    tidy_connections()
    assert calls.called == ["close_if_unusable_or_obsolete"]


# -- limits ---------------------------------------------------------------------------------------


@runs
@override_settings(DURABLE={"WORKER_MAX_JOBS": 2})
def test_the_worker_stops_taking_jobs_once_it_executed_its_limit(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    started = [wf.start() for _ in range(3)]
    embedded.run_commit_hooks()
    worker_ = durable_worker(embedded)
    worker_.work(burst=True, logging_level="WARNING")
    assert worker_.jobs_done == 2
    assert worker_.recycle_requested == "it executed 2 jobs (DURABLE['WORKER_MAX_JOBS'] is 2)"
    # Built by code, not by a worker command: it stops instead of executing its command line again.
    assert worker_.exec_on_recycle is False
    statuses = sorted(WorkflowRun.objects.filter(pk__in=[run.pk for run in started]).values_list("status", flat=True))
    assert statuses == ["completed", "completed", "pending"]
    assert embedded.pending_jobs() == 1


@runs
@override_settings(DURABLE={"WORKER_MAX_MEMORY": 1})
def test_the_worker_stops_taking_jobs_once_it_uses_more_memory_than_allowed(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok())])
    for _ in range(2):
        wf.start()
    embedded.run_commit_hooks()
    worker_ = durable_worker(embedded)
    worker_.work(burst=True, logging_level="WARNING")
    assert worker_.jobs_done == 1
    assert worker_.recycle_requested.startswith("it uses ")
    assert worker_.recycle_requested.endswith(" MiB of memory (DURABLE['WORKER_MAX_MEMORY'] is 1 MiB)")


@runs
def test_without_limits_the_worker_executes_every_job(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok())])
    for _ in range(3):
        wf.start()
    embedded.run_commit_hooks()
    worker_ = durable_worker(embedded)
    with override_settings(DURABLE={"WORKER_MAX_MEMORY": 0}):
        worker_.work(burst=True, logging_level="WARNING")
    assert (worker_.jobs_done, worker_.recycle_requested) == (3, "")
    assert WorkflowRun.objects.filter(status="completed").count() == 3


def test_resident_memory_is_read_in_mib() -> None:
    assert 5 < worker.resident_mib() < 100_000


# -- the command ------------------------------------------------------------------------------------


def test_the_command_listens_on_every_queue_the_workflows_use(define: Definer) -> None:
    define([step("a", lambda ctx: ok()), step("b", lambda ctx: ok(), queue="priority")], queue="default")
    define([step("c", lambda ctx: ok())], queue="emails")
    queues = workflow_queues()
    assert queues[0] == "default"
    assert {"priority", "emails"} <= set(queues)
    assert len(queues) == len(set(queues))


def test_the_command_refuses_a_queue_that_is_not_configured(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        call_command("durable_worker", "nowhere", "--burst")
    assert exited.value.code == 1
    assert "Queue(s) 'nowhere' are not configured in settings.RQ_QUEUES" in capsys.readouterr().err
