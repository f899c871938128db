"""Step results and parallel groups through the API: lists with filters, one row, 404s."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from durable_django.models import ParallelGroup, StepResult, WorkflowRun

from .conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows() -> dict[str, Any]:
    """Two runs: ``a`` with a sequential step and a block of two branches, ``b`` with one step."""
    a = WorkflowRun.objects.create(workflow="orders", status="running")
    b = WorkflowRun.objects.create(workflow="orders", status="failed")
    block = ParallelGroup.objects.create(run=a, name="pay", on_error="fail_fast", branch_count=2, pending_count=1)
    other = ParallelGroup.objects.create(run=b, name="pay", on_error="complete_all", status="failed")
    return {
        "a": a,
        "b": b,
        "block": block,
        "other": other,
        "reserve": StepResult.objects.create(run=a, step="reserve", status="completed", output={"ok": 1}),
        "charge": StepResult.objects.create(run=a, step="charge", status="failed", group=block, error="declined"),
        "notify": StepResult.objects.create(run=a, step="notify", status="running", group=block),
        "reserve_b": StepResult.objects.create(run=b, step="reserve", status="failed", error={"code": 1}),
    }


def ids(response: Any) -> list[int]:
    assert response.status_code == 200
    return [item["id"] for item in response.json()["results"]]


def test_steps_list_every_attempt_in_creation_order(api: APIClient, rows: dict[str, Any]) -> None:
    body = api.get(url("step-list")).json()
    assert body["count"] == 4
    assert [item["id"] for item in body["results"]] == [
        rows[name].pk for name in ("reserve", "charge", "notify", "reserve_b")
    ]


def test_steps_filter_by_run_status_and_step(api: APIClient, rows: dict[str, Any]) -> None:
    a = rows["a"].pk
    assert ids(api.get(url("step-list"), {"run": str(a)})) == [rows[n].pk for n in ("reserve", "charge", "notify")]
    assert ids(api.get(url("step-list"), {"status": "failed"})) == [rows["charge"].pk, rows["reserve_b"].pk]
    assert ids(api.get(url("step-list"), {"step": "reserve"})) == [rows["reserve"].pk, rows["reserve_b"].pk]
    assert ids(api.get(url("step-list"), {"run": str(a), "step": "reserve"})) == [rows["reserve"].pk]


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"run": "17"}, {"run": ["Must be a valid UUID."]}),
        ({"status": "ok"}, {"status": ['"ok" is not a valid choice.']}),
        ({"step": "s" * 201}, {"step": ["Ensure this field has no more than 200 characters."]}),
    ],
)
def test_invalid_step_filters_are_a_400_naming_the_field(
    api: APIClient, params: dict[str, str], errors: dict[str, list[str]]
) -> None:
    response = api.get(url("step-list"), params)
    assert (response.status_code, response.json()) == (400, errors)


def test_one_step_result(api: APIClient, rows: dict[str, Any]) -> None:
    row = rows["charge"]
    body = api.get(url("step-detail", row.pk)).json()
    assert body == {
        "id": row.pk,
        "run": str(rows["a"].pk),
        "step": "charge",
        "kind": "step",
        "item_index": None,
        "compensates": None,
        "attempt": 1,
        "status": "failed",
        "output": None,
        "error": "declined",
        "group": rows["block"].pk,
        "job_id": "",
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "started_at": None,
        "finished_at": None,
        "duration": None,
        "logs": [],
    }


LOGS = [
    {"at": "2026-03-01T10:00:00.250000+00:00", "level": "INFO", "logger": "shop.orders", "message": "charging 89.00"},
    {"at": "2026-03-01T10:00:01+00:00", "level": "WARNING", "logger": "durable_django", "message": "3 more records"},
]


def test_a_step_results_detail_has_its_logs_and_the_lists_leave_them_out(api: APIClient, rows: dict[str, Any]) -> None:
    row = rows["reserve"]
    StepResult.objects.filter(pk=row.pk).update(logs=LOGS)
    # As stored: "at" is the ISO time the record was logged at.
    assert api.get(url("step-detail", row.pk)).json()["logs"] == LOGS
    listed = [
        api.get(url("step-list")).json()["results"][0],
        api.get(url("run-steps", rows["a"].pk)).json()["results"][0],
        api.get(url("run-detail", rows["a"].pk)).json()["steps"][0],
    ]
    assert [(item["id"], "logs" in item) for item in listed] == [(row.pk, False)] * 3


def test_groups_filter_by_run_and_status(api: APIClient, rows: dict[str, Any]) -> None:
    assert ids(api.get(url("group-list"))) == [rows["block"].pk, rows["other"].pk]
    assert ids(api.get(url("group-list"), {"run": str(rows["a"].pk)})) == [rows["block"].pk]
    assert ids(api.get(url("group-list"), {"status": "failed"})) == [rows["other"].pk]
    assert ids(api.get(url("group-list"), {"status": "cancelled"})) == []


def test_invalid_group_filters_are_a_400_naming_the_field(api: APIClient) -> None:
    response = api.get(url("group-list"), {"run": "x", "status": "pending"})
    assert (response.status_code, response.json()) == (
        400,
        {"run": ["Must be a valid UUID."], "status": ['"pending" is not a valid choice.']},
    )


def test_one_parallel_group(api: APIClient, rows: dict[str, Any]) -> None:
    group = rows["block"]
    assert api.get(url("group-detail", group.pk)).json() == {
        "id": group.pk,
        "run": str(rows["a"].pk),
        "name": "pay",
        "kind": "parallel",
        "on_error": "fail_fast",
        "status": "running",
        "items": None,
        "results": None,
        "error": None,
        "history": [],
        "branch_count": 2,
        "pending_count": 1,
        "failed_count": 0,
        "created_at": group.created_at.isoformat().replace("+00:00", "Z"),
        "finished_at": None,
    }


@pytest.mark.parametrize(
    ("name", "row_id", "what"),
    [
        ("step-detail", "999999", "step result"),
        ("step-detail", "abc", "step result"),
        ("step-detail", "99999999999999999999999", "step result"),
        ("group-detail", "999999", "parallel group"),
        ("group-detail", "-1", "parallel group"),
    ],
)
def test_an_unknown_or_malformed_row_id_is_not_found(api: APIClient, name: str, row_id: str, what: str) -> None:
    response = api.get(url(name, row_id))
    assert (response.status_code, response.json()) == (404, {"detail": f"No {what} has the id {row_id!r}."})


@pytest.mark.parametrize("name", ["step-list", "group-list", "workflow-list"])
def test_read_only_endpoints_refuse_writes(api: APIClient, name: str) -> None:
    response = api.post(url(name), {}, format="json")
    assert (response.status_code, response.json()) == (405, {"detail": 'Method "POST" not allowed.'})
