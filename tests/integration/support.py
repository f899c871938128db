"""Helpers of the integration tests: polling with a deadline and a pool of real worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from durable_django.models import WorkflowRun

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


def _gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (and is not a zombie)."""
    return not _gone(pid)


def lease_pid(lease_owner: str) -> int:
    """The pid in a ``lease_owner`` (``host:pid:token``): the process that executes the leased work."""
    return int(lease_owner.rsplit(":", 2)[1])


def settled_batch(
    run_id: Any, lease_owner: str, field: str = "step", quiet: float = 0.5, timeout: float = 10.0
) -> set[Any]:
    """The branch rows of run ``run_id`` that ``lease_owner`` holds once that stopped changing (``field``
    of each): a batch whose branch blocks gives the branches it has not started back to other workers
    (the overrun watchdog, shortly after the batch began), so what it holds settles only then."""
    from durable_django.models import StepResult

    def held() -> set[Any]:
        rows = StepResult.objects.filter(run_id=run_id, lease_owner=lease_owner, group__isnull=False)
        return set(rows.values_list(field, flat=True))

    deadline = time.monotonic() + timeout
    last, since = held(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = held()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"the batch of {lease_owner} kept changing for {timeout:g} s")


@dataclass
class WorkerProcess:
    """One ``rqworker`` process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    with_scheduler: bool
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerPool:
    """``rqworker`` processes on the test database and the test's Redis database.

    Started with :meth:`start`; :meth:`stop` always takes them down (SIGTERM for a warm shutdown,
    then SIGKILL for them and their children after a timeout).
    """

    def __init__(
        self, env: dict[str, str], log_dir: Path, connection: Redis, queues: tuple[str, ...] = ("default", "priority")
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.connection = connection
        # Workers listen on every queue the tests' workflows use, the first one foremost.
        self.queues = [Queue(name, connection=connection) for name in queues]
        self.queue = self.queues[0]
        self.workers: list[WorkerProcess] = []
        self.problems: list[str] = []

    @property
    def pids(self) -> set[int]:
        return {worker.pid for worker in self.workers}

    def start(
        self,
        count: int,
        *,
        with_scheduler: bool = True,
        env: Mapping[str, str] | None = None,
        worker_class: str | None = None,
        command: str = "durable_worker",
        timeout: float = 60.0,
    ) -> list[WorkerProcess]:
        """Start ``count`` more workers and wait until each has registered itself in Redis.

        ``command`` is the management command: ``durable_worker`` (the one the docs tell users to
        run, executing jobs in its own process) or django-rq's ``rqworker``, whose default worker
        class forks a work horse per job. ``env`` adds variables to the pool's environment;
        ``worker_class`` is rq's ``--worker-class``.
        """
        started = []
        for _ in range(count):
            number = len(self.workers) + 1
            name = f"durable-it-{os.getpid()}-{number}"
            log_path = self.log_dir / f"worker-{number}.log"
            log_file = log_path.open("wb")
            argv = [sys.executable, "-m", "django", command, *(queue.name for queue in self.queues), "--name", name]
            if command == "durable_worker" and not with_scheduler:
                argv.append("--without-scheduler")
            elif command != "durable_worker" and with_scheduler:
                argv.append("--with-scheduler")
            if worker_class:
                argv.extend(["--worker-class", worker_class])
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env={**self.env, **(env or {})},
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

    def worker_of(self, pid: int) -> WorkerProcess:
        """The live worker that is process ``pid`` or runs it (a work horse executing a job)."""
        for worker in self.workers:
            if not worker.killed and (worker.pid == pid or pid in _descendants(worker.pid)):
                return worker
        raise LookupError(f"no worker of this pool runs process {pid}")

    def kill(self, worker: WorkerProcess, sig: signal.Signals = signal.SIGKILL) -> datetime:
        """Kill ``worker`` and every process below it at once, as when its machine dies; returns when.

        Then do what a supervisor of that machine would: take the worker and the job it was executing
        out of RQ's registries (RQ itself notices only after its own timeouts of minutes), so that
        :meth:`quiet` tells when the remaining work is done. The database is left as the kill left it.
        """
        rq_worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker.name, connection=self.connection)
        job_id = rq_worker.get_current_job_id() if rq_worker is not None else None
        # Collected first: once the worker is dead, its children belong to init.
        victims = [worker.pid, *_descendants(worker.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        killed_at = datetime.now(UTC)
        worker.killed = True
        worker.process.wait()
        wait_for(lambda: all(map(_gone, victims)), 10, what=f"the processes of worker {worker.name} to die")
        if rq_worker is not None:
            rq_worker.register_death()
        for queue in self.queues if job_id else []:
            started = StartedJobRegistry(queue=queue)
            entries = [
                entry for entry in self.connection.zrange(started.key, 0, -1) if started.parse_job_id(entry) == job_id
            ]
            if entries:
                self.connection.zrem(started.key, *entries)
        return killed_at

    def exited(self, worker: WorkerProcess, timeout: float = 30.0) -> int:
        """Wait until ``worker``, which the test told to stop, has exited; returns its exit code."""
        code = worker.process.wait(timeout)
        # Ended by the test: not a worker that died on its own.
        worker.killed = True
        return code

    def quiet(self) -> bool:
        """Whether no job is queued, being handed to a worker, executing or scheduled.

        A job always sits in one of these Redis structures until it has finished (rq moves it
        between them atomically), so a quiet pool has no work left that could still change a row.
        An id handed to a worker after its job was deleted (a job id enqueued twice, the first copy
        done) stays in the hand-over list without being work: rq drops it at its next maintenance.
        """
        for queue in self.queues:
            handed_over = self.connection.lrange(queue.intermediate_queue_key, 0, -1)
            if (
                queue.count
                or any(Job.exists(job_id.decode(), connection=self.connection) for job_id in handed_over)
                or StartedJobRegistry(queue=queue).count
                or ScheduledJobRegistry(queue=queue).count
            ):
                return False
        return True

    def wait_until_quiet(self, timeout: float = 60.0) -> None:
        """Wait until every job sent so far (and every job those sent) has been executed."""
        wait_for(self.quiet, timeout, what="the rq queue to drain")

    def finish(self, run: WorkflowRun, timeout: float = 60.0) -> WorkflowRun:
        """Wait until ``run`` has finished and the pool is quiet; ``run``, refreshed from the database.

        Finished is any final status (completed, failed or cancelled): the caller asserts which.
        """
        wait_for(lambda: WorkflowRun.objects.filter(pk=run.pk).finished().exists(), timeout, what="the run to finish")
        self.wait_until_quiet()
        run.refresh_from_db()
        return run

    def finish_all(self, runs: Iterable[Any], timeout: float = 60.0) -> None:
        """Wait until every run of ``runs`` (runs or their ids) has finished and the pool is quiet."""
        ids = {getattr(run, "pk", run) for run in runs}
        wait_for(
            lambda: WorkflowRun.objects.filter(pk__in=ids).finished().count() == len(ids),
            timeout,
            what=f"{len(ids)} runs to finish",
        )
        self.wait_until_quiet()

    def failed_jobs(self) -> list[str]:
        """Jobs that crashed the engine (a failing step is not a failed job)."""
        failed = []
        for queue in self.queues:
            for job_id in FailedJobRegistry(queue=queue).get_job_ids():
                job = queue.fetch_job(job_id)
                failed.append(f"{job_id}: {job.description if job else '?'}\n{job.exc_info if job else ''}")
        return failed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker: SIGTERM, then SIGKILL (with its children) once ``timeout`` has passed."""
        for worker in self.workers:
            if worker.killed:
                continue
            if worker.process.poll() is not None:
                self.problems.append(
                    f"worker {worker.name} died during the test (exit code {worker.process.returncode})"
                )
            else:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.killed:
                worker.log_file.close()
                continue
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
            status = (
                "running" if code is None else f"killed by the test ({code})" if worker.killed else f"exit code {code}"
            )
            text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
            sections.append(f"----- {worker.name} (pid {worker.pid}, {status}) -----\n{text}")
        return "\n".join(sections + self.problems)
