"""Fixtures of the admin tests, and the ``browser`` marker of the tests that drive Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

#: Debian's Chromium, which the browser tests drive through Playwright (no browser download).
CHROMIUM = Path(os.environ.get("DURABLE_CHROMIUM", "/usr/bin/chromium"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium through Playwright")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if not (CHROMIUM.exists() or shutil.which(str(CHROMIUM))):
        return f"the browser tests need Chromium at {CHROMIUM}: run make chromium, or set DURABLE_CHROMIUM to its path"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser tests need the playwright package (pip install -e '.[dev]')"
    return None


# trylast: judge only the tests left after -m / -k deselection.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests are skipped without Chromium or Playwright, and fail the run under CI=true."""
    wanted = [item for item in items if item.get_closest_marker("browser")]
    reason = browser_missing() if wanted else None
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(reason + " (CI=true: refusing to skip them)")
    for item in wanted:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Users are created and logged in by almost every test here: hash their passwords cheaply."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
