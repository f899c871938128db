"""The writes of schedules: claiming a fire with the runs it starts, syncing declared rows, switching.

A fire is claimed by a conditional ``UPDATE`` of the schedule's ``next_fire_at`` from the value the
claimer read to the next due time: of any number of sweepers and fire jobs that read the same
row, exactly one updates it (on PostgreSQL the others wait for its row lock, then match nothing),
and the runs of the fire are started in the same transaction, so a fire that starts no run
(an error, a crash) is not claimed either.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, router, transaction

from ..models import Schedule, WorkflowRun
from ..schedules import ScheduleDeclaration

# The fields of a row that a declaration in code sets.
DECLARED_FIELDS = ("workflow", "cron", "timezone", "input", "catch_up")


def claim_fire(
    row: Schedule,
    fired_at: datetime,
    next_at: datetime,
    start: Callable[[], list[WorkflowRun]],
    after_commit: Callable[[], None] | None = None,
) -> list[WorkflowRun] | None:
    """Claim the fire of ``row`` due at its ``next_fire_at`` and call ``start`` for its runs.

    ``None`` when another process claimed it (or the row was disabled or changed meanwhile). The
    runs ``start`` returns are linked to the schedule; ``after_commit`` runs once it all committed.
    """
    with transaction.atomic(using=router.db_for_write(Schedule)):
        won = Schedule.objects.filter(pk=row.pk, enabled=True, next_fire_at=row.next_fire_at).update(
            next_fire_at=next_at, last_fired_at=fired_at
        )
        if won != 1:
            return None
        runs = start()
        link_runs(row, runs)
        if after_commit is not None:
            transaction.on_commit(after_commit)
    row.next_fire_at, row.last_fired_at = next_at, fired_at
    return runs


def start_linked(row: Schedule, start: Callable[[], WorkflowRun]) -> WorkflowRun:
    """Start a run of ``row`` out of its fire times (fire now), linked to it in the same transaction."""
    with transaction.atomic(using=router.db_for_write(Schedule)):
        run = start()
        link_runs(row, [run])
    return run


def link_runs(row: Schedule, runs: list[WorkflowRun]) -> None:
    """Mark ``runs`` as started by ``row`` (a run found by its idempotency key keeps its schedule)."""
    WorkflowRun.objects.filter(pk__in=[run.pk for run in runs], schedule__isnull=True).update(schedule=row)
    for run in runs:
        if run.schedule_id is None:
            run.schedule = row


def save_declared(declaration: ScheduleDeclaration, next_at: Callable[[], datetime]) -> tuple[Schedule, str]:
    """Create or update the row of a declaration; returns the row and ``"created"``, ``"updated"`` or ``""``.

    A new row, or one that was not declared in code until now, takes every field of the
    declaration, ``enabled`` included. A row declared in code already keeps its ``enabled``, which
    is the operators' (the admin, the API). ``next_fire_at`` is computed again (``next_at()``) when
    the cron expression or the timezone changed, and when it is missing on an enabled row.
    """
    values: dict[str, Any] = {name: getattr(declaration, name) for name in DECLARED_FIELDS}
    with transaction.atomic(using=router.db_for_write(Schedule)):
        row = Schedule.objects.select_for_update().filter(name=declaration.name).first()
        if row is None:
            try:
                with transaction.atomic(using=router.db_for_write(Schedule)):
                    row = Schedule.objects.create(
                        name=declaration.name,
                        enabled=declaration.enabled,
                        declared_in_code=True,
                        next_fire_at=next_at(),
                        **values,
                    )
            except IntegrityError:
                # Another process created it meanwhile: with the same declaration, so nothing is left to do.
                return Schedule.objects.get(name=declaration.name), ""
            return row, "created"
        changed = [name for name, value in values.items() if getattr(row, name) != value]
        if not row.declared_in_code:
            changed += ["declared_in_code", *(["enabled"] if row.enabled != declaration.enabled else [])]
            row.declared_in_code, row.enabled = True, declaration.enabled
        timing = {"cron", "timezone", "enabled"} & set(changed) or (row.enabled and row.next_fire_at is None)
        for name in DECLARED_FIELDS:
            setattr(row, name, values[name])
        if timing:
            row.next_fire_at = next_at_for(row, next_at)
            changed.append("next_fire_at")
        if changed:
            row.save(update_fields=[*dict.fromkeys(changed), "updated_at"])
        return row, "updated" if changed else ""


def next_at_for(row: Schedule, next_at: Callable[[], datetime]) -> datetime | None:
    return next_at() if row.enabled else None


def retire_undeclared(names: set[str]) -> list[str]:
    """Disable the rows declared in code whose declaration is gone; they are kept, as ordinary rows.

    Returns their names. Their runs keep pointing at them; an operator may delete them, or enable
    them again (then they fire as rows made in the admin do).
    """
    gone = Schedule.objects.filter(declared_in_code=True).exclude(name__in=names)
    retired = list(gone.values_list("name", flat=True))
    if retired:
        Schedule.objects.filter(name__in=retired, declared_in_code=True).update(
            declared_in_code=False, enabled=False, next_fire_at=None
        )
    return retired


def switch(row: Schedule, enabled: bool, next_at: datetime | None) -> tuple[bool, datetime | None]:
    """Enable (due next at ``next_at``) or disable ``row``.

    Returns whether it changed (``False`` if it already was) and the next fire time it had.
    """
    with transaction.atomic(using=router.db_for_write(Schedule)):
        current = Schedule.objects.select_for_update().filter(pk=row.pk).values_list("enabled", "next_fire_at").first()
        if current is None or current[0] == enabled:
            return False, None
        Schedule.objects.filter(pk=row.pk).update(enabled=enabled, next_fire_at=next_at)
    row.enabled, row.next_fire_at = enabled, next_at
    return True, current[1]


def save_edited(row: Schedule, fields: list[str], update_next: bool, next_at: Callable[[], datetime]) -> None:
    """Save the ``fields`` an operator edited (a new row whole); the next fire time is computed again
    when ``update_next``.

    Only those fields are written: a fire that moved ``next_fire_at`` and ``last_fired_at`` meanwhile
    is not undone by the values the form was loaded with.
    """
    if update_next or row.next_fire_at is None:
        row.next_fire_at = next_at_for(row, next_at)
        fields = [*fields, "next_fire_at"]
    if row.pk is None:
        row.save()
    else:
        row.save(update_fields=[*dict.fromkeys(fields), "updated_at"])
