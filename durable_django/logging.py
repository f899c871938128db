"""What the engine's log records say about a run, and a filter that lets a formatter name it.

Every record the engine emits about a run carries the run's id and workflow as the attributes
``run_id`` and ``workflow`` (passed with ``extra``); a step's or branch's outcome also carries
``step``, ``attempt``, ``duration`` (seconds) and ``outcome`` (``completed``, ``failed``,
``waiting`` or ``cancelled``). Records emitted while a step executes (the step's own logging)
carry no such attributes: :class:`RunContextFilter` fills ``run_id`` and ``step`` from the step
being executed, and ``"-"`` for whatever a record does not say, so that a format string such as
``"%(run_id)s %(message)s"`` works for every record of every logger.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from .context import active_scope

#: The attributes the engine's records carry (some of them), and the filter fills on every record.
FIELDS = ("run_id", "workflow", "step", "attempt", "duration", "outcome")
#: What :class:`RunContextFilter` puts in an attribute a record does not carry.
MISSING = "-"
#: A failure's reason is logged up to this many characters (the whole of it is in the database).
REASON_CHARS = 300


class RunContextFilter(logging.Filter):
    """Give every record the attributes of :data:`FIELDS`, so that a formatter may name them.

    Attach it to a handler (``"filters": [...]`` in ``LOGGING``). A record emitted while a step
    executes gets that step's run id and name; an attribute nothing provides is ``"-"``. Records
    are never dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        values = record.__dict__
        if "run_id" not in values or "step" not in values:
            scope = active_scope()
            if scope is not None:
                values.setdefault("run_id", str(scope.run_id))
                values.setdefault("step", scope.step)
        for name in FIELDS:
            values.setdefault(name, MISSING)
        return True


def run_fields(run_id: Any, workflow: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a record about run ``run_id`` of ``workflow`` (``more``: step, attempt, ...)."""
    return {"run_id": str(run_id), "workflow": workflow, **more}


def describe_reason(reason: Any) -> str:
    """A failure's reason in one line: ``ValueError: card declined`` for a raised exception (no
    traceback), the reason itself for a string, compact JSON otherwise; cut at REASON_CHARS."""
    if isinstance(reason, dict) and isinstance(reason.get("type"), str) and "message" in reason:
        text = f"{reason['type']}: {reason['message']}"
    elif isinstance(reason, str):
        text = reason
    else:
        try:
            text = json.dumps(reason, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            text = repr(reason)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def seconds(started: datetime | None, finished: datetime | None) -> float:
    """Seconds from ``started`` to ``finished`` (0 when either is unknown)."""
    if started is None or finished is None:
        return 0.0
    return max((finished - started).total_seconds(), 0.0)


def log_attempt(
    logger: logging.Logger,
    run_id: Any,
    workflow: str,
    step: str,
    attempt: int,
    status: str,
    duration: float,
    *,
    reason: Any = None,
    retry_in: float | None = None,
    branch_of: str = "",
) -> None:
    """The one line of an attempt's outcome: INFO when it completed (or returned a wait), WARNING
    with its reason when it failed. Nothing is formatted when the logger would drop the line.

    ``retry_in``: a failed attempt's next attempt is due in that many seconds (``None``: it was
    final). ``branch_of``: the parallel block whose branch ``step`` is.
    """
    failed = status == "failed"
    level = logging.WARNING if failed else logging.INFO
    if not logger.isEnabledFor(level):
        return
    what = f"branch {step!r} of {branch_of!r}" if branch_of else f"step {step!r}"
    extra = run_fields(run_id, workflow, step=step, attempt=attempt, duration=duration, outcome=status)
    if failed:
        after = "final" if retry_in is None else f"retrying in {retry_in:.2f}s"
        logger.warning(
            "run %s (%s): %s failed in %.3fs (attempt %d, %s): %s",
            run_id,
            workflow,
            what,
            duration,
            attempt,
            after,
            describe_reason(reason),
            extra=extra,
        )
        return
    done = "returned a wait" if status == "waiting" else status
    logger.info(
        "run %s (%s): %s %s in %.3fs (attempt %d)", run_id, workflow, what, done, duration, attempt, extra=extra
    )


def run_finished(logger: logging.Logger, run_id: Any, workflow: str, status: str, error: Any) -> None:
    """The one line of a run that finished: completed (INFO), or failed with its step and reason (WARNING)."""
    extra = run_fields(run_id, workflow, outcome=status)
    if status == "failed":
        error = error if isinstance(error, dict) else {}
        step = error.get("step", "")
        where = f"{error['parallel']!r}, branch {step!r}" if error.get("parallel") else repr(step)
        extra["step"] = step or MISSING
        logger.warning(
            "run %s of workflow %r failed at %s: %s",
            run_id,
            workflow,
            where,
            describe_reason(error.get("reason")),
            extra=extra,
        )
    else:
        logger.info("run %s of workflow %r %s", run_id, workflow, status, extra=extra)
