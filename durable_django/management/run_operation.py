"""What ``durable_retry`` and ``durable_cancel`` share: apply one operation to each run id given,
or to every run that filters select (:mod:`durable_django.bulk`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from durable_django.exceptions import AmbiguousRunId, RunStateError
from durable_django.models import WorkflowRun
from durable_django.operations import find_run_id


class RunOperationCommand(BaseCommand):
    """Calls :attr:`operation` on every ``RUN_ID`` (a whole id, or a prefix of at least 8 hex
    characters of one); reports refusals on stderr and fails if there were any."""

    operation: Callable[[Any], WorkflowRun]
    #: What the command does to every run a queryset selects, and which of them it would act on.
    bulk_operation: Callable[..., int]
    bulk_candidates: Callable[[QuerySet[WorkflowRun]], QuerySet[WorkflowRun]]
    run_help = "id of a run (or its first 8 or more characters)"
    #: Past participle for the summary line, e.g. "retried"; and its infinitive, e.g. "retry".
    done = ""
    verb = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_ids", nargs="*", metavar="RUN_ID", help=self.run_help)
        parser.add_argument("--workflow", metavar="NAME", help="instead of ids: every run of this workflow")
        parser.add_argument(
            "--created-before", metavar="WHEN", type=moment, help="instead of ids: runs created before WHEN (ISO 8601)"
        )
        parser.add_argument(
            "--created-after", metavar="WHEN", type=moment, help="instead of ids: runs created at or after WHEN"
        )
        parser.add_argument("--dry-run", action="store_true", help="with filters: only count the runs")

    def describe(self, run: WorkflowRun) -> str:
        raise NotImplementedError

    def operation_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the command's own options give :attr:`operation`."""
        return {}

    def handle(self, *args: Any, run_ids: list[str], **options: Any) -> None:
        given = self.operation_options(options)
        filters = {
            lookup: options[name]
            for name, lookup in (
                ("workflow", "workflow"),
                ("created_before", "created_at__lt"),
                ("created_after", "created_at__gte"),
            )
            if options[name] is not None
        }
        if run_ids and filters:
            raise CommandError("Give run ids or filters (--workflow, --created-before, --created-after), not both.")
        if filters:
            self.handle_selection(WorkflowRun.objects.filter(**filters), options["dry_run"], given)
            return
        if not run_ids:
            raise CommandError(
                "Give at least one RUN_ID, or filters (--workflow, --created-before, --created-after) to "
                f"{self.verb} every run they select."
            )
        refused = 0
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

    def handle_selection(self, runs: QuerySet[WorkflowRun], dry_run: bool, given: dict[str, Any]) -> None:
        if dry_run:
            count = type(self).bulk_candidates(runs).count()
            self.stdout.write(f"would {self.verb} {count} runs")
        else:
            count = type(self).bulk_operation(runs, **given)
            self.stdout.write(self.style.SUCCESS(f"{self.done} {count} runs"))


def moment(text: str) -> datetime:
    """An ISO 8601 date or time of the command line (a time without a zone is in the current time zone)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"Not an ISO 8601 date or time: {text!r}.") from None
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def resolve_run(run_id: str) -> Any:
    """The id of the run ``run_id`` names (see :func:`durable_django.operations.find_run_id`), or a
    :class:`CommandError` saying why there is none."""
    try:
        return find_run_id(run_id)
    except WorkflowRun.DoesNotExist:
        raise CommandError(f"No workflow run has the id {run_id!r}.") from None
    except AmbiguousRunId as exc:
        raise CommandError(f"Ambiguous run id: {exc}") from None
