"""``manage.py durable_recover``: resume work whose worker died or whose job was lost."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from durable_django.conf import durable_settings
from durable_django.recovery import fire_schedules, recover


class Command(BaseCommand):
    help = (
        "Find runs, branches and joins that should be moving but are not (a worker died, a job was lost "
        "with Redis, a scheduled retry is overdue) and send their work again. Safe to run next to "
        "workers and other sweepers. Every rqworker process already does this every "
        "DURABLE['RECOVER_INTERVAL'] seconds; use this command for a one-off pass or a dedicated sweeper."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="keep sweeping until interrupted")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between two sweeps with --loop (default: DURABLE['RECOVER_INTERVAL'])",
        )

    def handle(self, *args: Any, loop: bool, interval: float | None, **options: Any) -> None:
        if interval is not None and interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        pause = interval if interval is not None else durable_settings.RECOVER_INTERVAL
        while True:
            close_old_connections()
            report = recover()
            fire_schedules()
            self.stdout.write(f"recovery: {report}")
            if not loop:
                return
            try:
                time.sleep(pause)
            except KeyboardInterrupt:
                return
