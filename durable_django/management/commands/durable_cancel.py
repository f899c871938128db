"""``manage.py durable_cancel RUN_ID...``: cancel pending or running runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import RunStateError
from durable_django.models import WorkflowRun
from durable_django.operations import cancel_run


class Command(BaseCommand):
    help = (
        "Cancel pending or running workflow runs and their unfinished child runs. No further step starts; "
        "a step already executing may finish but does not move the run. Finished runs are refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="id (UUID) of a pending or running run")

    def handle(self, *args: Any, run_ids: list[str], **options: Any) -> None:
        refused = 0
        for run_id in run_ids:
            try:
                run = cancel_run(run_id)
            except WorkflowRun.DoesNotExist:
                refused += 1
                self.stderr.write(f"{run_id}: no such run")
            except RunStateError as exc:
                refused += 1
                self.stderr.write(f"{run_id}: refused: {exc}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{run.pk}: cancelled {run.workflow}"))
        if refused:
            raise CommandError(f"{refused} of {len(run_ids)} runs were not cancelled.")
