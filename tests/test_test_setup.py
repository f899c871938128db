"""The test suite on a shared machine: its database and Redis come from the environment, Chromium is explicit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

READ_SETTINGS = """
import django
django.setup()
from django.conf import settings
from django.db import connection
print(connection.creation._get_test_db_name(), settings.REDIS_URL, settings.RQ_QUEUES["default"]["URL"])
"""


def suite_settings(**env: str) -> list[str]:
    clean = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    clean.pop("DURABLE_TEST_DATABASE", None)
    done = subprocess.run(
        [sys.executable, "-c", READ_SETTINGS],
        cwd=REPO_ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_the_test_database_and_redis_default_to_todays() -> None:
    assert suite_settings() == ["test_durable_django", "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"]


def test_the_test_database_and_redis_come_from_the_environment() -> None:
    assert suite_settings(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/durable_alice", REDIS_URL="redis://127.0.0.1:6379/7"
    ) == ["test_durable_alice", "redis://127.0.0.1:6379/7", "redis://127.0.0.1:6379/7"]


def makefile_prerequisites() -> dict[str, list[str]]:
    rules = re.findall(r"^([\w.-]+):(?!=)([^\n]*)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    return {target: deps.split() for target, deps in rules}


def test_no_test_target_installs_chromium_behind_the_users_back() -> None:
    prerequisites = makefile_prerequisites()
    assert "chromium" in prerequisites
    for target in ("test", "pytest", "pytest-sqlite", "test-django6", "lint", "check"):
        assert "chromium" not in prerequisites[target], target


def test_ci_installs_chromium_itself_before_the_tests() -> None:
    commands = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert commands == ["make chromium", "make test"]


def test_without_chromium_the_browser_tests_say_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.admin import conftest

    monkeypatch.setattr(conftest, "CHROMIUM", tmp_path / "no-chromium")
    assert conftest.browser_missing() == (
        f"the browser tests need Chromium at {tmp_path / 'no-chromium'}: run make chromium, or set DURABLE_CHROMIUM "
        "to its path"
    )
