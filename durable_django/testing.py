"""An embedded queue: RQ on fakeredis with an in-process worker, for demos and tests.

No Redis server is needed::

    from durable_django.testing import EmbeddedQueue

    with EmbeddedQueue() as queue:
        run = start_workflow("onboard_user", {"email": "ada@example.com"})
        queue.run_until_idle()
        run.refresh_from_db()

Jobs go through real RQ code paths (serialization, enqueue, scheduled jobs for retry backoff);
only the Redis server is replaced. Requires ``fakeredis`` (the ``embedded`` extra).

Runs that wait (a sleep, an event, an input) do not keep :meth:`EmbeddedQueue.run_until_idle`
busy: it returns with them ``waiting``. Send the event or answer the input, then call
:meth:`EmbeddedQueue.run_until_idle` again; :func:`make_due` ends a sleep or timeout now, and
:meth:`EmbeddedQueue.run_due` executes what is due without waiting for anything.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import connections
from rq import SimpleWorker

from . import dispatch, timer_jobs


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

    def next_scheduled_in(self, *, include_waits: bool = True) -> float | None:
        """Seconds until the earliest scheduled job (a retry's backoff, a wait's wake-up) is due, or ``None``.

        ``include_waits=False`` leaves out the wake-up jobs of sleeps and timeouts, and the jobs
        that fail a run at its workflow's timeout.
        """
        skipped = (dispatch.WAKE_PREFIX, timer_jobs.TIMEOUT_PREFIX)
        soonest = None
        for queue in self.queues():
            registry = queue.scheduled_job_registry
            for job_id, score in queue.connection.zrange(registry.key, 0, -1, withscores=True):
                if not include_waits and _text(job_id).startswith(skipped):
                    continue
                soonest = score if soonest is None else min(soonest, score)
                break
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

    def run_due(self) -> int:
        """Execute every job that is due now (wake-ups of waits included) and what they queue; no sleeping.

        Returns how many worker passes it took.
        """
        passes = 0
        while True:
            self.run_commit_hooks()
            self.enqueue_due_jobs()
            self.run_queued()
            passes += 1
            if not (self.pending_jobs() or self.run_commit_hooks()):
                return passes

    def run_until_idle(self, timeout: float = 60.0, *, include_waits: bool = False) -> int:
        """Execute jobs, including retries once their backoff is due, until nothing is left.

        Runs that wait return ``waiting``: the wake-up jobs of their sleeps and timeouts are left
        scheduled, unless ``include_waits`` (then it also sleeps until those are due and runs them).
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
            wait = self.next_scheduled_in(include_waits=include_waits)
            if wait is None:
                return passes
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"jobs still scheduled after {timeout} s")
            time.sleep(min(wait + 0.01, 1.0))


def make_due(wait: Any) -> None:
    """Make ``wait`` (a :class:`~durable_django.models.Wait` or its id) due now: its sleep ends, or
    its timeout passes, at the next :meth:`EmbeddedQueue.run_due` (or worker pass)."""
    from django.utils import timezone

    from .conf import durable_settings
    from .models import Wait

    pk = wait.pk if isinstance(wait, Wait) else wait
    row = Wait.objects.get(pk=pk)
    Wait.objects.filter(pk=pk).update(due_at=timezone.now())
    dispatch.withdraw([(durable_settings.QUEUE, dispatch.wake_job_id(pk))])
    dispatch.send([dispatch.wake_wait_job(pk, row.run_id, durable_settings.QUEUE, 0.0)])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _EmbeddedWorker(SimpleWorker):
    """A SimpleWorker that, after each job, stands in for the commit of an enclosing test transaction."""

    def execute_job(self, job: Any, queue: Any) -> None:
        super().execute_job(job, queue)
        EmbeddedQueue.run_commit_hooks()
