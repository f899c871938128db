"""The demo's schedule: the weekly stock report of ``shop.workflows``, fired as a worker fires it.

A worker fires a schedule when its time comes (its fire job, or the recovery sweeper). The demo
does not wait for Monday 07:00: it calls the same due check with ``now`` set to the schedule's
next fire time, so that one fire starts one run, keyed by the schedule and that time. The
schedule's next fire time then moves on by a week, as after any fire.
"""

from __future__ import annotations

from typing import Any

from durable_django import Schedule
from durable_django.firing import ensure_synced, fire_due
from durable_django.models import WorkflowRun

SCHEDULE = "weekly_stock_report"


def fire_weekly_report(input: dict[str, Any]) -> WorkflowRun:
    """Fire the weekly stock report at its next fire time; returns the run it started."""
    ensure_synced()  # the row of the declaration, as a worker syncs it before its first due check
    row = Schedule.objects.get(name=SCHEDULE)
    if not row.enabled or row.next_fire_at is None:
        raise RuntimeError(f"schedule {SCHEDULE!r} is disabled: enable it in the admin to see it fire")
    started = fire_due(row.next_fire_at, schedule_id=row.pk)
    if len(started) != 1:
        raise RuntimeError(f"schedule {SCHEDULE!r} started {len(started)} runs at {row.next_fire_at}, not one")
    return started[0]
