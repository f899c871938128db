"""``manage.py durable_retry RUN_ID...`` (or ``--workflow NAME ...``): retry failed runs from where they failed."""

from __future__ import annotations

from durable_django.bulk import retry_runs, retryable
from durable_django.management.run_operation import RunOperationCommand
from durable_django.models import WorkflowRun
from durable_django.operations import retry_run


class Command(RunOperationCommand):
    help = (
        "Retry failed workflow runs. Each run resumes where it failed: a failed step runs again, a failed "
        "parallel block re-runs only its failed or never-run branches. Runs that are not failed are refused. "
        "With filters instead of ids, every failed run they select is retried."
    )
    operation = staticmethod(retry_run)
    bulk_operation = staticmethod(retry_runs)
    bulk_candidates = staticmethod(retryable)
    run_help = "id of a failed run (or its first 8 or more characters)"
    done = "retried"
    verb = "retry"

    def describe(self, run: WorkflowRun) -> str:
        return f"retrying {run.workflow} at {run.current_step!r}"
