"""``manage.py durable_retry RUN_ID...``: retry failed runs from where they failed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import RunStateError
from durable_django.models import WorkflowRun
from durable_django.operations import retry_run


class Command(BaseCommand):
    help = (
        "Retry failed workflow runs. Each run resumes where it failed: a failed step runs again, a failed "
        "parallel block re-runs only its failed or never-run branches. Runs that are not failed are refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="id (UUID) of a failed run")

    def handle(self, *args: Any, run_ids: list[str], **options: Any) -> None:
        refused = 0
        for run_id in run_ids:
            try:
                run = retry_run(run_id)
            except WorkflowRun.DoesNotExist:
                refused += 1
                self.stderr.write(f"{run_id}: no such run")
            except RunStateError as exc:
                refused += 1
                self.stderr.write(f"{run_id}: refused: {exc}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{run.pk}: retrying {run.workflow} at {run.current_step!r}"))
        if refused:
            raise CommandError(f"{refused} of {len(run_ids)} runs were not retried.")
