"""Schedules declared in code: ``schedule()``, their validation and the registry; cron arithmetic.

Cron expressions are parsed and iterated by croniter, with aware datetimes in the schedule's
timezone (:mod:`zoneinfo`), so daylight-saving transitions follow croniter's rules (see
docs/schedules.md). This module imports no models: ``schedule()`` is called while workflows
modules load, before the app registry is ready. The rows are synced by
:mod:`durable_django.firing`, which also fires them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from django.apps import apps

from .context import Unserializable, roundtrip
from .definition import find_workflow
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
    try:
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except (CroniterBadDateError, CroniterError, ValueError, OverflowError):
        return f"{cron!r} never matches a date (such as 30 February)"
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


def input_problem(value: Any) -> str | None:
    """What is wrong with a schedule's input, or ``None``: like a run's, a JSON-serializable dict."""
    if not isinstance(value, dict):
        return f"input must be a dict, got {type(value).__name__}"
    try:
        roundtrip(value)
    except Unserializable as exc:
        return f"input is not JSON-serializable: {exc}"
    return None


def fire_key(name: str, fire_at: datetime) -> str:
    """The idempotency key of the run a fire starts: ``schedule:<name>:<fire time ISO>``.

    The fire time is written in the schedule's timezone, so the two fires of an hour repeated when
    daylight-saving time ends differ by their offset.
    """
    return f"schedule:{name}:{fire_at.isoformat()}"


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

    Call it in a ``workflows.py``. The ``Schedule`` row is created or updated after ``migrate`` and
    in every worker before its first due check (see docs/schedules.md). Raises
    :class:`~durable_django.WorkflowDefinitionError` naming the schedule when the name, the cron
    expression, the timezone or the input is invalid. An unknown workflow is refused here once the
    apps are loaded; while workflows modules are still being imported (the workflow may come from
    another app's module), the system check ``durable_django.E020`` reports it instead.
    """
    if not isinstance(name, str) or not name or len(name) > 200 or "/" in name:
        raise WorkflowDefinitionError(
            f"Schedule name must be a non-empty string of at most 200 characters, without '/': {name!r}."
        )
    problem = cron_problem(cron) or timezone_problem(timezone)
    if problem:
        raise WorkflowDefinitionError(f"Schedule {name!r}: {problem}.")
    if not isinstance(workflow, str) or not workflow:
        raise WorkflowDefinitionError(f"Schedule {name!r}: the workflow must be a workflow's name.")
    if apps.ready and find_workflow(workflow) is None:
        raise WorkflowDefinitionError(f"Schedule {name!r}: no workflow named {workflow!r} is registered.")
    problem = None if input is None else input_problem(input)
    if problem:
        raise WorkflowDefinitionError(f"Schedule {name!r}: {problem}.")
    declaration = ScheduleDeclaration(
        name=name,
        workflow=workflow,
        cron=cron.strip(),
        timezone=timezone,
        input=roundtrip(dict(input or {})),
        enabled=enabled,
        catch_up=catch_up,
    )
    existing = _declared.get(name)
    if existing is not None and existing != declaration:
        raise WorkflowDefinitionError(f"Schedule {name!r} is declared twice, differently.")
    _declared[name] = declaration
    return declaration


def unknown_workflow(declaration: ScheduleDeclaration) -> str | None:
    """The message for a declaration whose workflow is not registered, or ``None`` when it is."""
    if find_workflow(declaration.workflow) is not None:
        return None
    return f"Schedule {declaration.name!r} starts workflow {declaration.workflow!r}, which is not registered"


def declared_schedules() -> dict[str, ScheduleDeclaration]:
    """A snapshot of the schedules declared in code, by name."""
    return dict(_declared)


def forget_schedule(name: str) -> None:
    """Remove a declaration (for tests that declare schedules of their own)."""
    _declared.pop(name, None)


def previous_fire(cron: str, tz: str, at: datetime) -> datetime:
    """The last fire time at or before ``at`` (aware), in ``tz``."""
    it = croniter(cron, at.astimezone(zone(tz)))
    before: datetime = it.get_prev(datetime)
    following = next_fire(cron, tz, before)
    return following if following <= at else before


@dataclass(frozen=True)
class Plan:
    """What one pass fires for a due schedule: ``times`` (in order), then ``next_at``, the next due time."""

    times: tuple[datetime, ...]
    next_at: datetime


def plan(cron: str, tz: str, due_at: datetime, now: datetime, *, catch_up: bool) -> Plan:
    """The fires of a schedule due at ``due_at`` (its ``next_fire_at``, at or before ``now``).

    ``catch_up=False``: only the latest fire time at or before ``now``. ``catch_up=True``: every one
    from ``due_at`` on, at most :data:`CATCH_UP_LIMIT`; when more were missed, ``next_at`` is the
    first one left, so the next pass goes on from there.
    """
    first = due_at.astimezone(zone(tz))
    if not catch_up:
        latest = max(previous_fire(cron, tz, now), first)
        return Plan((latest,), next_fire(cron, tz, max(latest, now)))
    times = [first]
    for fire_at in fire_times(cron, tz, first):
        if fire_at > now:
            return Plan(tuple(times), fire_at)
        if len(times) == CATCH_UP_LIMIT:
            return Plan(tuple(times), fire_at)
        times.append(fire_at)
    raise AssertionError("croniter's iteration ended")  # pragma: no cover - fire_times never ends
