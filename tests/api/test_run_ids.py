"""A run's API routes take an id prefix of at least 8 hex characters: ambiguous is a 400, unknown a 404."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from durable_django.models import Event, RunStatus, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.testapp import api_wait_workflows as flows

from .conftest import url

pytestmark = pytest.mark.django_db

ONE = uuid.UUID("3f0c1a2b-9d4e-4f60-8a7b-0c1d2e3f4a5b")
TWINS = (uuid.UUID("7e57ab1e-0000-4000-8000-000000000001"), uuid.UUID("7e57ab1e-0000-4000-8000-000000000002"))
AMBIGUOUS = {"detail": "2 runs have an id starting with '7e57ab1e'; give more of the id."}


@pytest.fixture
def runs() -> WorkflowRun:
    for pk in TWINS:
        WorkflowRun.objects.create(id=pk, workflow="w", status=RunStatus.RUNNING)
    return WorkflowRun.objects.create(id=ONE, workflow="w", status=RunStatus.FAILED, current_step="s", error={})


ROUTES = [
    ("get", "run-detail", ()),
    ("post", "run-retry", ()),
    ("post", "run-cancel", ()),
    ("post", "run-events", ("paid",)),
    ("post", "run-inputs", ("details",)),
]


@pytest.mark.parametrize(("method", "name", "args"), ROUTES)
def test_an_ambiguous_prefix_is_a_400_saying_how_many_runs_it_matches(
    api: APIClient, runs: WorkflowRun, method: str, name: str, args: tuple[str, ...]
) -> None:
    response = getattr(api, method)(url(name, "7e57ab1e", *args), {}, format="json")
    assert (response.status_code, response.json()) == (400, AMBIGUOUS)
    assert list(WorkflowRun.objects.filter(pk__in=TWINS).values_list("status", flat=True)) == ["running"] * 2


@pytest.mark.parametrize(("method", "name", "args"), ROUTES)
@pytest.mark.parametrize("run_id", ["0badc0de", "3f0c1a2", "3f0c1a2bz"])
def test_an_unknown_or_too_short_prefix_is_a_404_naming_it(
    api: APIClient, runs: WorkflowRun, method: str, name: str, args: tuple[str, ...], run_id: str
) -> None:
    response = getattr(api, method)(url(name, run_id, *args), {}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": f"No workflow run has the id {run_id!r}."})


def test_the_detail_of_a_prefix_is_the_runs(api: APIClient, runs: WorkflowRun) -> None:
    for prefix in ("3f0c1a2b", "3F0C1A2B-9D4E", "3f0c1a2b9d4e4f60"):
        response = api.get(url("run-detail", prefix))
        assert (response.status_code, response.json()["id"]) == (200, str(ONE))


def test_retry_and_cancel_of_a_prefix_act_on_the_run(api: APIClient, runs: WorkflowRun) -> None:
    response = api.post(url("run-retry", "3f0c1a2b"))
    assert (response.status_code, response.json()["id"], response.json()["status"]) == (202, str(ONE), "running")
    response = api.post(url("run-cancel", "3f0c1a2b"))
    assert (response.status_code, response.json()["status"]) == (202, "cancelled")


def test_events_and_inputs_of_a_prefix_reach_the_run(
    api: APIClient, embedded: EmbeddedQueue, runs: WorkflowRun
) -> None:
    response = api.post(url("run-events", TWINS[1].hex, "paid"), {"amount": 1}, format="json")
    assert (response.status_code, response.json()) == (200, {"result": "buffered"})
    assert list(Event.objects.values_list("run_id", "payload")) == [(TWINS[1], {"amount": 1})]
    run = flows.form.start({})
    embedded.run_until_idle()
    response = api.post(url("run-inputs", str(run.pk)[:8], "details"), {"amount": 3, "note": "ok"}, format="json")
    assert (response.status_code, response.json()["id"]) == (200, str(run.pk))
    run.refresh_from_db()
    assert run.status == "running"
