"""What a step returns: ``ok`` / ``error`` / ``goto``, the normalisation of every accepted form, and
the reasons the engine stores when an attempt fails.

The three constructors return plain tuples, so results read the same whether a step built them
with a helper or by hand, and ``match`` statements work on them::

    match parallel_result("payment"):
        case ("ok", payment): ...
        case ("error", reason): ...
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from .context import Unserializable, roundtrip
from .waits import WaitRequest

OK = "ok"
ERROR = "error"
GOTO = "goto"
WAIT = "wait"


def ok(data: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Success. After a sequential step ``data`` is merged into the context."""
    return (OK, {} if data is None else data)


def error(reason: Any) -> tuple[str, Any]:
    """Failure with ``reason`` (any JSON-serializable value: ``"not_found"``, a dict, ...)."""
    return (ERROR, reason)


def goto(step_name: str, data: dict[str, Any] | None = None) -> tuple[str, str, dict[str, Any]]:
    """Merge ``data`` into the context, then continue at the top-level step ``step_name``."""
    return (GOTO, step_name, {} if data is None else data)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A step's return value, normalised. ``kind`` is ``ok``, ``error``, ``goto``, ``wait`` or ``invalid``."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    reason: Any = None
    target: str = ""
    # For ``wait``: the durable_django.waits.WaitRequest the step returned.
    wait: Any = None


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{text} ({type(value).__name__})"


# Marks an argument that was not given (``None`` is a value).
_ABSENT: Any = object()

EXPECTED = (
    "ok(dict), error(reason), goto(step, dict), a wait (sleep(), wait_for_event(), wait_for_input(), ...), "
    "a dict, or one of the tuples ('ok', dict), ('error', reason), ('goto', step, dict)"
)


def normalize(value: Any) -> Outcome:
    """Turn whatever a step or an ``into`` callback returned into an :class:`Outcome`.

    Anything that is not one of the accepted forms becomes ``Outcome("invalid", reason=...)``
    carrying an ``invalid_step_return`` error, so the engine can fail the step with a readable message.
    """
    if isinstance(value, dict):
        return Outcome(OK, data=value)
    if isinstance(value, WaitRequest):
        if value.problem:
            return _invalid(value.problem)
        return Outcome(WAIT, data={} if value.data is None else value.data, wait=value)
    if isinstance(value, tuple) and value:
        tag = value[0]
        if tag == OK and len(value) == 2:
            if isinstance(value[1], dict):
                return Outcome(OK, data=value[1])
            return _invalid(f"ok() data must be a dict, got {_describe(value[1])}")
        if tag == ERROR and len(value) == 2:
            return Outcome(ERROR, reason=value[1])
        if tag == GOTO and len(value) == 3:
            _, target, data = value
            if not isinstance(target, str) or not target:
                return _invalid(f"goto() target must be a step name, got {_describe(target)}")
            if not isinstance(data, dict):
                return _invalid(f"goto() data must be a dict, got {_describe(data)}")
            return Outcome(GOTO, data=data, target=target)
    return _invalid(f"returned {_describe(value)}; expected {EXPECTED}")


def _invalid(message: str) -> Outcome:
    return Outcome("invalid", reason=invalid_step_return(message))


# -- stored reasons ---------------------------------------------------------------------------
#
# Every reason the engine itself stores (as a failed attempt's ``error``, inside a run's error)
# is built by one function here, so each ``type`` has one shape wherever it is written.


def invalid_step_return(message: str) -> dict[str, Any]:
    """A step (or ``into``) returned something that is not a result: a bug in it, never retried."""
    return {"type": "invalid_step_return", "message": message}


def storable_text(text: str) -> str:
    """``text`` with what the database cannot store (NUL, lone surrogates) written as escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def exception_reason(exc: BaseException, type_name: str | None = None) -> dict[str, Any]:
    """How a raised exception is stored: its class name (or ``type_name``), message and traceback."""
    return {
        "type": type_name or type(exc).__name__,
        "message": storable_text(str(exc)),
        "traceback": storable_text("".join(traceback.format_exception(exc))),
    }


def step_timeout(step_name: str, detail: str) -> dict[str, Any]:
    """An attempt ran past its step's ``timeout``."""
    return {"type": "timeout", "message": f"step {step_name!r} {detail}"}


def goto_error(source: str, target: str) -> dict[str, Any]:
    """``source`` (a step or a block's ``into``) jumped to a name that is no top-level step or block."""
    return {
        "type": "goto_error",
        "message": f"{source!r} jumped to {target!r}, which is not a top-level step or parallel block of this workflow",
        "target": target,
    }


def goto_in_branch(step_name: str, target: str) -> dict[str, Any]:
    """A branch of a parallel block returned ``goto``, which only a sequential step or ``into`` may."""
    return {
        "type": "goto_error",
        "message": f"step {step_name!r} returned goto({target!r}) inside a parallel block; "
        "a branch can only return ok or error (use the block's into= callback to jump).",
    }


def unserializable_output(message: str, *, value: Any = _ABSENT) -> dict[str, Any]:
    """What a step or ``into`` returned cannot be stored as JSON (``value``: shown as its repr)."""
    reason: dict[str, Any] = {"type": "unserializable_output", "message": message}
    if value is not _ABSENT:
        reason["repr"] = repr(value)[:2000]
    return reason


def stored_reason(reason: Any) -> Any:
    """``reason`` as it will read back from the database, or why it cannot be stored."""
    try:
        return roundtrip(reason)
    except Unserializable as exc:
        return unserializable_output(f"the error reason cannot be stored as JSON: {exc}", value=reason)


def invalid_items(message: str) -> dict[str, Any]:
    """A foreach block's items are not a list that can be stored as JSON."""
    return {"type": "invalid_items", "message": storable_text(message)}


def not_run() -> dict[str, Any]:
    """The result of a foreach item that never ran: its block was decided (fail_fast) before."""
    return {"type": "not_run", "message": "the block was decided before this item ran"}


def no_branch_matched(value: Any) -> dict[str, Any]:
    """A branch block's value matched no case, and the block has no default."""
    return {"type": "no_branch_matched", "value": value}


def workflow_not_found(workflow: str) -> dict[str, Any]:
    """The run's workflow is no longer registered (a deploy removed or renamed it)."""
    return {"type": "workflow_not_found", "message": f"No workflow named {workflow!r} is registered."}


def unknown_step(message: str) -> dict[str, Any]:
    """The run stands at (or a row names) a step or block its definition no longer has."""
    return {"type": "unknown_step", "message": message}


def worker_lost(streak: int | None = None) -> dict[str, Any]:
    """The process executing an attempt went away; ``streak``: found by an expired lease, the n-th in a row."""
    if streak is None:
        return {"type": "worker_lost", "message": "the process executing this attempt went away"}
    return {
        "type": "worker_lost",
        "message": "the worker executing this attempt went away: its lease expired",
        "lost_in_a_row": streak,
    }


def child_incomplete(run_id: Any, workflow: str, status: str) -> dict[str, Any]:
    """A child run the calling step waited for ended neither completed nor failed (it was cancelled)."""
    return {
        "type": "child_incomplete",
        "message": f"child run {run_id} of workflow {workflow!r} ended {status}",
        "run": str(run_id),
    }


def wait_timeout(name: str) -> dict[str, Any]:
    """A wait's timeout passed before its event or input arrived, and it has no ``timeout_value``."""
    return {"type": "wait_timeout", "wait": name, "message": f"the wait for {name!r} timed out"}


WORKFLOW_TIMEOUT = "workflow_timeout"


def workflow_timeout(seconds: float | None) -> dict[str, Any]:
    """The run was not finished ``seconds`` after it started (its workflow's ``timeout``; ``None``
    when the workflow is no longer registered)."""
    limit = f" of {seconds:g} s" if seconds is not None else ""
    return {
        "type": WORKFLOW_TIMEOUT,
        "timeout": seconds,
        "message": f"the run did not finish within its workflow's timeout{limit}",
    }


def run_error(step_name: str, reason: Any, **where: Any) -> dict[str, Any]:
    """A failed run's ``error``: the step (or block) that failed it, where exactly, and why."""
    return {"step": step_name, **where, "reason": reason}
