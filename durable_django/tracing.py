"""OpenTelemetry spans for runs, step attempts, blocks and joins; nothing without OpenTelemetry.

A run's jobs execute in different processes, so no span stays open across them. At start, a short
``durable.start <workflow>`` span is made a child of the caller's current span and its context is
stored with the run (:attr:`WorkflowRun.trace_context`, a W3C ``traceparent``/``tracestate``
carrier); every job then starts its spans as children of that stored context, so a run, its
branches, children, retries and recovery re-dispatches share the caller's trace, across crashes.

``opentelemetry-api`` is imported lazily: without it, with ``DURABLE["TRACING"]`` False, or with
no SDK tracer provider configured, every hook does nothing and the stored context is ``{}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .conf import durable_settings

TRACER_NAME = "durable_django"


def _api() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (the default of ``DURABLE["TRACING"]``)."""
    return _api() is not None


def _tracer() -> Any:
    if not durable_settings.TRACING:
        return None
    trace = _api()
    if trace is None:
        return None
    # Without a configured SDK provider the API records nothing: skip the work of building spans.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return trace.get_tracer(TRACER_NAME)


def start_context(workflow: str, run_id: Any, parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The carrier to store with a new run: a ``durable.start`` span's context, as a child of
    ``parent`` (a parent run's carrier) or else of the caller's current span; ``{}`` when off."""
    tracer = _tracer()
    if tracer is None:
        return {}
    from opentelemetry.propagate import inject

    ctx = _extract(parent) if parent else None
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(f"durable.start {workflow}", context=ctx) as span:
        span.set_attribute("durable.run_id", str(run_id))
        span.set_attribute("durable.workflow", workflow)
        inject(carrier)
    return carrier


def _extract(carrier: Mapping[str, str] | None) -> Any:
    from opentelemetry.propagate import extract

    return extract(dict(carrier or {}))


@contextmanager
def span(name: str, run: Any, **attributes: Any) -> Iterator[Any]:
    """A span ``name`` as a child of ``run``'s stored trace context, with the run's attributes and
    ``durable.<key>`` for each keyword; yields it (``None`` when tracing is off). An exception
    raised inside is recorded on it and sets its status to ERROR."""
    tracer = _tracer() if run.trace_context else None
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, context=_extract(run.trace_context)) as current:
        current.set_attribute("durable.run_id", str(run.pk))
        current.set_attribute("durable.workflow", run.workflow)
        for key, value in attributes.items():
            current.set_attribute(f"durable.{key}", value)
        yield current


def record(current: Any, status: str, error: Any = None) -> None:
    """Set ``durable.status`` on ``current`` and, for an ``error``, the exception event and status ERROR."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("durable.status", status)
    if error is not None:
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        kind = error.get("type", "Error") if isinstance(error, dict) else "Error"
        current.add_event("exception", {"exception.type": str(kind), "exception.message": str(message)})
        current.set_status(Status(StatusCode.ERROR, str(message)))


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
