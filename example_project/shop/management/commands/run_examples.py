"""``manage.py run_examples``: run every example workflow end to end and print what each run did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from durable_django.conf import durable_settings
from durable_django.models import Wait, WorkflowRun

from ...demo import Example, examples
from ...responder import Responder

WORKERS = 2


class Command(BaseCommand):
    help = (
        "Start every example workflow of the guide (once per outcome it shows), drive the runs to the "
        "end and print each run: its status, every step attempt in order, and its final context or "
        "error. Without REDIS_URL the runs execute in this process on an embedded queue (no Redis "
        f"server needed). With REDIS_URL set, {WORKERS} real durable_worker processes execute them and the "
        "command waits for the database to show every run finished. Runs that wait for an input or an "
        "event are answered by the command itself, as each example says. Exits non-zero when a run does "
        "not end as expected, so it doubles as a smoke test. Safe to run again on the same database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only",
            action="append",
            metavar="WORKFLOW",
            help="Run only the examples of this workflow (repeatable), e.g. --only order_processing.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=120.0,
            help="Seconds to wait for every run to finish (default: 120).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options["verbosity"]
        self.responder = Responder()
        tag = uuid.uuid4().hex[:8]
        chosen = [ex for ex in examples(tag) if not options["only"] or ex.workflow in options["only"]]
        if not chosen:
            raise CommandError(f"No example runs workflow {', '.join(options['only'])}.")
        redis_url = os.environ.get("REDIS_URL")
        mode = f"durable_worker x{WORKERS} on {redis_url}" if redis_url else "embedded queue, in this process"
        self.say(f"Running {len(chosen)} example runs ({mode}; database {settings.DATABASES['default']['NAME']})\n")
        started = time.monotonic()
        drive = self.run_with_workers if redis_url else self.run_embedded
        runs = drive(chosen, options["timeout"])
        # Runs rerun from one of their steps (forks) start once the runs they come from have ended.
        forks = [
            example.fork.example(example, run)
            for example, run in zip(chosen, runs, strict=True)
            if example.fork is not None and WorkflowRun.objects.get(pk=run.pk).status == example.status
        ]
        if forks:
            chosen, runs = [*chosen, *forks], [*runs, *drive(forks, options["timeout"])]
        self.say(f"Every run finished after {time.monotonic() - started:.1f} s.\n")

        failures = []
        for example, run in zip(chosen, runs, strict=True):
            run.refresh_from_db()
            problems = (
                example.problems(run.status, run.context, run.error, run.compensation) + self.responder.problems[run.pk]
            )
            self.print_run(example, run, problems)
            if problems:
                failures.append(f"{example.workflow} ({example.label}): {'; '.join(problems)}")
        if failures:
            raise CommandError(
                f"{len(failures)} of {len(runs)} runs did not end as expected:\n  " + "\n  ".join(failures)
            )
        self.say(self.style.SUCCESS(f"All {len(runs)} runs ended as expected."))

    # -- driving the runs -----------------------------------------------------------------------

    def start(self, chosen: list[Example]) -> list[WorkflowRun]:
        runs = []
        for example in chosen:
            # A run's first job is sent when this transaction commits: what an example sends early
            # reaches the run before it can wait for it, with workers as on the embedded queue.
            with transaction.atomic():
                run = example.begin()
                runs.append(run)
                self.responder.track(run, example.responses, example.early)
        return runs

    def run_embedded(self, chosen: list[Example], timeout: float) -> list[WorkflowRun]:
        from durable_django.testing import EmbeddedQueue

        deadline = time.monotonic() + timeout
        with EmbeddedQueue() as queue:
            runs = self.start(chosen)
            # run_due executes what is due now (jobs, retries whose backoff is over, the wake-ups of
            # sleeps and timeouts) without sleeping, so the waits are answered while retries back off.
            while True:
                queue.run_due()
                if self.responder.respond():
                    continue
                if not self.unfinished(runs):
                    return runs
                if time.monotonic() > deadline:
                    raise CommandError(f"{self.unfinished(runs)} runs were still unfinished after {timeout:g} s.")
                time.sleep(0.05)

    def unfinished(self, runs: list[WorkflowRun]) -> int:
        ids = [run.pk for run in runs]
        return (
            WorkflowRun.objects.filter(pk__in=ids).unfinished().count()
            + WorkflowRun.objects.filter(parent__in=ids).unfinished().count()
        )

    def run_with_workers(self, chosen: list[Example], timeout: float) -> list[WorkflowRun]:
        # Workers inherit this process's environment (settings, DATABASE_URL, REDIS_URL), so
        # they see the same database and queues.
        manage = Path(settings.BASE_DIR) / "manage.py" if hasattr(settings, "BASE_DIR") else None
        program = [str(manage)] if manage and manage.exists() else ["-m", "django"]
        command = [sys.executable, *program, "durable_worker", durable_settings.QUEUE]
        if self.verbosity < 2:
            command += ["--verbosity", "0"]
        with tempfile.TemporaryFile() as log:
            workers = [
                subprocess.Popen(command, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
                for _ in range(WORKERS)
            ]
            try:
                runs = self.start(chosen)
                self.wait_for(runs, workers, timeout, log)
            finally:
                self.stop(workers)
        return runs

    def wait_for(self, runs: list[WorkflowRun], workers: list[subprocess.Popen], timeout: float, log: Any) -> None:
        """Poll the database until every run (and every child run) is finished, answering their waits."""
        deadline = time.monotonic() + timeout
        while self.responder.respond() or self.unfinished(runs):
            if all(worker.poll() is not None for worker in workers):
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise CommandError(f"Every worker exited before the runs finished. Their output:\n{tail}")
            if time.monotonic() > deadline:
                raise CommandError(f"{self.unfinished(runs)} runs were still unfinished after {timeout:g} s.")
            time.sleep(0.2)

    def stop(self, workers: list[subprocess.Popen]) -> None:
        # SIGTERM is RQ's warm shutdown: a worker finishes its current job, then exits.
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    # -- printing -----------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        if self.verbosity > 0:
            self.stdout.write(text)

    def print_run(self, example: Example, run: WorkflowRun, problems: list[str]) -> None:
        verdict = (
            self.style.ERROR("UNEXPECTED: " + "; ".join(problems)) if problems else self.style.SUCCESS("as expected")
        )
        self.say(self.style.MIGRATE_HEADING(f"== {example.workflow}: {example.label}"))
        self.print_details(run, indent="")
        if example.note and not problems:
            self.say(textwrap.fill(f"note: {example.note}", width=100, subsequent_indent="      "))
        self.say(f"result: {verdict}\n")

    def print_details(self, run: WorkflowRun, indent: str) -> None:
        self.say(f"{indent}run {run.pk}  workflow {run.workflow}  status {run.status}")
        if run.forked_from_id is not None:
            self.say(f"{indent}forked from run {run.forked_from_id} at {run.forked_from_step!r}")
        self.say(f"{indent}input: {self.compact(run.input)}")
        if run.schedule_id:
            self.say(f"{indent}started by schedule {run.schedule.name}, idempotency key {run.idempotency_key}")
        self.say(f"{indent}steps:")
        for row in run.steps.select_related("group").order_by("id"):
            if row.item_index is not None:
                name = f"{row.step}[{row.item_index}]"
            elif row.kind == "branch":
                name = f"{row.step} -> case {row.output.get('case') if row.output else None!r}"
            else:
                name = f"{row.group.name}/{row.step}" if row.group else row.step
            if row.kind == "compensation":
                name = f"undo {name}"
            value = row.output if row.status == "completed" else row.error
            shown = "" if value is None else self.compact(value)
            self.say(f"{indent}  {name:<36} attempt {row.attempt}  {row.status:<9} {shown}")
            for record in row.logs:
                # What the attempt logged while it ran (DURABLE["CAPTURE_LOGS"]).
                self.say(f"{indent}    logged {record['level']} {record['logger']}: {record['message']}")
        jobs = set(run.steps.exclude(job_id="").values_list("job_id", flat=True))
        if jobs:
            # A short run executes in the one job its start sent; retries and big blocks take more.
            self.say(f"{indent}executed by {len(jobs)} RQ job{'s' if len(jobs) > 1 else ''}")
        for wait in run.waits.select_related("step_result", "resolved_by").order_by("id"):
            self.say(f"{indent}{self.describe_wait(wait)}")
        for note in self.responder.notes.get(run.pk, []):
            self.say(f"{indent}the demo {note}")
        if run.compensation:
            self.say(f"{indent}compensation: {run.compensation}")
        for child in run.children.order_by("created_at"):
            how = "started with start_child, not waited for" if child.detached else "called with call_workflow"
            self.say(f"{indent}  child run of step {child.parent_step!r}, ref {child.ref!r} ({how}):")
            self.print_details(child, indent + "    ")
        label, value = ("context", run.context) if run.status == "completed" else ("error", run.error)
        text = json.dumps(self.readable(value), indent=2, sort_keys=True, cls=DjangoJSONEncoder)
        self.say(f"{indent}{label}:")
        self.say("\n".join(f"{indent}  {line}" for line in text.splitlines()))

    def describe_wait(self, wait: Wait) -> str:
        """``waited for input 'manager_approval' (approval) in step ask_manager: resolved after 0.1 s by ...``."""
        if wait.kind == "sleep":
            what = f"{(wait.due_at - wait.created_at).total_seconds():.1f} s" if wait.due_at else "a sleep"
        elif wait.kind == "input":
            what = f"input {wait.name!r} ({wait.input_kind})"
        elif wait.mode == "one":
            what = f"event {wait.name}"
        else:
            what = f"{wait.mode} of the events {', '.join(wait.events)}"
        text = f"waited for {what} in step {wait.step_result.step}: {wait.status.replace('_', ' ')}"
        if wait.resolved_at is not None:
            text += f" after {(wait.resolved_at - wait.created_at).total_seconds():.1f} s"
        if wait.resolved_by is not None:
            text += f" by {wait.resolved_by.get_username()}"
        return text

    def compact(self, value: Any) -> str:
        text = json.dumps(self.readable(value), sort_keys=True, cls=DjangoJSONEncoder)
        # Step outputs can hold a whole context; the final context below shows everything.
        if self.verbosity < 2 and len(text) > 150:
            text = text[:147] + "..."
        return text

    def readable(self, value: Any) -> Any:
        """``value`` without stored tracebacks, unless -v 2 asks for them."""
        if self.verbosity >= 2:
            return value
        if isinstance(value, dict):
            return {
                key: "(traceback hidden, use -v 2)" if key == "traceback" else self.readable(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.readable(item) for item in value]
        return value
