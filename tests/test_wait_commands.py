"""The management commands of waits: durable_send_event, durable_provide_input and durable_runs --status waiting."""

from __future__ import annotations

import json
import uuid
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError

from durable_django import Workflow
from durable_django.models import Event, Wait, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.testapp import api_wait_workflows as flows

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def waiting(embedded: EmbeddedQueue, wf: Workflow) -> WorkflowRun:
    run = wf.start({})
    embedded.run_until_idle()
    run.refresh_from_db()
    assert run.status == "waiting"
    return run


def finish(embedded: EmbeddedQueue, run: WorkflowRun) -> WorkflowRun:
    embedded.run_until_idle()
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("durable_send_event", "Send an event to a workflow run"),
        ("durable_provide_input", "Answer a workflow run's wait for input"),
        ("durable_runs", "with what waiting runs wait for"),
    ],
)
def test_each_command_explains_itself_in_help(name: str, phrase: str) -> None:
    command = load_command_class(get_commands()[name], name)
    assert phrase in " ".join(command.create_parser("manage.py", name).format_help().split())


# -- durable_send_event ---------------------------------------------------------------------------


def test_send_event_delivers_to_a_waiting_run_which_goes_on_with_the_payload(embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.event)
    out, err = run_command("durable_send_event", str(run.pk), "payment.settled", "--payload", '{"amount": 12}')
    assert (out, err) == ("delivered\n", "")
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"payment.settled": {"amount": 12}, "paid": {"amount": 12}})


def test_send_event_without_payload_buffers_a_null_payload_for_a_run_not_waiting_yet() -> None:
    run = flows.event.start({})
    assert run_command("durable_send_event", str(run.pk), "payment.settled") == ("buffered\n", "")
    assert list(Event.objects.filter(run=run).values_list("name", "payload")) == [("payment.settled", None)]


def test_send_event_refuses_a_payload_that_is_not_json() -> None:
    run = WorkflowRun.objects.create(workflow=flows.event.name, status="waiting")
    with pytest.raises(CommandError, match=r"^--payload is not valid JSON: Expecting value: line 1 column 1"):
        run_command("durable_send_event", str(run.pk), "payment.settled", "--payload", "amount=12")
    assert not Event.objects.exists()


def test_send_event_refuses_a_payload_the_database_cannot_store() -> None:
    run = WorkflowRun.objects.create(workflow=flows.event.name, status="waiting")
    message = r"^--payload: the payload value at \['note'\] contains a NUL character"
    with pytest.raises(CommandError, match=message):
        run_command("durable_send_event", str(run.pk), "payment.settled", "--payload", '{"note": "\\u0000"}')
    assert not Event.objects.exists()


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=7)), "3f0c"])
def test_send_event_refuses_an_unknown_or_malformed_run_id(run_id: str) -> None:
    with pytest.raises(CommandError, match=rf"^No workflow run has the id '{run_id}'\.$"):
        run_command("durable_send_event", run_id, "payment.settled")


def test_send_event_refuses_a_finished_run() -> None:
    run = WorkflowRun.objects.create(workflow=flows.event.name, status="completed")
    with pytest.raises(CommandError, match=rf"^Refused: Run {run.pk} is completed; it takes no more events\.$"):
        run_command("durable_send_event", str(run.pk), "payment.settled")
    assert not Event.objects.exists()


# -- durable_provide_input ------------------------------------------------------------------------


@pytest.fixture
def answerer(django_user_model: type[User]) -> User:
    user = django_user_model.objects.create_user("ada")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="durable_django", codename="provide_input")
    )
    return user


def test_provide_input_approves_as_a_user_and_the_run_goes_on(embedded: EmbeddedQueue, answerer: User) -> None:
    run = waiting(embedded, flows.approval)
    out, err = run_command(
        "durable_provide_input", str(run.pk), "approve", "--answer", '{"approved": true}', "--user", "ada"
    )
    assert (out, err) == (f"{run.pk}: answered 'approve'; the run is running\n", "")
    assert Wait.objects.get(run=run).resolved_by == answerer
    run = finish(embedded, run)
    assert (run.status, run.context) == (
        "completed",
        {"asked": True, "approve": {"approved": True, "comment": "", "by": "ada"}, "approved": True},
    )


def test_provide_input_without_a_user_records_nobody(embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.form)
    run_command("durable_provide_input", str(run.pk), "details", "--answer", '{"amount": 3, "note": "ok"}')
    assert Wait.objects.get(run=run).resolved_by is None
    run = finish(embedded, run)
    assert (run.status, run.context["amount"]) == ("completed", 3)


def test_provide_input_names_the_invalid_field_and_changes_nothing(embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.form)
    with pytest.raises(CommandError, match=r"^Invalid answer \(amount\): amount must be a whole number, got 'x'\.$"):
        run_command("durable_provide_input", str(run.pk), "details", "--answer", '{"amount": "x"}')
    assert Wait.objects.get(run=run).status == "waiting"


def test_provide_input_refuses_an_answer_that_is_not_json() -> None:
    with pytest.raises(CommandError, match=r"^--answer is not valid JSON: "):
        run_command("durable_provide_input", str(uuid.UUID(int=7)), "approve", "--answer", "{approved: true}")


def test_provide_input_needs_an_answer() -> None:
    with pytest.raises(CommandError, match="the following arguments are required: --answer"):
        run_command("durable_provide_input", str(uuid.UUID(int=7)), "approve")


@pytest.mark.parametrize("run_id", [str(uuid.UUID(int=7)), "3f0c"])
def test_provide_input_refuses_an_unknown_or_malformed_run_id(run_id: str) -> None:
    with pytest.raises(CommandError, match=rf"^No workflow run has the id '{run_id}'\.$"):
        run_command("durable_provide_input", run_id, "approve", "--answer", '{"approved": true}')


def test_provide_input_refuses_an_input_the_run_does_not_wait_for(embedded: EmbeddedQueue) -> None:
    run = waiting(embedded, flows.approval)
    with pytest.raises(
        CommandError, match=rf"^Refused: Run {run.pk} \(waiting\) does not wait for the input 'other'\.$"
    ):
        run_command("durable_provide_input", str(run.pk), "other", "--answer", '{"approved": true}')
    assert Wait.objects.get(run=run).status == "waiting"


def test_provide_input_refuses_an_unknown_user_and_one_without_the_inputs_permission(
    embedded: EmbeddedQueue, answerer: User
) -> None:
    run = waiting(embedded, flows.restricted)
    with pytest.raises(CommandError, match=r"^No user has the username 'bob'\.$"):
        run_command("durable_provide_input", str(run.pk), "refund", "--answer", '{"approved": true}', "--user", "bob")
    message = rf"^User 'ada' may not answer this input: it needs the '{flows.RESTRICTED_PERMISSION}' permission\.$"
    with pytest.raises(CommandError, match=message):
        run_command("durable_provide_input", str(run.pk), "refund", "--answer", '{"approved": true}', "--user", "ada")
    assert Wait.objects.get(run=run).status == "waiting"


# -- durable_runs --status waiting ----------------------------------------------------------------


def test_durable_runs_lists_waiting_runs_with_what_they_wait_for(embedded: EmbeddedQueue) -> None:
    approval = waiting(embedded, flows.approval)
    event = waiting(embedded, flows.any_event)
    nap = waiting(embedded, flows.sleeping)
    WorkflowRun.objects.create(workflow="other", status="completed")
    due = Wait.objects.get(run=nap).due_at
    assert due is not None

    out, _ = run_command("durable_runs", "--status", "waiting")
    header, *lines = out.splitlines()
    assert header.split() == ["id", "workflow", "status", "step", "created", "waiting", "for"]
    column = header.index("waiting for")
    rows = [(line[:36], line.split()[2], line[column:]) for line in lines]
    assert rows == [
        (str(nap.pk), "waiting", f"sleep until {due:%Y-%m-%d %H:%M:%S}"),
        (str(event.pk), "waiting", "any of events shipped, lost"),
        (str(approval.pk), "waiting", "input approve (approval)"),
    ]

    out, _ = run_command("durable_runs", "--json")
    found = {row["workflow"]: row["waiting_for"] for row in map(json.loads, out.splitlines())}
    assert found == {
        "other": [],
        flows.sleeping.name: [f"sleep until {due:%Y-%m-%d %H:%M:%S}"],
        flows.any_event.name: ["any of events shipped, lost"],
        flows.approval.name: ["input approve (approval)"],
    }


def test_durable_runs_shows_nothing_waited_for_on_other_runs() -> None:
    run: Any = WorkflowRun.objects.create(workflow="w", status="running", current_step="s")
    out, _ = run_command("durable_runs")
    assert out.splitlines()[1].startswith(f"{run.pk}  w")
    assert out.splitlines()[1].endswith(f"{run.created_at:%Y-%m-%d %H:%M:%S}")
