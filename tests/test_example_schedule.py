"""The example shop's schedule: declared in shop.workflows, fired by the demo as a worker fires it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from durable_django.firing import sync_schedules
from durable_django.models import Schedule, WorkflowRun
from durable_django.schedules import fire_key, next_fire

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_examples_shows_the_weekly_report_fired_by_its_schedule(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    sync_schedules(send_jobs=False)
    row = Schedule.objects.get(name="weekly_stock_report")
    due = row.next_fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (due.weekday(), due.hour, due.minute) == (0, 7, 0)  # a Monday, 07:00 in Berlin

    call_command("run_examples", only=["stock_report"])

    out = capsys.readouterr().out
    [run] = WorkflowRun.objects.filter(schedule=row)
    assert run.idempotency_key == fire_key("weekly_stock_report", due)
    assert f"started by schedule weekly_stock_report, idempotency key {run.idempotency_key}\n" in out
    assert run.context["summary"] == "1 product(s) below 5 units"  # the mug is out of stock
    assert "All 1 runs ended as expected." in out
    row.refresh_from_db()
    assert row.next_fire_at == next_fire("0 7 * * 1", "Europe/Berlin", due)
