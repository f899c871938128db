"""The management commands durable_retry, durable_cancel, durable_runs and durable_cleanup."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from durable_django.models import UNFINISHED_RUN_STATUSES, RunStatus, WorkflowRun

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
        ("durable_cleanup", "Delete finished workflow runs whose finished_at is older than --older-than"),
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


def test_durable_retry_and_cancel_take_filters_instead_of_ids() -> None:
    old = timezone.now() - timedelta(days=2)
    stale = [
        WorkflowRun.objects.create(workflow="w", status=RunStatus.FAILED, current_step="s", created_at=old)
        for _ in range(2)
    ]
    recent = WorkflowRun.objects.create(workflow="w", status=RunStatus.FAILED, current_step="s")
    other = WorkflowRun.objects.create(workflow="other", status=RunStatus.FAILED, current_step="s", created_at=old)
    cutoff = (timezone.now() - timedelta(days=1)).isoformat()

    assert run_command("durable_retry", "--workflow", "w", "--created-before", cutoff, "--dry-run") == (
        "would retry 2 runs\n",
        "",
    )
    assert run_command("durable_retry", "--workflow", "w", "--created-before", cutoff) == ("retried 2 runs\n", "")
    statuses = dict(WorkflowRun.objects.values_list("pk", "status"))
    assert [statuses[run.pk] for run in [*stale, recent, other]] == ["running", "running", "failed", "failed"]
    assert run_command("durable_cancel", "--workflow", "w") == ("cancelled 2 runs\n", "")
    assert WorkflowRun.objects.get(pk=stale[0].pk).status == RunStatus.CANCELLED

    with pytest.raises(CommandError) as raised:
        run_command("durable_retry")
    assert str(raised.value) == (
        "Give at least one RUN_ID, or filters (--workflow, --created-before, --created-after) to retry every run "
        "they select."
    )
    with pytest.raises(CommandError, match="Give run ids or filters"):
        run_command("durable_cancel", str(recent.pk), "--workflow", "w")
    with pytest.raises(CommandError, match="Not an ISO 8601 date or time: 'yesterday'"):
        run_command("durable_retry", "--created-before", "yesterday")


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


# -- durable_cleanup ---------------------------------------------------------------------------------


def finished_runs(count: int, *, days_ago: float, status: str = "completed", workflow: str = "w") -> None:
    when = timezone.now() - timedelta(days=days_ago)
    WorkflowRun.objects.bulk_create(
        WorkflowRun(workflow=workflow, status=status, finished_at=when) for _ in range(count)
    )


def test_durable_cleanup_deletes_10000_runs_in_batches_each_its_own_transaction() -> None:
    finished_runs(10_000, days_ago=31)
    finished_runs(3, days_ago=29)
    with CaptureQueriesContext(connection) as captured:
        out, _ = run_command("durable_cleanup", "--older-than", "30d", "--batch-size", "1000")
    assert out == "Deleted 10000 runs that finished more than 30d ago (child runs included).\n"
    assert WorkflowRun.objects.count() == 3
    # One transaction (a savepoint inside the test's) per batch, and one more that finds none left.
    batches: list[list[str]] = []
    for query in captured.captured_queries:
        if query["sql"].startswith("SAVEPOINT"):
            batches.append([])
        elif batches:
            batches[-1].append(query["sql"])
    assert len(batches) == 11
    deletes = [sum(sql.startswith('DELETE FROM "durable_django_workflowrun"') for sql in batch) for batch in batches]
    # Django deletes the collected rows GET_ITERATOR_CHUNK_SIZE (100) at a time.
    assert deletes == [1000 // GET_ITERATOR_CHUNK_SIZE] * 10 + [0]
    # Every batch of 1000 runs costs the same few queries.
    sizes = {len(batch) for batch in batches[:10]}
    assert len(sizes) == 1 and sizes.pop() < 40


def test_durable_cleanup_dry_run_deletes_nothing_and_prints_the_count() -> None:
    finished_runs(5, days_ago=3)
    finished_runs(2, days_ago=3, status="failed")
    finished_runs(4, days_ago=1)
    out, _ = run_command("durable_cleanup", "--older-than", "2", "--dry-run", "--batch-size", "2")
    assert (
        out
        == "Would delete 7 runs that finished more than 2 days ago (child runs included). Dry run: nothing was deleted.\n"
    )
    assert WorkflowRun.objects.count() == 11
    out, _ = run_command("durable_cleanup", "--older-than", "36h", "--status", "failed")
    assert out == "Deleted 2 runs that finished more than 36h ago (child runs included).\n"
    assert WorkflowRun.objects.count() == 9


def test_durable_cleanup_takes_only_the_workflow_and_statuses_asked_for() -> None:
    finished_runs(2, days_ago=2, workflow="orders")
    finished_runs(1, days_ago=2, workflow="orders", status="cancelled")
    finished_runs(3, days_ago=2, workflow="emails")
    out, _ = run_command("durable_cleanup", "--older-than", "90m", "--workflow", "orders", "--status", "completed")
    assert out == "Deleted 2 runs that finished more than 90m ago (child runs included).\n"
    remaining = sorted(WorkflowRun.objects.values_list("workflow", "status"))
    assert remaining == [("emails", "completed")] * 3 + [("orders", "cancelled")]


def test_durable_cleanup_never_deletes_an_unfinished_run_nor_what_an_unfinished_run_is_tied_to() -> None:
    long_ago = timezone.now() - timedelta(days=90)
    for status in UNFINISHED_RUN_STATUSES:
        # An unfinished run with a finished_at (a run retried after it failed keeps none, but say it did).
        WorkflowRun.objects.create(workflow="w", status=status, finished_at=long_ago)
    parent = WorkflowRun.objects.create(workflow="w", status="failed", finished_at=long_ago)
    running_child = WorkflowRun.objects.create(workflow="w", status="running", parent=parent)
    waiting_parent = WorkflowRun.objects.create(workflow="w", status="waiting")
    done_child = WorkflowRun.objects.create(
        workflow="w", status="completed", finished_at=long_ago, parent=waiting_parent
    )
    family = WorkflowRun.objects.create(workflow="w", status="completed", finished_at=long_ago)
    recent_child = WorkflowRun.objects.create(
        workflow="w", status="completed", finished_at=timezone.now(), parent=family
    )
    before = WorkflowRun.objects.count()

    out, _ = run_command("durable_cleanup", "--older-than", "45s", "--dry-run")
    assert out == (
        "Would delete 2 runs that finished more than 45s ago (child runs included). Dry run: nothing was deleted.\n"
        "Would skip 2 runs tied to an unfinished parent or child run; a later cleanup deletes them once that run "
        "has finished.\n"
    )
    out, _ = run_command("durable_cleanup", "--older-than", "45s")
    assert out == (
        "Deleted 2 runs that finished more than 45s ago (child runs included).\n"
        "Skipped 2 runs tied to an unfinished parent or child run; a later cleanup deletes them once that run "
        "has finished.\n"
    )
    assert WorkflowRun.objects.count() == before - 2
    assert not WorkflowRun.objects.filter(pk__in=[family.pk, recent_child.pk]).exists()
    assert WorkflowRun.objects.filter(pk__in=[parent.pk, running_child.pk, done_child.pk]).count() == 3
    assert set(WorkflowRun.objects.unfinished().values_list("status", flat=True)) == set(UNFINISHED_RUN_STATUSES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--older-than", "30x"],
            "--older-than: '30x' is not an age: give a whole number with a unit, such as 30d, 12h, 90m or 45s, "
            "or a whole number of days.",
        ),
        (["--older-than", "0d"], "--older-than: '0d' is not an age: it must be more than zero."),
        (
            ["--older-than", "1d", "--status", "completed,nope"],
            "--status: 'nope' is not a run status. Give some of completed, failed, cancelled.",
        ),
        (
            ["--older-than", "1d", "--status", " , "],
            "--status: name at least one status: completed, failed, cancelled.",
        ),
        (["--older-than", "1d", "--batch-size", "0"], "--batch-size: must be a positive number of runs, not 0."),
    ],
)
def test_durable_cleanup_refuses_bad_options_naming_them(args: list[str], message: str) -> None:
    WorkflowRun.objects.create(workflow="w", status="completed", finished_at=timezone.now() - timedelta(days=9))
    with pytest.raises(CommandError) as refused:
        run_command("durable_cleanup", *args)
    assert str(refused.value) == message
    assert WorkflowRun.objects.count() == 1


@pytest.mark.parametrize("status", UNFINISHED_RUN_STATUSES)
def test_durable_cleanup_refuses_an_unfinished_status_naming_it(status: str) -> None:
    *others, last = UNFINISHED_RUN_STATUSES
    with pytest.raises(CommandError) as refused:
        run_command("durable_cleanup", "--older-than", "1d", "--status", f"failed,{status}")
    assert str(refused.value) == (
        f"--status: {str(status)!r} is not a finished status: a {', '.join(others)} or {last} run is never deleted. "
        "Give some of completed, failed, cancelled."
    )


def test_durable_cleanup_needs_older_than() -> None:
    with pytest.raises(CommandError, match="the following arguments are required: --older-than"):
        run_command("durable_cleanup")
