"""Fixtures of the integration tests: the test's Redis database and real rqworker processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from redis import Redis

from .support import REPO_ROOT, WorkerPool, database_url

POOL = pytest.StashKey[WorkerPool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Attach the workers' output to the report of a failed test (setup, call or teardown)."""
    report = yield
    pool = item.stash.get(POOL, None)
    if pool is not None and report.failed:
        report.sections.append((f"rq worker output ({report.when})", pool.output()))
    return report


@pytest.fixture
def redis_db() -> Iterator[Redis]:
    """The Redis database reserved for the tests (``REDIS_URL``), empty before and after the test."""
    conn = Redis.from_url(settings.REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, transactional_db: None, redis_db: Redis, tmp_path: Path
) -> Iterator[Callable[..., WorkerPool]]:
    """``workers(n)`` starts ``n`` ``durable_worker`` processes (with rq's scheduler) and returns the pool.

    They use the test database (so they see what the test commits) and the test's Redis database.
    Calling it again adds workers to the same pool (``with_scheduler=False`` starts workers that
    never move scheduled jobs; ``env`` adds environment variables, such as ``DURABLE_LEASE_SECONDS``
    read by the test settings; ``command="rqworker"`` starts django-rq's worker, whose default class
    forks a work horse per job; ``worker_class`` picks rq's worker class). Whatever happens, they
    are stopped before the database is flushed.
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DURABLE_TEST_DATABASE", None)
    pool = WorkerPool(env, tmp_path, redis_db)
    request.node.stash[POOL] = pool

    def start(
        count: int,
        *,
        with_scheduler: bool = True,
        env: Mapping[str, str] | None = None,
        worker_class: str | None = None,
        command: str = "durable_worker",
    ) -> WorkerPool:
        pool.start(count, with_scheduler=with_scheduler, env=env, worker_class=worker_class, command=command)
        return pool

    try:
        yield start
    finally:
        pool.stop()
    if pool.problems:
        pytest.fail("\n".join(pool.problems), pytrace=False)
