"""What a step returns: ``ok`` / ``error`` / ``goto`` and the normalisation of every accepted form.

The three constructors return plain tuples, so results read the same whether a step built them
with a helper or by hand, and ``match`` statements work on them::

    match parallel_result("payment"):
        case ("ok", payment): ...
        case ("error", reason): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK = "ok"
ERROR = "error"
GOTO = "goto"


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
    """A step's return value, normalised. ``kind`` is ``ok``, ``error``, ``goto`` or ``invalid``."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    reason: Any = None
    target: str = ""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{text} ({type(value).__name__})"


EXPECTED = "ok(dict), error(reason), goto(step, dict), a dict, or one of the tuples ('ok', dict), ('error', reason), ('goto', step, dict)"


def normalize(value: Any) -> Outcome:
    """Turn whatever a step or an ``into`` callback returned into an :class:`Outcome`.

    Anything that is not one of the accepted forms becomes ``Outcome("invalid", reason=...)``
    carrying an ``invalid_step_return`` error, so the engine can fail the step with a readable message.
    """
    if isinstance(value, dict):
        return Outcome(OK, data=value)
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
    return Outcome("invalid", reason={"type": "invalid_step_return", "message": message})
