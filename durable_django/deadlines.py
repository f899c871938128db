"""When a run starts and by when it must finish: ``delay`` / ``run_at`` and a workflow's ``timeout``, checked.

The values only; starting a delayed run when it is due and failing a run whose deadline passed
are :mod:`durable_django.timers`'.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .exceptions import InvalidInput, WorkflowDefinitionError

#: The longest ``delay`` and ``timeout``, in seconds (100 years): anything longer is a mistake,
#: and a datetime cannot hold a moment many millennia ahead.
MAX_SECONDS = 100 * 365 * 24 * 3600


def _seconds(value: Any) -> float | None:
    """``value`` in seconds when it is a finite number or a timedelta, else ``None``."""
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return None
    return float(seconds)


def run_timeout(workflow: str, timeout: Any) -> float | None:
    """The ``timeout`` of workflow ``workflow`` in seconds: a positive number or timedelta, or ``None``."""
    if timeout is None:
        return None
    seconds = _seconds(timeout)
    if seconds is None or seconds <= 0 or seconds > MAX_SECONDS:
        raise WorkflowDefinitionError(
            f"Workflow {workflow!r}, timeout: must be a positive number of seconds or a timedelta, got {timeout!r} "
            "(at most 100 years)"
        )
    return seconds


def start_at(workflow: str, delay: Any, run_at: Any, now: dt.datetime) -> dt.datetime | None:
    """When a run of ``workflow`` started ``now`` with ``delay`` or ``run_at`` is due; ``None``: at once.

    ``delay``: seconds (a number or a timedelta); ``run_at``: an aware datetime; at most one of
    them. A time that is not in the future starts the run at once. Raises ``TypeError`` for both
    given, :class:`~durable_django.exceptions.InvalidInput` (a ``ValueError``) for a bad value.
    """
    if delay is not None and run_at is not None:
        raise TypeError(f"Start workflow {workflow!r} with delay or with run_at, not both.")
    if delay is not None:
        seconds = _seconds(delay)
        if seconds is None or seconds < 0 or seconds > MAX_SECONDS:
            raise InvalidInput(
                f"delay of workflow {workflow!r} must be a number of seconds (or a timedelta) of at least 0, "
                f"got {delay!r} (at most 100 years)."
            )
        due = now + dt.timedelta(seconds=seconds)
    elif run_at is not None:
        if not isinstance(run_at, dt.datetime):
            raise InvalidInput(f"run_at of workflow {workflow!r} must be a datetime, got {type(run_at).__name__}.")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidInput(
                f"run_at of workflow {workflow!r} must be an aware datetime (with a time zone), got {run_at!r}; "
                "use django.utils.timezone.now() + timedelta(...) or datetime(..., tzinfo=UTC)."
            )
        due = run_at
    else:
        return None
    return due if due > now else None
