"""Redis restarts under load: the workers wait it out, every run completes, nothing completes twice.

The test runs a ``redis-server`` of its own (on a free port, keeping nothing on disk, so that a
restart loses every queue, registry and worker registration), points the test process and three
``durable_worker`` processes at it, and kills and restarts it while a hundred runs are under way.
The workers hold short leases and sweep every second (as in the fault-injection tests), so that
the lost jobs are sent again within seconds; ``pytest -s`` prints the figures that
docs/reliability.md reports.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from redis import Redis
from rq import Queue
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

from durable_django import start_workflow
from durable_django.dispatch import QUEUE_UNAVAILABLE
from durable_django.models import StepResult, StepStatus, WorkflowRun
from durable_django.worker import DurableScheduler
from tests.testapp.recovery_workflows import RESTART_WIDTH, executions

from .support import WorkerPool, alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REDIS_SERVER = shutil.which("redis-server")
LEASE = 3.0
INTERVAL = 1.0
RUNS = 100
WORKERS = 3
# Longer than redis-py's own retries of a command (ten, within about five seconds), so that every
# worker meets the outage rather than having it hidden by its client.
DOWN_FOR = 8.0
STEPS = ["first", "second", *(f"r_{i}" for i in range(RESTART_WIDTH)), "last"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` on ``port`` that keeps nothing on disk: a restart starts it empty."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start the server and wait until it answers; returns when it did (``time.monotonic()``)."""
        assert REDIS_SERVER is not None
        self.starts += 1
        log = (self.directory / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        probe = Redis.from_url(self.url, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(probe.ping())
            except QUEUE_UNAVAILABLE:
                return False

        try:
            wait_for(answers, 30, what=f"redis-server on port {self.port} to answer")
        finally:
            probe.close()
        return time.monotonic()

    def kill(self) -> float:
        """Kill the server as a crash would (SIGKILL); returns when it was gone (``time.monotonic()``)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None
        return time.monotonic()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.kill()


@pytest.fixture
def redis_db(redis_server: RedisServer, settings: Any) -> Iterator[Redis]:
    """This module's Redis database: the test's own server, for the test process and its workers.

    Replaces the ``redis_db`` fixture of conftest.py, which the ``workers`` fixture uses; the
    workers get ``settings.REDIS_URL`` in their environment.
    """
    settings.REDIS_URL = redis_server.url
    settings.RQ_QUEUES = {"default": {"URL": redis_server.url}, "priority": {"URL": redis_server.url}}
    settings.DURABLE = {"LEASE_SECONDS": LEASE, "RECOVER_INTERVAL": INTERVAL}
    connection = Redis.from_url(redis_server.url)
    yield connection
    connection.close()


def finished_count(runs: list[Any]) -> int:
    return WorkflowRun.objects.filter(pk__in=runs).finished().count()


def scheduler_pids(pool: WorkerPool) -> set[int]:
    """The processes of RQ's scheduler holding the lock of each of the pool's queues (empty if a lock is free)."""
    pids = set()
    for queue in pool.queues:
        holder = pool.connection.get(RQScheduler.get_locking_key(queue.name))
        pid = pool.connection.hget(SCHEDULER_KEY_TEMPLATE % holder.decode(), "pid") if holder else None
        if pid is None:
            return set()
        pids.add(int(pid))
    return pids


@pytest.mark.timeout(300)
def test_workers_wait_out_a_redis_restart_under_load_and_every_run_completes_once(
    workers: Any, redis_server: RedisServer
) -> None:
    pool = workers(WORKERS, env={"DURABLE_LEASE_SECONDS": f"{LEASE:g}", "DURABLE_RECOVER_INTERVAL": f"{INTERVAL:g}"})
    schedulers_before = wait_for(lambda: scheduler_pids(pool), 30, what="RQ's scheduler to take its locks")
    tokens = [uuid.uuid4().hex for _ in range(RUNS)]
    with transaction.atomic():
        runs = [start_workflow("it_redis_restart", {"token": token}).pk for token in tokens]

    # Restart while most runs are under way: some done, jobs queued, executing and being recorded.
    wait_for(lambda: finished_count(runs) >= RUNS // 5, 120, what=f"{RUNS // 5} runs to complete")
    at_restart = Counter(WorkflowRun.objects.filter(pk__in=runs).values_list("status", flat=True))
    down_at = redis_server.kill()
    time.sleep(DOWN_FOR)  # the outage itself, not a wait for something to happen
    up_at = redis_server.start()

    wait_for(lambda: finished_count(runs) == RUNS, 60, interval=0.1, what=f"all {RUNS} runs to finish")
    completed_at = time.monotonic()

    # No worker exited: each waited the outage out, reporting it once.
    assert [worker.process.poll() for worker in pool.workers] == [None] * WORKERS
    for worker in pool.workers:
        assert worker.log_path.read_text(errors="replace").count(f"worker {worker.name} lost Redis while") == 1
    assert Counter(WorkflowRun.objects.filter(pk__in=runs).values_list("status", flat=True)) == {"completed": RUNS}
    # Every step and every branch of every run completed exactly once, and each attempt recorded is
    # one execution of its step's body (a body that ran without its outcome recorded would show).
    for run_id, token in zip(runs, tokens, strict=True):
        attempts = StepResult.objects.filter(run_id=run_id)
        completed = Counter(attempts.filter(status=StepStatus.COMPLETED).values_list("step", flat=True))
        assert completed == dict.fromkeys(STEPS, 1), run_id
        assert executions(token) == Counter(attempts.values_list("step", flat=True)), run_id
    # RQ's scheduler holds its queues' locks in the restarted Redis, in a live process of a worker.
    schedulers_after = wait_for(lambda: scheduler_pids(pool), 30, what="RQ's scheduler to take its locks again")
    for pid in schedulers_after:
        assert alive(pid)
        pool.worker_of(pid)
    pool.wait_until_quiet()

    lost = StepResult.objects.filter(run_id__in=runs).exclude(status=StepStatus.COMPLETED).count()
    print(
        f"\nat the restart: {dict(at_restart)}; attempts not completed (worker_lost): {lost}; "
        f"scheduler process {'the same' if schedulers_after == schedulers_before else 'started again'}"
    )
    print(f"\nFIGURE Redis down {up_at - down_at:.1f} s -> all {RUNS} runs completed: {completed_at - up_at:.2f} s")


@pytest.mark.timeout(120)
def test_rq_scheduler_waits_out_a_redis_restart_takes_its_locks_again_and_goes_on_scheduling(
    redis_server: RedisServer, redis_db: Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = [Queue(name, connection=redis_db) for name in ("default", "priority")]
    scheduler = DurableScheduler(queues, connection=redis_db)
    # Its loop runs in this process (rq forks one for it): the test's own signal handlers stay.
    monkeypatch.setattr(scheduler, "_install_signal_handlers", lambda: None)
    seen: list[Any] = []

    def pause(seconds: float) -> None:
        """The scheduler's sleeps: Redis goes down during the first, stays down for two attempts, comes back empty."""
        seen.append(seconds)
        if len(seen) == 1:
            redis_server.kill()
        elif len(seen) == 3:
            redis_server.start()
            queues[0].enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "builtins.print", "due")
        elif len(seen) == 4:
            holders = {redis_db.get(RQScheduler.get_locking_key(queue.name)) for queue in queues}
            seen.append((holders, redis_db.hget(scheduler.key, "pid"), queues[0].count))
            scheduler.request_stop()

    monkeypatch.setattr(scheduler, "_pause", pause)
    scheduler.acquire_locks()
    with caplog.at_level(logging.INFO, logger="durable_django.worker"):
        scheduler.work()

    # An interval, two attempts with backoff, then an interval in which it held both locks again,
    # had registered itself again and had moved the due job onto its queue.
    assert seen == [1, 0.5, 1.0, 1, ({scheduler.name.encode()}, str(os.getpid()).encode(), 1)]
    records = [
        (record.levelname, record.getMessage()) for record in caplog.records if record.name == "durable_django.worker"
    ]
    assert [level for level, _ in records] == ["WARNING", "INFO"]
    assert records[0][1].startswith(f"RQ's scheduler (process {os.getpid()}) lost Redis (ConnectionError: ")
    assert records[1][1].startswith(f"RQ's scheduler (process {os.getpid()}): Redis answers again after ")
    # Then it stopped as rq's does: its locks released, its registration deleted.
    assert redis_db.keys("rq:scheduler*") == []
