"""OpenTelemetry spans for runs, step attempts, blocks, joins and recovery; nothing without OpenTelemetry.

A run's jobs execute in different processes, so no span stays open across them. At start, a short
``durable.start <workflow>`` span is made a child of the caller's current span and its context is
stored with the run (:attr:`WorkflowRun.trace_context`, a W3C ``traceparent``/``tracestate``
carrier); every span of the run is then a child of that stored context, whichever process makes
it, so a run, its branches, children, retries and recovery re-dispatches share the caller's trace,
across crashes. The spans that cover more than one job (the run, a block) are emitted once they
end, with the time they began (see docs/observability.md for the tree a trace viewer shows).

``opentelemetry-api`` is imported lazily: without it, with ``DURABLE["TRACING"]`` False, or with
no SDK tracer provider configured, every hook does nothing (no span object is made) and the stored
context is ``{}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any

from .conf import durable_settings

TRACER_NAME = "durable_django"
# What a run's ``status`` is once it is over: its run span is emitted then.
FINISHED = ("completed", "failed", "cancelled")

_MISSING: Any = object()
_trace: Any = _MISSING
# The tracer of the provider it came from: looked up again only when the global provider changes.
_cached: tuple[Any, Any] = (None, None)


def _api() -> Any:
    global _trace
    if _trace is _MISSING:
        try:
            from opentelemetry import trace as found
        except ImportError:
            found = None  # type: ignore[assignment]
        _trace = found
    return _trace


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (the default of ``DURABLE["TRACING"]``)."""
    return _api() is not None


def _tracer() -> Any:
    global _cached
    trace = _api()  # first: once it is known to be missing, asking costs nothing
    if trace is None or not durable_settings.TRACING:
        return None
    provider = trace.get_tracer_provider()
    # Without a configured SDK provider the API records nothing: skip the work of building spans.
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(TRACER_NAME))
    return _cached[1]


def enabled() -> bool:
    """Whether spans are recorded now: tracing on, ``opentelemetry-api`` there, a provider configured."""
    return _tracer() is not None


def start_context(workflow: str, run_id: Any, parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The carrier to store with a new run: a ``durable.start`` span's context; ``{}`` when off.

    The span is a child of the caller's current span. A child workflow's (``parent``: its parent
    run's carrier) is a child of the parent's step that started it when that step's span is the
    current one, else of the parent run's stored context: either way in the parent's trace.
    """
    tracer = _tracer()
    if tracer is None:
        return {}
    from opentelemetry.propagate import inject

    ctx = None
    if parent:
        ctx = _extract(parent)
        current = _api().get_current_span().get_span_context()
        if current.is_valid and current.trace_id == _api().get_current_span(ctx).get_span_context().trace_id:
            ctx = None  # the parent's step, executing here: the child nests under it
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(f"durable.start {workflow}", context=ctx) as span:
        span.set_attribute("durable.run_id", str(run_id))
        span.set_attribute("durable.workflow", workflow)
        inject(carrier)
    return carrier


def _extract(carrier: Mapping[str, str] | None) -> Any:
    from opentelemetry.propagate import extract

    return extract(dict(carrier or {}))


def _attributes(current: Any, run: Any, attributes: Mapping[str, Any]) -> None:
    current.set_attribute("durable.run_id", str(run.pk))
    current.set_attribute("durable.workflow", run.workflow)
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(f"durable.{key}", value)


@contextmanager
def span(name: str, run: Any, **attributes: Any) -> Iterator[Any]:
    """A span ``name`` as a child of ``run``'s stored trace context, with the run's attributes and
    ``durable.<key>`` for each keyword (``None`` values left out); yields it (``None`` when tracing
    is off). An exception raised inside is recorded on it and sets its status to ERROR."""
    tracer = _tracer() if run.trace_context else None
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, context=_extract(run.trace_context)) as current:
        _attributes(current, run, attributes)
        yield current


def emit(
    name: str,
    run: Any,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    status: str | None = None,
    error: Any = None,
    **attributes: Any,
) -> None:
    """A span ``name`` that is over already (from ``start`` to ``end``, now when not given), as a
    child of ``run``'s stored context: for what covers more than one job (a run, a block) and for
    what takes no time worth measuring (a recovery action). ``status`` and ``error`` as for
    :func:`record`. Nothing when tracing is off."""
    tracer = _tracer() if run.trace_context else None
    if tracer is None:
        return
    current = tracer.start_span(name, context=_extract(run.trace_context), start_time=_nanos(start))
    _attributes(current, run, attributes)
    if status is not None:
        record(current, status, error)
    current.end(end_time=_nanos(end))


def _nanos(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000) * 1_000


def run_ended(run: Any) -> Callable[[], None] | None:
    """The run span of ``run``, which just finished, to emit once its transaction commits (see
    :func:`ended`); ``None`` when there is nothing to do. Reads ``run`` now: the engine may change it next."""
    if not run.trace_context or str(run.status) not in FINISHED:
        return None
    return ended(
        run.pk,
        run.workflow,
        run.trace_context,
        str(run.status),
        run.started_at or run.created_at,
        run.finished_at,
        run.error if str(run.status) == "failed" else None,
    )


def ended(
    run_id: Any,
    workflow: str,
    carrier: Mapping[str, str],
    status: str,
    started: datetime | None,
    finished: datetime | None,
    error: Any = None,
) -> Callable[[], None] | None:
    """The ``durable.run`` span of run ``run_id`` (whose stored context is ``carrier``), which
    ended ``status`` (with ``error``), to emit later: from when it ``started`` (a worker first took
    it, or else it was created) to when it ``finished``; ``None`` when tracing is off."""
    if not carrier or not enabled():
        return None
    snapshot = _Snapshot(run_id, workflow, dict(carrier))
    return partial(emit, f"durable.run {workflow}", snapshot, start=started, end=finished, status=status, error=error)


class _Snapshot:
    """What :func:`emit` reads of a run, kept apart from the (mutable) run itself."""

    __slots__ = ("pk", "trace_context", "workflow")

    def __init__(self, pk: Any, workflow: str, trace_context: dict[str, str]) -> None:
        self.pk, self.workflow, self.trace_context = pk, workflow, trace_context


def describe(error: Any) -> tuple[str, str]:
    """``(type, message)`` of a stored error: an attempt's reason, or a failed run's error (whose
    ``reason`` says why, at its ``step``)."""
    if not isinstance(error, dict):
        return "Error", str(error)
    reason = error.get("reason")
    if isinstance(reason, dict) and "step" in error:
        kind, message = describe(reason)
        return kind, f"at {error['step']!r}: {message}"
    return str(error.get("type", "Error")), str(error.get("message", error))


def record(current: Any, status: str, error: Any = None) -> None:
    """Set ``durable.status`` on ``current`` and, for an ``error``, an ``exception`` event
    (``exception.type``, ``exception.message``) and status ERROR."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("durable.status", status)
    if error is not None:
        kind, message = describe(error)
        current.add_event("exception", {"exception.type": kind, "exception.message": message})
        current.set_status(Status(StatusCode.ERROR, message))


def record_attempt(current: Any, attempt: Any) -> None:
    """Record an :class:`~durable_django.attempts.Attempt`'s outcome on a step span."""
    if current is None:
        return
    if attempt.waits:
        record(current, "waiting")
    elif attempt.failed:
        record(current, "failed", attempt.reason)
    else:
        record(current, "completed")
