"""Retrying and cancelling runs through the API: 202 with the run, 409 when the state forbids it, 404."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from durable_django import error, ok, parallel, step
from durable_django.models import StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

from .conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def repairable(define: Definer) -> tuple[Any, dict[str, bool]]:
    """A workflow whose ``charge`` step fails until ``state["repaired"]`` is set."""
    state = {"repaired": False}

    def charge(ctx: dict[str, Any]) -> Any:
        return ok({"charged": True}) if state["repaired"] else error({"code": "card_declined"})

    wf = define(
        [
            step("reserve", lambda ctx: ok({"reserved": True})),
            parallel(step("charge", charge), step("notify", lambda ctx: ok({"notified": True})), name="pay"),
            step("ship", lambda ctx: ok({"shipped": True})),
        ]
    )
    return wf, state


def failed_run(api: APIClient, embedded: EmbeddedQueue, wf: Any) -> str:
    run_id = api.post(url("run-list"), {"workflow": wf.name}, format="json").json()["id"]
    embedded.run_until_idle()
    assert WorkflowRun.objects.get(pk=run_id).status == "failed"
    return run_id


def test_retry_of_a_failed_run_is_202_and_the_run_then_completes(
    api: APIClient, embedded: EmbeddedQueue, repairable: tuple[Any, dict[str, bool]]
) -> None:
    wf, state = repairable
    run_id = failed_run(api, embedded, wf)
    state["repaired"] = True

    response = api.post(url("run-retry", run_id))
    assert response.status_code == 202
    body = response.json()
    assert (body["id"], body["status"], body["error"], body["current_step"]) == (run_id, "running", None, "pay")
    [entry] = body["error_history"]
    assert entry["error"] == {"step": "charge", "parallel": "pay", "reason": {"code": "card_declined"}}

    embedded.run_until_idle()
    body = api.get(url("run-detail", run_id)).json()
    assert (body["status"], body["error"]) == ("completed", None)
    results = {"charge": ["ok", {"charged": True}], "notify": ["ok", {"notified": True}]}
    assert body["context"] == {"reserved": True, "__results__": results, "shipped": True}
    assert [(item["step"], item["attempt"], item["status"]) for item in body["steps"]] == [
        ("reserve", 1, "completed"),
        ("charge", 1, "failed"),
        ("notify", 1, "completed"),
        ("charge", 2, "completed"),
        ("ship", 1, "completed"),
    ]
    [group] = body["groups"]
    assert (group["name"], group["status"], group["failed_count"], group["pending_count"]) == ("pay", "completed", 0, 0)


def test_retry_of_a_run_that_is_not_failed_is_409_and_changes_nothing(api: APIClient) -> None:
    run = WorkflowRun.objects.create(workflow="orders", status="completed", version=4)
    response = api.post(url("run-retry", run.pk))
    assert (response.status_code, response.json()) == (
        409,
        {"detail": f"Run {run.pk} is completed; only a failed run can be retried."},
    )
    run.refresh_from_db()
    assert (run.status, run.version, run.error_history) == ("completed", 4, [])


def test_cancel_of_a_pending_run_is_202_and_nothing_of_it_executes(
    api: APIClient, embedded: EmbeddedQueue, repairable: tuple[Any, dict[str, bool]]
) -> None:
    wf, _ = repairable
    run_id = api.post(url("run-list"), {"workflow": wf.name}, format="json").json()["id"]
    response = api.post(url("run-cancel", run_id))
    assert response.status_code == 202
    body = response.json()
    assert (body["id"], body["status"], body["current_step"]) == (run_id, "cancelled", "reserve")
    assert body["finished_at"] is not None

    embedded.run_until_idle()
    assert api.get(url("run-detail", run_id)).json()["status"] == "cancelled"
    assert not StepResult.objects.exists()


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_run_is_409(api: APIClient, status: str) -> None:
    run = WorkflowRun.objects.create(workflow="orders", status=status)
    response = api.post(url("run-cancel", run.pk))
    assert (response.status_code, response.json()) == (
        409,
        {"detail": f"Run {run.pk} is {status}; only a pending, running or waiting run can be cancelled."},
    )
    run.refresh_from_db()
    assert run.status == status


@pytest.mark.parametrize("operation", ["run-retry", "run-cancel"])
@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=9)), "nope"])
def test_retry_and_cancel_of_an_unknown_or_malformed_id_are_404(api: APIClient, operation: str, run_id: str) -> None:
    response = api.post(url(operation, run_id))
    assert (response.status_code, response.json()) == (404, {"detail": f"No workflow run has the id {run_id!r}."})


@pytest.mark.parametrize("operation", ["run-retry", "run-cancel"])
def test_retry_and_cancel_accept_no_other_method(api: APIClient, operation: str) -> None:
    run = WorkflowRun.objects.create(workflow="orders", status="failed")
    response = api.get(url(operation, run.pk))
    assert (response.status_code, response.json()) == (405, {"detail": 'Method "GET" not allowed.'})
