"""Redis outages as the durable worker and the sweeper live them (on fakeredis).

A fake server that is "down" refuses every command, as a stopped Redis does; the worker's pauses
between attempts go to a fake clock, so each test says exactly how long the worker waited. RQ's
scheduler needs Lua, which fakeredis lacks: its outage is tested on a real server, in
tests/integration/test_redis_restart.py.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis
from django.utils import timezone
from rq import Worker
from rq.registry import FailedJobRegistry

from durable_django import ok, step, worker
from durable_django.models import WorkflowRun
from durable_django.recovery import Sweeper, recover
from durable_django.testing import EmbeddedQueue
from durable_django.worker import DurableWorker, wait_until_answering
from tests.engine_support import Definer, attempts

runs = pytest.mark.django_db(transaction=True)

BACKOFF = "reconnecting until it answers, pausing 0.5 s between attempts at first, then up to 5 s"


class Outage:
    """A fake Redis server, the embedded queues on it, and the worker module's clock, made fake.

    ``down(back_after=n)`` stops the server until the worker module has paused ``n`` times;
    ``pauses`` lists every pause (seconds), ``clock`` their sum.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = fakeredis.FakeServer()
        self.connection = fakeredis.FakeStrictRedis(server=self.server)
        self.embedded = EmbeddedQueue(connection=self.connection)
        self.pauses: list[float] = []
        self.clock = 1000.0
        self.back_after: int | None = None
        monkeypatch.setattr(worker, "time", SimpleNamespace(sleep=self.sleep, monotonic=lambda: self.clock))

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock += seconds
        if self.back_after is not None and len(self.pauses) >= self.back_after:
            self.server.connected = True
            self.back_after = None

    def down(self, *, back_after: int) -> None:
        self.server.connected = False
        self.back_after = len(self.pauses) + back_after

    def worker(self) -> DurableWorker:
        return DurableWorker(self.embedded.queues(), connection=self.connection, name="w1")

    def registered(self) -> list[str]:
        return [found.name for found in Worker.all(connection=self.connection)]


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    outage = Outage(monkeypatch)
    with outage.embedded:
        yield outage


def logged(caplog: pytest.LogCaptureFixture, logger: str = "durable_django.worker") -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records if record.name == logger]


# -- the worker -----------------------------------------------------------------------------------


def test_a_worker_that_lost_redis_pauses_longer_after_each_attempt_and_says_so_once(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    worker_ = outage.worker()
    worker_.register_birth()
    outage.down(back_after=7)

    with caplog.at_level(logging.INFO, logger="durable_django.worker"):
        worker_.wait_for_redis(redis.ConnectionError("gone"), "waiting for a job")

    assert outage.pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert logged(caplog) == [
        ("WARNING", f"worker w1 lost Redis while waiting for a job (ConnectionError: gone); {BACKOFF}"),
        ("INFO", "worker w1: Redis answers again after 22.5 s"),
    ]
    assert outage.registered() == ["w1"]


def test_a_worker_registers_again_when_redis_comes_back_without_its_data(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    worker_ = outage.worker()
    worker_.register_birth()
    worker_.set_state("busy")
    outage.connection.flushall()
    outage.down(back_after=2)

    with caplog.at_level(logging.INFO, logger="durable_django.worker"):
        worker_.set_state("idle")

    assert outage.pauses == [0.5, 1.0]
    assert logged(caplog)[1] == (
        "INFO",
        "worker w1: Redis answers again after 1.5 s; it had lost this worker's registration (restarted without "
        "its data): registered again",
    )
    assert outage.registered() == ["w1"]
    assert outage.connection.hget(worker_.key, "state") == b"idle"


def test_a_heartbeat_that_finds_the_worker_missing_from_redis_registers_it_again(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    worker_ = outage.worker()
    worker_.register_birth()
    # A restart shorter than the client's own retries: no error, only the data is gone.
    outage.connection.flushall()

    worker_.heartbeat(timeout=100)

    assert logged(caplog) == [
        ("WARNING", "worker w1 was missing from Redis (restarted without its data?); registered it again")
    ]
    assert outage.registered() == ["w1"]
    assert outage.connection.hexists(worker_.key, "birth")
    assert outage.pauses == []


@runs
def test_a_job_during_which_redis_went_down_is_recorded_once_and_the_job_it_could_not_send_is_sent_by_recovery(
    outage: Outage, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    executed: Counter[str] = Counter()

    def cut(ctx: dict[str, Any]) -> Any:
        executed["cut"] += 1
        outage.down(back_after=3)
        return ok({"cut": True})

    def after(ctx: dict[str, Any]) -> Any:
        executed["after"] += 1
        return ok()

    # The step after the cut runs on another queue: the job that Redis was down for must hand the run over.
    wf = define([step("cut", cut), step("after", after, queue="priority")])
    run = wf.start()
    worker_ = outage.worker()

    # Burst mode: the worker stops once the queues are empty, instead of exiting on the outage.
    assert worker_.work(burst=True, logging_level="WARNING") is True
    run.refresh_from_db()
    assert (run.status, run.current_step) == ("running", "after")
    assert outage.pauses == [0.5, 1.0, 2.0]
    job_id = f"durable-run-{run.pk}-0"
    assert [message for level, message in logged(caplog) if level == "WARNING"] == [
        f"worker w1 lost Redis while recording the end of job {job_id} (ConnectionError: FakeRedis is emulating "
        f"a connection error.); {BACKOFF}"
    ]

    # The hand-over could not be sent: recovery sends it once the run's deadline has passed.
    assert recover(now=timezone.now() + timedelta(minutes=5)).runs_sent_again == 1
    worker_.work(burst=True, logging_level="WARNING")

    run.refresh_from_db()
    assert run.status == "completed"
    assert attempts(run) == [("cut", 1, "completed"), ("after", 1, "completed")]
    assert executed == {"cut": 1, "after": 1}
    # rq recorded the job that Redis was down for as what it was, a success.
    assert [FailedJobRegistry(queue=queue).count for queue in outage.embedded.queues()] == [0, 0]


def test_a_worker_stopping_while_redis_is_down_leaves_without_an_error(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    worker_ = outage.worker()
    worker_.register_birth()
    outage.down(back_after=100)

    worker_.teardown()

    assert logged(caplog) == [
        (
            "WARNING",
            "worker w1 stops without leaving rq's registry: Redis does not answer (FakeRedis is emulating a "
            "connection error.); its entry expires by itself",
        )
    ]


def test_a_worker_command_started_while_redis_is_down_waits_for_it(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    outage.down(back_after=3)

    with caplog.at_level(logging.INFO, logger="durable_django.worker"):
        wait_until_answering(outage.connection, "durable_worker (queue 'default')")

    assert outage.pauses == [0.5, 1.0, 2.0]
    assert logged(caplog) == [
        (
            "WARNING",
            "durable_worker (queue 'default'): Redis does not answer (ConnectionError: FakeRedis is emulating a "
            "connection error.); trying again until it does",
        ),
        ("INFO", "durable_worker (queue 'default'): Redis answers after 3.5 s"),
    ]


# -- the sweeper ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_says_once_that_redis_is_down_and_once_that_it_is_back(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    sweeper = Sweeper()
    outage.server.connected = False
    with caplog.at_level(logging.INFO, logger="durable_django.recovery"):
        assert [sweeper.sweep_once(), sweeper.sweep_once()] == [None, None]
        outage.server.connected = True
        report = sweeper.sweep_once()

    assert report is not None and report.total == 0
    assert logged(caplog, "durable_django.recovery") == [
        (
            "WARNING",
            "recovery sweeps wait for Redis, which does not answer (ConnectionError: FakeRedis is emulating a "
            "connection error.)",
        ),
        ("INFO", "recovery sweeps again: Redis answers"),
    ]
    assert WorkflowRun.objects.count() == 0
