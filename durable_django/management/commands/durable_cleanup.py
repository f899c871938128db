"""``manage.py durable_cleanup``: delete finished runs older than an age, in batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import ProtectedError, RestrictedError

from durable_django.conf import RETENTION_BATCH_SIZE, parse_age
from durable_django.retention import checked_statuses, delete_finished_runs, finished_statuses


def runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


class Command(BaseCommand):
    help = (
        "Delete finished workflow runs whose finished_at is older than --older-than, with their step "
        "results, parallel groups, waits, events and child runs, in batches of --batch-size runs (each "
        "batch its own transaction). A pending, running or waiting run is never deleted, nor a finished "
        "run whose parent or any child run has not finished (those are skipped and counted). "
        "DURABLE['RETENTION'] has the recovery sweeper do the same every few minutes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="delete runs that finished more than AGE ago: 30d, 12h, 90m, 45s, or a number of days (30)",
        )
        parser.add_argument(
            "--status",
            metavar="STATUS[,STATUS...]",
            default=",".join(finished_statuses()),
            help=f"only runs in these finished statuses, comma-separated (default: {','.join(finished_statuses())})",
        )
        parser.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
        parser.add_argument("--dry-run", action="store_true", help="delete nothing; say how many runs would go")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=RETENTION_BATCH_SIZE,
            metavar="N",
            help=f"runs deleted per transaction (default {RETENTION_BATCH_SIZE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        try:
            statuses = checked_statuses(name.strip() for name in options["status"].split(",") if name.strip())
        except ValueError as exc:
            raise CommandError(f"--status: {exc}") from None
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size: must be a positive number of runs, not {options['batch_size']}.")
        try:
            done = delete_finished_runs(
                age, statuses, options["workflow"], options["batch_size"], dry_run=options["dry_run"]
            )
        except (ProtectedError, RestrictedError) as exc:
            # A model of the project points at runs with on_delete=PROTECT or RESTRICT.
            raise CommandError(f"Stopped: {exc.args[0]} The batches before this one were deleted.") from None
        given = options["older_than"].strip()
        age_text = (f"{given} day" if given == "1" else f"{given} days") if given.isdigit() else given
        when = f"that finished more than {age_text} ago (child runs included)"
        if done.dry_run:
            self.stdout.write(f"Would delete {runs(done.deleted)} {when}. Dry run: nothing was deleted.")
        else:
            self.stdout.write(f"Deleted {runs(done.deleted)} {when}.")
        if done.skipped:
            them = "it" if done.skipped == 1 else "them"
            self.stdout.write(
                f"{'Would skip' if done.dry_run else 'Skipped'} {runs(done.skipped)} tied to an unfinished parent "
                f"or child run; a later cleanup deletes {them} once that run has finished."
            )
