"""What ``manage.py durable_doctor`` checks: workers, queues, stuck runs, overdue schedules, migrations.

:func:`diagnose` reads Redis and the database and returns a :class:`Diagnosis`; it changes nothing.
Each :class:`Finding` names the queue, run or schedule concerned and says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from . import dispatch
from .conf import durable_settings
from .definition import queue_for, registered_workflows
from .models import RunStatus, Schedule, WorkflowRun
from .nodes import walk
from .presence import presence

# How many ids a finding lists before it says "and N more".
EXAMPLES = 10
# How late a schedule's next fire may be before it counts as overdue, in seconds.
SCHEDULE_GRACE = 60


@dataclass(frozen=True)
class Finding:
    """One thing the doctor saw: ``severity`` is ``"ok"``, ``"warning"`` or ``"problem"``."""

    severity: str
    check: str
    message: str


@dataclass
class Diagnosis:
    """Every finding of one :func:`diagnose`, and the workers seen per queue."""

    findings: list[Finding] = field(default_factory=list)
    workers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def add(self, severity: str, check: str, message: str) -> None:
        self.findings.append(Finding(severity, check, message))


def _listed(ids: list[str], total: int) -> str:
    shown = ", ".join(ids[:EXAMPLES])
    return shown + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


def workflow_queues() -> dict[str, set[str]]:
    """Every queue a registered workflow's steps and blocks run on, with the workflows using it."""
    used: dict[str, set[str]] = {}
    for name, wf in registered_workflows().items():
        for queue in {queue_for(wf), *(queue_for(wf, node) for node in walk(wf.steps))}:
            used.setdefault(queue, set()).add(name)
    return used


def check_workers(diagnosis: Diagnosis, queues: dict[str, set[str]]) -> None:
    configured = set(getattr(settings, "RQ_QUEUES", None) or {})
    for queue in sorted(set(queues) - configured):
        diagnosis.add(
            "problem",
            "queues",
            f"queue {queue!r} is used by {', '.join(sorted(queues[queue]))} but is not in settings.RQ_QUEUES; "
            "add it there (manage.py check says the same)",
        )
    for seen in presence(set(queues) & configured):
        if seen.workers:
            diagnosis.workers[seen.queue] = list(seen.workers)
            diagnosis.add(
                "ok",
                "workers",
                f"queue {seen.queue!r}: {len(seen.workers)} worker(s), scheduler {'yes' if seen.scheduler else 'no'}",
            )
            if not seen.scheduler:
                diagnosis.add(
                    "warning",
                    "scheduler",
                    f"queue {seen.queue!r}: no worker runs RQ's scheduler; delayed starts, delayed retries and "
                    "wake-ups wait for recovery. Run a worker with it (manage.py durable_worker).",
                )
        elif seen.queue in queues:
            diagnosis.add(
                "problem",
                "queues",
                f"queue {seen.queue!r} is used by {', '.join(sorted(queues[seen.queue]))} but no worker listens "
                f"to it; start one: manage.py durable_worker {seen.queue}",
            )


def check_runs(diagnosis: Diagnosis, now: datetime) -> None:
    margin = now - timedelta(seconds=durable_settings.LEASE_SECONDS)
    unfinished = WorkflowRun.objects.filter(
        parent__isnull=True, status__in=(RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING)
    )
    stuck = unfinished.filter(lease_expires_at__lt=margin).order_by("lease_expires_at")
    total = stuck.count()
    if total:
        ids = [str(pk) for pk in stuck.values_list("pk", flat=True)[:EXAMPLES]]
        diagnosis.add(
            "problem",
            "runs",
            f"{total} run(s) past their lease: {_listed(ids, total)}; "
            "run manage.py durable_doctor --fix (or durable_recover) to send them again",
        )
    # A run that starts later (run_at ahead) is pending with no job in a queue on purpose: its start job is scheduled.
    due = unfinished.filter(status=RunStatus.PENDING, lease_owner="").exclude(run_at__gt=now)
    pending = list(due.exclude(pk__in=stuck.values("pk")).order_by("created_at")[:500])
    places: dict[object, tuple[str, str]] = {}
    for run in pending:
        wf = registered_workflows().get(run.workflow)
        queue = queue_for(wf, wf.node(run.current_step) if wf else None)
        places[run.pk] = (queue, dispatch.run_job_id(run.pk, run.version))
    queued = dispatch.QueuedJobs(now).among(list(places.values()))
    lost = []
    for pk, place in places.items():
        if place not in queued and dispatch.job_state(*place, now)[0] == "missing":
            lost.append(str(pk))
    if lost:
        diagnosis.add(
            "problem",
            "runs",
            f"{len(lost)} pending run(s) with no job in Redis: {_listed(lost, len(lost))}; "
            "run manage.py durable_doctor --fix to send them again",
        )


def check_schedules(diagnosis: Diagnosis, now: datetime) -> None:
    overdue = Schedule.objects.filter(enabled=True, next_fire_at__lt=now - timedelta(seconds=SCHEDULE_GRACE))
    total = overdue.count()
    if total:
        names = list(overdue.values_list("name", flat=True)[:EXAMPLES])
        diagnosis.add(
            "problem",
            "schedules",
            f"{total} schedule(s) overdue: {_listed(names, total)}; check that a worker fires schedules",
        )


def check_migrations(diagnosis: Diagnosis) -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
        diagnosis.add(
            "problem",
            "migrations",
            f"{len(plan)} unapplied migration(s): {_listed(names, len(names))}; run manage.py migrate",
        )


def diagnose(now: datetime | None = None) -> Diagnosis:
    """Read Redis and the database and say what is wrong; changes nothing."""
    now = now or timezone.now()
    diagnosis = Diagnosis()
    try:
        check_migrations(diagnosis)
    except DatabaseError as error:
        diagnosis.add("problem", "database", f"the database does not answer ({type(error).__name__}: {error})")
        return diagnosis
    try:
        check_workers(diagnosis, workflow_queues())
        check_runs(diagnosis, now)
    except dispatch.QUEUE_UNAVAILABLE as error:
        diagnosis.add("problem", "redis", f"Redis does not answer ({type(error).__name__}: {error}); check REDIS_URL")
    check_schedules(diagnosis, now)
    return diagnosis
