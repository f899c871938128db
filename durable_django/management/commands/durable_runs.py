"""``manage.py durable_runs``: list workflow runs, newest first, with the API's filters."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import AmbiguousRunId
from durable_django.models import RunStatus, Wait, WaitKind, WaitStatus, WorkflowRun
from durable_django.operations import find_run_id


def describe_wait(wait: Wait) -> str:
    """What an open wait waits for, in a few words: ``event payment.settled``, ``input approve (approval)``."""
    due = "" if wait.due_at is None else f"{wait.due_at:%Y-%m-%d %H:%M:%S}"
    if wait.kind == WaitKind.SLEEP:
        return f"sleep until {due}" if due else "sleep"
    if wait.kind == WaitKind.INPUT:
        text = f"input {wait.name} ({wait.input_kind})"
    elif wait.mode in ("any", "all"):
        text = f"{wait.mode} of events {', '.join(wait.events)}"
    else:
        text = f"event {wait.name}"
    if due:
        text += f", times out at {due}"
    return text


def open_waits(run_ids: list[Any]) -> dict[Any, list[Wait]]:
    """The waits still waiting of these runs, by run id, oldest first."""
    waits: dict[Any, list[Wait]] = {}
    rows = Wait.objects.filter(run_id__in=run_ids, status=WaitStatus.WAITING).order_by("created_at", "id")
    for wait in rows:
        waits.setdefault(wait.run_id, []).append(wait)
    return waits


class Command(BaseCommand):
    help = (
        "List workflow runs, newest first, with what waiting runs wait for. Filter by workflow, status or "
        "parent run; --json prints one object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", help="only runs of this workflow")
        parser.add_argument("--status", choices=RunStatus.values, help="only runs in this status")
        parser.add_argument(
            "--parent", metavar="RUN_ID", help="only child runs of this run (its id, or its first 8 or more characters)"
        )
        parser.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50; 0 for all)")
        parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = WorkflowRun.objects.all()
        if options["workflow"]:
            runs = runs.filter(workflow=options["workflow"])
        if options["status"]:
            runs = runs.filter(status=options["status"])
        if options["parent"]:
            try:
                runs = runs.filter(parent_id=find_run_id(options["parent"]))
            except WorkflowRun.DoesNotExist:
                raise CommandError(f"--parent: no workflow run has the id {options['parent']!r}.") from None
            except AmbiguousRunId as exc:
                raise CommandError(f"--parent: ambiguous run id: {exc}") from None
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 or more.")
        if options["limit"]:
            runs = runs[: options["limit"]]
        fields = (
            "id",
            "workflow",
            "status",
            "current_step",
            "created_at",
            "run_at",
            "deadline_at",
            "finished_at",
            "error",
        )
        rows = list(runs.values(*fields))
        waits = open_waits([row["id"] for row in rows if row["status"] == RunStatus.WAITING])
        if options["json"]:
            for row in rows:
                row["waiting_for"] = [describe_wait(wait) for wait in waits.get(row["id"], [])]
                self.stdout.write(json.dumps(row, default=str))
            return
        if not rows:
            self.stdout.write("No runs.")
            return
        self.stdout.write(f"{'id':36}  {'workflow':24}  {'status':9}  {'step':20}  {'created':19}  waiting for")
        for row in rows:
            line = (
                f"{row['id']!s:36}  {row['workflow'][:24]:24}  {row['status']:9}  "
                f"{(row['current_step'] or '-')[:20]:20}  {row['created_at']:%Y-%m-%d %H:%M:%S}  "
                + "; ".join(describe_wait(wait) for wait in waits.get(row["id"], []))
                + (
                    f"start at {row['run_at']:%Y-%m-%d %H:%M:%S}"
                    if row["status"] == RunStatus.PENDING and row["run_at"]
                    else ""
                )
            )
            self.stdout.write(line.rstrip())
