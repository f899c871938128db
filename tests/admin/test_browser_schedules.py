"""Schedules in headless Chromium: the list with its next fire times, firing one now, its runs.

Saves screenshots of the schedule list and of a schedule's page to the temporary directory, and to
``DURABLE_SCREENSHOTS`` when set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from durable_django.admin_schedules import in_its_zone
from durable_django.models import Schedule, WorkflowRun
from durable_django.schedules import next_fire
from durable_django.testing import EmbeddedQueue
from tests.admin.support import shoot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_schedule_is_fired_now_from_its_list_and_its_run_is_linked_on_its_page(
    embedded: EmbeddedQueue, page: Any, tmp_path: Path
) -> None:
    fires = next_fire("0 7 * * 1", "Europe/Berlin", timezone.now())
    row = Schedule.objects.create(
        name="monday_report",
        workflow="stock_report",
        cron="0 7 * * 1",
        timezone="Europe/Berlin",
        input={"threshold": 4},
        next_fire_at=fires,
    )
    page.goto("/admin/durable_django/schedule/")
    line = page.locator("#result_list tr", has_text="monday_report")
    assert line.locator("td.field-next_fire").inner_text() == in_its_zone(row, fires)
    assert line.locator("td.field-runs_link").inner_text() == "0 runs"
    shoot(page, tmp_path, "schedules_list.png")

    line.locator("input.action-select").check()
    page.select_option("select[name=action]", "fire_now")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    [run] = WorkflowRun.objects.filter(schedule=row)
    assert page.locator(".messagelist .success").inner_text() == (
        f"Started run {str(run.pk)[:8]} of schedule monday_report."
    )
    embedded.run_until_idle(timeout=30)

    page.goto(f"/admin/durable_django/schedule/{row.pk}/change/")
    assert page.locator(".durable-schedule-runs li").inner_text().split()[:2] == [str(run.pk)[:8], "Completed"]
    shoot(page, tmp_path, "schedule_page.png")
    page.locator(".field-recent_runs a", has_text="1 run").click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 1
