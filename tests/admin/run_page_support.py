"""Runs of the run page's tests, in the states the engine leaves them in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from durable_django.models import StepResult, WorkflowRun


def running_run(**fields: Any) -> WorkflowRun:
    """A run of ``it_admin_slow`` at ``load_rows``, as the engine leaves it while the step runs."""
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow="it_admin_slow",
        status="running",
        current_step="load_rows",
        started_at=now - timedelta(seconds=8),
        lease_owner="worker-7:4242:cafe",
        lease_expires_at=now + timedelta(seconds=14),  # renewed a second ago
        **fields,
    )
    StepResult.objects.create(
        run=run,
        step="fetch",
        status="completed",
        created_at=now - timedelta(seconds=8),
        started_at=now - timedelta(seconds=8),
        finished_at=now - timedelta(seconds=6),
    )
    return run
