"""``schedules/`` of the API: list and detail by name, enable, disable, fire now, a schedule's runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from durable_django.models import Schedule, WorkflowRun
from durable_django.schedules import next_fire

from .conftest import client_for, grant, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def reports() -> Schedule:
    row = Schedule.objects.create(
        name="reports",
        workflow="stock_report",
        cron="0 7 * * 1",
        timezone="Europe/Berlin",
        input={"threshold": 2},
        next_fire_at=datetime(2026, 3, 9, 6, 0, tzinfo=UTC),
    )
    return row


def test_the_list_and_the_detail_show_a_schedule_with_its_next_fire_time(api: APIClient, reports: Schedule) -> None:
    listed = api.get(url("schedule-list"), {"declared_in_code": "false"})
    detail = api.get(url("schedule-detail", "reports"))

    assert listed.status_code == 200
    assert [item["name"] for item in listed.json()["results"]] == ["reports"]
    assert detail.status_code == 200
    body = detail.json()
    assert {key: body[key] for key in ("workflow", "cron", "timezone", "input", "enabled", "next_fire_at")} == {
        "workflow": "stock_report",
        "cron": "0 7 * * 1",
        "timezone": "Europe/Berlin",
        "input": {"threshold": 2},
        "enabled": True,
        "next_fire_at": "2026-03-09T06:00:00Z",
    }


def test_the_list_filters_by_enabled_and_refuses_a_bad_value_naming_the_parameter(
    api: APIClient, reports: Schedule
) -> None:
    Schedule.objects.filter(pk=reports.pk).update(enabled=False)

    assert [item["name"] for item in api.get(url("schedule-list"), {"enabled": "false"}).json()["results"]] == [
        "reports"
    ]
    refused = api.get(url("schedule-list"), {"enabled": "maybe"})
    assert refused.status_code == 400
    assert list(refused.json()) == ["enabled"]
    Schedule.objects.create(name="later", workflow="stock_report", cron="0 8 * * 1", enabled=False)
    ordered = api.get(url("schedule-list"), {"enabled": "false", "ordering": "-name"})
    assert [item["name"] for item in ordered.json()["results"]] == ["reports", "later"]
    unknown = api.get(url("schedule-list"), {"colour": "red"})
    assert unknown.status_code == 400
    assert "colour" in str(unknown.json())


def test_an_unknown_schedule_is_a_404_naming_it(api: APIClient) -> None:
    response = api.get(url("schedule-detail", "nope"))

    assert response.status_code == 404
    assert response.json() == {"detail": "No schedule is named 'nope'."}


def test_disable_then_enable_switch_the_schedule(api: APIClient, reports: Schedule) -> None:
    disabled = api.post(url("schedule-disable", "reports"))
    assert disabled.status_code == 200
    assert (disabled.json()["enabled"], disabled.json()["next_fire_at"]) == (False, None)

    enabled = api.post(url("schedule-enable", "reports"))
    assert enabled.status_code == 200
    reports.refresh_from_db()
    assert reports.enabled is True
    assert reports.next_fire_at == next_fire("0 7 * * 1", "Europe/Berlin", timezone.now())


def test_fire_starts_a_run_listed_among_the_schedules_runs(api: APIClient, reports: Schedule) -> None:
    fired = api.post(url("schedule-fire", "reports"))

    assert fired.status_code == 202
    run = WorkflowRun.objects.get(pk=fired.json()["id"])
    assert (run.workflow, run.input, run.schedule_id) == ("stock_report", {"threshold": 2}, reports.pk)
    assert run.idempotency_key == fired.json()["idempotency_key"]
    assert run.idempotency_key.startswith("schedule:reports:")
    runs = api.get(url("schedule-runs", "reports"))
    assert runs.status_code == 200
    assert [item["id"] for item in runs.json()["results"]] == [str(run.pk)]
    reports.refresh_from_db()
    assert reports.next_fire_at == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)


def test_firing_a_schedule_of_an_unknown_workflow_is_a_400_naming_the_field(api: APIClient, reports: Schedule) -> None:
    Schedule.objects.filter(pk=reports.pk).update(workflow="gone")

    response = api.post(url("schedule-fire", "reports"))

    assert response.status_code == 400
    assert response.json() == {"workflow": ["Schedule 'reports': no workflow named 'gone' is registered."]}


@pytest.mark.parametrize(
    ("permissions", "route", "expected"),
    [
        ((), "schedule-list", 403),
        (("durable_django.view_schedule",), "schedule-list", 200),
        (("durable_django.view_schedule",), "schedule-runs", 403),
        (("durable_django.view_schedule", "durable_django.view_workflowrun"), "schedule-runs", 200),
    ],
)
def test_reading_needs_the_view_permissions(
    staff_user: User, reports: Schedule, permissions: tuple[str, ...], route: str, expected: int
) -> None:
    client = client_for(grant(staff_user, *permissions))
    args: Any = () if route == "schedule-list" else ("reports",)

    assert client.get(url(route, *args)).status_code == expected


@pytest.mark.parametrize(
    ("permissions", "route", "expected"),
    [
        (("durable_django.change_workflowrun",), "schedule-disable", 403),
        (("durable_django.change_schedule",), "schedule-disable", 403),
        (("durable_django.change_schedule", "durable_django.change_workflowrun"), "schedule-disable", 200),
        (("durable_django.change_schedule",), "schedule-fire", 403),
        (("durable_django.change_schedule", "durable_django.change_workflowrun"), "schedule-fire", 202),
    ],
)
def test_switching_and_firing_need_the_change_permissions(
    staff_user: User, reports: Schedule, permissions: tuple[str, ...], route: str, expected: int
) -> None:
    response = client_for(grant(staff_user, *permissions)).post(url(route, "reports"))

    assert response.status_code == expected
    reports.refresh_from_db()
    assert reports.enabled is (expected != 200)
    assert WorkflowRun.objects.filter(schedule=reports).count() == (1 if expected == 202 else 0)
