"""Helpers of the integration tests: polling with a deadline and a pool of real rqworker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, *, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``AssertionError`` naming ``what`` (or the predicate) once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate.__name__}")
        time.sleep(interval)


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``postgres://`` URL of the database described by a Django ``DATABASES`` entry."""
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = settings_dict.get("PASSWORD")
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (rq's work horses and scheduler), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields we want follow the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class WorkerProcess:
    """One ``rqworker`` process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    with_scheduler: bool

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerPool:
    """``rqworker`` processes on the test database and the test's Redis database.

    Started with :meth:`start`; :meth:`stop` always takes them down (SIGTERM for a warm shutdown,
    then SIGKILL for them and their children after a timeout).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, connection: Redis, queue: str = "default") -> None:
        self.env = env
        self.log_dir = log_dir
        self.connection = connection
        self.queue = Queue(queue, connection=connection)
        self.workers: list[WorkerProcess] = []
        self.problems: list[str] = []

    @property
    def pids(self) -> set[int]:
        return {worker.pid for worker in self.workers}

    def start(self, count: int, *, with_scheduler: bool = True, timeout: float = 60.0) -> list[WorkerProcess]:
        """Start ``count`` more workers and wait until each has registered itself in Redis."""
        started = []
        for _ in range(count):
            number = len(self.workers) + 1
            name = f"durable-it-{os.getpid()}-{number}"
            log_path = self.log_dir / f"worker-{number}.log"
            log_file = log_path.open("wb")
            command = [sys.executable, "-m", "django", "rqworker", self.queue.name, "--name", name]
            if with_scheduler:
                command.append("--with-scheduler")
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            worker = WorkerProcess(name, process, log_path, log_file, with_scheduler)
            self.workers.append(worker)
            started.append(worker)

        def registered() -> bool:
            for worker in started:
                if worker.process.poll() is not None:
                    raise AssertionError(f"worker {worker.name} exited with {worker.process.returncode} on startup")
            names = {worker.name for worker in Worker.all(connection=self.connection)}
            return all(worker.name in names for worker in started)

        wait_for(registered, timeout, what=f"{count} rq worker(s) to register")
        return started

    def quiet(self) -> bool:
        """Whether no job is queued, being handed to a worker, executing or scheduled.

        A job always sits in one of these Redis structures until it has finished (rq moves it
        between them atomically), so a quiet pool has no work left that could still change a row.
        """
        queue = self.queue
        return (
            queue.count == 0
            and self.connection.llen(queue.intermediate_queue_key) == 0
            and StartedJobRegistry(queue=queue).count == 0
            and ScheduledJobRegistry(queue=queue).count == 0
        )

    def wait_until_quiet(self, timeout: float = 60.0) -> None:
        """Wait until every job sent so far (and every job those sent) has been executed."""
        wait_for(self.quiet, timeout, what="the rq queue to drain")

    def failed_jobs(self) -> list[str]:
        """Jobs that crashed the engine (a failing step is not a failed job)."""
        registry = FailedJobRegistry(queue=self.queue)
        failed = []
        for job_id in registry.get_job_ids():
            job = self.queue.fetch_job(job_id)
            failed.append(f"{job_id}: {job.description if job else '?'}\n{job.exc_info if job else ''}")
        return failed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker: SIGTERM, then SIGKILL (with its children) once ``timeout`` has passed."""
        for worker in self.workers:
            if worker.process.poll() is not None:
                self.problems.append(
                    f"worker {worker.name} died during the test (exit code {worker.process.returncode})"
                )
            else:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.problems.append(f"worker {worker.name} ignored SIGTERM for {timeout:g} s; killed it")
                # Work horses put themselves in their own process group: kill them one by one.
                for pid in [*_descendants(worker.pid), worker.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                worker.process.wait()
            finally:
                worker.log_file.close()

    def output(self) -> str:
        """Everything the workers printed, one section per worker."""
        sections = []
        for worker in self.workers:
            code = worker.process.poll()
            status = "running" if code is None else f"exit code {code}"
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            sections.append(f"----- {worker.name} (pid {worker.pid}, {status}) -----\n{text}")
        return "\n".join(sections + self.problems)
