"""The workflow context: JSON round trips, ``__results__`` and the helpers steps call.

Every value that goes into the database goes through :func:`dumps` first. Contexts are always
handed to steps as fresh ``json.loads`` copies, so a step mutating its context never leaks
anywhere, and a run resumed on another worker sees exactly what a running one saw.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import NotInStepError

RESULTS_KEY = "__results__"


class Unserializable(TypeError):
    """A value that cannot be stored as JSON."""


# In JSON text (ASCII-escaped), the escapes that may stand for a character PostgreSQL's jsonb refuses
# (NUL) or for half of a surrogate pair; only a text holding one needs the full walk below.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])", re.IGNORECASE)


def dumps(value: Any) -> str:
    """Serialize ``value`` as stored JSON (DjangoJSONEncoder types allowed).

    Text the database cannot store (a NUL character, a lone surrogate) is refused here, on every
    database alike, rather than by PostgreSQL halfway through a transaction.
    """
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Unserializable(str(exc)) from exc
    if _SUSPECT_ESCAPE.search(text) and (problem := storage_problem(json.loads(text))):
        raise Unserializable(problem)
    return text


def text_problem(text: str) -> str | None:
    """Why the string ``text`` cannot be stored, or ``None``."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which the database cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (such as \\ud800), which is not valid Unicode text"
    return None


def storage_problem(value: Any, max_depth: int | None = None) -> str | None:
    """Why the JSON ``value`` (dicts, lists, scalars) cannot be stored, or ``None``.

    The message names where: ``value at ['items'][0] contains a NUL character ...``. Walks the
    value with an explicit stack, so arbitrarily deep input cannot exhaust Python's.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    return f"key {where}[{key!r}] {problem}"
                stack.append((child, f"{where}[{key!r}]", depth + 1))
        elif isinstance(item, str) and (problem := text_problem(item)):
            return f"value at {where or 'the top level'} {problem}"
    return None


def roundtrip(value: Any) -> Any:
    """``value`` as it will read back from the database."""
    return json.loads(dumps(value))


def to_step_context(stored: dict[str, Any]) -> dict[str, Any]:
    """A step's view of a stored context: a deep copy whose ``__results__`` values are tuples."""
    ctx = json.loads(json.dumps(stored))
    results = ctx.get(RESULTS_KEY)
    if isinstance(results, dict | list):
        ctx[RESULTS_KEY] = results_to_tuples(results)
    return ctx


def results_to_tuples(results: Any) -> Any:
    """Stored results with each ``[status, value]`` pair as a tuple: by key (a parallel block's),
    or a list in item order (a foreach block's)."""
    if isinstance(results, list):
        return [tuple(value) if isinstance(value, list) else value for value in results]
    return {key: tuple(value) if isinstance(value, list) else value for key, value in results.items()}


def merge(ctx: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge: keys the step returned win."""
    return {**ctx, **data}


def assign(ctx: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a new dict: ``ctx`` with ``key`` set to ``value`` (``ctx`` itself is left alone)."""
    return {**ctx, key: value}


# -- the step currently executing ---------------------------------------------------------------


@dataclass
class StepScope:
    """What the engine knows about the step executing in this thread or task."""

    run_id: Any
    step: str
    ctx: dict[str, Any]
    child_calls: dict[str, int] = field(default_factory=dict)


_current: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar("durable_step", default=None)


@contextmanager
def step_scope(scope: StepScope) -> Iterator[StepScope]:
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def active_scope() -> StepScope | None:
    """The step executing in this thread or task, if one is."""
    return _current.get()


def current_scope(helper: str) -> StepScope:
    scope = _current.get()
    if scope is None:
        raise NotInStepError(f"{helper}() was called outside a running step; pass the context explicitly.")
    return scope


def current_run_id() -> str:
    """The id of the run whose step (or branch, or ``into``) is executing, as a string.

    For linking something outside to the run, so that it can answer later: a payment intent the
    provider's webhook will settle with :func:`~durable_django.resume.send_event`, say. Raises
    :class:`~durable_django.exceptions.NotInStepError` outside a step.
    """
    return str(current_scope("current_run_id").run_id)


# -- helpers for parallel results ---------------------------------------------------------------


def parallel_results(ctx: dict[str, Any] | None = None) -> Any:
    """The last block's results: ``{key: ("ok", data) | ("error", reason)}`` for a parallel block
    (``{}`` if none), a list of them in item order for a foreach block."""
    if ctx is None:
        ctx = current_scope("parallel_results").ctx
    results = ctx.get(RESULTS_KEY) or {}
    return results_to_tuples(results) if isinstance(results, dict | list) else {}


def parallel_result(name: str, ctx: dict[str, Any] | None = None) -> tuple[str, Any] | None:
    """One branch's result, ``("ok", data)`` or ``("error", reason)``; ``None`` if there is no such key."""
    if ctx is None:
        ctx = current_scope("parallel_result").ctx
    results = parallel_results(ctx)
    return results.get(name) if isinstance(results, dict) else None


def parallel_ok(name: str, ctx: dict[str, Any] | None = None) -> bool:
    """Whether the branch stored under ``name`` succeeded."""
    if ctx is None:
        ctx = current_scope("parallel_ok").ctx
    result = parallel_result(name, ctx)
    return result is not None and result[0] == "ok"
