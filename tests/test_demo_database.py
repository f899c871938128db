"""``make demo`` against a PostgreSQL database that does not exist: one line saying how to create it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import OperationalError

from example_project.missing_database import explain

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_missing_database_is_named_with_the_command_that_creates_it() -> None:
    exc = OperationalError(
        'connection failed: connection to server at "db.internal", port 5433 failed: FATAL:  database "shop" does not exist'
    )
    line = explain(exc, {"NAME": "shop", "HOST": "db.internal", "PORT": "5433", "USER": "app"})
    assert line == (
        "The PostgreSQL database 'shop' named by DATABASE_URL does not exist on db.internal:5433: create it with "
        "`createdb -h db.internal -p 5433 -U app shop`, or point DATABASE_URL at an existing database "
        "(unset it for the embedded SQLite database)."
    )
    assert explain(OperationalError("connection refused"), {}) is None


@pytest.mark.integration
@pytest.mark.parametrize("command", [["migrate", "--verbosity", "0"], ["run_examples"]])
def test_make_demo_on_a_missing_database_prints_one_line_and_fails(command: list[str]) -> None:
    db = settings.DATABASES["default"]
    name = f"durable_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=REPO_ROOT,
        env={**env, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"The PostgreSQL database {name!r} named by DATABASE_URL does not exist on "
        f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}: create it with "
        f"`createdb -h {db['HOST'] or '127.0.0.1'} -p {db['PORT'] or 5432} -U {db['USER']} {name}`, or point "
        "DATABASE_URL at an existing database (unset it for the embedded SQLite database)."
    ]
