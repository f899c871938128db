"""Spans of every process of an integration test, one JSON line each in a file the test reads.

The SDK's in-memory exporter lives in one process; a run's spans are made by the test process
(its start) and by the worker processes (its steps, joins, recovery). Each process installs
:data:`EXPORTER` on its SDK provider, and the test reads the lines back with :func:`read`.
Workers install it when ``DURABLE_IT_SPANS`` names the file (see ``apps.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileSpanExporter(SpanExporter):
    """Appends each finished span to ``path`` (when set) as one JSON line, flushed at once: a process
    killed later loses none of the spans it ended."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.path is None:
            return SpanExportResult.SUCCESS
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(as_dict(span)) + "\n")
        return SpanExportResult.SUCCESS


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "start": span.start_time,
        "end": span.end_time,
        "pid": os.getpid(),
    }


EXPORTER = FileSpanExporter()


def install(path: str | Path | None) -> None:
    """Write this process's spans to ``path`` from now on (``None``: stop); sets an SDK provider
    as the global one unless one is set already, and adds :data:`EXPORTER` to it once."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not getattr(provider, "_durable_it_spans", False):
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        provider._durable_it_spans = True  # type: ignore[attr-defined]
    EXPORTER.path = Path(path) if path is not None else None


def read(path: Path) -> list[dict[str, Any]]:
    """The spans written to ``path`` so far, by every process."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
