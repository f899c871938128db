"""Durable waits: what a step returns to suspend its run until a time, events or a person's answer.

A step returns a wait just as it returns ``ok``/``error``/``goto``::

    def wait_for_payment(ctx):
        return wait_for_event("payment.settled", timeout=3600, timeout_value=None)

The step is recorded as completed (it never runs again for that wait) and the run waits without
holding a worker; it goes on with the next step once the wait is resolved. These constructors
import no models: they build a :class:`WaitRequest` value, which the engine stores as a
:class:`~durable_django.models.Wait`. Malformed arguments do not raise here: the step that
returned them fails with ``invalid_step_return``, its message saying what was wrong.

The answer of an input is checked by :func:`validate_answer`, shared by
:func:`~durable_django.resume.provide_input`, the admin's inbox and the API.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .context import text_problem
from .exceptions import InvalidInput

# Marks an argument that was not given (``None`` is a value).
ABSENT: Any = object()

SLEEP, EVENT, INPUT = "sleep", "event", "input"
INPUT_KINDS = ("approval", "choice", "text", "form")
FIELD_TYPES = ("integer", "number", "string", "boolean", "date")
_PERMISSION = re.compile(r"^[\w.-]+\.[\w.-]+$")


@dataclass(frozen=True, slots=True)
class WaitRequest:
    """A wait a step returned, not stored yet. ``problem``: why it is malformed (the step fails)."""

    kind: str
    name: str
    data: Any = None
    events: tuple[str, ...] = ()
    mode: str = "one"
    returns: str = ""
    seconds: float | None = None
    until: dt.datetime | None = None
    timeout_value: Any = ABSENT
    input_kind: str = ""
    prompt: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    permission: str = ""
    problem: str = ""

    @property
    def has_timeout_value(self) -> bool:
        return self.timeout_value is not ABSENT

    def due_at(self, now: dt.datetime) -> dt.datetime | None:
        """When the wait ends by itself (a sleep's end, a timeout), counted from ``now``."""
        if self.until is not None:
            return self.until
        if self.seconds is not None:
            return now + dt.timedelta(seconds=self.seconds)
        return None


def _seconds(value: Any, what: str) -> tuple[float | None, str]:
    if isinstance(value, dt.timedelta):
        return value.total_seconds(), ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{what} must be a number of seconds or a timedelta, got {value!r}"
    return float(value), ""


def _timeout(timeout: Any) -> tuple[float | None, str]:
    if timeout is None:
        return None, ""
    seconds, problem = _seconds(timeout, "timeout")
    if not problem and seconds is not None and seconds <= 0:
        return None, f"timeout must be more than 0 seconds, got {timeout!r}"
    return seconds, problem


def _data_problem(data: Any) -> str:
    return "" if data is None or isinstance(data, dict) else f"data must be a dict, got {type(data).__name__}"


def _name_problem(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        return f"{what} must be a non-empty string, got {name!r}"
    if len(name) > 200:
        return f"{what} must be at most 200 characters long"
    problem = text_problem(name)
    return f"{what} {problem}" if problem else ""


def sleep(seconds: float | dt.timedelta, data: dict[str, Any] | None = None) -> WaitRequest:
    """Suspend the run for ``seconds`` (a number or a timedelta); a time in the past resumes at once."""
    value, problem = _seconds(seconds, "sleep()")
    return WaitRequest(SLEEP, "", data=data, seconds=value, problem=problem or _data_problem(data))


def sleep_until(when: dt.datetime, data: dict[str, Any] | None = None) -> WaitRequest:
    """Suspend the run until ``when`` (an aware datetime); a time in the past resumes at once."""
    problem = ""
    if not isinstance(when, dt.datetime):
        problem = f"sleep_until() takes a datetime, got {when!r}"
    elif when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        problem = f"sleep_until() takes an aware datetime (with a timezone), got the naive {when.isoformat()}"
    until = when if not problem else None
    return WaitRequest(SLEEP, "", data=data, until=until, problem=problem or _data_problem(data))


def wait_for_event(
    event: str,
    *,
    timeout: float | dt.timedelta | None = None,
    timeout_value: Any = ABSENT,
    returns: str | None = None,
    data: dict[str, Any] | None = None,
) -> WaitRequest:
    """Suspend the run until ``event`` is sent to it; ``ctx[returns or event]`` gets its payload.

    An event sent before the run waits for it is kept and taken by this wait. ``timeout``: seconds
    (or a timedelta) after which the run fails with ``wait_timeout``, or goes on with
    ``timeout_value`` in place of the payload when one is given (``None`` is a value).
    """
    seconds, problem = _timeout(timeout)
    problem = problem or _name_problem(event, "the event's name") or _returns_problem(returns) or _data_problem(data)
    return WaitRequest(
        EVENT,
        event if isinstance(event, str) else "",
        data=data,
        events=(event,) if isinstance(event, str) else (),
        returns=returns or "",
        seconds=seconds,
        timeout_value=timeout_value,
        problem=problem,
    )


def wait_for_any(
    events: list[str],
    *,
    timeout: float | dt.timedelta | None = None,
    timeout_value: Any = ABSENT,
    returns: str | None = None,
    data: dict[str, Any] | None = None,
) -> WaitRequest:
    """Suspend the run until the first of ``events`` arrives.

    ``ctx[returns or "__event__"]`` gets ``{"event": name, "payload": payload}``.
    """
    return _several("any", "wait_for_any", events, timeout, timeout_value, returns, data)


def wait_for_all(
    events: list[str],
    *,
    timeout: float | dt.timedelta | None = None,
    timeout_value: Any = ABSENT,
    returns: str | None = None,
    data: dict[str, Any] | None = None,
) -> WaitRequest:
    """Suspend the run until every one of ``events`` has arrived.

    ``ctx[returns or "__events__"]`` gets ``{name: payload, ...}``.
    """
    return _several("all", "wait_for_all", events, timeout, timeout_value, returns, data)


def _several(
    mode: str, what: str, events: Any, timeout: Any, timeout_value: Any, returns: str | None, data: Any
) -> WaitRequest:
    seconds, problem = _timeout(timeout)
    names: tuple[str, ...] = ()
    if isinstance(events, str) or not isinstance(events, list | tuple) or not events:
        problem = problem or f"{what}() takes a non-empty list of event names, got {events!r}"
    else:
        for name in events:
            problem = problem or _name_problem(name, f"every event of {what}()")
        if not problem and len(set(events)) != len(events):
            problem = f"{what}() got an event twice: {list(events)!r}"
        if not problem:
            names = tuple(events)
    problem = problem or _returns_problem(returns) or _data_problem(data)
    return WaitRequest(
        EVENT,
        "|".join(names)[:200],
        data=data,
        events=names,
        mode=mode,
        returns=returns or "",
        seconds=seconds,
        timeout_value=timeout_value,
        problem=problem,
    )


def _returns_problem(returns: Any) -> str:
    if returns is None:
        return ""
    return _name_problem(returns, "returns")


def wait_for_input(
    name: str,
    *,
    kind: str = "approval",
    prompt: str = "",
    choices: list[str] | None = None,
    fields: dict[str, dict[str, Any]] | None = None,
    timeout: float | dt.timedelta | None = None,
    timeout_value: Any = ABSENT,
    permission: str | None = None,
    data: dict[str, Any] | None = None,
) -> WaitRequest:
    """Suspend the run until a person answers; the answer lands in ``ctx[name]``.

    ``kind``: ``approval`` (``{"approved": bool, "comment": str, "by": username}``), ``choice``
    (one of ``choices``: ``{"choice": ..., "by": ...}``), ``text`` (``{"text": str, "by": ...}``)
    or ``form`` (``fields = {"amount": {"type": "integer", "required": True, "label": "Amount"}}``:
    ``{"amount": 12, ..., "by": ...}``). Who may answer: users with the ``durable_django.provide_input``
    permission, or with ``permission`` ("app_label.codename") when given.
    """
    seconds, problem = _timeout(timeout)
    problem = problem or _name_problem(name, "the input's name")
    spec: dict[str, Any] = {}
    if not problem and kind not in INPUT_KINDS:
        problem = f"kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}"
    if not problem and kind == "choice":
        if not isinstance(choices, list | tuple) or not choices or not all(isinstance(c, str) and c for c in choices):
            problem = f"a choice input needs choices, a non-empty list of strings, got {choices!r}"
        else:
            spec["choices"] = list(choices)
    elif not problem and choices is not None:
        problem = f"choices are for kind='choice' only (this input is {kind!r})"
    if not problem and kind == "form":
        spec_fields, problem = _form_fields(fields)
        # The order as declared, which a JSON column of PostgreSQL (jsonb) does not keep.
        spec["fields"], spec["order"] = spec_fields, list(spec_fields)
    elif not problem and fields is not None:
        problem = f"fields are for kind='form' only (this input is {kind!r})"
    if not problem and not isinstance(prompt, str):
        problem = f"prompt must be a string, got {prompt!r}"
    if (
        not problem
        and permission is not None
        and (not isinstance(permission, str) or not _PERMISSION.match(permission))
    ):
        problem = f"permission must read 'app_label.codename', got {permission!r}"
    return WaitRequest(
        INPUT,
        name if isinstance(name, str) else "",
        data=data,
        seconds=seconds,
        timeout_value=timeout_value,
        input_kind=kind if isinstance(kind, str) else "",
        prompt=prompt if isinstance(prompt, str) else "",
        spec=spec,
        permission=permission or "",
        problem=problem or _data_problem(data),
    )


def _form_fields(fields: Any) -> tuple[dict[str, Any], str]:
    if not isinstance(fields, dict) or not fields:
        return {}, f"a form input needs fields, a non-empty dict of field name to its spec, got {fields!r}"
    out: dict[str, Any] = {}
    for field_name, spec in fields.items():
        if not isinstance(field_name, str) or not field_name or field_name == "by":
            return {}, f"form field names must be non-empty strings other than 'by', got {field_name!r}"
        if not isinstance(spec, dict):
            return {}, f"form field {field_name!r} must be a dict like {{'type': 'string'}}, got {spec!r}"
        unknown = set(spec) - {"type", "required", "label", "help"}
        if unknown:
            return {}, f"form field {field_name!r} has unknown keys {sorted(unknown)!r}"
        kind = spec.get("type", "string")
        if kind not in FIELD_TYPES:
            return {}, f"form field {field_name!r} has type {kind!r}; one of {', '.join(FIELD_TYPES)}"
        out[field_name] = {
            "type": kind,
            "required": bool(spec.get("required", True)),
            "label": str(spec.get("label") or field_name.replace("_", " ").capitalize()),
            **({"help": str(spec["help"])} if spec.get("help") else {}),
        }
    return out, ""


# -- answers ---------------------------------------------------------------------------------------


def _invalid(field_name: str, message: str) -> InvalidInput:
    exc = InvalidInput(message)
    exc.field = field_name
    return exc


def validate_answer(input_kind: str, spec: dict[str, Any], answer: Any) -> dict[str, Any]:
    """The answer to an input of ``input_kind`` (with its ``spec``) as it is stored, without ``by``.

    Raises :class:`~durable_django.exceptions.InvalidInput` naming the field (``exc.field``) when
    the answer does not fit.
    """
    cleaned = _validated(input_kind, spec, answer)
    for field_name, value in cleaned.items():
        problem = text_problem(value) if isinstance(value, str) else None
        if problem:
            raise _invalid(field_name, f"{field_name} {problem}.")
    return cleaned


def _validated(input_kind: str, spec: dict[str, Any], answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise _invalid("answer", f"The answer must be a JSON object, got {type(answer).__name__}.")
    if input_kind == "approval":
        approved = answer.get("approved")
        if not isinstance(approved, bool):
            raise _invalid("approved", "approved must be true or false.")
        comment = answer.get("comment", "")
        if comment is None:
            comment = ""
        if not isinstance(comment, str):
            raise _invalid("comment", "comment must be a string.")
        _no_others(answer, {"approved", "comment"})
        return {"approved": approved, "comment": comment}
    if input_kind == "choice":
        choices = spec.get("choices", [])
        choice = answer.get("choice")
        if choice not in choices:
            raise _invalid("choice", f"choice must be one of {', '.join(map(repr, choices))}, got {choice!r}.")
        _no_others(answer, {"choice"})
        return {"choice": choice}
    if input_kind == "text":
        text = answer.get("text")
        if not isinstance(text, str):
            raise _invalid("text", "text must be a string.")
        _no_others(answer, {"text"})
        return {"text": text}
    if input_kind == "form":
        fields = spec.get("fields", {})
        _no_others(answer, set(fields))
        cleaned: dict[str, Any] = {}
        for field_name, field_spec in fields.items():
            value = answer.get(field_name)
            if value is None or value == "":
                if field_spec.get("required", True):
                    raise _invalid(field_name, f"{field_name} is required.")
                cleaned[field_name] = None
                continue
            cleaned[field_name] = _field_value(field_name, field_spec.get("type", "string"), value)
        return cleaned
    raise _invalid("answer", f"This input has an unknown kind {input_kind!r}.")


def _no_others(answer: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(answer) - allowed - {"by"})
    if unknown:
        raise _invalid(unknown[0], f"{unknown[0]} is not a field of this input (fields: {', '.join(sorted(allowed))}).")


def _field_value(field_name: str, kind: str, value: Any) -> Any:
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
                return int(value)
            raise _invalid(field_name, f"{field_name} must be a whole number, got {value!r}.")
        return value
    if kind == "number":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _invalid(field_name, f"{field_name} must be a number, got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _invalid(field_name, f"{field_name} must be a number, got {value!r}.")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(field_name, f"{field_name} must be true or false, got {value!r}.")
        return value
    if kind == "date":
        try:
            return dt.date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise _invalid(field_name, f"{field_name} must be a date (YYYY-MM-DD), got {value!r}.") from None
    if not isinstance(value, str):
        raise _invalid(field_name, f"{field_name} must be a string, got {value!r}.")
    return value


def can_answer(user: Any, permission: str) -> bool:
    """Whether ``user`` may answer an input whose own ``permission`` is this ("" for the default)."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return bool(user.has_perm(permission or "durable_django.provide_input"))
