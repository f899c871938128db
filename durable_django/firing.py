"""Firing schedules: what is due, the runs a fire starts, syncing declared rows, operators' switches.

A schedule fires from two places, neither of them a process of its own: the fire job that RQ's
scheduler releases at the next fire time (:mod:`durable_django.schedule_jobs`), and the recovery
sweeper of the workers, which calls :func:`fire_due` every ``RECOVER_INTERVAL`` as the safety net.
Both claim a fire through :func:`durable_django.store.schedules.claim_fire`, and each run a fire
starts carries the idempotency key ``schedule:<name>:<fire time ISO>``, so a fire time starts one
run however many workers, sweepers and jobs race for it.

Declared rows are synced (:func:`sync_schedules`) after ``migrate`` and lazily, in each process,
before its first due check: never in ``AppConfig.ready()``, where Django warns about queries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router
from django.utils import timezone

from . import engine, schedule_jobs
from .definition import find_workflow, queue_for
from .exceptions import InvalidInput
from .logging import run_fields
from .models import Schedule, WorkflowRun
from .schedules import (
    cron_problem,
    declared_schedules,
    fire_key,
    input_problem,
    next_fire,
    plan,
    timezone_problem,
    zone,
)
from .store import schedules as rows

logger = logging.getLogger("durable_django")

# How many due schedules one pass looks at; the rest are left to the next pass, a second later.
DUE_BATCH = 100


@dataclass
class Synced:
    """What :func:`sync_schedules` did: the names of the rows it created, updated and disabled."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)


_synced = threading.Event()


def sync_schedules(now: datetime | None = None, *, send_jobs: bool = True, retire: bool = True) -> Synced:
    """Create or update the row of every schedule declared in code; keep the rows made by operators.

    A row declared in code whose declaration is gone is disabled and kept as an ordinary row
    (``retire``). ``send_jobs``: schedule the fire job of each row created or changed. An unchanged
    row's job was sent by its last fire; if Redis lost it, the sweeper fires in its stead.
    """
    now = now or timezone.now()
    done = Synced()
    declared = declared_schedules()
    for declaration in declared.values():
        try:
            row, outcome = rows.save_declared(declaration, next_fire_after(declaration.cron, declaration.timezone, now))
        except Exception:
            # One declaration that cannot be saved must not keep the others (nor recovery) from going on.
            logger.exception("schedule %r could not be synced; the next sync tries again", declaration.name)
            continue
        if outcome:
            (done.created if outcome == "created" else done.updated).append(row.name)
            if send_jobs:
                schedule_next(row)
    if retire:
        done.retired = rows.retire_undeclared(set(declared))
    if done.created or done.updated or done.retired:
        logger.info(
            "schedules synced: created %s, updated %s, disabled %s",
            done.created or "none",
            done.updated or "none",
            done.retired or "none",
        )
    _synced.set()
    return done


def next_fire_after(cron: str, tz: str, now: datetime) -> Callable[[], datetime]:
    return lambda: next_fire(cron, tz, now)


def ensure_synced() -> None:
    """Sync the declared rows once in this process, before its first due check.

    Rows whose declaration is gone are retired only after ``migrate`` (which runs the deploy's
    code): a worker of the previous release, restarted during a rolling deploy, must not disable
    the schedules the new release declares.
    """
    if not _synced.is_set():
        sync_schedules(retire=False)


def sync_after_migrate(using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """The ``post_migrate`` receiver: sync the rows once the table exists (no job is sent: no worker may run)."""
    if router.db_for_write(Schedule) != using:
        return
    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return  # migrated back to before schedules existed
    sync_schedules(send_jobs=False)


# -- firing ---------------------------------------------------------------------------------------


def fire_due(now: datetime | None = None, *, schedule_id: Any = None) -> list[WorkflowRun]:
    """Fire every enabled schedule due at ``now`` (or only ``schedule_id``); returns the runs started."""
    now = now or timezone.now()
    ensure_synced()
    due = Schedule.objects.filter(enabled=True, next_fire_at__lte=now)
    if schedule_id is not None:
        due = due.filter(pk=schedule_id)
    started: list[WorkflowRun] = []
    for row in due.order_by("next_fire_at")[:DUE_BATCH]:
        try:
            started += fire(row, now)
        except Exception:
            # One schedule's failure must neither stop the others nor the sweep that called this.
            logger.exception("schedule %r could not fire; the next due check tries again", row.name)
    return started


def fire(row: Schedule, now: datetime) -> list[WorkflowRun]:
    """Claim the fire of a due ``row`` and start its runs; none if another process claimed it."""
    assert row.next_fire_at is not None
    broken = cron_problem(row.cron) or timezone_problem(row.timezone)
    if broken:
        # Written past the admin's form (in the database, a fixture): there is no next time to fire at.
        if rows.switch(row, False, None)[0]:
            logger.error("schedule %r is disabled: %s; correct it and enable it again", row.name, broken)
        return []
    wf = find_workflow(row.workflow)
    fires = plan(row.cron, row.timezone, row.next_fire_at, now, catch_up=row.catch_up)
    problem = input_problem(row.input) if wf is not None else f"no workflow named {row.workflow!r} is registered"
    if problem:
        # Claimed all the same, so that it is said once per fire time rather than at every sweep.
        if rows.claim_fire(row, fires.times[-1], fires.next_at, list) is not None:
            logger.error("schedule %r skipped its fire at %s: %s", row.name, fires.times[-1].isoformat(), problem)
        return []
    assert wf is not None
    queue = queue_for(wf)

    def start() -> list[WorkflowRun]:
        started = []
        for fire_at in fires.times:
            run, created = engine.get_or_start_run(wf, row.input, idempotency_key=fire_key(row.name, fire_at))
            if created:
                started.append(run)
        return started

    runs = rows.claim_fire(
        row,
        fires.times[-1],
        fires.next_at,
        start,
        after_commit=lambda: schedule_jobs.send_fire_job(row.pk, fires.next_at, queue),
    )
    if runs is None:
        return []
    for run in runs:
        logger.info(
            "schedule %r fired: run %s of workflow %r",
            row.name,
            run.pk,
            wf.name,
            extra=run_fields(run.pk, wf.name),
        )
    return runs


def fire_now(row: Schedule, now: datetime | None = None) -> WorkflowRun:
    """Start a run of ``row`` now, out of its cron times (the admin's and the API's "fire now").

    Its idempotency key names the current second: asking twice within one second starts one run.
    The schedule's next fire time is left as it is; a disabled schedule may be fired too.
    """
    now = (now or timezone.now()).replace(microsecond=0)
    wf = find_workflow(row.workflow)
    if wf is None:
        raise InvalidInput(f"Schedule {row.name!r}: no workflow named {row.workflow!r} is registered.")
    # Its own key: a cron fire at this very second is another run, not this one.
    key = f"schedule:{row.name}:now:{now.astimezone(zone(row.timezone)).isoformat()}"
    return rows.start_linked(row, lambda: engine.get_or_start_run(wf, row.input, idempotency_key=key)[0])


def schedule_next(row: Schedule, replaced: datetime | None = None) -> None:
    """Send the fire job of ``row``'s next fire time (nothing for a disabled row or unknown workflow).

    ``replaced``: the next fire time before an operator's change, whose fire job is withdrawn.
    """
    wf = find_workflow(row.workflow)
    if wf is None:
        return
    if replaced is not None and replaced != row.next_fire_at:
        schedule_jobs.withdraw_fire_job(row.pk, replaced, queue_for(wf))
    if row.enabled and row.next_fire_at is not None:
        schedule_jobs.send_fire_job(row.pk, row.next_fire_at, queue_for(wf))


# -- operators ------------------------------------------------------------------------------------


def set_enabled(row: Schedule, enabled: bool, now: datetime | None = None) -> bool:
    """Enable or disable ``row``; ``False`` if it already was. An enabled row fires next after ``now``.

    Fire times missed while it was disabled are not fired.
    """
    now = now or timezone.now()
    next_at = next_fire(row.cron, row.timezone, now) if enabled else None
    switched, replaced = rows.switch(row, enabled, next_at)
    if not switched:
        return False
    schedule_next(row, replaced)
    logger.info("schedule %r %s", row.name, "enabled" if enabled else "disabled")
    return True


def save_schedule(row: Schedule, changed: list[str], now: datetime | None = None) -> None:
    """Save a row created or edited by an operator (the admin's form), with its next fire time.

    ``changed``: the names of the fields that were edited, the only ones written to an existing
    row. The next fire time is computed again from ``now`` when the cron expression, the timezone
    or ``enabled`` changed.
    """
    now = now or timezone.now()
    timing = row.pk is None or bool({"cron", "timezone", "enabled"} & set(changed))
    replaced = row.next_fire_at
    rows.save_edited(row, changed, timing, next_fire_after(row.cron, row.timezone, now))
    schedule_next(row, replaced)
