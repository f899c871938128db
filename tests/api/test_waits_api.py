"""Waits through the API: the list and detail of waits, the waits of a run, sending events and answering inputs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from durable_django import Workflow
from durable_django.models import Event, Wait, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.testapp import api_wait_workflows as flows

from .conftest import client_for, grant, url

pytestmark = pytest.mark.django_db


def iso(value: datetime | None) -> str | None:
    """A datetime as DRF renders it with USE_TZ and UTC."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def waiting(embedded: EmbeddedQueue, wf: Workflow, input: dict[str, Any] | None = None) -> WorkflowRun:
    """A run of ``wf`` driven until it waits."""
    run = wf.start(input or {})
    embedded.run_until_idle()
    run.refresh_from_db()
    assert run.status == "waiting"
    return run


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


# -- listing and reading waits --------------------------------------------------------------------


def test_waits_list_oldest_first_and_filters_by_status_kind_run_name_and_input_kind(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    approval = waiting(embedded, flows.approval)
    form = waiting(embedded, flows.form)
    event = waiting(embedded, flows.event)
    nap = waiting(embedded, flows.sleeping)
    approve, details, settled, sleep = (Wait.objects.get(run=run) for run in (approval, form, event, nap))
    every = [approve.pk, details.pk, settled.pk, sleep.pk]

    assert ids(api.get(url("wait-list"))) == every
    assert api.get(url("wait-list")).json()["count"] == 4
    assert ids(api.get(url("wait-list"), {"status": "waiting"})) == every
    assert ids(api.get(url("wait-list"), {"status": "resolved"})) == []
    assert ids(api.get(url("wait-list"), {"status": "waiting", "kind": "input"})) == [approve.pk, details.pk]
    assert ids(api.get(url("wait-list"), {"kind": "event"})) == [settled.pk]
    assert ids(api.get(url("wait-list"), {"kind": "sleep"})) == [sleep.pk]
    assert ids(api.get(url("wait-list"), {"input_kind": "form"})) == [details.pk]
    assert ids(api.get(url("wait-list"), {"name": "payment.settled"})) == [settled.pk]
    assert ids(api.get(url("wait-list"), {"run": str(approval.pk)})) == [approve.pk]
    assert ids(api.get(url("wait-list"), {"status": "", "kind": "", "run": ""})) == every


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"status": "open"}, {"status": ['"open" is not a valid choice.']}),
        ({"kind": "timer"}, {"kind": ['"timer" is not a valid choice.']}),
        ({"input_kind": "poll"}, {"input_kind": ['"poll" is not a valid choice.']}),
        ({"run": "42"}, {"run": ["Must be a valid UUID."]}),
        ({"name": "n" * 201}, {"name": ["Ensure this field has no more than 200 characters."]}),
    ],
)
def test_invalid_wait_filters_are_a_400_naming_each_field(
    api: APIClient, params: dict[str, str], errors: dict[str, list[str]]
) -> None:
    response = api.get(url("wait-list"), params)
    assert (response.status_code, response.json()) == (400, errors)


def test_wait_detail_has_every_field_of_an_input(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.form)
    wait = Wait.objects.get(run=run)
    response = api.get(url("wait-detail", wait.pk))
    assert response.status_code == 200
    assert response.json() == {
        "id": wait.pk,
        "run": str(run.pk),
        "step": "ask",
        "group": None,
        "kind": "input",
        "name": "details",
        "events": [],
        "mode": "one",
        "status": "waiting",
        "due_at": None,
        "created_at": iso(wait.created_at),
        "resolved_at": None,
        "payload": None,
        "input_kind": "form",
        "prompt": "How much?",
        "spec": {
            "fields": {
                "amount": {"type": "integer", "required": True, "label": "Amount"},
                "note": {"type": "string", "required": False, "label": "Note"},
            },
            "order": ["amount", "note"],
        },
        "permission": "",
        "resolved_by": None,
        "can_answer": True,
    }


def test_wait_detail_of_events_and_a_sleep(api: APIClient, embedded: EmbeddedQueue) -> None:
    shipped = Wait.objects.get(run=waiting(embedded, flows.any_event))
    body = api.get(url("wait-detail", shipped.pk)).json()
    assert (body["kind"], body["name"], body["events"], body["mode"], body["can_answer"]) == (
        "event",
        "shipped|lost",
        ["shipped", "lost"],
        "any",
        False,
    )
    nap = Wait.objects.get(run=waiting(embedded, flows.sleeping))
    body = api.get(url("wait-detail", nap.pk)).json()
    assert (body["kind"], body["step"], body["due_at"], body["input_kind"]) == ("sleep", "nap", iso(nap.due_at), "")
    assert nap.due_at is not None


def test_a_waiting_branch_names_its_step_and_group(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.branch)
    wait = Wait.objects.get(run=run)
    body = api.get(url("wait-detail", wait.pk)).json()
    assert (body["step"], body["group"], body["name"]) == ("review", run.groups.get().pk, "review")


@pytest.mark.parametrize("wait_id", ["999999", "nope"])
def test_an_unknown_or_malformed_wait_id_is_404(api: APIClient, wait_id: str) -> None:
    response = api.get(f"{url('wait-list')}{wait_id}/")
    assert (response.status_code, response.json()) == (404, {"detail": f"No wait has the id {wait_id!r}."})


def test_waits_are_read_with_the_view_permission_of_waits(
    django_user_model: type[User], staff_user: User, embedded: EmbeddedQueue
) -> None:
    wait = Wait.objects.get(run=waiting(embedded, flows.approval))
    assert client_for(None).get(url("wait-list")).status_code == 401
    member = client_for(django_user_model.objects.create_user("member"))
    assert member.get(url("wait-detail", wait.pk)).status_code == 403
    staff = client_for(staff_user).get(url("wait-detail", wait.pk))
    assert (staff.status_code, staff.json()) == (
        403,
        {"detail": "Reading waits needs the 'durable_django.view_wait' permission."},
    )
    # The permission to read runs shows a run's waits in its detail, not the waits' own endpoints.
    run_reader = client_for(grant(staff_user, "durable_django.view_workflowrun"))
    assert [item["id"] for item in run_reader.get(url("run-detail", wait.run_id)).json()["waits"]] == [wait.pk]
    assert run_reader.get(url("wait-detail", wait.pk)).status_code == 403
    reader = client_for(grant(staff_user, "durable_django.view_wait"))
    assert reader.get(url("wait-detail", wait.pk)).json()["id"] == wait.pk


def test_can_answer_says_whether_the_requesting_user_has_the_inputs_permission(
    staff_user: User, embedded: EmbeddedQueue
) -> None:
    plain = Wait.objects.get(run=waiting(embedded, flows.approval))
    restricted = Wait.objects.get(run=waiting(embedded, flows.restricted))

    def answerable(user: User) -> dict[str, bool]:
        items = client_for(user).get(url("wait-list"), {"kind": "input"}).json()["results"]
        return {item["name"]: item["can_answer"] for item in items}

    assert restricted.permission == flows.RESTRICTED_PERMISSION
    reader = grant(staff_user, "durable_django.view_wait")
    assert answerable(reader) == {"approve": False, "refund": False}
    answerer = grant(reader, "durable_django.provide_input")
    assert answerable(answerer) == {"approve": True, "refund": False}
    assert answerable(grant(answerer, flows.RESTRICTED_PERMISSION)) == {"approve": True, "refund": True}
    assert plain.status == "waiting"


# -- a run's waits --------------------------------------------------------------------------------


def test_run_detail_and_list_show_what_a_run_waits_for(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.approval)
    wait = Wait.objects.get(run=run)
    detail = api.get(url("run-detail", run.pk)).json()
    assert (detail["status"], detail["current_step"]) == ("waiting", "ask")
    assert [(item["id"], item["kind"], item["name"], item["status"]) for item in detail["waits"]] == [
        (wait.pk, "input", "approve", "waiting")
    ]
    assert detail["waits"][0] == api.get(url("wait-detail", wait.pk)).json()

    listed = api.get(url("run-list"), {"status": "waiting"}).json()
    assert [item["id"] for item in listed["results"]] == [str(run.pk)]
    assert listed["results"][0]["waits"] == detail["waits"]


def test_a_runs_list_item_shows_only_its_open_waits_and_its_detail_all_of_them(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.approval)
    assert api.post(url("run-inputs", run.pk, "approve"), {"approved": True}, format="json").status_code == 200
    embedded.run_until_idle()
    [item] = api.get(url("run-list")).json()["results"]
    assert (item["status"], item["waits"]) == ("completed", [])
    [wait] = api.get(url("run-detail", run.pk)).json()["waits"]
    assert (wait["status"], wait["resolved_by"], wait["can_answer"]) == ("resolved", "root", False)


# -- events ---------------------------------------------------------------------------------------


def test_an_event_a_run_waits_for_is_delivered_and_the_run_goes_on_with_its_payload(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.event)
    response = api.post(url("run-events", run.pk, "payment.settled"), {"amount": 12}, format="json")
    assert (response.status_code, response.json()) == (200, {"result": "delivered"})
    wait = Wait.objects.get(run=run)
    assert (wait.status, wait.payload) == ("resolved", {"amount": 12})

    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == (
        "completed",
        {"payment.settled": {"amount": 12}, "paid": {"amount": 12}},
    )


def test_an_event_no_wait_wants_yet_is_buffered_and_taken_when_the_run_waits_for_it(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = flows.event.start({})
    response = api.post(url("run-events", run.pk, "payment.settled"), ["card", 3], format="json")
    assert (response.status_code, response.json()) == (200, {"result": "buffered"})
    assert list(Event.objects.filter(run=run).values_list("name", "payload", "consumed_at")) == [
        ("payment.settled", ["card", 3], None)
    ]

    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == ("completed", {"payment.settled": ["card", 3], "paid": ["card", 3]})


def test_an_event_with_an_empty_body_has_a_null_payload(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.any_event)
    response = api.post(url("run-events", run.pk, "lost"))
    assert (response.status_code, response.json()) == (200, {"result": "delivered"})
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == (
        "completed",
        {"__event__": {"event": "lost", "payload": None}, "outcome": "lost"},
    )


def test_an_event_for_another_name_is_buffered_and_the_run_keeps_waiting(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.event)
    response = api.post(url("run-events", run.pk, "payment.failed"), {"code": 5}, format="json")
    assert (response.status_code, response.json()) == (200, {"result": "buffered"})
    run.refresh_from_db()
    assert run.status == "waiting"
    assert Wait.objects.get(run=run).status == "waiting"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_an_event_to_a_finished_run_is_409_and_keeps_nothing(api: APIClient, status: str) -> None:
    run = WorkflowRun.objects.create(workflow=flows.event.name, status=status)
    response = api.post(url("run-events", run.pk, "payment.settled"), {"amount": 1}, format="json")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": f"Run {run.pk} is {status}; it takes no more events."},
    )
    assert not Event.objects.exists()


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=9)), "nope"])
def test_an_event_to_an_unknown_or_malformed_run_id_is_404(api: APIClient, run_id: str) -> None:
    response = api.post(url("run-events", run_id, "payment.settled"), {}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": f"No workflow run has the id {run_id!r}."})


def test_an_event_payload_the_database_cannot_store_is_a_400_naming_the_payload(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.event)
    response = api.post(url("run-events", run.pk, "payment.settled"), {"note": "a\x00b"}, format="json")
    assert (response.status_code, response.json()) == (
        400,
        {
            "payload": [
                "The payload value at ['note'] contains a NUL character (\\u0000), which the database cannot store."
            ]
        },
    )
    assert Wait.objects.get(run=run).status == "waiting"


def test_an_event_name_the_database_cannot_store_is_a_400_naming_the_event(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.event)
    response = api.post(f"{url('run-detail', run.pk)}events/a%00b/", {}, format="json")
    assert (response.status_code, response.json()) == (
        400,
        {"event": ["The event's name contains a NUL character (\\u0000), which the database cannot store."]},
    )
    assert not Event.objects.exists()


def test_an_event_body_that_is_not_json_is_a_400(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.event)
    response = api.post(url("run-events", run.pk, "payment.settled"), "{oops", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert Wait.objects.get(run=run).status == "waiting"


def test_sending_an_event_needs_the_change_permission(staff_user: User, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.event)
    response = client_for(staff_user).post(url("run-events", run.pk, "payment.settled"), {}, format="json")
    assert (response.status_code, response.json()) == (
        403,
        {
            "detail": "Starting, retrying or cancelling a run or sending it an event needs the "
            "'durable_django.change_workflowrun' permission."
        },
    )
    operator = grant(staff_user, "durable_django.change_workflowrun")
    response = client_for(operator).post(url("run-events", run.pk, "payment.settled"), {}, format="json")
    assert (response.status_code, response.json()) == (200, {"result": "delivered"})


# -- inputs ---------------------------------------------------------------------------------------


def test_an_approval_through_the_api_resolves_the_wait_and_the_run_goes_on(
    api: APIClient, superuser: User, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.approval)
    response = api.post(url("run-inputs", run.pk, "approve"), {"approved": True, "comment": "fine"}, format="json")
    assert response.status_code == 200
    body = response.json()
    detail = api.get(url("run-detail", run.pk)).json()
    # The run is running again: its duration grows between the two requests.
    assert {**body, "duration": None} == {**detail, "duration": None}
    assert (body["id"], body["status"], body["current_step"]) == (str(run.pk), "running", "after")
    [wait] = body["waits"]
    assert (wait["name"], wait["status"], wait["resolved_by"]) == ("approve", "resolved", "root")
    stored = Wait.objects.get(run=run)
    assert (stored.resolved_by, stored.resolved_at is not None) == (superuser, True)

    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == (
        "completed",
        {"asked": True, "approve": {"approved": True, "comment": "fine", "by": "root"}, "approved": True},
    )


def test_a_form_answer_is_cleaned_and_lands_in_the_context(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.form)
    response = api.post(url("run-inputs", run.pk, "details"), {"amount": "12"}, format="json")
    assert response.status_code == 200
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context) == (
        "completed",
        {"details": {"amount": 12, "note": None, "by": "root"}, "amount": 12},
    )


@pytest.mark.parametrize(
    ("answer", "errors"),
    [
        ({"note": "soon"}, {"amount": ["amount is required."]}),
        ({"amount": "twelve"}, {"amount": ["amount must be a whole number, got 'twelve'."]}),
        ({"amount": 3, "colour": "red"}, {"colour": ["colour is not a field of this input (fields: amount, note)."]}),
        (["amount", 3], {"answer": ["The answer must be a JSON object, got list."]}),
    ],
)
def test_an_invalid_answer_is_a_400_naming_the_field_and_changes_nothing(
    api: APIClient, embedded: EmbeddedQueue, answer: Any, errors: dict[str, list[str]]
) -> None:
    run = waiting(embedded, flows.form)
    response = api.post(url("run-inputs", run.pk, "details"), answer, format="json")
    assert (response.status_code, response.json()) == (400, errors)
    run.refresh_from_db()
    assert (run.status, Wait.objects.get(run=run).status) == ("waiting", "waiting")


def test_an_empty_answer_body_is_a_400_naming_the_answer(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.approval)
    response = api.post(url("run-inputs", run.pk, "approve"))
    assert (response.status_code, response.json()) == (
        400,
        {"answer": ["The answer must be a JSON object, got NoneType."]},
    )


def test_an_answer_the_database_cannot_store_is_a_400_naming_the_answer(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.approval)
    response = api.post(url("run-inputs", run.pk, "approve"), {"approved": True, "comment": "\x00"}, format="json")
    assert (response.status_code, response.json()) == (
        400,
        {
            "answer": [
                "The answer value at ['comment'] contains a NUL character (\\u0000), which the database cannot store."
            ]
        },
    )
    assert Wait.objects.get(run=run).status == "waiting"


def test_answering_needs_the_provide_input_permission_not_the_change_permission(
    operator_user: User, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.approval)
    response = client_for(operator_user).post(url("run-inputs", run.pk, "approve"), {"approved": True}, format="json")
    assert (response.status_code, response.json()) == (
        403,
        {"detail": "Answering this input needs the 'durable_django.provide_input' permission."},
    )
    assert Wait.objects.get(run=run).status == "waiting"

    answerer = User.objects.create_user("answerer", is_staff=True)
    answerer = grant(answerer, "durable_django.provide_input")
    response = client_for(answerer).post(url("run-inputs", run.pk, "approve"), {"approved": False}, format="json")
    assert response.status_code == 200
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context["approve"], run.context["approved"]) == (
        "completed",
        {"approved": False, "comment": "", "by": "answerer"},
        False,
    )


def test_an_input_with_its_own_permission_needs_that_permission(staff_user: User, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.restricted)
    answerer = grant(staff_user, "durable_django.provide_input")
    response = client_for(answerer).post(url("run-inputs", run.pk, "refund"), {"approved": True}, format="json")
    assert (response.status_code, response.json()) == (
        403,
        {"detail": f"Answering this input needs the {flows.RESTRICTED_PERMISSION!r} permission."},
    )
    allowed = grant(answerer, flows.RESTRICTED_PERMISSION)
    response = client_for(allowed).post(url("run-inputs", run.pk, "refund"), {"approved": True}, format="json")
    assert response.status_code == 200
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context["refunded"]) == ("completed", True)


def test_answering_an_input_the_run_does_not_wait_for_is_409(api: APIClient, embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.approval)
    response = api.post(url("run-inputs", run.pk, "other"), {"approved": True}, format="json")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": f"Run {run.pk} (waiting) does not wait for the input 'other'."},
    )

    assert api.post(url("run-inputs", run.pk, "approve"), {"approved": True}, format="json").status_code == 200
    again = api.post(url("run-inputs", run.pk, "approve"), {"approved": False}, format="json")
    assert (again.status_code, again.json()) == (
        409,
        {"detail": f"Run {run.pk} (running) does not wait for the input 'approve'."},
    )
    assert Wait.objects.get(run=run).payload == {"approved": True, "comment": "", "by": "root"}


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=9)), "nope"])
def test_answering_for_an_unknown_or_malformed_run_id_is_404(api: APIClient, run_id: str) -> None:
    response = api.post(url("run-inputs", run_id, "approve"), {"approved": True}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": f"No workflow run has the id {run_id!r}."})


def test_a_branch_waiting_for_input_is_answered_and_its_block_completes(
    api: APIClient, embedded: EmbeddedQueue
) -> None:
    run = waiting(embedded, flows.branch)
    assert run.groups.get().waiting_count == 1
    response = api.post(url("run-inputs", run.pk, "review"), {"approved": True}, format="json")
    assert response.status_code == 200
    embedded.run_until_idle()
    run.refresh_from_db()
    assert (run.status, run.context["done"]) == ("completed", True)
