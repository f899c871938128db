"""Registered workflows through the API: names, queues and structure from Workflow.describe()."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from durable_django import ok, parallel, step, workflow
from durable_django.definition import registered_workflows, unregister
from tests.engine_support import Definer

from .conftest import url

pytestmark = pytest.mark.django_db


def test_list_has_every_registered_workflow_by_name(api: APIClient, define: Definer) -> None:
    define([step("only", lambda ctx: ok())])
    body = api.get(url("workflow-list"), {"page": 1}).json()
    names = sorted(registered_workflows())
    assert (body["count"], body["previous"]) == (len(names), None)
    assert [item["name"] for item in body["results"]] == names[:50]


@override_settings(DURABLE={"API_PAGE_SIZE": 1})
def test_list_is_paginated(api: APIClient) -> None:
    names = sorted(registered_workflows())
    second = api.get(url("workflow-list"), {"page": 2}).json()
    assert [item["name"] for item in second["results"]] == [names[1]]
    assert second["next"] == "http://testserver" + url("workflow-list") + "?page=3"


def test_detail_describes_the_structure(api: APIClient, define: Definer) -> None:
    wf = define(
        [
            step("first", lambda ctx: ok(), retry={"max_attempts": 3, "backoff": "constant", "base": 2}),
            parallel(step("a", lambda ctx: ok(), returns="alpha"), step("b", lambda ctx: ok(), queue="priority")),
        ],
        queue="priority",
    )
    response = api.get(url("workflow-detail", wf.name))
    assert response.status_code == 200
    assert response.json() == {"name": wf.name, "queue": "priority", "steps": wf.describe()}
    assert [node["type"] for node in response.json()["steps"]] == ["step", "parallel"]


@override_settings(DURABLE={"QUEUE": "priority"})
def test_the_queue_of_a_workflow_without_one_is_the_default_queue(api: APIClient, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok())])
    assert api.get(url("workflow-detail", wf.name)).json()["queue"] == "priority"


def test_a_workflow_whose_name_has_dots_is_found(api: APIClient, define: Definer) -> None:
    name = define.name() + ".v2"
    workflow(name, [step("only", lambda ctx: ok())])
    try:
        assert api.get(url("workflow-detail", name)).json()["name"] == name
    finally:
        unregister(name)


def test_an_unknown_workflow_is_not_found(api: APIClient) -> None:
    response = api.get(url("workflow-detail", "no_such_workflow"))
    assert (response.status_code, response.json()) == (
        404,
        {"detail": "No workflow named 'no_such_workflow' is registered."},
    )
