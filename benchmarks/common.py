"""What every peer's benchmark shares: results, worker processes, polling with a deadline, servers.

Worker processes run in a session of their own so that stopping one also stops what it forked
(rq's work horses, Celery's children); every process started here is stopped when the runner
exits, however it exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from redis import Redis

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("BENCH_REDIS_SERVER", "redis://127.0.0.1:6379")
# How often an idle DBOS worker looks for queued work (DBOS's default is 1 s), and how many
# workflows of a queue one worker runs at once (threads; DBOS's default is no limit). Here rather
# than in ``dbos_peer`` so that the report can name them without the ``dbos`` package installed.
DBOS_POLLING_INTERVAL = float(os.environ.get("BENCH_DBOS_POLLING_INTERVAL", "0.1"))
DBOS_WORKER_CONCURRENCY = int(os.environ.get("BENCH_DBOS_CONCURRENCY", "10"))
# The slow branches: how many, and how long each sleeps (the same for every system).
SLOW_BRANCHES = 3
SLOW_SECONDS = 1.0

T = TypeVar("T")
#: What one repetition of a measurement returns: its value, or its value and other named figures.
Sample = float | tuple[float, dict[str, float]]


class BenchmarkError(Exception):
    """A measurement could not be taken; its message goes into the table."""


# -- results ------------------------------------------------------------------------------------


@dataclass
class Result:
    """One measurement: its repetitions, or why there are none."""

    scenario: str
    system: str
    params: dict[str, Any]
    unit: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def p90(self) -> float | None:
        return percentile(self.samples, 90)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median": self.median, "p90": self.p90}


def percentile(values: Sequence[float], pct: int) -> float | None:
    """The ``pct``-th percentile of ``values`` (linear interpolation between the closest ranks)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def measure(
    scenario: str,
    system: str,
    params: dict[str, Any],
    unit: str,
    repetitions: int,
    once: Callable[[], Sample],
    *,
    log: Callable[[str], None] = print,
    each: bool = True,
) -> Result:
    """Call ``once`` ``repetitions`` times; the first failure ends the measurement as an error.

    The named figures a repetition may return besides its value are kept in ``extra``, a list per
    name. ``each=False`` logs a summary at the end instead of every value.
    """
    result = Result(scenario, system, params, unit)
    label = f"{scenario} {system} {params}"
    for number in range(1, repetitions + 1):
        try:
            sample = once()
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log(f"  {label}: repetition {number} failed: {result.error}")
            break
        value, others = sample if isinstance(sample, tuple) else (sample, {})
        result.samples.append(value)
        for name, figure in others.items():
            result.extra.setdefault(name, []).append(figure)
        if each:
            also = "".join(f", {name} {figure:.3f} {unit}" for name, figure in others.items())
            log(f"  {label}: {value:.3f} {unit}{also}")
    if not each and result.samples:
        log(f"  {label}: median {result.median:.3f} {unit}, p90 {result.p90:.3f} {unit} of {len(result.samples)}")
    return result


# -- processes ----------------------------------------------------------------------------------

_running: list[subprocess.Popen[bytes]] = []


def _stop_all() -> None:
    for process in list(_running):
        stop_process(process, timeout=5)


def _on_signal(signum: int, frame: Any) -> None:
    _stop_all()
    # Leave with the conventional status of the signal, after the workers are gone.
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Stop every process started here when the runner exits, is interrupted or terminated."""
    atexit.register(_stop_all)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process: the repository importable, output unbuffered."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def start_process(command: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, its output in ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file: IO[bytes] = log_path.open("ab")
    process = subprocess.Popen(
        list(command),
        cwd=REPO_ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    _running.append(process)
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process's session (a warm shutdown), SIGKILL it when that takes too long."""
    if process in _running:
        _running.remove(process)
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a worker's log, to explain why it died."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def check_alive(processes: Sequence[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Raise :class:`BenchmarkError` when a worker has exited."""
    for process, log_path in processes:
        if process.poll() is not None:
            raise BenchmarkError(f"worker exited with status {process.returncode}: {tail(log_path)}")


class Peer:
    """One system under measurement: its worker processes and its scenarios.

    Subclasses say how a worker is started (:meth:`worker_command`), how to empty their state
    (:meth:`reset`) and implement the scenarios they take part in; a scenario returns seconds.
    """

    label = ""
    #: Fan-out variants: label in the table -> key passed to :meth:`fanout`.
    fanout_variants: dict[str, str] = {}
    #: The scenarios this peer takes part in.
    scenarios: frozenset[str] = frozenset({"fanout", "sequential", "throughput"})
    #: Scenarios whose N worker processes are one worker with a pool of N processes (Celery's prefork).
    pooled: frozenset[str] = frozenset()

    def __init__(self, log_dir: Path, timeout: float) -> None:
        self.log_dir = log_dir
        self.timeout = timeout
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def setup(self) -> None:
        """Create what the peer needs once (databases, schemas)."""

    def reset(self) -> None:
        """Forget every earlier run, so each measurement starts from empty queues and tables."""

    def worker_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def wait_ready(self, names: list[str]) -> None:
        """Return once the workers just started take work (a warm-up does that by default)."""

    def warm_up(self) -> None:
        """Run a small piece of work end to end, so every worker has imported and connected everything."""

    def start_workers(self, count: int, *, pooled: bool = False) -> None:
        """Replace the running workers by ``count`` fresh ones, ready and warmed up.

        ``pooled`` asks for one worker with a pool of ``count`` processes instead, where the peer
        has such a worker (see :attr:`pooled`); the others ignore it.
        """
        self.stop_workers()
        self.reset()
        names = []
        for number in range(1, count + 1):
            name = f"bench-{self.slug}-{os.getpid()}-{number}"
            command, env = self.worker_command(name)
            log_path = self.log_dir / f"{name}.log"
            self.workers.append((start_process(command, log_path, env), log_path))
            names.append(name)
        self.wait_ready(names)
        self.warm_up()

    def stop_workers(self) -> None:
        for process, _ in self.workers:
            stop_process(process)
        self.workers.clear()

    def check(self) -> None:
        """Raise :class:`BenchmarkError` when a worker has died."""
        check_alive(self.workers)

    @property
    def slug(self) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in self.label.lower()).strip("-")

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.workers]

    def stuck(self) -> str | None:
        """Why the work sent can no longer move on by itself, or ``None`` while it still can."""
        return None

    def fanout(self, size: int, variant: str) -> float:
        raise NotImplementedError

    def sequential(self, steps: int) -> float:
        raise NotImplementedError

    def throughput(self, runs: int) -> float:
        """Seconds from the first start until the last of ``runs`` onboarding-shaped runs finished."""
        raise NotImplementedError

    def latency(self) -> float:
        """Seconds from the start of one onboarding-shaped run, on idle workers, until it finished."""
        raise NotImplementedError

    def slow(self) -> Sample:
        """A block of three branches sleeping 1 s each, then a step.

        Seconds from the start until the block was joined, and ``{"run finished": seconds}``.
        """
        raise NotImplementedError


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB, read from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.02,
    what: str,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; :class:`BenchmarkError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            raise BenchmarkError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# -- servers ------------------------------------------------------------------------------------


def redis_url(db: int) -> str:
    return f"{REDIS_SERVER.rstrip('/')}/{db}"


def redis_client(db: int) -> Redis:
    return Redis.from_url(redis_url(db))


def database_url(name: str) -> str:
    """The URL of database ``name`` on the benchmark server (``BENCH_POSTGRES_URL`` names its maintenance db)."""
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def postgres(dbname: str = "") -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``dbname`` (the maintenance database by default)."""
    url = database_url(dbname) if dbname else POSTGRES_URL
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def create_database(name: str, *, drop: bool = False) -> None:
    """Create database ``name`` if missing (dropped first with ``drop``)."""
    with postgres() as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def xact_commits(dbname: str) -> int:
    """Committed transactions of ``dbname`` so far (``pg_stat_database``), read from another database."""
    with postgres() as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [dbname]).fetchone()
    return int(row[0]) if row else 0


def settled_xact_commits(dbname: str, quiet_for: float = 11.0, timeout: float = 40.0) -> int:
    """``xact_commits`` once it stops moving.

    A PostgreSQL backend that stays connected publishes its counters when idle, up to 10 s late
    (one that disconnects, at once): wait ``quiet_for`` seconds, then until two reads 1 s apart agree.
    """
    start = time.monotonic()
    time.sleep(quiet_for)
    previous = xact_commits(dbname)
    while True:
        time.sleep(1.0)
        current = xact_commits(dbname)
        if current == previous or time.monotonic() - start > timeout:
            return current
        previous = current


def server_versions() -> dict[str, str]:
    """PostgreSQL and Redis server versions, and the settings that decide durability."""
    with postgres() as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    info = Redis.from_url(REDIS_SERVER).info("server")
    return {
        "postgresql": str(pg[0]) if pg else "?",
        "fsync": str(fsync[0]) if fsync else "?",
        "synchronous_commit": str(sync_commit[0]) if sync_commit else "?",
        "pg_stat_statements": "yes" if preload and "pg_stat_statements" in str(preload[0]) else "no",
        "redis": str(info.get("redis_version", "?")),
        "python": sys.version.split()[0],
    }


# -- finishing times recorded by join tasks -----------------------------------------------------

DONE_KEY = "bench:done"


def record_done(redis: Redis, token: str) -> None:
    """Called inside a peer's last task: store when it ran, under ``token``."""
    redis.hset(DONE_KEY, token, repr(time.time()))


def wait_done(redis: Redis, tokens: Sequence[str], timeout: float, peer: Peer, interval: float = 0.02) -> float:
    """Wait until every token has a finishing time; return the latest one.

    A peer whose ``stuck()`` describes work that can no longer move, for 30 s in a row, fails the
    measurement at once instead of waiting for the timeout.
    """
    count = len(tokens)
    stuck_since: list[float] = []

    def alive() -> None:
        peer.check()
        reason = peer.stuck()
        if reason is None:
            stuck_since.clear()
        elif not stuck_since:
            stuck_since.append(time.monotonic())
        elif time.monotonic() - stuck_since[0] > 30:
            done = redis.hlen(DONE_KEY)
            raise BenchmarkError(f"stalled with {done} of {count} joins run: {reason}")

    wait_for(
        lambda: redis.hlen(DONE_KEY) >= count,
        timeout,
        interval=interval if count == 1 else max(interval, 0.2),
        what=f"{count} join(s) to record their finishing time",
        alive=alive,
    )
    values = redis.hmget(DONE_KEY, list(tokens))
    if any(value is None for value in values):
        raise BenchmarkError("a join recorded a finishing time under an unexpected token")
    return max(float(value) for value in values if value is not None)


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))
