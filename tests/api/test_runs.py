"""Runs through the API: listing with filters and pages, reading one with its steps and groups, starting."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings
from rest_framework.test import APIClient

from durable_django import ok, parallel, step
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

from .conftest import client_for, url

pytestmark = pytest.mark.django_db


def iso(value: datetime | None) -> str | None:
    """A datetime as DRF renders it with USE_TZ and UTC."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def make_run(workflow: str = "orders", **fields: Any) -> WorkflowRun:
    return WorkflowRun.objects.create(workflow=workflow, **fields)


def ids(response: Any) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


# -- listing -------------------------------------------------------------------------------------


def test_list_shows_runs_newest_first_in_a_page(api: APIClient) -> None:
    older = make_run(status="completed")
    newer = make_run(status="running")
    response = api.get(url("run-list"))
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    assert ids(response) == [str(newer.pk), str(older.pk)]
    assert "steps" not in body["results"][0]


@override_settings(DURABLE={"API_PAGE_SIZE": 2})
def test_list_pages_are_sized_by_the_api_page_size_setting(api: APIClient) -> None:
    runs = [make_run() for _ in range(5)]
    newest_first = [str(run.pk) for run in reversed(runs)]
    first = api.get(url("run-list"))
    assert (first.json()["count"], ids(first)) == (5, newest_first[:2])
    assert first.json()["previous"] is None
    assert first.json()["next"] == "http://testserver" + url("run-list") + "?page=2"
    last = api.get(url("run-list"), {"page": 3})
    assert ids(last) == newest_first[4:]
    assert last.json()["next"] is None
    assert last.json()["previous"] == "http://testserver" + url("run-list") + "?page=2"


def test_a_page_past_the_end_is_not_found(api: APIClient) -> None:
    make_run()
    response = api.get(url("run-list"), {"page": 2})
    assert (response.status_code, response.json()) == (404, {"detail": "Invalid page."})


def test_list_filters_by_workflow_status_and_parent(api: APIClient) -> None:
    parent = make_run("orders", status="running")
    child = make_run("payments", status="running", parent=parent, parent_step="pay")
    failed = make_run("orders", status="failed")
    assert ids(api.get(url("run-list"), {"workflow": "orders"})) == [str(failed.pk), str(parent.pk)]
    assert ids(api.get(url("run-list"), {"status": "running"})) == [str(child.pk), str(parent.pk)]
    assert ids(api.get(url("run-list"), {"parent": str(parent.pk)})) == [str(child.pk)]
    assert ids(api.get(url("run-list"), {"workflow": "orders", "status": "failed"})) == [str(failed.pk)]
    assert ids(api.get(url("run-list"), {"workflow": "shipping"})) == []


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"status": "done"}, {"status": ['"done" is not a valid choice.']}),
        ({"parent": "42"}, {"parent": ["Must be a valid UUID."]}),
        ({"workflow": "w" * 201}, {"workflow": ["Ensure this field has no more than 200 characters."]}),
        (
            {"status": "done", "parent": "x"},
            {"status": ['"done" is not a valid choice.'], "parent": ["Must be a valid UUID."]},
        ),
    ],
)
def test_invalid_filters_are_a_400_naming_each_field(
    api: APIClient, params: dict[str, str], errors: dict[str, list[str]]
) -> None:
    response = api.get(url("run-list"), params)
    assert (response.status_code, response.json()) == (400, errors)


def test_empty_filters_are_ignored(api: APIClient) -> None:
    run = make_run(status="running")
    assert ids(api.get(url("run-list"), {"status": "", "parent": "", "workflow": ""})) == [str(run.pk)]


# -- one run -------------------------------------------------------------------------------------


def test_detail_has_every_run_field(api: APIClient) -> None:
    parent = make_run("orders")
    run = make_run(
        "payments",
        status="failed",
        input={"amount": 3},
        context={"amount": 3, "charged": False},
        error={"step": "charge", "reason": "declined"},
        current_step="charge",
        current_attempt=2,
        parent=parent,
        parent_step="pay",
        ref="card",
        idempotency_key="order-7",
    )
    WorkflowRun.objects.filter(pk=run.pk).update(error_history=[{"error": "earlier", "failed_at": None}])
    run.refresh_from_db()
    response = api.get(url("run-detail", run.pk))
    assert response.status_code == 200
    assert response.json() == {
        "id": str(run.pk),
        "workflow": "payments",
        "status": "failed",
        "input": {"amount": 3},
        "context": {"amount": 3, "charged": False},
        "error": {"step": "charge", "reason": "declined"},
        "error_history": [{"error": "earlier", "failed_at": None}],
        "current_step": "charge",
        "current_attempt": 2,
        "parent": str(parent.pk),
        "parent_step": "pay",
        "ref": "card",
        "detached": False,
        "compensation": "",
        "idempotency_key": "order-7",
        "forked_from": None,
        "forked_from_step": "",
        "created_at": iso(run.created_at),
        "run_at": None,
        "started_at": None,
        "deadline_at": None,
        "finished_at": None,
        "duration": None,
        "waits": [],
        "steps": [],
        "groups": [],
        "children": [],
        "forks": [],
    }


def test_detail_of_a_finished_run_lists_its_steps_and_groups(
    api: APIClient, embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [
            step("first", lambda ctx: ok({"a": 1})),
            parallel(step("left", lambda ctx: ok({"l": 1})), step("right", lambda ctx: ok({"r": 2})), name="pair"),
            step("last", lambda ctx: ok({"done": True})),
        ]
    )
    started = api.post(url("run-list"), {"workflow": wf.name, "input": {"n": 1}}, format="json")
    assert started.status_code == 201
    embedded.run_until_idle()

    body = api.get(url("run-detail", started.json()["id"])).json()
    run = WorkflowRun.objects.get()
    results = {"left": ["ok", {"l": 1}], "right": ["ok", {"r": 2}]}
    assert (body["status"], body["current_step"], body["error"]) == ("completed", "", None)
    assert body["context"] == {"n": 1, "a": 1, "__results__": results, "done": True}
    assert (body["started_at"], body["finished_at"]) == (iso(run.started_at), iso(run.finished_at))
    assert body["duration"] == (run.finished_at - run.started_at).total_seconds()

    group = ParallelGroup.objects.get()
    assert body["groups"] == [
        {
            "id": group.pk,
            "run": str(run.pk),
            "name": "pair",
            "kind": "parallel",
            "on_error": "fail_fast",
            "status": "completed",
            "items": None,
            "results": results,
            "error": None,
            "history": [],
            "branch_count": 2,
            "pending_count": 0,
            "failed_count": 0,
            "created_at": iso(group.created_at),
            "finished_at": iso(group.finished_at),
        }
    ]
    rows = {row.step: row for row in StepResult.objects.all()}
    outputs = {"first": {"a": 1}, "left": {"l": 1}, "right": {"r": 2}, "last": {"done": True}}
    assert [item["step"] for item in body["steps"]] == ["first", "left", "right", "last"]
    for item in body["steps"]:
        row = rows[item["step"]]
        assert item == {
            "id": row.pk,
            "run": str(run.pk),
            "step": row.step,
            "kind": "step",
            "item_index": None,
            "compensates": None,
            "attempt": 1,
            "status": "completed",
            "output": outputs[row.step],
            "error": None,
            "group": group.pk if row.step in ("left", "right") else None,
            "job_id": row.job_id,
            "created_at": iso(row.created_at),
            "started_at": iso(row.started_at),
            "finished_at": iso(row.finished_at),
            "duration": (row.finished_at - row.started_at).total_seconds(),
        }


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=7)), "not-a-uuid", "123"])
def test_an_unknown_or_malformed_run_id_is_not_found(api: APIClient, run_id: str) -> None:
    response = api.get(f"{url('run-list')}{run_id}/")
    assert (response.status_code, response.json()) == (404, {"detail": f"No workflow run has the id {run_id!r}."})


# -- starting ------------------------------------------------------------------------------------


@pytest.fixture
def two_steps(define: Definer) -> Any:
    return define([step("first", lambda ctx: ok({"first": True})), step("second", lambda ctx: ok({"second": True}))])


def test_start_returns_201_with_the_new_pending_run(api: APIClient, two_steps: Any) -> None:
    response = api.post(url("run-list"), {"workflow": two_steps.name, "input": {"n": 2}}, format="json")
    assert response.status_code == 201
    run = WorkflowRun.objects.get()
    body = response.json()
    assert body["id"] == str(run.pk)
    assert (body["workflow"], body["status"], body["input"], body["context"]) == (
        two_steps.name,
        "pending",
        {"n": 2},
        {"n": 2},
    )
    assert (body["current_step"], body["idempotency_key"], body["steps"], body["groups"]) == ("first", None, [], [])


def test_started_run_completes_through_the_engine(api: APIClient, embedded: EmbeddedQueue, two_steps: Any) -> None:
    response = api.post(url("run-list"), {"workflow": two_steps.name}, format="json")
    embedded.run_until_idle()
    body = api.get(url("run-detail", response.json()["id"])).json()
    assert (body["status"], body["input"], body["context"]) == ("completed", {}, {"first": True, "second": True})
    assert [(item["step"], item["status"]) for item in body["steps"]] == [
        ("first", "completed"),
        ("second", "completed"),
    ]


def test_start_with_a_known_idempotency_key_returns_the_existing_run_with_200(api: APIClient, two_steps: Any) -> None:
    body = {"workflow": two_steps.name, "input": {"n": 1}, "idempotency_key": "order-1"}
    first = api.post(url("run-list"), body, format="json")
    again = api.post(url("run-list"), {**body, "input": {"n": 2}}, format="json")
    other = api.post(url("run-list"), {**body, "idempotency_key": "order-2"}, format="json")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"]
    assert (again.json()["input"], again.json()["idempotency_key"]) == ({"n": 1}, "order-1")
    assert other.json()["id"] != first.json()["id"]
    assert WorkflowRun.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_requests_racing_with_one_new_idempotency_key_get_one_201_and_the_same_run(
    superuser: Any, embedded: EmbeddedQueue, two_steps: Any
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("threads racing for one row need PostgreSQL's concurrent transactions")
    body = {"workflow": two_steps.name, "input": {"n": 1}, "idempotency_key": "order-race"}
    barrier = threading.Barrier(8)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post() -> None:
        client = client_for(superuser)
        try:
            barrier.wait(timeout=10)
            response = client.post(url("run-list"), body, format="json")
            with lock:
                answers.append((response.status_code, response.json()["id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    run = WorkflowRun.objects.get()
    assert sorted(answers) == sorted([(201, str(run.pk))] + [(200, str(run.pk))] * 7)
    assert embedded.pending_jobs() == 1


def test_start_with_a_null_idempotency_key_starts_a_new_run_each_time(api: APIClient, two_steps: Any) -> None:
    body = {"workflow": two_steps.name, "idempotency_key": None}
    codes = [api.post(url("run-list"), body, format="json").status_code for _ in range(2)]
    assert (codes, WorkflowRun.objects.count()) == ([201, 201], 2)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"workflow": ["This field is required."]}),
        ({"workflow": "no_such_workflow"}, {"workflow": ["No workflow named 'no_such_workflow' is registered."]}),
        ({"workflow": 12}, {"workflow": ["Not a valid string."]}),
        ({"workflow": None}, {"workflow": ["This field may not be null."]}),
        ({"workflow": "w" * 201}, {"workflow": ["Ensure this field has no more than 200 characters."]}),
        ({"workflow": "{wf}", "input": [1, 2]}, {"input": ["Must be a JSON object, got array."]}),
        ({"workflow": "{wf}", "input": "text"}, {"input": ["Must be a JSON object, got string."]}),
        ({"workflow": "{wf}", "input": 3.5}, {"input": ["Must be a JSON object, got number."]}),
        ({"workflow": "{wf}", "input": None}, {"input": ["This field may not be null."]}),
        ({"workflow": "{wf}", "idempotency_key": ""}, {"idempotency_key": ["This field may not be blank."]}),
        ({"workflow": "{wf}", "idempotency_key": 7}, {"idempotency_key": ["Not a valid string."]}),
        (
            {"workflow": "{wf}", "idempotency_key": "k" * 256},
            {"idempotency_key": ["Ensure this field has no more than 255 characters."]},
        ),
        (
            {"workflow": "{wf}", "inputs": {}, "key": "x"},
            {
                "inputs": ["Unknown field; expected workflow, input, idempotency_key, delay, run_at."],
                "key": ["Unknown field; expected workflow, input, idempotency_key, delay, run_at."],
            },
        ),
    ],
)
def test_invalid_start_requests_are_a_400_naming_the_field(
    api: APIClient, two_steps: Any, body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    if body.get("workflow") == "{wf}":
        body = {**body, "workflow": two_steps.name}
    response = api.post(url("run-list"), body, format="json")
    assert (response.status_code, response.json()) == (400, errors)
    assert not WorkflowRun.objects.exists()


def test_start_refuses_input_that_is_not_valid_json_numbers(api: APIClient, two_steps: Any) -> None:
    # 1e400 parses as infinity, which JSON cannot store: the engine refuses it.
    body = f'{{"workflow": "{two_steps.name}", "input": {{"big": 1e400}}}}'
    response = api.post(url("run-list"), body, content_type="application/json")
    assert (response.status_code, list(response.json())) == (400, ["input"])
    # Python's own message follows (its wording differs between Python versions).
    [message] = response.json()["input"]
    assert message.startswith(f"Input of workflow {two_steps.name!r} is not JSON-serializable: Out of range float")
    assert not WorkflowRun.objects.exists()
