"""What ``durable_retry`` and ``durable_cancel`` share: apply one operation to each run id given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import AmbiguousRunId, RunStateError
from durable_django.models import WorkflowRun
from durable_django.operations import find_run_id


class RunOperationCommand(BaseCommand):
    """Calls :attr:`operation` on every ``RUN_ID`` (a whole id, or a prefix of at least 8 hex
    characters of one); reports refusals on stderr and fails if there were any."""

    operation: Callable[[Any], WorkflowRun]
    run_help = "id of a run (or its first 8 or more characters)"
    #: Past participle for the summary line, e.g. "retried".
    done = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_ids", nargs="+", metavar="RUN_ID", help=self.run_help)

    def describe(self, run: WorkflowRun) -> str:
        raise NotImplementedError

    def operation_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the command's own options give :attr:`operation`."""
        return {}

    def handle(self, *args: Any, run_ids: list[str], **options: Any) -> None:
        refused = 0
        given = self.operation_options(options)
        for run_id in run_ids:
            try:
                run = type(self).operation(find_run_id(run_id), **given)
            except WorkflowRun.DoesNotExist:
                refused += 1
                self.stderr.write(f"{run_id}: no such run")
            except AmbiguousRunId as exc:
                refused += 1
                self.stderr.write(f"{run_id}: ambiguous: {exc}")
            except RunStateError as exc:
                refused += 1
                self.stderr.write(f"{run_id}: refused: {exc}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{run.pk}: {self.describe(run)}"))
        if refused:
            raise CommandError(f"{refused} of {len(run_ids)} runs were not {self.done}.")


def resolve_run(run_id: str) -> Any:
    """The id of the run ``run_id`` names (see :func:`durable_django.operations.find_run_id`), or a
    :class:`CommandError` saying why there is none."""
    try:
        return find_run_id(run_id)
    except WorkflowRun.DoesNotExist:
        raise CommandError(f"No workflow run has the id {run_id!r}.") from None
    except AmbiguousRunId as exc:
        raise CommandError(f"Ambiguous run id: {exc}") from None
