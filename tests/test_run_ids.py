"""Runs named by an id prefix (the admin's and the docs' 8 characters) in every command that takes a run id."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from durable_django.exceptions import AmbiguousRunId
from durable_django.models import Event, RunStatus, WorkflowRun
from durable_django.operations import find_run_id
from durable_django.testing import EmbeddedQueue
from tests.testapp import api_wait_workflows as flows

pytestmark = pytest.mark.django_db

ONE = uuid.UUID("3f0c1a2b-9d4e-4f60-8a7b-0c1d2e3f4a5b")
# Two runs whose ids share their first 31 hex characters.
TWINS = (uuid.UUID("7e57ab1e-0000-4000-8000-000000000001"), uuid.UUID("7e57ab1e-0000-4000-8000-000000000002"))


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def runs() -> WorkflowRun:
    for pk in TWINS:
        WorkflowRun.objects.create(id=pk, workflow="w", status=RunStatus.RUNNING)
    return WorkflowRun.objects.create(id=ONE, workflow="w", status=RunStatus.FAILED, current_step="s", error={})


# -- the resolver ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["3f0c1a2b", "3F0C1A2B", "3f0c1a2b-9d4e", "3f0c1a2b9d4e", " 3f0c1a2b ", str(ONE), ONE.hex, str(ONE).upper()]
)
def test_a_whole_id_or_a_prefix_of_8_or_more_hex_characters_names_the_run(runs: WorkflowRun, text: str) -> None:
    assert find_run_id(text) == ONE


def test_a_prefix_several_runs_share_is_ambiguous_and_says_how_many(runs: WorkflowRun) -> None:
    with pytest.raises(AmbiguousRunId, match=r"^2 runs have an id starting with '7e57ab1e'; give more of the id\.$"):
        find_run_id("7e57ab1e")
    with pytest.raises(AmbiguousRunId) as raised:
        find_run_id("7e57ab1e-0000-4000-8000-00000000000")
    assert raised.value.candidates == 2
    assert find_run_id("7e57ab1e-0000-4000-8000-000000000002") == TWINS[1]


@pytest.mark.parametrize(
    "text", ["3f0c1a2", "3f0c", "", "zzzzzzzz", "3f0c1a2b-9d4e-4f60-8a7b-0c1d2e3f4a5b0", "0000000000"]
)
def test_text_that_is_no_id_nor_a_long_enough_prefix_or_that_no_run_has_names_none(
    runs: WorkflowRun, text: str
) -> None:
    with pytest.raises(WorkflowRun.DoesNotExist):
        find_run_id(text)


def test_a_prefix_costs_one_read(runs: WorkflowRun, django_assert_num_queries: object) -> None:
    with django_assert_num_queries(1):  # type: ignore[operator]
        find_run_id("3f0c1a2b")
    with django_assert_num_queries(0):  # type: ignore[operator]
        find_run_id(str(ONE))


# -- the commands ----------------------------------------------------------------------------------


def test_durable_retry_takes_a_prefix_and_refuses_ambiguous_and_unknown_ones(runs: WorkflowRun) -> None:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="2 of 3 runs were not retried"):
        call_command("durable_retry", "3f0c1a2b", "7e57ab1e", "0badc0de", stdout=out, stderr=err)
    assert out.getvalue() == f"{ONE}: retrying w at 's'\n"
    assert err.getvalue() == (
        "7e57ab1e: ambiguous: 2 runs have an id starting with '7e57ab1e'; give more of the id.\n0badc0de: no such run\n"
    )
    assert WorkflowRun.objects.get(pk=ONE).status == RunStatus.RUNNING


def test_durable_cancel_takes_a_prefix_and_refuses_an_ambiguous_one(runs: WorkflowRun) -> None:
    out, _ = run_command("durable_cancel", "7e57AB1E-0000-4000-8000-000000000001")
    assert out == f"{TWINS[0]}: cancelled w\n"
    with pytest.raises(CommandError, match="1 of 1 runs were not cancelled"):
        run_command("durable_cancel", "7e57ab1e")
    assert WorkflowRun.objects.get(pk=TWINS[1]).status == RunStatus.RUNNING


def test_durable_send_event_takes_a_prefix_and_refuses_an_ambiguous_one(runs: WorkflowRun) -> None:
    assert run_command("durable_send_event", TWINS[0].hex, "paid") == ("buffered\n", "")
    assert list(Event.objects.values_list("run_id", "name")) == [(TWINS[0], "paid")]
    with pytest.raises(CommandError, match=r"^Ambiguous run id: 2 runs have an id starting with '7e57ab1e'"):
        run_command("durable_send_event", "7e57ab1e", "paid")
    with pytest.raises(CommandError, match=r"^No workflow run has the id '0badc0de'\.$"):
        run_command("durable_send_event", "0badc0de", "paid")


def test_durable_provide_input_takes_a_prefix(embedded: EmbeddedQueue, runs: WorkflowRun) -> None:
    run = flows.form.start({})
    embedded.run_until_idle()
    prefix = str(run.pk)[:8]
    out, _ = run_command("durable_provide_input", prefix, "details", "--answer", '{"amount": 3, "note": "ok"}')
    assert out == f"{run.pk}: answered 'details'; the run is running\n"
    with pytest.raises(CommandError, match=r"^Ambiguous run id: 2 runs"):
        run_command("durable_provide_input", "7e57ab1e", "details", "--answer", "{}")
    with pytest.raises(CommandError, match=r"^No workflow run has the id '0badc0de'\.$"):
        run_command("durable_provide_input", "0badc0de", "details", "--answer", "{}", "--user", "nobody")


def test_durable_runs_parent_takes_a_prefix(runs: WorkflowRun) -> None:
    child = WorkflowRun.objects.create(workflow="child", parent=runs, parent_step="s")
    out, _ = run_command("durable_runs", "--parent", "3f0c1a2b", "--json")
    assert [line.split('"id": "')[1][:36] for line in out.splitlines()] == [str(child.pk)]
    with pytest.raises(CommandError, match=r"^--parent: ambiguous run id: 2 runs"):
        run_command("durable_runs", "--parent", "7e57ab1e")
    with pytest.raises(CommandError, match=r"^--parent: no workflow run has the id '0badc0de'\.$"):
        run_command("durable_runs", "--parent", "0badc0de")
