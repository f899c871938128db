"""durable_django under measurement: worker processes on the benchmark settings.

Its workers are started the way users start them, ``manage.py durable_worker`` (rq's in-process
``SimpleWorker`` made safe for a long life, with rq's scheduler), or as django-rq's ``rqworker``
of one of rq's own worker classes (the forking ``Worker``, or ``SimpleWorker``), without scheduler.

Durations run from the moment the runner calls ``start_workflow`` until the run's ``finished_at``
as the worker stored it, so polling the row only decides when to look, never what is measured.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import common
from .common import BenchmarkError, Peer, Sample

SETTINGS = "benchmarks.settings"
# The database and Redis database of benchmarks/settings.py (BENCH_DATABASE_URL, BENCH_REDIS_URL).
DATABASE = urlsplit(
    os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/durable_bench")
).path.lstrip("/")
REDIS_DB = int(urlsplit(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")).path.lstrip("/") or 0)
QUEUE = "bench"
#: ``--worker-class`` choices, in the order of the report's columns: how durable_django's workers
#: are started. ``durable_worker`` is the command of that name; the others are ``rqworker`` of
#: that rq worker class.
WORKER_CLASSES = {
    "durable_worker": "durable_django.worker.DurableWorker",
    "Worker": "rq.worker.Worker",
    "SimpleWorker": "rq.worker.SimpleWorker",
}
#: The choices that are rq's own classes, which plain RQ can run too.
RQ_WORKER_CLASSES = ("Worker", "SimpleWorker")


def configure() -> None:
    """Point Django at the benchmark settings and set it up (once per process)."""
    os.environ.setdefault("BENCH_DATABASE_URL", common.database_url(DATABASE))
    os.environ.setdefault("BENCH_REDIS_URL", common.redis_url(REDIS_DB))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup()


_prepared = False


def prepare_database() -> None:
    """Create the benchmark database afresh and migrate it, once per process.

    Nothing in it outlives a measurement, and a new database never holds a schema from an older
    version of the migrations.
    """
    global _prepared
    if _prepared:
        return
    configure()
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    common.create_database(DATABASE, drop=True)
    call_command("migrate", verbosity=0, interactive=False)
    _prepared = True


def reset() -> None:
    """Empty durable_django's tables and the benchmark's Redis database."""
    from django.db import connection

    from durable_django.models import Event, ParallelGroup, StepResult, Wait, WorkflowRun

    tables = ", ".join(model._meta.db_table for model in (Event, Wait, StepResult, ParallelGroup, WorkflowRun))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables}")
    common.redis_client(REDIS_DB).flushdb()


class DurablePeer(Peer):
    """durable_django with ``durable_worker`` processes, or ``rqworker`` processes of one rq worker class."""

    scenarios = frozenset({"fanout", "sequential", "throughput", "latency", "slow"})

    def __init__(self, log_dir: Path, timeout: float, kind: str = "durable_worker") -> None:
        super().__init__(log_dir, timeout)
        #: A key of :data:`WORKER_CLASSES`.
        self.kind = kind
        self.worker_class = WORKER_CLASSES[kind]
        self.label = f"durable_django ({kind})"
        self.fanout_variants = {self.label: "parallel"}
        #: Environment added to the workers' (the cost measurement turns the recovery sweep off).
        self.extra_env: dict[str, str] = {}

    def setup(self) -> None:
        prepare_database()

    def worker_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        if self.kind == "durable_worker":
            # The command users run, with its defaults: rq's scheduler on, DurableWorker.
            command = [sys.executable, "-m", "django", "durable_worker", QUEUE, "--name", name, "--verbosity", "0"]
        else:
            command = [sys.executable, "-m", "django", "rqworker", QUEUE, "--name", name]
            command += ["--worker-class", self.worker_class, "--verbosity", "0"]
        env = common.bench_env(
            DJANGO_SETTINGS_MODULE=SETTINGS,
            BENCH_DATABASE_URL=os.environ["BENCH_DATABASE_URL"],
            BENCH_REDIS_URL=os.environ["BENCH_REDIS_URL"],
            **self.extra_env,
        )
        return command, env

    def wait_ready(self, names: list[str]) -> None:
        from rq import Worker

        redis = common.redis_client(REDIS_DB)
        common.wait_for(
            lambda: set(names) <= {worker.name for worker in Worker.all(connection=redis)},
            60,
            interval=0.1,
            what=f"{len(names)} worker(s) to register",
            alive=self.check,
        )

    def reset(self) -> None:
        reset()

    def warm_up(self) -> None:
        from .workflows import fanout_name

        run_once(fanout_name(10), self, 60)

    def fanout(self, size: int, variant: str) -> float:
        from .workflows import FANOUT_SIZES, fanout_name

        if size not in FANOUT_SIZES:
            raise BenchmarkError(f"no fan-out workflow of {size} branches (there are {FANOUT_SIZES})")
        reset()
        return run_once(fanout_name(size), self, self.timeout)

    def sequential(self, steps: int) -> float:
        from .workflows import SEQUENTIAL_STEPS

        if steps != SEQUENTIAL_STEPS:
            raise BenchmarkError(f"the sequential workflow has {SEQUENTIAL_STEPS} steps, not {steps}")
        reset()
        return run_once("bench_sequential", self, self.timeout)

    def throughput(self, runs: int) -> float:
        return run_many("bench_onboarding", runs, self, self.timeout)

    def latency(self) -> float:
        return run_once("bench_onboarding", self, self.timeout)

    def slow(self) -> Sample:
        from durable_django.models import ParallelGroup

        reset()
        run_id, started, finished = finish_one("bench_slow", self, self.timeout)
        joined = ParallelGroup.objects.filter(run_id=run_id).values_list("finished_at", flat=True).get()
        if joined is None:
            raise BenchmarkError("the slow block's group has no finished_at")
        return joined.timestamp() - started, {"run finished": finished - started}


# -- one run, many runs -------------------------------------------------------------------------


def run_once(
    workflow: str, pool: Peer | None, timeout: float, interval: float = 0.02, input: dict[str, Any] | None = None
) -> float:
    """Seconds from ``start_workflow`` until the run's stored ``finished_at``."""
    _, started, finished = finish_one(workflow, pool, timeout, interval, input)
    return finished - started


def finish_one(
    workflow: str, pool: Peer | None, timeout: float, interval: float = 0.02, input: dict[str, Any] | None = None
) -> tuple[Any, float, float]:
    """Start a run of ``workflow`` and wait for it: its id, when it was started and its stored ``finished_at``."""
    from durable_django import start_workflow
    from durable_django.models import RunStatus, WorkflowRun

    started = time.time()
    run = start_workflow(workflow, input or {})
    row = common.wait_for(
        lambda: (
            WorkflowRun.objects.filter(pk=run.pk, finished_at__isnull=False)
            .values("status", "finished_at", "error")
            .first()
        ),
        timeout,
        interval=interval,
        what=f"run of {workflow} to finish",
        alive=pool.check if pool else None,
    )
    finished_at = row["finished_at"]
    if row["status"] != RunStatus.COMPLETED or finished_at is None:
        raise BenchmarkError(f"run of {workflow} ended {row['status']}: {row['error']}")
    return run.pk, started, finished_at.timestamp()


def run_many(workflow: str, count: int, pool: Peer, timeout: float, *, reset_first: bool = True) -> float:
    """Start ``count`` runs at once; seconds from the first start until the last stored ``finished_at``."""
    from django.db.models import Max

    from durable_django import start_workflow
    from durable_django.models import RunStatus, WorkflowRun

    if reset_first:
        reset()
    started = time.time()
    for _ in range(count):
        start_workflow(workflow, {})
    runs = WorkflowRun.objects.filter(workflow=workflow, created_at__gte=datetime.fromtimestamp(started, UTC))
    common.wait_for(
        lambda: not runs.unfinished().exists(),
        timeout,
        interval=0.2,
        what=f"{count} runs of {workflow} to finish",
        alive=pool.check,
    )
    failed = runs.exclude(status=RunStatus.COMPLETED).count()
    if failed:
        raise BenchmarkError(f"{failed} of {count} runs of {workflow} did not complete")
    last = runs.aggregate(last=Max("finished_at"))["last"]
    return last.timestamp() - started


# -- the cost of a step and a branch ------------------------------------------------------------


class RedisMonitor:
    """Counts the commands the benchmark's Redis database receives, by name (``MONITOR``).

    ``INFO commandstats`` counts the whole server, other clients included; ``MONITOR`` names
    each command's database, so only this benchmark's traffic is counted.
    """

    def __init__(self, db: int) -> None:
        self.db = db
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> RedisMonitor:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def _watch(self) -> None:
        client = common.redis_client(self.db)
        with client.monitor() as monitor:
            self._ready.set()
            for command in monitor.listen():
                if self._stop.is_set():
                    break
                # Commands a Lua script runs are listed too, under the client "lua"; the script counts once.
                if int(command["db"]) == self.db and command.get("client_type") != "lua":
                    self.counts[command["command"].split(" ", 1)[0].strip('"').upper()] += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # MONITOR only wakes up on traffic: send one command to let the thread see the stop flag.
        common.redis_client(self.db).ping()
        if self._thread is not None:
            self._thread.join(5)


def commandstats_total() -> int:
    """Commands the whole Redis server has executed (``INFO commandstats``), every client included."""
    stats = common.redis_client(REDIS_DB).info("commandstats")
    return sum(int(value["calls"]) for value in stats.values())


@dataclass
class QueryLog:
    """Statements one process sent to the database, by their first keyword."""

    counts: Counter[str] = field(default_factory=Counter)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.counts[sql.lstrip().split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _status(run_id: Any) -> str:
    from durable_django.models import WorkflowRun

    return WorkflowRun.objects.filter(pk=run_id).values_list("status", flat=True).get()


def cost_in_process(workflows: list[str]) -> dict[str, dict[str, Any]]:
    """Execute one run of each workflow in this process with rq's SimpleWorker.

    Counts the statements Django sends (its query log), the transactions PostgreSQL commits
    (``pg_stat_database``: nothing else uses the benchmark database meanwhile, and closing the
    connection makes the backend publish its counters at once) and the Redis commands.
    """
    from django.db import connection
    from rq import SimpleWorker

    from durable_django import dispatch, start_workflow
    from durable_django.models import RunStatus

    measured: dict[str, dict[str, Any]] = {}
    queue = dispatch.get_queue(QUEUE)
    for workflow in workflows:
        reset()
        connection.close()
        before = common.settled_xact_commits(DATABASE, quiet_for=1.0)
        queries = QueryLog()
        stats_before = commandstats_total()
        with RedisMonitor(REDIS_DB) as monitor, connection.execute_wrapper(queries):
            run = start_workflow(workflow, {})
            SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")
        stats_after = commandstats_total()
        status = _status(run.pk)
        connection.close()
        after = common.settled_xact_commits(DATABASE, quiet_for=1.0)
        if status != RunStatus.COMPLETED:
            raise BenchmarkError(f"in-process run of {workflow} ended {status}")
        measured[workflow] = {
            # Opening the connection again and reading the status: two transactions that are not the run's.
            "transactions": after - before - 2,
            "statements": queries.total,
            "statements_by_kind": dict(queries.counts),
            "redis_commands": sum(monitor.counts.values()),
            "redis_commands_by_name": dict(monitor.counts),
            "redis_commandstats_delta": stats_after - stats_before,
        }
    return measured


def cost_with_workers(peer: DurablePeer, workflows: list[str]) -> dict[str, dict[str, Any]]:
    """Transactions and Redis commands of one run of each workflow, executed by ``peer``'s workers.

    The runner's own statements (emptying the tables, the start, the polls) run in autocommit, a
    transaction each: they are counted and taken off.
    """
    from django.db import connection

    measured: dict[str, dict[str, Any]] = {}
    connection.ensure_connection()
    before = common.settled_xact_commits(DATABASE)
    for workflow in workflows:
        own = QueryLog()
        with connection.execute_wrapper(own):
            reset()
            with RedisMonitor(REDIS_DB) as monitor:
                run_once(workflow, peer, peer.timeout, interval=0.2)
        after = common.settled_xact_commits(DATABASE)
        measured[workflow] = {
            "transactions": after - before - own.total,
            "redis_commands": sum(monitor.counts.values()),
            "redis_commands_by_name": dict(monitor.counts),
        }
        before = after
    return measured


def idle_transactions_per_minute(peer: DurablePeer, seconds: float = 30.0) -> float:
    """Transactions idle workers commit on their own (recovery sweeps), per minute."""
    from django.db import connection

    connection.close()
    before = common.settled_xact_commits(DATABASE)
    began = time.monotonic()
    time.sleep(seconds)
    after = common.settled_xact_commits(DATABASE)
    return (after - before) * 60 / (time.monotonic() - began)


def per_unit(small: dict[str, Any], large: dict[str, Any], units: int) -> dict[str, float]:
    """What one more step (or branch) costs: the difference between two runs, divided by the units between them."""
    keys = ("transactions", "statements", "redis_commands")
    return {key: (large[key] - small[key]) / units for key in keys if key in small and key in large}


def memory(peer: DurablePeer, checkpoints: list[int]) -> dict[str, Any]:
    """Resident memory of one worker after warm-up and after each cumulative number of small runs."""
    peer.start_workers(1)
    pid = peer.pids[0]
    try:
        rss = {"0": common.rss_kib(pid)}
        done = 0
        for total in checkpoints:
            run_many("bench_single", total - done, peer, peer.timeout, reset_first=False)
            done = total
            rss[str(total)] = common.rss_kib(pid)
    finally:
        peer.stop_workers()
    return {"rss_kib": rss}


# -- foreach ------------------------------------------------------------------------------------


def _peak(run_id: Any) -> int:
    """How many items of the run's foreach block executed at the same moment, at most (from the rows)."""
    from durable_django.models import StepResult

    edges: list[tuple[float, int]] = []
    for started, finished in StepResult.objects.filter(run_id=run_id, item_index__isnull=False).values_list(
        "started_at", "finished_at"
    ):
        if started is not None and finished is not None:
            edges += [(started.timestamp(), 1), (finished.timestamp(), -1)]
    now = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        now += step
        peak = max(peak, now)
    return peak


def foreach_figures(
    peer: DurablePeer,
    sizes: list[int],
    repetitions: int,
    workers: int = 2,
    limited: tuple[int, int, float] = (4, 40, 0.1),
) -> dict[str, Any]:
    """A foreach over N items next to a static block of N branches (``workers`` processes), and
    slow items under max_concurrency (``limited``: workers, items, seconds per item)."""
    from .workflows import FANOUT_SIZES, FOREACH_LIMITS, fanout_name

    out: dict[str, Any] = {"fan-out": {}, "max_concurrency": {}}
    peer.start_workers(workers)
    try:
        for size in sizes:
            if size not in FANOUT_SIZES:
                continue
            static, dynamic = [], []
            for _ in range(repetitions):
                reset()
                static.append(run_once(fanout_name(size), peer, peer.timeout))
                reset()
                dynamic.append(run_once("bench_foreach", peer, peer.timeout, input={"n": size}))
            out["fan-out"][str(size)] = {
                "workers": workers,
                "static_seconds": sorted(static),
                "foreach_seconds": sorted(dynamic),
                "ratio": statistics.median(dynamic) / statistics.median(static),
            }
    finally:
        peer.stop_workers()
    count, items, seconds = limited
    peer.start_workers(count)
    try:
        for limit in FOREACH_LIMITS:
            elapsed, peaks = [], []
            for _ in range(repetitions):
                reset()
                run_id, started, finished = finish_one(
                    f"bench_foreach_limit_{limit}", peer, peer.timeout, input={"n": items, "seconds": seconds}
                )
                elapsed.append(finished - started)
                peaks.append(_peak(run_id))
            out["max_concurrency"][str(limit)] = {
                "workers": count,
                "items": items,
                "item_seconds": seconds,
                "ideal_seconds": items * seconds / min(limit, count),
                "seconds": sorted(elapsed),
                "peak": max(peaks),
            }
    finally:
        peer.stop_workers()
    return out
