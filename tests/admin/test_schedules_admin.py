"""The admin of schedules: the list and its next fire times, enable/disable, fire now, the form, the runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from durable_django.models import Schedule, WorkflowRun
from durable_django.schedules import next_fire
from tests.admin.support import elements, messages_of

pytestmark = pytest.mark.django_db

LIST = reverse("admin:durable_django_schedule_changelist")
ADD = reverse("admin:durable_django_schedule_add")


def change(row: Schedule) -> str:
    return reverse("admin:durable_django_schedule_change", args=[row.pk])


def staff(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="durable_django", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def client(admin_client: Client) -> Client:
    return admin_client


def reports(name: str = "reports", **fields: Any) -> Schedule:
    values = {"workflow": "stock_report", "cron": "0 7 * * 1", "timezone": "Europe/Berlin", **fields}
    return Schedule.objects.create(
        name=name, next_fire_at=next_fire(values["cron"], values["timezone"], timezone.now()), **values
    )


def form_data(**fields: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "workflow": "stock_report",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "input": '{"threshold": 3}',
        "enabled": "on",
        **fields,
    }


def test_the_list_shows_each_schedules_next_fire_time_and_its_runs(client: Client) -> None:
    row = reports()
    Schedule.objects.filter(pk=row.pk).update(next_fire_at=datetime(2026, 3, 9, 6, 0, tzinfo=UTC))

    with timezone.override("UTC"):
        response = client.get(LIST, {"q": "reports"})  # not the example shop's weekly_stock_report

    assert response.status_code == 200
    [cell] = elements(response.content, "field-next_fire")
    # In the schedule's own timezone, which its cron expression is read in.
    assert cell["text"] == "Mon 2026-03-09 07:00 Europe/Berlin"
    [runs] = elements(response.content, tag="a", within="field-runs_link")
    assert (runs["href"], runs["text"]) == (
        f"{reverse('admin:durable_django_workflowrun_changelist')}?schedule__id__exact={row.pk}",
        "0 runs",
    )


def test_disable_and_enable_actions_switch_the_selected_schedules(client: Client) -> None:
    row = reports()

    response = client.post(LIST, {"action": "disable_schedules", "_selected_action": [row.pk]}, follow=True)
    assert messages_of(response) == [("success", "Disabled: reports.")]
    row.refresh_from_db()
    assert (row.enabled, row.next_fire_at) == (False, None)

    response = client.post(LIST, {"action": "enable_schedules", "_selected_action": [row.pk]}, follow=True)
    assert messages_of(response) == [("success", "Enabled: reports.")]
    row.refresh_from_db()
    assert row.enabled is True
    assert row.next_fire_at == next_fire(row.cron, row.timezone, timezone.now())


def test_fire_now_starts_a_run_of_the_schedule_listed_on_its_page(client: Client) -> None:
    row = reports()

    response = client.post(LIST, {"action": "fire_now", "_selected_action": [row.pk]}, follow=True)

    [run] = WorkflowRun.objects.filter(schedule=row)
    assert run.workflow == "stock_report"
    assert run.idempotency_key.startswith("schedule:reports:")
    [(level, text)] = messages_of(response)
    assert level == "success"
    assert text.startswith("Started run <a href=")
    assert text.endswith("</a> of schedule reports.")
    page = client.get(change(row))
    [link] = elements(page.content, tag="a", within="durable-schedule-runs")
    assert link["title"] == str(run.pk)


def test_fire_now_needs_the_permission_to_change_runs(django_user_model: Any) -> None:
    row = reports()
    only_schedules = staff(django_user_model, "view_schedule", "change_schedule")

    response = only_schedules.post(LIST, {"action": "fire_now", "_selected_action": [row.pk]}, follow=True)

    # Django offers no such action to this user: the list again, saying so.
    assert messages_of(response) == [("warning", "No action selected.")]
    assert b'value="fire_now"' not in response.content
    assert b'value="disable_schedules"' in response.content
    assert not WorkflowRun.objects.filter(schedule=row).exists()


def test_the_form_creates_a_schedule_with_its_next_fire_time(client: Client) -> None:
    response = client.post(ADD, form_data())

    assert response.status_code == 302
    row = Schedule.objects.get(name="nightly")
    assert (row.declared_in_code, row.input) == (False, {"threshold": 3})
    assert row.next_fire_at == next_fire("30 2 * * *", "Europe/Berlin", timezone.now())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cron", "61 * * * *", "'61 * * * *' is not a valid cron expression (5 fields, or 6 with seconds last)."),
        ("timezone", "Mars/Olympus", "'Mars/Olympus' is not a known timezone (e.g. 'UTC', 'Europe/Berlin')."),
        ("workflow", "no_such_workflow", "No workflow named 'no_such_workflow' is registered."),
        ("input", "[1, 2]", "Input must be a dict, got list."),
    ],
)
def test_the_form_refuses_what_a_fire_could_not_use_naming_the_field(
    client: Client, field: str, value: str, message: str
) -> None:
    row = reports()

    response = client.post(change(row), form_data(name="reports", **{field: value}))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors[field] == [message[0].upper() + message[1:]]
    row.refresh_from_db()
    assert row.cron == "0 7 * * 1"


def test_editing_the_cron_expression_computes_the_next_fire_time_again(client: Client) -> None:
    row = reports()

    response = client.post(change(row), form_data(name="reports", cron="15 9 * * *"))

    assert response.status_code == 302
    row.refresh_from_db()
    assert row.next_fire_at == next_fire("15 9 * * *", "Europe/Berlin", timezone.now())


def test_a_schedule_declared_in_code_is_read_only_but_its_switch(client: Client) -> None:
    row = reports(declared_in_code=True)

    response = client.get(change(row))

    form = response.context["adminform"].form
    assert list(form.fields) == ["enabled"]


def test_the_runs_link_lists_only_the_runs_of_that_schedule(client: Client) -> None:
    mine, other = reports(), reports("other")
    [first, second] = [client.post(LIST, {"action": "fire_now", "_selected_action": [row.pk]}) for row in (mine, other)]
    assert first.status_code == second.status_code == 302

    page = client.get(reverse("admin:durable_django_workflowrun_changelist"), {"schedule__id__exact": mine.pk})

    shown = [element["title"] for element in elements(page.content, "durable-run-id")]
    assert shown == [str(WorkflowRun.objects.get(schedule=mine).pk)]
