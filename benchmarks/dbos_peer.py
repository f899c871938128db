"""DBOS under measurement: workflows and steps checkpointed in PostgreSQL, run from DBOS queues.

The system database is a PostgreSQL database of its own (``dbos_bench``). A worker is
``python -m benchmarks.dbos_peer``: a launched DBOS process that dequeues from the benchmark's
queues. The runner enqueues with a ``DBOSClient`` and reads, from the system database, when the
workflow's status row was last updated (it turns SUCCESS in the transaction that finishes it).

Fan-out comes in two shapes: (a) N steps gathered with ``asyncio.gather`` inside one workflow (in
one process), (b) N child workflows enqueued on a queue, every worker taking some, joined by the
parent waiting for each handle.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions

from . import common
from .common import BenchmarkError, Peer

DATABASE = "dbos_bench"
APP = "durable_bench_peer"
RUN_QUEUE = "bench_runs"
BRANCH_QUEUE = "bench_branches"
POLLING_INTERVAL = common.DBOS_POLLING_INTERVAL
WORKER_CONCURRENCY = common.DBOS_WORKER_CONCURRENCY


def system_database_url() -> str:
    return common.database_url(DATABASE).replace("postgres://", "postgresql://", 1)


# -- the workflows ------------------------------------------------------------------------------


@DBOS.step(name="bench_noop")
def noop_step() -> None:
    """A step that does nothing."""


@DBOS.step(name="bench_noop_async")
async def noop_step_async() -> None:
    """A step that does nothing, for ``asyncio.gather``."""


@DBOS.workflow(name="bench_gather")
async def gather_fanout(size: int) -> int:
    """(a) ``size`` steps at once inside one workflow, then read their results."""
    results = await asyncio.gather(*(noop_step_async() for _ in range(size)))
    return len(results)


@DBOS.workflow(name="bench_branch")
def branch() -> None:
    """One branch of the queued fan-out: a workflow of one no-op step."""
    noop_step()


@DBOS.workflow(name="bench_queue_fanout")
def queue_fanout(size: int) -> int:
    """(b) ``size`` child workflows on the branch queue, joined by waiting for every one."""
    queue = DBOS.retrieve_queue(BRANCH_QUEUE)
    if queue is None:
        raise RuntimeError(f"queue {BRANCH_QUEUE} is not registered")
    handles = [queue.enqueue(branch) for _ in range(size)]
    return len([handle.get_result() for handle in handles])


@DBOS.workflow(name="bench_sequential")
def sequential(steps: int) -> None:
    """``steps`` no-op steps one after another."""
    for _ in range(steps):
        noop_step()


@DBOS.workflow(name="bench_onboarding")
async def onboarding() -> None:
    """The onboarding shape: one step, three at once, one step."""
    await noop_step_async()
    await asyncio.gather(noop_step_async(), noop_step_async(), noop_step_async())
    await noop_step_async()


def serve() -> None:
    """A worker process: launch DBOS, register the queues, run until SIGTERM."""
    config: DBOSConfig = {
        "name": APP,
        "system_database_url": system_database_url(),
        "log_level": "WARNING",
        "executor_id": sys.argv[1] if len(sys.argv) > 1 else uuid.uuid4().hex,
    }
    DBOS(config=config)
    DBOS.launch()
    for name in (RUN_QUEUE, BRANCH_QUEUE):
        DBOS.register_queue(name, worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=POLLING_INTERVAL)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy()


def _says_ready(log_path: Path) -> bool:
    return "ready" in log_path.read_text(errors="replace")


# -- the peer -----------------------------------------------------------------------------------


class DBOSPeer(Peer):
    label = "DBOS"
    fanout_variants = {"DBOS gather (a)": "gather", "DBOS queue (b)": "queue"}
    scenarios = frozenset({"fanout", "sequential", "throughput", "latency"})

    def __init__(self, log_dir: Path, timeout: float) -> None:
        super().__init__(log_dir, timeout)
        self._client: DBOSClient | None = None

    @property
    def client(self) -> DBOSClient:
        if self._client is None:
            self._client = DBOSClient(system_database_url=system_database_url(), application_name=APP)
        return self._client

    def setup(self) -> None:
        # A fresh system database; the first worker creates DBOS's schema in it.
        common.create_database(DATABASE, drop=True)

    def worker_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        env = common.bench_env(
            BENCH_DBOS_POLLING_INTERVAL=str(POLLING_INTERVAL), BENCH_DBOS_CONCURRENCY=str(WORKER_CONCURRENCY)
        )
        return [sys.executable, "-m", "benchmarks.dbos_peer", name], env

    def start_workers(self, count: int, *, pooled: bool = False) -> None:
        # Start them one at a time: the first one to launch migrates the system database.
        self.stop_workers()
        for number in range(1, count + 1):
            name = f"bench-dbos-{os.getpid()}-{number}"
            command, env = self.worker_command(name)
            log_path = self.log_dir / f"{name}.log"
            log_path.unlink(missing_ok=True)
            self.workers.append((common.start_process(command, log_path, env), log_path))
            common.wait_for(
                partial(_says_ready, log_path),
                120,
                interval=0.1,
                what=f"DBOS worker {name} to launch",
                alive=self.check,
            )
        self.reset()
        self.warm_up()

    def reset(self) -> None:
        with common.postgres(DATABASE) as conn:
            exists = conn.execute("SELECT to_regclass('dbos.workflow_status')").fetchone()
            if exists and exists[0]:
                conn.execute("TRUNCATE dbos.workflow_status CASCADE")

    def warm_up(self) -> None:
        self.fanout(10, "gather")
        self.fanout(10, "queue")

    def _run(self, workflow: str, *args: Any) -> float:
        options: EnqueueOptions = {"workflow_name": workflow, "queue_name": RUN_QUEUE}
        started = time.time()
        workflow_id = self.client.enqueue(options, *args).get_workflow_id()
        return self._finished_at([workflow_id], 0.02) - started

    def _finished_at(self, ids: list[str], interval: float) -> float:
        with common.postgres(DATABASE) as conn:

            def finished() -> tuple[int, int, int] | None:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status NOT IN ('PENDING', 'ENQUEUED', 'DELAYED')),"
                    " count(*) FILTER (WHERE status <> 'SUCCESS'), max(updated_at)"
                    " FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
                    [ids],
                ).fetchone()
                return row if row and row[0] == len(ids) else None

            done = common.wait_for(finished, self.timeout, interval=interval, what="DBOS workflows", alive=self.check)
        if done[1]:
            raise BenchmarkError(f"{done[1]} DBOS workflow(s) did not succeed")
        return done[2] / 1000.0

    def fanout(self, size: int, variant: str) -> float:
        self.reset()
        return self._run("bench_gather" if variant == "gather" else "bench_queue_fanout", size)

    def sequential(self, steps: int) -> float:
        self.reset()
        return self._run("bench_sequential", steps)

    def throughput(self, runs: int) -> float:
        self.reset()
        options: EnqueueOptions = {"workflow_name": "bench_onboarding", "queue_name": RUN_QUEUE}
        started = time.time()
        ids = [self.client.enqueue(options).get_workflow_id() for _ in range(runs)]
        return self._finished_at(ids, 0.2) - started

    def latency(self) -> float:
        return self._run("bench_onboarding")

    def stop_workers(self) -> None:
        super().stop_workers()


if __name__ == "__main__":
    serve()
