"""``manage.py durable_fork RUN_ID --from-step STEP [--context JSON]``: rerun a finished run from a step."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import InvalidInput, RunStateError, WorkflowNotFound
from durable_django.forks import fork_run
from durable_django.management.run_operation import resolve_run


class Command(BaseCommand):
    help = (
        "Start a new run of a completed or failed run's workflow at one of its top-level steps or blocks, "
        "with the context the run had right before it (or --context). The run itself is not changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "run_id", metavar="RUN_ID", help="id of a completed or failed run (or its first 8 or more characters)"
        )
        parser.add_argument(
            "--from-step", required=True, metavar="STEP", help="the top-level step or block to start at"
        )
        parser.add_argument(
            "--context", metavar="JSON", help="the context to start with (a JSON object); default: the one recorded"
        )

    def handle(self, *args: Any, run_id: str, from_step: str, context: str | None, **options: Any) -> None:
        given = None
        if context is not None:
            try:
                given = json.loads(context)
            except ValueError as exc:
                raise CommandError(f"--context is not valid JSON: {exc}") from None
        try:
            fork = fork_run(resolve_run(run_id), from_step=from_step, context=given)
        except (RunStateError, WorkflowNotFound) as exc:
            raise CommandError(f"Refused: {exc}") from None
        except InvalidInput as exc:
            raise CommandError(f"Invalid --context: {exc}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"{fork.pk}: forked from {fork.forked_from_id} at {from_step!r}"))
