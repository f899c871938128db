"""``manage.py durable_doctor``: say what is wrong with workers, queues, runs, schedules and migrations."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from durable_django.doctor import diagnose
from durable_django.recovery import recover


class Command(BaseCommand):
    help = (
        "Report workers per queue and whether one runs RQ's scheduler, queues workflows use that no worker "
        "listens to, stuck runs, overdue schedules and unapplied migrations. Exits with status 1 when "
        "anything is wrong. --fix sends again what recovery would."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="send again what recovery would, then report")
        parser.add_argument("--json", action="store_true", help="print the findings as JSON")

    def handle(self, *args: Any, fix: bool, json: bool, **options: Any) -> None:
        if fix:
            self.stdout.write(f"fix: {recover()}")
        diagnosis = diagnose()
        if json:
            self.stdout.write(_dumps(diagnosis))
        else:
            for finding in diagnosis.findings:
                self.stdout.write(f"[{finding.severity}] {finding.check}: {finding.message}")
            problems = len(diagnosis.problems)
            self.stdout.write(f"{problems} problem(s)" if problems else "healthy")
        if not diagnosis.healthy:
            raise SystemExit(1)


def _dumps(diagnosis: Any) -> str:
    return json.dumps({"healthy": diagnosis.healthy, **asdict(diagnosis)}, indent=2)
