"""Redis down after a commit: the caller's transaction stands, and recovery sends the jobs once Redis is back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import transaction
from django.utils import timezone

from durable_django import dispatch, error, ok, step
from durable_django.models import StepResult, WorkflowRun
from durable_django.operations import cancel_run, retry_run
from durable_django.recovery import recover
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish
from tests.test_operations import Switch

runs = pytest.mark.django_db(transaction=True)


@contextmanager
def redis_down(embedded: EmbeddedQueue) -> Iterator[None]:
    """Route the queues to a port where nothing listens, then back to ``embedded``'s Redis."""
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    dispatch.use_connection(dead)
    try:
        yield
    finally:
        dispatch.use_connection(embedded.connection)


def later() -> Any:
    """A moment after every deadline set now has passed."""
    return timezone.now() + timedelta(minutes=10)


def counted(calls: list[str], name: str) -> Any:
    def fn(ctx: dict[str, Any]) -> Any:
        calls.append(name)
        return ok({name: True})

    return fn


@runs
def test_start_in_a_transaction_succeeds_with_redis_down_and_the_run_completes_once_it_is_back(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    wf = define([step("first", counted(calls, "first")), step("second", counted(calls, "second"))])
    hooks: list[str] = []
    with redis_down(embedded), caplog.at_level(logging.WARNING, logger="durable_django.dispatch"), transaction.atomic():
        run = wf.start({"n": 1})
        transaction.on_commit(lambda: hooks.append("after"))
    assert hooks == ["after"]  # the caller's later hooks still ran
    stored = WorkflowRun.objects.get()
    assert (stored.pk, stored.status, stored.lease_owner) == (run.pk, "pending", "")
    assert stored.lease_expires_at is not None
    [warning] = [r for r in caplog.records if r.name == "durable_django.dispatch"]
    assert warning.levelno == logging.WARNING
    assert str(run.pk) in warning.getMessage()
    assert dispatch.run_job_id(run.pk, 0) in warning.getMessage()

    assert embedded.pending_jobs() == 0  # nothing reached Redis
    assert recover(now=later()).runs_sent_again == 1
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"n": 1, "first": True, "second": True})
    assert calls == ["first", "second"]
    assert recover(now=later()).total == 0


@runs
def test_start_outside_a_transaction_succeeds_with_redis_down(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    with redis_down(embedded):
        run = wf.start({})
    assert WorkflowRun.objects.get().status == "pending"
    assert recover(now=later()).runs_sent_again == 1
    assert finish(embedded, run).status == "completed"


@runs
def test_retry_succeeds_with_redis_down_and_the_step_runs_once_it_is_back(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    charge = Switch({"charged": True})
    wf = define([step("charge", charge), step("ship", lambda ctx: ok({"shipped": True}))])
    run = finish(embedded, wf.start({}))
    assert run.status == "failed"
    charge.on = True
    with redis_down(embedded):
        retried = retry_run(run.pk)
    assert (retried.status, retried.error) == ("running", None)
    assert recover(now=later()).runs_sent_again == 1
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"charged": True, "shipped": True})
    assert len(charge.seen) == 2  # the failed attempt and the retry: once each


@runs
def test_cancel_succeeds_with_redis_down(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    with redis_down(embedded):
        run = wf.start({})
        cancelled = cancel_run(run.pk)
    assert cancelled.status == "cancelled"
    assert recover(now=later()).total == 0
    embedded.run_until_idle(timeout=10)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert not StepResult.objects.filter(run=run).exists()


@runs
def test_a_worker_that_cannot_enqueue_a_retry_leaves_it_to_recovery(
    embedded: EmbeddedQueue, define: Definer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error("not yet") if len(calls) == 1 else ok({"done": True})

    wf = define([step("call", flaky, retry={"max_attempts": 2, "base": 1, "jitter": False})])
    run = wf.start({})
    real_send = dispatch.send
    failed: list[str] = []

    def failing_send(jobs: Any) -> None:
        failed.extend(job.job_id for job in jobs)
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(dispatch, "send", failing_send)
    embedded.run_until_idle(timeout=10)  # the run's job was queued before; the retry its worker sends fails
    monkeypatch.setattr(dispatch, "send", real_send)
    assert len(failed) == 1
    assert calls == [1]
    run.refresh_from_db()
    assert (run.status, run.lease_owner) == ("running", "")
    assert embedded.next_scheduled_in() is None  # the retry is in the database only
    assert recover(now=later()).runs_sent_again == 1
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"done": True})
    assert calls == [1, 1]
