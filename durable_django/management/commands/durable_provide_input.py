"""``manage.py durable_provide_input RUN_ID NAME --answer JSON [--user USERNAME]``: answer a run's input."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_django.exceptions import InvalidInput, RunStateError
from durable_django.management.run_operation import resolve_run
from durable_django.models import Wait, WaitKind, WaitStatus, WorkflowRun
from durable_django.resume import provide_input
from durable_django.waits import can_answer

from .durable_send_event import parse_json


class Command(BaseCommand):
    help = (
        "Answer a workflow run's wait for input, as durable_django.provide_input does; the run then goes on "
        'with the answer in its context. --answer is a JSON object: {"approved": true, "comment": "..."} '
        'for an approval, {"choice": ...}, {"text": ...}, or the form\'s fields. --user records who '
        "answered; that user needs the input's permission."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "run_id", metavar="RUN_ID", help="id of the waiting run (or its first 8 or more characters)"
        )
        parser.add_argument("name", metavar="NAME", help="the input's name")
        parser.add_argument("--answer", metavar="JSON", required=True, help="the answer, a JSON object")
        parser.add_argument("--user", metavar="USERNAME", help="the user who answers (recorded with the answer)")

    def handle(self, *args: Any, run_id: str, name: str, answer: str, user: str | None, **options: Any) -> None:
        value = parse_json("--answer", answer, "answer")
        pk = resolve_run(run_id)
        person = None
        if user is not None:
            person = self.find_user(user)
            wait = Wait.objects.filter(run_id=pk, kind=WaitKind.INPUT, name=name, status=WaitStatus.WAITING).first()
            if wait is not None and not can_answer(person, wait.permission):
                needed = wait.permission or "durable_django.provide_input"
                raise CommandError(f"User {user!r} may not answer this input: it needs the {needed!r} permission.")
        try:
            run = provide_input(pk, name, value, user=person)
        except WorkflowRun.DoesNotExist:
            raise CommandError(f"No workflow run has the id {run_id!r}.") from None
        except RunStateError as exc:
            raise CommandError(f"Refused: {exc}") from None
        except InvalidInput as exc:
            raise CommandError(f"Invalid answer ({exc.field or 'answer'}): {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"{run.pk}: answered {name!r}; the run is {run.status}"))

    def find_user(self, username: str) -> Any:
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            raise CommandError(f"No user has the username {username!r}.") from None
