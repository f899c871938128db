"""``manage.py durable_cancel RUN_ID...``: cancel pending, running or waiting runs."""

from __future__ import annotations

from durable_django.management.run_operation import RunOperationCommand
from durable_django.models import WorkflowRun
from durable_django.operations import cancel_run


class Command(RunOperationCommand):
    help = (
        "Cancel pending, running or waiting workflow runs and their unfinished child runs. No further step starts; "
        "a step already executing may finish but does not move the run. Finished runs are refused."
    )
    operation = staticmethod(cancel_run)
    run_help = "id of a pending, running or waiting run (or its first 8 or more characters)"
    done = "cancelled"

    def describe(self, run: WorkflowRun) -> str:
        return f"cancelled {run.workflow}"
