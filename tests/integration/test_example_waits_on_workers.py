"""The demo's waiting examples on real durable_worker processes, PostgreSQL and Redis.

``run_examples`` starts its own workers when ``REDIS_URL`` is set; here they get the test's
database and Redis database, and the command answers the waits by polling the database.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from .support import REPO_ROOT, database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_run_examples_answers_the_waiting_examples_with_real_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_db: Any
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    monkeypatch.setenv("DATABASE_URL", database_url(connection.settings_dict))
    monkeypatch.setenv("REDIS_URL", settings.REDIS_URL)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("DURABLE_TEST_DATABASE", raising=False)

    call_command(
        "run_examples",
        only=["expense_approval", "payment_with_webhook", "follow_up_email", "fulfil_order"],
        timeout=60,
    )

    out = capsys.readouterr().out
    assert "durable_worker x2" in out
    assert "All 10 runs ended as expected." in out
    assert '"result": "buffered"' in out
    assert "waited for input 'manager_approval' (approval) in step ask_manager: timed out" in out
