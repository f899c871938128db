"""Delayed start: a run started with ``delay`` or ``run_at`` stays pending, holding no worker, until then."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from durable_django import ok, start_workflow, step
from durable_django.doctor import Diagnosis, check_runs
from durable_django.exceptions import InvalidInput
from durable_django.models import RunStatus, WorkflowRun
from durable_django.operations import cancel_run
from durable_django.recovery import recover
from durable_django.testing import EmbeddedQueue
from durable_django.timer_jobs import start_job_id
from durable_django.timers import start_run
from tests.engine_support import Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


def scheduled(embedded: EmbeddedQueue) -> dict[str, float]:
    """The scheduled jobs of the default queue: id -> when (a Unix time)."""
    queue = embedded.queues()[0]
    key = queue.scheduled_job_registry.key
    return {job.decode(): score for job, score in queue.connection.zrange(key, 0, -1, withscores=True)}


@runs
def test_a_delayed_run_is_pending_with_no_queued_job_and_its_start_job_scheduled(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    before = timezone.now()
    run = wf.start({"a": 1}, delay=30)
    embedded.run_commit_hooks()
    embedded.run_queued()
    run.refresh_from_db()
    assert (run.status, run.started_at, run.lease_owner, run.lease_expires_at, run.version) == (
        "pending",
        None,
        "",
        None,
        0,
    )
    assert run.run_at is not None
    assert before + dt.timedelta(seconds=30) <= run.run_at <= timezone.now() + dt.timedelta(seconds=30)
    assert embedded.pending_jobs() == 0
    jobs = scheduled(embedded)
    assert list(jobs) == [start_job_id(run.pk)]
    # Rounded up to a whole second: the start job never comes before run_at.
    assert run.run_at.timestamp() <= jobs[start_job_id(run.pk)] < run.run_at.timestamp() + 1
    assert attempts(run) == []


@runs
def test_a_delayed_run_starts_when_due_and_runs_to_its_end(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    run = wf.start({}, delay=dt.timedelta(seconds=1))
    run = finish(embedded, run)
    assert (run.status, run.context, attempts(run)) == ("completed", {"done": True}, [("only", 1, "completed")])
    assert run.run_at is not None and run.started_at is not None
    assert run.started_at >= run.run_at


@runs
@pytest.mark.parametrize("when", ["past", "now"])
def test_a_start_time_not_in_the_future_starts_the_run_at_once(
    embedded: EmbeddedQueue, define: Definer, when: str
) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    options: dict[str, Any] = {"run_at": timezone.now() - dt.timedelta(hours=1)} if when == "past" else {"delay": 0}
    run = wf.start({}, **options)
    embedded.run_commit_hooks()
    assert (embedded.pending_jobs(), scheduled(embedded)) == (1, {})
    run.refresh_from_db()
    assert (run.status, run.run_at) == ("pending", None)
    assert finish(embedded, run).status == "completed"


@runs
def test_start_workflow_by_name_with_run_at(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    at = timezone.now() + dt.timedelta(minutes=5)
    run = start_workflow(wf.name, {}, run_at=at)
    assert (run.status, run.run_at) == ("pending", at)
    assert WorkflowRun.objects.get(pk=run.pk).run_at == at


@runs
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"delay": 5, "run_at": timezone.now()}, TypeError, "with delay or with run_at, not both"),
        ({"run_at": dt.datetime(2030, 1, 1, 9, 0)}, InvalidInput, "run_at of workflow .* must be an aware datetime"),
        ({"run_at": "2030-01-01T09:00:00Z"}, InvalidInput, "run_at of workflow .* must be a datetime, got str"),
        ({"delay": -1}, InvalidInput, "delay of workflow .* of at least 0, got -1"),
        ({"delay": "5"}, InvalidInput, "delay of workflow .* must be a number of seconds"),
        ({"delay": float("nan")}, InvalidInput, "delay of workflow .* must be a number of seconds"),
        ({"delay": True}, InvalidInput, "delay of workflow .* must be a number of seconds"),
    ],
)
def test_bad_start_times_are_refused_and_save_nothing(
    define: Definer, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    with pytest.raises(error, match=message) as raised:
        wf.start({}, **options)
    assert wf.name in str(raised.value)
    assert not WorkflowRun.objects.filter(workflow=wf.name).exists()


@runs
def test_the_start_is_one_conditional_change_not_made_before_run_at(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    run = wf.start({}, delay=60)
    embedded.run_commit_hooks()
    assert run.run_at is not None
    assert start_run(run.pk, run.run_at - dt.timedelta(seconds=1)) is False
    run.refresh_from_db()
    assert (run.status, run.version) == ("pending", 0)
    # Its start job and the sweep may both get there: only the first starts it.
    assert start_run(run.pk, run.run_at) is True
    assert start_run(run.pk, run.run_at + dt.timedelta(seconds=1)) is False
    run.refresh_from_db()
    assert (run.status, run.version, run.started_at) == ("running", 1, run.run_at)
    embedded.run_commit_hooks()
    assert embedded.pending_jobs() == 1
    embedded.run_queued()
    run.refresh_from_db()
    assert (run.status, attempts(run)) == ("completed", [("only", 1, "completed")])


@runs
def test_recovery_leaves_a_delayed_run_alone_until_it_is_due_then_starts_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    run = wf.start({}, delay=60)
    embedded.run_commit_hooks()
    assert run.run_at is not None
    report = recover(run.run_at - dt.timedelta(seconds=1))
    assert (report.total, report.runs_sent_again, report.delayed_runs_started) == (0, 0, 0)
    assert embedded.pending_jobs() == 0
    # Due, and its start job did not come (no scheduler): the sweep starts it after a grace.
    assert recover(run.run_at + dt.timedelta(seconds=1)).delayed_runs_started == 0
    report = recover(run.run_at + dt.timedelta(seconds=3))
    assert (report.delayed_runs_started, report.runs_sent_again) == (1, 0)
    run.refresh_from_db()
    assert run.status == "running"
    assert finish(embedded, run).status == "completed"


@runs
def test_doctor_does_not_count_a_delayed_run_as_pending_without_a_job(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    wf.start({}, delay=3600)
    embedded.run_commit_hooks()
    diagnosis = Diagnosis()
    check_runs(diagnosis, timezone.now())
    assert [finding for finding in diagnosis.findings if finding.check == "runs"] == []


@runs
def test_a_cancelled_delayed_run_never_starts(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[str] = []
    wf = define([step("only", lambda ctx: seen.append("only") or ok({}))])
    run = wf.start({}, delay=60)
    embedded.run_commit_hooks()
    assert scheduled(embedded) != {}
    assert cancel_run(run).status == "cancelled"
    # Its start job is withdrawn: nothing is left to wait for.
    assert scheduled(embedded) == {}
    assert run.run_at is not None
    assert start_run(run.pk, run.run_at) is False
    run = finish(embedded, run)
    assert (run.status, seen, attempts(run)) == ("cancelled", [], [])


@runs
def test_a_delayed_run_with_a_timeout_gets_its_deadline_when_it_starts(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok({}))], timeout=30)
    run = wf.start({}, delay=60)
    embedded.run_commit_hooks()
    run.refresh_from_db()
    assert run.deadline_at is None
    assert run.run_at is not None
    at = run.run_at + dt.timedelta(seconds=5)
    assert start_run(run.pk, at)
    run.refresh_from_db()
    assert (run.started_at, run.deadline_at) == (at, at + dt.timedelta(seconds=30))


def test_a_malformed_run_id_starts_nothing() -> None:
    assert start_run("not-a-uuid") is False


@runs
def test_start_of_an_unknown_run_starts_nothing() -> None:
    assert start_run(uuid.uuid4()) is False


# -- the API --------------------------------------------------------------------------------------


@pytest.fixture
def api(admin_user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@runs
def test_the_api_starts_a_run_with_a_delay_and_shows_run_at_and_deadline(
    api: APIClient, embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok({}))], timeout=10)
    response = api.post("/api/durable/runs/", {"workflow": wf.name, "delay": 120}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    run = WorkflowRun.objects.get(pk=body["id"])
    assert (body["status"], run.status, body["deadline_at"]) == ("pending", RunStatus.PENDING, None)
    assert body["run_at"] is not None and run.run_at is not None
    assert dt.datetime.fromisoformat(body["run_at"].replace("Z", "+00:00")) == run.run_at


@runs
def test_the_api_starts_a_run_at_a_given_time(api: APIClient, embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    response = api.post(
        "/api/durable/runs/", {"workflow": wf.name, "run_at": "2099-01-01T09:00:00+02:00"}, format="json"
    )
    assert response.status_code == 201, response.json()
    run = WorkflowRun.objects.get(pk=response.json()["id"])
    assert run.run_at == dt.datetime(2099, 1, 1, 7, 0, tzinfo=dt.UTC)


@runs
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"delay": -1}, "delay", "Ensure this value is greater than or equal to 0."),
        ({"delay": "soon"}, "delay", "A valid number is required."),
        ({"run_at": "2099-01-01T09:00:00"}, "run_at", "A time zone offset is required"),
        ({"run_at": "tomorrow"}, "run_at", "Datetime has wrong format."),
        ({"delay": 5, "run_at": "2099-01-01T09:00:00Z"}, "run_at", "Give delay or run_at, not both."),
    ],
)
def test_the_api_refuses_a_bad_start_time_naming_the_field(
    api: APIClient, define: Definer, body: dict[str, Any], field: str, message: str
) -> None:
    wf = define([step("only", lambda ctx: ok({}))])
    response = api.post("/api/durable/runs/", {"workflow": wf.name, **body}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert errors[field][0].startswith(message)
    assert not WorkflowRun.objects.filter(workflow=wf.name).exists()


@runs
def test_a_delayed_run_counts_as_the_oldest_pending_run_only_from_its_start_time(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    from durable_django.metrics import collector

    wf = define([step("only", lambda ctx: ok({}))])
    run = wf.start({}, delay=3600)
    WorkflowRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - dt.timedelta(hours=2))
    assert [sample.value for sample in collector.oldest_pending().samples] == [0.0]
    # Due for a minute and not started yet: a minute old, not two hours.
    WorkflowRun.objects.filter(pk=run.pk).update(run_at=timezone.now() - dt.timedelta(seconds=60))
    (age,) = [sample.value for sample in collector.oldest_pending().samples]
    assert 60 <= age < 70


@runs
def test_durable_runs_and_the_admin_show_when_a_delayed_run_starts(
    embedded: EmbeddedQueue, define: Definer, admin_client: Any
) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.urls import reverse

    wf = define([step("only", lambda ctx: ok({}))], timeout=45)
    at = dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    run = wf.start({}, run_at=at)
    out = StringIO()
    call_command("durable_runs", "--workflow", wf.name, stdout=out)
    assert out.getvalue().splitlines()[1].endswith("start at 2099-01-02 03:04:05")
    page = admin_client.get(reverse("admin:durable_django_workflowrun_change", args=[run.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "run at" in html.lower() and "2099-01-02 03:04:05.000" in html


@runs
def test_a_delay_beyond_a_hundred_years_is_refused_and_saves_nothing(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("s", lambda ctx: ok())])

    with pytest.raises(InvalidInput) as caught:
        wf.start({}, delay=1e11)

    assert str(caught.value) == (
        f"delay of workflow {wf.name!r} must be a number of seconds (or a timedelta) of at least 0, "
        "got 100000000000.0 (at most 100 years)."
    )
    assert not WorkflowRun.objects.filter(workflow=wf.name).exists()
