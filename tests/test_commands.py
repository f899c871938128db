"""The management commands durable_retry, durable_cancel and durable_runs."""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError

from durable_django.models import RunStatus, WorkflowRun

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("durable_retry", "Retry failed workflow runs"),
        ("durable_cancel", "Cancel pending, running or waiting workflow runs"),
        ("durable_runs", "List workflow runs, newest first"),
    ],
)
def test_each_command_explains_itself_in_help(name: str, phrase: str) -> None:
    command = load_command_class(get_commands()[name], name)
    assert phrase in command.create_parser("manage.py", name).format_help()


def test_durable_retry_retries_failed_runs_and_reports_the_refused_ones() -> None:
    failed = WorkflowRun.objects.create(workflow="w", status=RunStatus.FAILED, current_step="s", error={"step": "s"})
    done = WorkflowRun.objects.create(workflow="w", status=RunStatus.COMPLETED)
    missing = uuid.UUID(int=7)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="2 of 3 runs were not retried"):
        call_command("durable_retry", str(failed.pk), str(done.pk), str(missing), stdout=out, stderr=err)
    assert out.getvalue() == f"{failed.pk}: retrying w at 's'\n"
    assert err.getvalue() == (
        f"{done.pk}: refused: Run {done.pk} is completed; only a failed run can be retried.\n{missing}: no such run\n"
    )
    failed.refresh_from_db()
    assert (failed.status, failed.current_attempt) == (RunStatus.RUNNING, 2)


def test_durable_cancel_cancels_and_refuses_finished_runs() -> None:
    running = WorkflowRun.objects.create(workflow="w", status=RunStatus.RUNNING)
    out, _ = run_command("durable_cancel", str(running.pk))
    assert out == f"{running.pk}: cancelled w\n"
    running.refresh_from_db()
    assert running.status == RunStatus.CANCELLED
    with pytest.raises(CommandError, match="1 of 1 runs were not cancelled"):
        run_command("durable_cancel", str(running.pk))


def test_durable_runs_lists_with_filters_as_json_lines() -> None:
    parent = WorkflowRun.objects.create(workflow="parent", status=RunStatus.RUNNING)
    child = WorkflowRun.objects.create(workflow="child", status=RunStatus.FAILED, parent=parent, error={"step": "x"})
    WorkflowRun.objects.create(workflow="other", status=RunStatus.COMPLETED)

    out, _ = run_command("durable_runs", "--parent", str(parent.pk), "--json")
    [line] = out.splitlines()
    row = json.loads(line)
    assert (row["id"], row["workflow"], row["status"], row["error"]) == (
        str(child.pk),
        "child",
        "failed",
        {"step": "x"},
    )

    out, _ = run_command("durable_runs", "--status", "completed")
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].split()[1:3] == ["other", "completed"]
    assert run_command("durable_runs", "--workflow", "nope")[0] == "No runs.\n"
    with pytest.raises(CommandError, match="--parent: no workflow run has the id 'zzz'"):
        run_command("durable_runs", "--parent", "zzz")
