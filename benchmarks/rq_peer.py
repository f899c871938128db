"""Plain RQ under measurement: ``depends_on`` for fan-in and for a chain of jobs.

Jobs live in Redis database 12; workers are ``rq worker`` processes of the chosen worker class.
The join (or the last job of a chain) stores the time it ran in Redis, which ends the measurement;
the jobs themselves are in :mod:`benchmarks.rq_jobs`.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rq import Queue
from rq.job import Job

from . import common
from .common import Peer
from .rq_jobs import finish, join, noop

REDIS_DB = 12
QUEUE = "bench_rq"


class RQPeer(Peer):
    label = "RQ"
    fanout_variants = {"RQ depends_on": "depends_on"}

    def __init__(self, log_dir: Path, timeout: float, worker_class: str = "rq.worker.Worker") -> None:
        super().__init__(log_dir, timeout)
        self.worker_class = worker_class
        self.label = f"RQ ({worker_class.rsplit('.', 1)[-1]})"
        self.fanout_variants = {f"RQ depends_on ({worker_class.rsplit('.', 1)[-1]})": "depends_on"}
        self.redis = common.redis_client(REDIS_DB)
        self.queue = Queue(QUEUE, connection=self.redis)

    def worker_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        rq = str(Path(sys.executable).with_name("rq"))
        command = [rq, "worker", "-u", common.redis_url(REDIS_DB), "-w", self.worker_class, "-n", name, "-q", QUEUE]
        return command, common.bench_env()

    def wait_ready(self, names: list[str]) -> None:
        from rq import Worker

        common.wait_for(
            lambda: set(names) <= {worker.name for worker in Worker.all(connection=self.redis)},
            60,
            interval=0.1,
            what="rq workers to register",
            alive=self.check,
        )

    def stuck(self) -> str | None:
        queue = self.queue
        if queue.count or queue.started_job_registry.count:
            return None
        deferred, ready = queue.deferred_job_registry.count, queue.ready_job_registry.count
        if not deferred and not ready:
            return None
        return (
            f"nothing queued or running, yet {deferred} job(s) wait deferred and {ready} ready to enqueue "
            "although their dependencies finished"
        )

    def reset(self) -> None:
        self.redis.flushdb()

    def warm_up(self) -> None:
        self.fanout(10, "depends_on")

    def _fan_in(self, token: str, dependencies: list[Job]) -> None:
        ids = [job.id for job in dependencies]
        self.queue.enqueue(join, token, ids, depends_on=dependencies)

    def fanout(self, size: int, variant: str) -> float:
        self.reset()
        token = uuid.uuid4().hex
        started = time.time()
        branches = self.queue.enqueue_many([Queue.prepare_data(noop) for _ in range(size)])
        self._fan_in(token, branches)
        return common.wait_done(self.redis, [token], self.timeout, self) - started

    def sequential(self, steps: int) -> float:
        self.reset()
        token = uuid.uuid4().hex
        started = time.time()
        previous: Any = None
        for _ in range(steps - 1):
            previous = self.queue.enqueue(noop, depends_on=previous)
        self.queue.enqueue(finish, token, depends_on=previous)
        return common.wait_done(self.redis, [token], self.timeout, self) - started

    def throughput(self, runs: int) -> float:
        self.reset()
        tokens = [uuid.uuid4().hex for _ in range(runs)]
        started = time.time()
        for token in tokens:
            first = self.queue.enqueue(noop)
            branches = [self.queue.enqueue(noop, depends_on=first) for _ in range(3)]
            self._fan_in(token, branches)
        return common.wait_done(self.redis, tokens, self.timeout, self) - started
