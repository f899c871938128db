"""``manage.py durable_runs``: list workflow runs, newest first, with the API's filters."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.models import RunStatus, WorkflowRun


class Command(BaseCommand):
    help = (
        "List workflow runs, newest first. Filter by workflow, status or parent run; --json prints one object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", help="only runs of this workflow")
        parser.add_argument("--status", choices=RunStatus.values, help="only runs in this status")
        parser.add_argument("--parent", metavar="RUN_ID", help="only child runs of this run")
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
                runs = runs.filter(parent_id=uuid.UUID(options["parent"]))
            except ValueError:
                raise CommandError(f"--parent: {options['parent']!r} is not a run id (a UUID).") from None
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 or more.")
        if options["limit"]:
            runs = runs[: options["limit"]]
        fields = ("id", "workflow", "status", "current_step", "created_at", "finished_at", "error")
        rows = list(runs.values(*fields))
        if options["json"]:
            for row in rows:
                self.stdout.write(json.dumps(row, default=str))
            return
        if not rows:
            self.stdout.write("No runs.")
            return
        self.stdout.write(f"{'id':36}  {'workflow':24}  {'status':9}  {'step':20}  created")
        for row in rows:
            self.stdout.write(
                f"{row['id']!s:36}  {row['workflow'][:24]:24}  {row['status']:9}  "
                f"{(row['current_step'] or '-')[:20]:20}  {row['created_at']:%Y-%m-%d %H:%M:%S}"
            )
