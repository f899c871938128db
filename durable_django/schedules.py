"""Schedules declared in code: ``schedule()``, their validation and the registry; cron arithmetic.

Cron expressions are parsed and iterated by croniter, with aware datetimes in the schedule's
timezone (:mod:`zoneinfo`), so daylight-saving transitions follow croniter's rules (see
docs/schedules.md). This module imports no models: ``schedule()`` is called while workflows
modules load, before the app registry is ready. The rows are synced by
:mod:`durable_django.scheduling`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .exceptions import WorkflowDefinitionError

# How many missed fire times one pass fires for a schedule with catch_up=True; the rest wait
# for the next pass (a sweep every RECOVER_INTERVAL), so a long outage drains in bounded steps.
CATCH_UP_LIMIT = 100


@dataclass(frozen=True)
class ScheduleDeclaration:
    """A schedule as declared with :func:`schedule` in a workflows module."""

    name: str
    workflow: str
    cron: str
    timezone: str = "UTC"
    input: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    catch_up: bool = False


_declared: dict[str, ScheduleDeclaration] = {}


def cron_problem(cron: str) -> str | None:
    """What is wrong with a cron expression, or ``None`` when croniter accepts it."""
    if not isinstance(cron, str) or not cron.strip():
        return "the cron expression is empty"
    if not croniter.is_valid(cron):
        return f"{cron!r} is not a valid cron expression (5 fields, or 6 with seconds last)"
    return None


def timezone_problem(name: str) -> str | None:
    """What is wrong with a timezone name, or ``None`` when :mod:`zoneinfo` knows it."""
    if not isinstance(name, str) or not name:
        return "the timezone is empty"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a known timezone (e.g. 'UTC', 'Europe/Berlin')"
    return None


def zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def next_fire(cron: str, tz: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), as an aware datetime in ``tz``."""
    it = croniter(cron, after.astimezone(zone(tz)))
    result: datetime = it.get_next(datetime)
    return result


def fire_times(cron: str, tz: str, after: datetime) -> Iterator[datetime]:
    """Every fire time strictly after ``after``, in order, aware in ``tz``."""
    it = croniter(cron, after.astimezone(zone(tz)))
    while True:
        yield it.get_next(datetime)


def schedule(
    name: str,
    workflow: str,
    cron: str,
    *,
    timezone: str = "UTC",
    input: dict[str, Any] | None = None,
    enabled: bool = True,
    catch_up: bool = False,
) -> ScheduleDeclaration:
    """Declare that ``workflow`` starts at every time of ``cron`` in ``timezone``.

    Call it in a ``workflows.py``. The ``Schedule`` row is created or updated when workers start,
    after ``migrate`` and by ``manage.py durable_schedules --sync``. Raises
    :class:`~durable_django.WorkflowDefinitionError` naming the schedule when the name, the cron
    expression or the timezone is invalid. The workflow's name is checked when the rows are synced.
    """
    if not isinstance(name, str) or not name or len(name) > 200:
        raise WorkflowDefinitionError(f"Schedule name must be a non-empty string of at most 200 characters: {name!r}.")
    problem = cron_problem(cron) or timezone_problem(timezone)
    if problem:
        raise WorkflowDefinitionError(f"Schedule {name!r}: {problem}.")
    if not isinstance(workflow, str) or not workflow:
        raise WorkflowDefinitionError(f"Schedule {name!r}: the workflow must be a workflow's name.")
    if input is not None and not isinstance(input, dict):
        raise WorkflowDefinitionError(f"Schedule {name!r}: input must be a dict, got {type(input).__name__}.")
    declaration = ScheduleDeclaration(
        name=name,
        workflow=workflow,
        cron=cron.strip(),
        timezone=timezone,
        input=dict(input or {}),
        enabled=enabled,
        catch_up=catch_up,
    )
    existing = _declared.get(name)
    if existing is not None and existing != declaration:
        raise WorkflowDefinitionError(f"Schedule {name!r} is declared twice, differently.")
    _declared[name] = declaration
    return declaration


def declared_schedules() -> dict[str, ScheduleDeclaration]:
    """A snapshot of the schedules declared in code, by name."""
    return dict(_declared)


def forget_schedule(name: str) -> None:
    """Remove a declaration (for tests that declare schedules of their own)."""
    _declared.pop(name, None)
