"""The jobs of the RQ benchmark, in a module that imports nothing rq's worker has not loaded already.

rq's forking Worker imports a job's module in every work horse when the worker itself has not:
a heavy import there would be measured as RQ's cost.
"""

from __future__ import annotations

import time

from redis import Redis
from rq import get_current_job
from rq.job import Job

DONE_KEY = "bench:done"


def noop() -> None:
    """A job that does nothing."""


def _record_done(redis: Redis, token: str) -> None:
    redis.hset(DONE_KEY, token, repr(time.time()))


def join(token: str, ids: list[str]) -> int:
    """Fan-in: read every branch's result, then record when it ran."""
    job = get_current_job()
    assert job is not None
    redis = job.connection
    results = [dependency.return_value() for dependency in Job.fetch_many(ids, connection=redis) if dependency]
    _record_done(redis, token)
    return len(results)


def finish(token: str) -> None:
    """The last job of a chain: record when it ran."""
    job = get_current_job()
    assert job is not None
    _record_done(job.connection, token)
