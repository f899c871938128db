"""What an attempt logged, as the admin shows it: on a step result's page, in a run's step list and timeline.

The records are the ones :mod:`durable_django.capture` stored in ``StepResult.logs``; each is shown
with its time, level, logger and message, HTML-escaped by the template. A short list is open; a
longer one (or one with long messages) is folded, its summary saying how many records, and of
what levels, it holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Func, IntegerField, QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.safestring import SafeString

from .admin_lists import GuardedChangeList

OPEN_UP_TO = 8
"""Records shown open; more are folded."""

LONG_MESSAGE = 300
"""Characters from which one message alone folds the list."""

LEVEL_CLASSES = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error", "CRITICAL": "error"}


@dataclass(frozen=True)
class LogLine:
    """One stored record, ready to show."""

    at: str  # the time of day, to the millisecond, in the current time zone
    stamp: str  # as stored (ISO)
    level: str
    level_class: str
    logger: str
    message: str


def log_lines(logs: Any) -> list[LogLine]:
    """The records of ``logs`` (a ``StepResult.logs`` value) as lines; anything malformed is shown as it is."""
    lines = []
    for record in logs if isinstance(logs, list) else []:
        if not isinstance(record, dict):
            record = {"message": str(record)}
        stamp = str(record.get("at", ""))
        level = str(record.get("level", ""))
        lines.append(
            LogLine(
                at=_time_of_day(stamp),
                stamp=stamp,
                level=level,
                level_class=LEVEL_CLASSES.get(level, "info"),
                logger=str(record.get("logger", "")),
                message=str(record.get("message", "")),
            )
        )
    return lines


def _time_of_day(stamp: str) -> str:
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if timezone.is_naive(moment):
        return stamp
    return format_date(timezone.localtime(moment), "H:i:s.u")[:-3]


def levels_note(lines: list[LogLine]) -> str:
    """``"3 records: 2 INFO, 1 WARNING"``."""
    counts = Counter(line.level for line in lines)
    noun = "record" if len(lines) == 1 else "records"
    return f"{len(lines)} {noun}: " + ", ".join(f"{count} {level}" for level, count in counts.items())


def folds(lines: list[LogLine]) -> bool:
    """Whether the list of ``lines`` is shown folded."""
    return len(lines) > OPEN_UP_TO or any(len(line.message) > LONG_MESSAGE or "\n" in line.message for line in lines)


def step_logs(logs: Any, *, folded: bool | None = None) -> SafeString | str:
    """The records of one attempt as HTML; ``""`` when it logged nothing. ``folded``: always folded
    (``True``) or open (``False``) rather than by length."""
    lines = log_lines(logs)
    if not lines:
        return ""
    context = {"lines": lines, "note": levels_note(lines), "folded": folds(lines) if folded is None else folded}
    return render_to_string("admin/durable_django/step_logs.html", context)


class LogCount(Func):
    """The number of records in ``StepResult.logs``, counted by the database (the list reads no logs)."""

    function = "jsonb_array_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="json_array_length", **extra)

    def as_mysql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, function="json_length", **extra)


class LogsCountedChangeList(GuardedChangeList):
    """The list of step results: a page of rows without their logs, each with how many records it has."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer("logs")
