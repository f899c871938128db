"""The API on control flow: foreach items paged per run, the case a branch block took, detached children."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from durable_django import branch, error, foreach, ok, sleep, start_child, step
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

from .conftest import client_for, url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(superuser: Any) -> APIClient:
    return client_for(superuser)


def finished(api: APIClient, embedded: EmbeddedQueue, name: str, body: dict[str, Any]) -> dict[str, Any]:
    started = api.post(url("run-list"), {"workflow": name, "input": body}, format="json")
    assert started.status_code == 201
    embedded.run_until_idle(timeout=30)
    return api.get(url("run-detail", started.json()["id"])).json()


def fails_odd(ctx: dict[str, Any]) -> Any:
    return error({"odd": ctx["item"]}) if ctx["item"] % 2 else ok({"even": ctx["item"]})


def test_a_runs_steps_page_through_a_blocks_failed_items(
    api: APIClient, embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([foreach("each", "things", fails_odd, on_error="complete_all")])
    run = finished(api, embedded, wf.name, {"things": list(range(10))})
    group = ParallelGroup.objects.get(run_id=run["id"])
    assert [(g["kind"], g["name"], g["items"]) for g in run["groups"]] == [("foreach", "each", list(range(10)))]

    steps_url = url("run-steps", run["id"])
    first = api.get(steps_url, {"group": group.pk, "status": "failed", "page_size": 3})
    assert first.status_code == 200
    body = first.json()
    assert body["count"] == 5
    assert [(row["kind"], row["step"], row["item_index"], row["error"]) for row in body["results"]] == [
        ("step", "each", 1, {"odd": 1}),
        ("step", "each", 3, {"odd": 3}),
        ("step", "each", 5, {"odd": 5}),
    ]
    second = api.get(body["next"]).json()
    assert [row["item_index"] for row in second["results"]] == [7, 9]
    assert second["next"] is None
    one = api.get(steps_url, {"item_index": 4}).json()
    assert [(row["item_index"], row["output"]) for row in one["results"]] == [(4, {"even": 4})]


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"colour": "red"}, None),
        ({"group": "x"}, {"group": ["A valid integer is required."]}),
        ({"item_index": "-1"}, {"item_index": ["Ensure this value is greater than or equal to 0."]}),
        ({"kind": "saga"}, {"kind": ['"saga" is not a valid choice.']}),
        ({"page_size": "0"}, None),
    ],
)
def test_bad_parameters_of_a_runs_steps_are_a_400_naming_them(
    api: APIClient, embedded: EmbeddedQueue, define: Definer, params: dict[str, str], errors: Any
) -> None:
    wf = define([step("one", lambda ctx: ok())])
    run = finished(api, embedded, wf.name, {})
    response = api.get(url("run-steps", run["id"]), params)
    assert response.status_code == 400
    name = next(iter(params))
    if errors is not None:
        assert response.json() == errors
    elif name == "colour":
        assert response.json()["unknown_parameters"] == ["colour"]
    else:
        assert list(response.json()) == ["page_size"]


def test_the_case_a_branch_block_took_and_a_detached_child_are_in_the_detail(
    api: APIClient, embedded: EmbeddedQueue, define: Definer
) -> None:
    audit = define([step("record", lambda ctx: ok())])
    wf = define(
        [
            branch(
                "ship",
                "kind",
                {"express": [step("courier", lambda ctx: ok({"child": str(start_child(audit, {}, ref="a").pk)}))]},
            ),
        ]
    )
    run = finished(api, embedded, wf.name, {"kind": "express"})
    first = run["steps"][0]
    assert (first["step"], first["kind"], first["output"]) == (
        "ship",
        "branch",
        {"case": "express", "default": False, "value": "express"},
    )
    child = WorkflowRun.objects.get(parent_id=run["id"])
    assert run["children"] == [
        {
            "id": str(child.pk),
            "workflow": audit.name,
            "status": "completed",
            "parent_step": "courier",
            "ref": "a",
            "detached": True,
            "created_at": child.created_at.isoformat().replace("+00:00", "Z"),
            "finished_at": child.finished_at.isoformat().replace("+00:00", "Z"),
        }
    ]
    listed = api.get(url("run-list"), {"parent": run["id"], "detached": "true"}).json()
    assert [item["id"] for item in listed["results"]] == [str(child.pk)]
    assert api.get(url("run-list"), {"parent": run["id"], "detached": "false"}).json()["count"] == 0
    assert StepResult.objects.filter(run_id=run["id"], kind="branch").count() == 1


def test_cancel_with_compensate_runs_the_compensations_first(
    api: APIClient, embedded: EmbeddedQueue, define: Definer
) -> None:
    undone: list[Any] = []
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 12}), compensate=lambda ctx: undone.append(ctx["room"]) or ok()),
            step("wait", lambda ctx: sleep(3600)),
        ]
    )
    started = api.post(url("run-list"), {"workflow": wf.name}, format="json").json()
    embedded.run_until_idle(timeout=30)
    assert WorkflowRun.objects.get(pk=started["id"]).status == "waiting"

    refused = api.post(url("run-cancel", started["id"]), {"compensate": "yes"}, format="json")
    assert (refused.status_code, refused.json()) == (400, {"compensate": ["Must be true or false."]})
    response = api.post(url("run-cancel", started["id"]), {"compensate": True}, format="json")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["compensation"]) == ("compensating", "running")
    embedded.run_until_idle(timeout=30)
    run = api.get(url("run-detail", started["id"])).json()
    assert (run["status"], run["compensation"], undone) == ("cancelled", "completed", [12])
    reserve = next(row for row in run["steps"] if row["step"] == "reserve" and row["kind"] == "step")
    assert [
        (row["kind"], row["status"], row["compensates"]) for row in run["steps"] if row["kind"] == "compensation"
    ] == [("compensation", "completed", reserve["id"])]
