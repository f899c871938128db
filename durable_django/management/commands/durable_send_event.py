"""``manage.py durable_send_event RUN_ID EVENT [--payload JSON]``: send an event to a run."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.context import storage_problem
from durable_django.exceptions import InvalidInput, RunStateError
from durable_django.management.run_operation import resolve_run
from durable_django.models import WorkflowRun
from durable_django.resume import send_event


def parse_json(option: str, text: str, what: str) -> Any:
    """``text`` parsed as JSON; a :class:`CommandError` naming ``option`` when it is not JSON or not storable."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}.") from None
    problem = storage_problem(value)
    if problem:
        raise CommandError(f"{option}: the {what} {problem}.")
    return value


class Command(BaseCommand):
    help = (
        "Send an event to a workflow run, as durable_django.send_event does. A wait of the run for that event "
        "takes it at once and the run goes on (prints 'delivered'); otherwise the run keeps the event until "
        "one of its waits takes it (prints 'buffered'). Finished runs are refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", metavar="RUN_ID", help="id of the run (or its first 8 or more characters)")
        parser.add_argument("event", metavar="EVENT", help="the event's name, as the run's wait names it")
        parser.add_argument(
            "--payload", metavar="JSON", help="the event's payload, any JSON value (default: null)", default=None
        )

    def handle(self, *args: Any, run_id: str, event: str, payload: str | None, **options: Any) -> None:
        value = None if payload is None else parse_json("--payload", payload, "payload")
        try:
            result = send_event(resolve_run(run_id), event, value)
        except WorkflowRun.DoesNotExist:
            raise CommandError(f"No workflow run has the id {run_id!r}.") from None
        except RunStateError as exc:
            raise CommandError(f"Refused: {exc}") from None
        except InvalidInput as exc:
            raise CommandError(f"Invalid {exc.field or 'payload'}: {exc}") from None
        self.stdout.write(self.style.SUCCESS(result))
