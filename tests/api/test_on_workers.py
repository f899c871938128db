"""The API against real rqworker processes: a run started through the API, executed by workers and
read back through the API; a failed run retried through the API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from redis import Redis
from rest_framework.test import APIClient

from tests.integration.support import wait_for
from tests.testapp.workflows import calls, key

from .conftest import url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def status_through_api(api: APIClient, run_id: str, status: str) -> bool:
    return api.get(url("run-detail", run_id)).json()["status"] == status


def steps_by_name(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in body["steps"]:
        found.setdefault(item["step"], []).append(item)
    return found


def test_run_started_through_the_api_runs_on_workers_and_reads_back(api: APIClient, workers: Any) -> None:
    pool = workers(2)
    started = api.post(url("run-list"), {"workflow": "it_many", "input": {"n": 3}}, format="json")
    assert (started.status_code, started.json()["status"]) == (201, "pending")
    run_id = started.json()["id"]

    wait_for(lambda: status_through_api(api, run_id, "completed"), 60, what="the run to complete")
    pool.wait_until_quiet()

    body = api.get(url("run-detail", run_id)).json()
    results = {f"part_{i}": ["ok", {"value": 300 + i}] for i in range(10)}
    assert (body["status"], body["error"], body["current_step"], body["error_history"]) == ("completed", None, "", [])
    assert body["context"] == {"n": 3, "begun": 3, "__results__": results, "total": 3045}

    [group] = body["groups"]
    assert {name: group[name] for name in ("run", "name", "on_error", "status", "results", "error")} == {
        "run": run_id,
        "name": "parts",
        "on_error": "fail_fast",
        "status": "completed",
        "results": results,
        "error": None,
    }
    assert (group["branch_count"], group["pending_count"], group["failed_count"]) == (10, 0, 0)
    assert group["finished_at"] is not None

    steps = steps_by_name(body)
    assert sorted(steps) == sorted(["begin", "total", *(f"part_{i}" for i in range(10))])
    assert [(item["attempt"], item["status"], item["group"], item["output"]) for item in steps["begin"]] == [
        (1, "completed", None, {"begun": 3})
    ]
    assert [(item["attempt"], item["status"], item["group"], item["output"]) for item in steps["total"]] == [
        (1, "completed", None, {"total": 3045})
    ]
    for i in range(10):
        assert [(item["attempt"], item["status"], item["group"], item["output"]) for item in steps[f"part_{i}"]] == [
            (1, "completed", group["id"], {"value": 300 + i})
        ]
    assert all(item["error"] is None and item["finished_at"] is not None for item in body["steps"])

    # The same rows through the list endpoints.
    listed = api.get(url("step-list"), {"run": run_id}).json()
    assert (listed["count"], listed["results"]) == (12, body["steps"])
    assert api.get(url("group-list"), {"run": run_id}).json()["results"] == body["groups"]
    assert pool.failed_jobs() == []


def test_failed_run_retried_through_the_api_completes_on_workers(
    api: APIClient,
    workers: Any,
    redis_db: Redis,
) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run_id = api.post(url("run-list"), {"workflow": "it_repairable", "input": {"token": token}}, format="json").json()[
        "id"
    ]
    wait_for(lambda: status_through_api(api, run_id, "failed"), 60, what="the run to fail")
    failed = api.get(url("run-detail", run_id)).json()
    error = {"step": "needs_repair", "parallel": "repair_block", "reason": {"attempt": 1, "repaired": False}}
    assert (failed["error"], failed["current_step"]) == (error, "repair_block")

    refused = api.post(url("run-cancel", run_id))
    assert (refused.status_code, refused.json()) == (
        409,
        {"detail": f"Run {run_id} is failed; only a pending, running or waiting run can be cancelled."},
    )

    redis_db.set(key(token, "repaired"), 1)
    retried = api.post(url("run-retry", run_id))
    assert (retried.status_code, retried.json()["status"], retried.json()["error"]) == (202, "running", None)
    wait_for(lambda: status_through_api(api, run_id, "completed"), 60, what="the retried run to complete")
    pool.wait_until_quiet()

    body = api.get(url("run-detail", run_id)).json()
    results = {"needs_repair": ["ok", {"repaired_at_attempt": 2}], "steady": ["ok", {"steady_calls": 1}]}
    assert (body["status"], body["error"]) == ("completed", None)
    assert body["context"] == {"token": token, "__results__": results, "after_calls": 1}
    [entry] = body["error_history"]
    assert entry["error"] == error
    assert sorted(entry) == ["error", "failed_at", "retried_at"]
    # History timestamps are JSON, stored to the millisecond (DjangoJSONEncoder).
    finished_at = datetime.fromisoformat(failed["finished_at"])
    assert datetime.fromisoformat(entry["failed_at"]) == finished_at.replace(
        microsecond=finished_at.microsecond // 1000 * 1000
    )
    assert sorted((item["step"], item["attempt"], item["status"]) for item in body["steps"]) == [
        ("after", 1, "completed"),
        ("needs_repair", 1, "failed"),
        ("needs_repair", 2, "completed"),
        ("steady", 1, "completed"),
    ]
    [group] = body["groups"]
    assert (group["name"], group["status"], group["results"], group["pending_count"], group["failed_count"]) == (
        "repair_block",
        "completed",
        results,
        0,
        0,
    )
    assert (calls(token, "needs_repair"), calls(token, "steady"), calls(token, "after")) == (2, 1, 1)

    again = api.post(url("run-retry", run_id))
    assert (again.status_code, again.json()) == (
        409,
        {"detail": f"Run {run_id} is completed; only a failed run can be retried."},
    )
    assert pool.failed_jobs() == []
