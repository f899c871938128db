from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, defining


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


# trylast: judge only the tests left after -m / -k deselection.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need real PostgreSQL and Redis: skipped without them, failed under CI=true."""
    wanted = [item for item in items if item.get_closest_marker("integration")]
    if not wanted:
        return
    missing = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("PostgreSQL (DATABASE_URL / not DURABLE_TEST_DATABASE=sqlite)")
    elif not _reachable(
        f"//{settings.DATABASES['default']['HOST'] or '127.0.0.1'}:{settings.DATABASES['default']['PORT'] or 5432}",
        5432,
    ):
        missing.append("PostgreSQL")
    if not _reachable(settings.REDIS_URL, 6379):
        missing.append("Redis")
    if not missing:
        return
    message = f"integration tests need {' and '.join(missing)}"
    if os.environ.get("CI") == "true" and settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        raise pytest.UsageError(message + " (CI=true: refusing to skip them)")
    for item in wanted:
        item.add_marker(pytest.mark.skip(reason=message))


@pytest.fixture
def embedded() -> Iterator[EmbeddedQueue]:
    """RQ on fakeredis with an in-process worker: ``embedded.run_until_idle()`` drives runs."""
    with EmbeddedQueue() as queue:
        yield queue


@pytest.fixture
def define(request: pytest.FixtureRequest) -> Iterator[Definer]:
    """Define workflows under names of this test only; they are unregistered afterwards."""
    with defining(request.node.name) as definer:
        yield definer
