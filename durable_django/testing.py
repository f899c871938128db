"""An embedded queue: RQ on fakeredis with an in-process worker, for demos and tests.

No Redis server is needed::

    from durable_django.testing import EmbeddedQueue

    with EmbeddedQueue() as queue:
        run = start_workflow("onboard_user", {"email": "ada@example.com"})
        queue.run_until_idle()
        run.refresh_from_db()

Jobs go through real RQ code paths (serialization, enqueue, scheduled jobs for retry backoff);
only the Redis server is replaced. Requires ``fakeredis`` (the ``embedded`` extra).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import connections
from rq import SimpleWorker

from . import dispatch


class EmbeddedQueue:
    """Route durable_django's queues to an in-memory Redis and execute their jobs in this process."""

    def __init__(self, queues: list[str] | None = None, connection: Any = None) -> None:
        if connection is None:
            import fakeredis

            connection = fakeredis.FakeStrictRedis()
        self.connection = connection
        self._queue_names = queues

    @property
    def queue_names(self) -> list[str]:
        return self._queue_names or list(getattr(settings, "RQ_QUEUES", {}) or ["default"])

    def __enter__(self) -> EmbeddedQueue:
        dispatch.use_connection(self.connection)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        dispatch.use_connection(None)

    def queues(self) -> list[Any]:
        return [dispatch.get_queue(name) for name in self.queue_names]

    def pending_jobs(self) -> int:
        """Jobs waiting in the queues now (scheduled ones not counted)."""
        return sum(queue.count for queue in self.queues())

    def next_scheduled_in(self) -> float | None:
        """Seconds until the earliest scheduled job (a retry's backoff) is due, or ``None``."""
        soonest = None
        for queue in self.queues():
            registry = queue.scheduled_job_registry
            for _, score in queue.connection.zrange(registry.key, 0, 0, withscores=True):
                soonest = score if soonest is None else min(soonest, score)
        return None if soonest is None else max(0.0, soonest - time.time())

    @staticmethod
    def run_commit_hooks() -> int:
        """Run the on-commit callbacks waiting in an open transaction, as its commit would.

        Jobs are sent only when the transaction that wrote their state commits. Inside a test
        wrapped in a transaction that never commits (pytest-django's ``django_db``, ``TestCase``),
        this stands in for the commit, so runs can be driven without ``transaction=True``.
        """
        ran = 0
        for connection in connections.all(initialized_only=True):
            while connection.in_atomic_block and connection.run_on_commit:
                callbacks, connection.run_on_commit = connection.run_on_commit, []
                for entry in callbacks:  # (savepoint ids, callback, robust)
                    entry[1]()
                    ran += 1
        return ran

    def enqueue_due_jobs(self) -> int:
        """Move scheduled jobs whose time has come onto their queue, as RQ's scheduler does."""
        moved = 0
        for queue in self.queues():
            registry = queue.scheduled_job_registry
            for job_id in registry.get_jobs_to_schedule(int(time.time())):
                registry.remove(job_id)
                job = queue.fetch_job(job_id)
                if job is not None:
                    queue.enqueue_job(job)
                    moved += 1
        return moved

    def run_queued(self) -> None:
        """Execute the jobs queued now (and those they queue), leaving scheduled ones for later."""
        worker = _EmbeddedWorker(self.queues(), connection=self.connection)
        worker.work(burst=True, logging_level="WARNING")

    def run_until_idle(self, timeout: float = 60.0) -> int:
        """Execute jobs, including retries once their backoff is due, until nothing is left.

        Returns how many worker passes it took. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        passes = 0
        while True:
            self.run_commit_hooks()
            self.enqueue_due_jobs()
            self.run_queued()
            passes += 1
            if self.pending_jobs() or self.run_commit_hooks():
                continue
            wait = self.next_scheduled_in()
            if wait is None:
                return passes
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"jobs still scheduled after {timeout} s")
            time.sleep(min(wait + 0.01, 1.0))


class _EmbeddedWorker(SimpleWorker):
    """A SimpleWorker that, after each job, stands in for the commit of an enclosing test transaction."""

    def execute_job(self, job: Any, queue: Any) -> None:
        super().execute_job(job, queue)
        EmbeddedQueue.run_commit_hooks()
