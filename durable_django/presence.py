"""Who listens to durable_django's queues: the RQ workers and schedulers Redis knows of.

Read by ``manage.py durable_doctor``; like :mod:`durable_django.dispatch`, this module talks to RQ and
Redis and decides nothing. Each queue is read on its own connection (``RQ_QUEUES`` may put queues
on different Redis servers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from rq import Worker
from rq.scheduler import RQScheduler

from . import dispatch


@dataclass(frozen=True)
class QueuePresence:
    """The workers listening to one queue and whether an RQ scheduler holds the queue's lock."""

    queue: str
    workers: tuple[str, ...]
    scheduler: bool


def presence(queues: Iterable[str]) -> list[QueuePresence]:
    """For each of ``queues`` and each queue a worker on their servers listens to, who listens."""
    asked = sorted(set(queues))
    by_connection: dict[int, tuple[Redis, set[str]]] = {}
    for name in asked:
        connection = dispatch.get_queue(name).connection
        by_connection.setdefault(id(connection), (connection, set()))[1].add(name)
    workers: dict[str, list[str]] = {}
    schedulers: dict[str, bool] = {}
    for connection, names in by_connection.values():
        for worker in Worker.all(connection=connection):
            for queue in worker.queue_names():
                workers.setdefault(queue, []).append(worker.name)
        for queue in names | set(workers):
            if queue not in schedulers:
                schedulers[queue] = bool(connection.exists(RQScheduler.get_locking_key(queue)))
    return [
        QueuePresence(queue, tuple(sorted(workers.get(queue, []))), schedulers.get(queue, False))
        for queue in sorted(set(asked) | set(workers))
    ]
