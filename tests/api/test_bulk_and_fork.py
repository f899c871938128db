"""Bulk retry and cancel by the list's filters, and forking a run from a step, through the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from durable_django import error, ok, parallel, step
from durable_django.models import RunStatus, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

from .conftest import client_for, url

pytestmark = pytest.mark.django_db


def stored(name: str, status: str, count: int, *, age: float = 0) -> list[WorkflowRun]:
    now = timezone.now()
    return WorkflowRun.objects.bulk_create(
        WorkflowRun(
            workflow=name,
            status=status,
            current_step="a",
            error={"step": "a", "reason": {"code": "x"}} if status == RunStatus.FAILED else None,
            created_at=now - timedelta(seconds=age),
            finished_at=now if status in (RunStatus.FAILED, RunStatus.COMPLETED) else None,
        )
        for _ in range(count)
    )


@pytest.fixture
def wf(define: Definer) -> Any:
    return define([step("a", lambda ctx: ok({"a": 1}))])


def test_a_dry_run_counts_the_runs_a_bulk_retry_would_retry(api: APIClient, wf: Any) -> None:
    stored(wf.name, RunStatus.FAILED, 3)
    stored(wf.name, RunStatus.COMPLETED, 2)
    answer = api.post(f"{url('run-retry-many')}?workflow={wf.name}&dry_run=true")
    assert (answer.status_code, answer.json()) == (200, {"count": 3, "dry_run": True})
    assert WorkflowRun.objects.filter(workflow=wf.name, status="failed").count() == 3


def test_a_bulk_retry_retries_the_failed_runs_the_filters_select(
    api: APIClient, embedded: EmbeddedQueue, wf: Any
) -> None:
    old = stored(wf.name, RunStatus.FAILED, 2, age=3600)
    recent = stored(wf.name, RunStatus.FAILED, 1)
    cutoff = (timezone.now() - timedelta(minutes=30)).isoformat()
    answer = api.post(url("run-retry-many"), {"workflow": wf.name, "status": "failed", "created_before": cutoff})
    # The filters are query parameters: a body is not read, and without any filter the call is refused.
    assert (answer.status_code, list(answer.json())) == (400, ["detail"])
    answer = api.post(
        f"{url('run-retry-many')}?workflow={wf.name}&status=failed&created_before={cutoff.replace('+', '%2B')}"
    )
    assert (answer.status_code, answer.json()) == (200, {"count": 2, "dry_run": False})
    embedded.run_until_idle()
    statuses = dict(WorkflowRun.objects.filter(workflow=wf.name).values_list("pk", "status"))
    assert [statuses[run.pk] for run in old] == ["completed", "completed"]
    assert statuses[recent[0].pk] == "failed"


def test_a_bulk_cancel_cancels_the_unfinished_runs_the_filters_select(api: APIClient, wf: Any) -> None:
    pending = stored(wf.name, RunStatus.PENDING, 2)
    stored(wf.name, RunStatus.FAILED, 1)
    answer = api.post(f"{url('run-cancel-many')}?workflow={wf.name}&dry_run=false")
    assert (answer.status_code, answer.json()) == (200, {"count": 2, "dry_run": False})
    assert set(WorkflowRun.objects.filter(pk__in=[r.pk for r in pending]).values_list("status", flat=True)) == {
        "cancelled"
    }


def test_a_bulk_call_without_a_filter_is_refused(api: APIClient, wf: Any) -> None:
    stored(wf.name, RunStatus.FAILED, 1)
    for name in ("run-retry-many", "run-cancel-many"):
        for query in ("", "?dry_run=true"):
            answer = api.post(f"{url(name)}{query}")
            assert answer.status_code == 400
            assert answer.json() == {
                "detail": "Give at least one filter (workflow, status, parent, detached, created_before, "
                "created_after): an operation on every run is refused."
            }
    assert WorkflowRun.objects.get(workflow=wf.name).status == "failed"


def test_a_bad_bulk_filter_is_a_400_naming_it(api: APIClient, wf: Any) -> None:
    answer = api.post(f"{url('run-retry-many')}?status=broken")
    assert answer.status_code == 400
    assert list(answer.json()) == ["status"]
    answer = api.post(f"{url('run-cancel-many')}?workflow={wf.name}&created_before=yesterday")
    assert list(answer.json()) == ["created_before"]
    answer = api.post(f"{url('run-retry-many')}?workflow={wf.name}&page_size=3")
    assert answer.status_code == 400
    assert answer.json()["unknown_parameters"] == ["page_size"]


def test_bulk_operations_need_the_change_permission(staff_user: User, wf: Any) -> None:
    stored(wf.name, RunStatus.FAILED, 1)
    answer = client_for(staff_user).post(f"{url('run-retry-many')}?workflow={wf.name}")
    assert answer.status_code == 403
    assert WorkflowRun.objects.get(workflow=wf.name).status == "failed"


def test_the_list_filters_by_creation_time_too(api: APIClient, wf: Any) -> None:
    old = stored(wf.name, RunStatus.FAILED, 1, age=3600)
    stored(wf.name, RunStatus.FAILED, 1)
    cutoff = (timezone.now() - timedelta(minutes=30)).isoformat().replace("+", "%2B")
    listed = api.get(f"{url('run-list')}?workflow={wf.name}&created_before={cutoff}").json()["results"]
    assert [row["id"] for row in listed] == [str(old[0].pk)]


# -- fork -------------------------------------------------------------------------------------------


@pytest.fixture
def fanned(define: Definer) -> Any:
    return define(
        [
            step("prepare", lambda ctx: ok({"amount": ctx["asked"]})),
            parallel(step("left", lambda ctx: ok({"l": 1})), name="fan"),
            step("charge", lambda ctx: ok({"paid": ctx["amount"]}) if ctx["amount"] > 0 else error("bad amount")),
        ]
    )


def test_a_fork_is_201_with_the_new_run_linked_both_ways(api: APIClient, embedded: EmbeddedQueue, fanned: Any) -> None:
    run_id = api.post(url("run-list"), {"workflow": fanned.name, "input": {"asked": -1}}, format="json").json()["id"]
    embedded.run_until_idle()
    answer = api.post(
        url("run-fork", run_id[:8]),
        {"from_step": "charge", "context": {"asked": -1, "amount": 4, "__results__": {}}},
        format="json",
    )
    assert answer.status_code == 201
    fork = answer.json()
    assert (fork["forked_from"], fork["forked_from_step"], fork["current_step"], fork["status"]) == (
        run_id,
        "charge",
        "charge",
        "pending",
    )
    embedded.run_until_idle()
    assert api.get(url("run-detail", fork["id"])).json()["context"] == {
        "asked": -1,
        "amount": 4,
        "__results__": {},
        "paid": 4,
    }
    original = api.get(url("run-detail", run_id)).json()
    assert (original["status"], original["forks"], original["forked_from"]) == ("failed", [fork["id"]], None)

    from_block = api.post(url("run-fork", run_id), {"from_step": "fan"}, format="json").json()
    assert (from_block["current_step"], from_block["context"]) == ("fan", {"asked": -1, "amount": -1})


def test_a_fork_from_an_unknown_step_names_the_known_ones(api: APIClient, embedded: EmbeddedQueue, fanned: Any) -> None:
    run_id = api.post(url("run-list"), {"workflow": fanned.name, "input": {"asked": 1}}, format="json").json()["id"]
    embedded.run_until_idle()
    answer = api.post(url("run-fork", run_id), {"from_step": "left"}, format="json")
    assert answer.status_code == 400
    assert answer.json() == {
        "from_step": [
            f"Workflow {fanned.name!r} has no top-level step or block 'left'; a fork starts at one of: "
            "prepare, fan, charge."
        ],
        "known_steps": ["prepare", "fan", "charge"],
    }
    assert api.post(url("run-fork", run_id), {}, format="json").json() == {"from_step": ["This field is required."]}
    answer = api.post(url("run-fork", run_id), {"from_step": "charge", "context": [1]}, format="json")
    assert (answer.status_code, list(answer.json())) == (400, ["context"])
    assert WorkflowRun.objects.count() == 1


def test_a_fork_of_an_unfinished_run_is_a_409(api: APIClient, fanned: Any) -> None:
    run_id = api.post(url("run-list"), {"workflow": fanned.name, "input": {"asked": 1}}, format="json").json()["id"]
    answer = api.post(url("run-fork", run_id), {"from_step": "charge"}, format="json")
    assert answer.status_code == 409
    assert answer.json() == {"detail": f"Run {run_id} is pending; only a completed or failed run can be forked."}
    assert api.post(url("run-fork", "0" * 32), {"from_step": "charge"}, format="json").status_code == 404
