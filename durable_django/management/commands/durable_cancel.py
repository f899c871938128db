"""``manage.py durable_cancel RUN_ID... [--compensate]`` (or filters): cancel pending, running or waiting runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from durable_django.bulk import cancel_runs, cancellable
from durable_django.management.run_operation import RunOperationCommand
from durable_django.models import RunStatus, WorkflowRun
from durable_django.operations import cancel_run


class Command(RunOperationCommand):
    help = (
        "Cancel pending, running or waiting workflow runs and their unfinished child runs. No further step starts; "
        "a step already executing may finish but does not move the run. Finished runs are refused. With "
        "--compensate, the compensations of the steps that completed run first. With filters instead of ids, "
        "every unfinished run they select is cancelled."
    )
    operation = staticmethod(cancel_run)
    bulk_operation = staticmethod(cancel_runs)
    bulk_candidates = staticmethod(cancellable)
    run_help = "id of a pending, running or waiting run (or its first 8 or more characters)"
    done = "cancelled"
    verb = "cancel"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--compensate",
            action="store_true",
            help="run the compensations of the run's completed steps (latest first), then end it cancelled",
        )

    def operation_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"compensate": options["compensate"]}

    def describe(self, run: WorkflowRun) -> str:
        if run.status == RunStatus.COMPENSATING:
            return f"cancelled {run.workflow}; running its compensations"
        return f"cancelled {run.workflow}"
