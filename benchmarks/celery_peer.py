"""Celery under measurement: a chord for fan-out/fan-in, a chain for sequential steps.

Broker and result backend are Redis (databases 10 and 11). For fan-out and sequential steps each
worker is ``celery -A benchmarks.celery_peer worker --pool=solo`` (one process, one task at a time);
for throughput, latency and slow branches, N worker processes are what Celery users run: ONE
worker ``--pool=prefork -c N`` (a parent and N child processes executing tasks). The last task of
a measurement stores the time it ran in Redis: that, not the moment the client notices, is the end
of the measurement.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, chain, chord, group

from . import common
from .common import Peer, Sample

BROKER_DB = 10
BACKEND_DB = 11
QUEUE = "bench_celery"

app = Celery("benchmarks", broker=common.redis_url(BROKER_DB), backend=common.redis_url(BACKEND_DB))
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    # Keep the default JSON serializer, acknowledgement and prefetch: Celery as it ships.
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(*args: Any) -> None:
    """A task that does nothing."""


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    """A slow task: it sleeps."""
    time.sleep(seconds)


@app.task(name="bench.join")
def join(results: list[Any], token: str) -> int:
    """The chord's body: it receives every header result; records when it ran."""
    common.record_done(_done_redis(), token)
    return len(results)


@app.task(name="bench.finish")
def finish(token: str) -> None:
    """The last link of a chain: records when it ran."""
    common.record_done(_done_redis(), token)


_redis: Any = None


def _done_redis() -> Any:
    global _redis
    if _redis is None:
        _redis = common.redis_client(BROKER_DB)
    return _redis


def _forget(result: Any) -> None:
    """Stop waiting for a result nobody reads; left to Celery, it happens at interpreter exit, noisily."""
    while result is not None:
        result.backend.remove_pending_result(result)
        result = result.parent


def onboarding(token: str) -> Any:
    """The onboarding shape: a task, a chord of three, then the join, which records when it ran."""
    return chain(noop.si(), chord(group(noop.si(), noop.si(), noop.si()), join.s(token))).apply_async()


class CeleryPeer(Peer):
    label = "Celery"
    fanout_variants = {"Celery chord": "chord"}
    scenarios = frozenset({"fanout", "sequential", "throughput", "latency", "slow"})
    pooled = frozenset({"throughput", "latency", "slow"})

    def __init__(self, log_dir: Path, timeout: float) -> None:
        super().__init__(log_dir, timeout)
        #: Processes of the prefork pool of the one worker, or 0 for solo workers.
        self.prefork = 0

    def start_workers(self, count: int, *, pooled: bool = False) -> None:
        self.prefork = count if pooled else 0
        super().start_workers(1 if pooled else count)

    def worker_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        celery = str(Path(sys.executable).with_name("celery"))
        pool = ["--pool=prefork", "-c", str(self.prefork)] if self.prefork else ["--pool=solo", "-c", "1"]
        command = [celery, "-A", "benchmarks.celery_peer", "worker", *pool]
        command += ["-Q", QUEUE, "-n", f"{name}@%h", "--loglevel", "WARNING"]
        return command, common.bench_env()

    def reset(self) -> None:
        common.redis_client(BROKER_DB).flushdb()
        common.redis_client(BACKEND_DB).flushdb()

    def warm_up(self) -> None:
        self.fanout(10, "chord")

    def _finish(self, tokens: list[str], started: float) -> float:
        end = common.wait_done(_done_redis(), tokens, self.timeout, self)
        return end - started

    def fanout(self, size: int, variant: str) -> float:
        self.reset()
        token = uuid.uuid4().hex
        started = time.time()
        result = chord(noop.si() for _ in range(size))(join.s(token))
        try:
            return self._finish([token], started)
        finally:
            _forget(result)

    def sequential(self, steps: int) -> float:
        self.reset()
        token = uuid.uuid4().hex
        started = time.time()
        result = chain(*(noop.si() for _ in range(steps - 1)), finish.si(token)).apply_async()
        try:
            return self._finish([token], started)
        finally:
            _forget(result)

    def throughput(self, runs: int) -> float:
        self.reset()
        tokens = [uuid.uuid4().hex for _ in range(runs)]
        started = time.time()
        results = [onboarding(token) for token in tokens]
        try:
            return self._finish(tokens, started)
        finally:
            for result in results:
                _forget(result)

    def latency(self) -> float:
        # Only the finishing times are forgotten: the broker is left alone between runs.
        _done_redis().delete(common.DONE_KEY)
        token = uuid.uuid4().hex
        started = time.time()
        result = onboarding(token)
        try:
            return self._finish([token], started)
        finally:
            _forget(result)

    def slow(self) -> Sample:
        self.reset()
        token = uuid.uuid4().hex
        started = time.time()
        result = chord(sleep.si(common.SLOW_SECONDS) for _ in range(common.SLOW_BRANCHES))(join.s(token))
        try:
            # The chord's body is both the join and the step after the block.
            seconds = self._finish([token], started)
        finally:
            _forget(result)
        return seconds, {"run finished": seconds}
