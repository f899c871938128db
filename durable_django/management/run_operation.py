"""What ``durable_retry`` and ``durable_cancel`` share: apply one operation to each run id given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import RunStateError
from durable_django.models import WorkflowRun


class RunOperationCommand(BaseCommand):
    """Calls :attr:`operation` on every ``RUN_ID``; reports refusals on stderr and fails if there were any."""

    operation: Callable[[str], WorkflowRun]
    run_help = "id (UUID) of a run"
    #: Past participle for the summary line, e.g. "retried".
    done = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_ids", nargs="+", metavar="RUN_ID", help=self.run_help)

    def describe(self, run: WorkflowRun) -> str:
        raise NotImplementedError

    def handle(self, *args: Any, run_ids: list[str], **options: Any) -> None:
        refused = 0
        for run_id in run_ids:
            try:
                run = type(self).operation(run_id)
            except WorkflowRun.DoesNotExist:
                refused += 1
                self.stderr.write(f"{run_id}: no such run")
            except RunStateError as exc:
                refused += 1
                self.stderr.write(f"{run_id}: refused: {exc}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{run.pk}: {self.describe(run)}"))
        if refused:
            raise CommandError(f"{refused} of {len(run_ids)} runs were not {self.done}.")
