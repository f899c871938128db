"""The only module that talks to RQ.

The engine describes work as :class:`Job` values; :func:`submit` sends them once the
surrounding transaction commits, every immediate job of one commit in one Redis round trip.
Jobs carry ids only, never pickled callables: the database holds everything else.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from rq import Queue

from .conf import durable_settings

logger = logging.getLogger("durable_django.dispatch")

# Entry points the workers import; see durable_django.jobs.
RUN = "durable_django.jobs.run_workflow"
BRANCH = "durable_django.jobs.run_branch"
JOIN = "durable_django.jobs.join_group"
DRAIN = "durable_django.jobs.run_branches"


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work for a worker: an entry point, its id arguments, a queue and an optional delay."""

    func: str
    args: tuple[Any, ...]
    queue: str
    run_id: Any
    delay: float = 0.0
    job_id: str = field(default_factory=new_job_id)


# -- connections --------------------------------------------------------------------------------

_connection_override: Any = None
_queues: dict[str, Queue] = {}


def _clear_queue_cache(**kwargs: Any) -> None:
    if kwargs.get("setting") in (None, "RQ_QUEUES", "RQ"):
        _queues.clear()


setting_changed.connect(_clear_queue_cache, dispatch_uid="durable_django.dispatch.clear_queue_cache")


def use_connection(connection: Any) -> None:
    """Route every queue through ``connection`` (a Redis client) instead of ``RQ_QUEUES``'s.

    Used by :mod:`durable_django.testing` for the embedded, server-less queue; ``None`` restores
    the configured connections.
    """
    global _connection_override
    _connection_override = connection
    _queues.clear()


def get_queue(name: str) -> Queue:
    """The django-rq queue ``name``, cached so that one process keeps one Redis connection pool."""
    queue = _queues.get(name)
    if queue is None:
        import django_rq

        if _connection_override is not None:
            queue = django_rq.get_queue(name, connection=_connection_override)
        else:
            queue = django_rq.get_queue(name)
        _queues[name] = queue
    return queue


def current_job_id() -> str:
    """Id of the RQ job executing in this process, or ``""`` outside a worker."""
    from rq import get_current_job

    job = get_current_job()
    return job.id if job is not None else ""


# -- inline execution (child workflows) ----------------------------------------------------------


@dataclass
class InlineSink:
    """Collects the jobs of the runs in ``run_ids`` so that they execute in this process."""

    run_ids: set[Any]
    jobs: deque[Job] = field(default_factory=deque)


_inline: contextvars.ContextVar[InlineSink | None] = contextvars.ContextVar("durable_inline", default=None)


@contextmanager
def inline(run_id: Any) -> Iterator[InlineSink]:
    """Execute the jobs of run ``run_id`` in this process instead of sending them to RQ."""
    sink = InlineSink({run_id})
    token = _inline.set(sink)
    try:
        yield sink
    finally:
        _inline.reset(token)


# -- sending ----------------------------------------------------------------------------------


def submit(*jobs: Job) -> None:
    """Send ``jobs`` once the current transaction commits (at once outside a transaction)."""
    if not jobs:
        return
    sink = _inline.get()
    if sink is not None:
        kept = [job for job in jobs if job.run_id in sink.run_ids]
        sink.jobs.extend(kept)
        jobs = tuple(job for job in jobs if job.run_id not in sink.run_ids)
        if not jobs:
            return
    transaction.on_commit(lambda: send(jobs), robust=False)


# Called with every batch of jobs just before it is enqueued (after its transaction committed).
# A seam for fault-injection tests, which stop a process exactly between commit and enqueue.
before_send: list[Callable[[list[Job]], None]] = []


def send(jobs: Iterable[Job]) -> None:
    """Enqueue ``jobs`` now: immediate ones in one pipeline, delayed ones in RQ's scheduled registry."""
    jobs = list(jobs)
    for hook in before_send:
        hook(jobs)
    immediate: dict[str, list[Job]] = {}
    delayed: list[Job] = []
    for job in jobs:
        (delayed if job.delay > 0 else immediate.setdefault(job.queue, [])).append(job)
    timeout = durable_settings.JOB_TIMEOUT
    result_ttl = durable_settings.RESULT_TTL
    failure_ttl = durable_settings.FAILURE_TTL
    for name, batch in immediate.items():
        # enqueue_many writes a whole batch in one pipeline: one round trip per queue.
        get_queue(name).enqueue_many(
            [
                Queue.prepare_data(
                    job.func,
                    args=job.args,
                    timeout=timeout,
                    result_ttl=result_ttl,
                    failure_ttl=failure_ttl,
                    job_id=job.job_id,
                    description=_describe(job),
                )
                for job in batch
            ]
        )
    for job in delayed:
        # RQ's scheduler keeps whole seconds and truncates; round up so a backoff is never shorter than asked.
        due = datetime.fromtimestamp(math.ceil(time.time() + job.delay), tz=UTC)
        get_queue(job.queue).enqueue_at(
            due,
            job.func,
            *job.args,
            job_timeout=timeout,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            job_id=job.job_id,
            description=_describe(job),
        )
    logger.debug("enqueued %d immediate and %d delayed jobs", sum(map(len, immediate.values())), len(delayed))


def _describe(job: Job) -> str:
    return f"durable {job.func.rsplit('.', 1)[-1]}({', '.join(map(str, job.args))})"
