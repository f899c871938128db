"""OpenTelemetry spans of runs, steps, blocks, joins and child workflows, read from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from durable_django import call_workflow, foreach, ok, parallel, send_event, step, tracing, wait_for_event
from durable_django.models import WorkflowRun
from durable_django.operations import cancel_run
from durable_django.recovery import recover
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def provider() -> TracerProvider:
    """The process's global SDK provider (set once per process), exporting to ``EXPORTER``."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        current = trace.get_tracer_provider()
    assert isinstance(current, TracerProvider)
    current.add_span_processor(SimpleSpanProcessor(EXPORTER))
    return current


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    """The exporter, emptied before and after the test."""
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def caller_span() -> Any:
    return trace.get_tracer("tests").start_as_current_span("caller")


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = by_name(exporter)[name]
    return span


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_ids(exporter: InMemorySpanExporter) -> set[int]:
    return {span.context.trace_id for span in exporter.get_finished_spans() if span.context is not None}


def nanos(moment: datetime | None) -> int:
    assert moment is not None
    return int(moment.timestamp() * 1_000_000) * 1_000


def failing(message: str) -> Any:
    def fn(ctx: dict[str, Any]) -> Any:
        raise ValueError(message)

    return fn


@runs
def test_a_sequential_run_under_a_callers_span_is_one_trace(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define([step("reserve", lambda ctx: ok({"reserved": 1})), step("charge", lambda ctx: ok({"charged": 2}))])
    with caller_span() as caller:
        run = wf.start({"order": 5})
    run = finish(embedded, run)
    assert run.status == "completed"
    names = sorted(span.name for span in spans.get_finished_spans())
    assert names == sorted(
        ["caller", f"durable.start {wf.name}", "durable.step reserve", "durable.step charge", f"durable.run {wf.name}"]
    )
    assert trace_ids(spans) == {caller.get_span_context().trace_id}
    start = only(spans, f"durable.start {wf.name}")
    assert parent_of(start) == caller.get_span_context().span_id
    assert dict(start.attributes or {}) == {"durable.run_id": str(run.pk), "durable.workflow": wf.name}
    # The stored context is the start span's: every later span of the run is its child.
    assert run.trace_context["traceparent"].split("-")[2] == format(span_id(start), "016x")
    for name, attempt_step in (("durable.step reserve", "reserve"), ("durable.step charge", "charge")):
        current = only(spans, name)
        assert parent_of(current) == span_id(start)
        assert dict(current.attributes or {}) == {
            "durable.run_id": str(run.pk),
            "durable.workflow": wf.name,
            "durable.step": attempt_step,
            "durable.attempt": 1,
            "durable.status": "completed",
        }
        assert current.status.status_code == StatusCode.UNSET
    whole = only(spans, f"durable.run {wf.name}")
    assert parent_of(whole) == span_id(start)
    assert dict(whole.attributes or {}) == {
        "durable.run_id": str(run.pk),
        "durable.workflow": wf.name,
        "durable.status": "completed",
    }
    assert (whole.start_time, whole.end_time) == (nanos(run.started_at), nanos(run.finished_at))


@runs
def test_a_failing_step_and_its_run_have_error_status_and_the_exception_event(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define([step("charge", failing("card declined"))])
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    failed = only(spans, "durable.step charge")
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "card declined"
    assert (failed.attributes or {})["durable.status"] == "failed"
    assert [(event.name, dict(event.attributes or {})) for event in failed.events] == [
        ("exception", {"exception.type": "ValueError", "exception.message": "card declined"})
    ]
    whole = only(spans, f"durable.run {wf.name}")
    assert whole.status.status_code == StatusCode.ERROR
    assert whole.status.description == "at 'charge': card declined"
    assert (whole.attributes or {})["durable.status"] == "failed"
    assert [(event.name, dict(event.attributes or {})) for event in whole.events] == [
        ("exception", {"exception.type": "ValueError", "exception.message": "at 'charge': card declined"})
    ]
    # No caller span: the run's start span is the root of its own trace.
    assert only(spans, f"durable.start {wf.name}").parent is None
    assert len(trace_ids(spans)) == 1


@runs
def test_retries_give_one_step_span_per_attempt(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} timed out")
        return ok({"done": True})

    wf = define([step("call_api", flaky, retry={"max_attempts": 3, **IMMEDIATE})])
    with caller_span() as caller:
        run = wf.start()
    assert finish(embedded, run).status == "completed"
    attempts = sorted(by_name(spans)["durable.step call_api"], key=lambda span: span.start_time or 0)
    assert [(span.attributes or {})["durable.attempt"] for span in attempts] == [1, 2, 3]
    assert [(span.attributes or {})["durable.status"] for span in attempts] == ["failed", "failed", "completed"]
    assert [span.status.status_code for span in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert attempts[1].status.description == "attempt 2 timed out"
    start = only(spans, f"durable.start {wf.name}")
    assert {parent_of(span) for span in attempts} == {span_id(start)}
    assert trace_ids(spans) == {caller.get_span_context().trace_id}


@runs
def test_a_parallel_block_gives_branch_spans_a_block_span_and_a_join_span_in_the_runs_trace(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define(
        [
            parallel(
                step("email", lambda ctx: ok({"emailed": True})),
                step("billing", lambda ctx: ok({"billed": True})),
                name="onboard",
            ),
            step("complete", lambda ctx: ok({"done": True})),
        ]
    )
    with caller_span() as caller:
        run = wf.start()
    run = finish(embedded, run)
    assert run.status == "completed"
    found = by_name(spans)
    assert sorted(found) == sorted(
        [
            "caller",
            f"durable.start {wf.name}",
            "durable.step email",
            "durable.step billing",
            "durable.join onboard",
            "durable.block onboard",
            "durable.step complete",
            f"durable.run {wf.name}",
        ]
    )
    assert trace_ids(spans) == {caller.get_span_context().trace_id}
    start = span_id(only(spans, f"durable.start {wf.name}"))
    for name in ("email", "billing"):
        branch = only(spans, f"durable.step {name}")
        assert parent_of(branch) == start
        assert dict(branch.attributes or {}) == {
            "durable.run_id": str(run.pk),
            "durable.workflow": wf.name,
            "durable.step": name,
            "durable.attempt": 1,
            "durable.block": "onboard",
            "durable.status": "completed",
        }
    joined = only(spans, "durable.join onboard")
    assert parent_of(joined) == start
    assert dict(joined.attributes or {}) == {
        "durable.run_id": str(run.pk),
        "durable.workflow": wf.name,
        "durable.block": "onboard",
        "durable.status": "completed",
    }
    block = only(spans, "durable.block onboard")
    assert parent_of(block) == start
    assert dict(block.attributes or {}) == {
        "durable.run_id": str(run.pk),
        "durable.workflow": wf.name,
        "durable.block": "onboard",
        "durable.branches": 2,
        "durable.status": "completed",
    }
    group = run.groups.get()
    # From the fan-out until the join: every branch and the join within it.
    assert block.start_time == nanos(group.created_at)
    assert all(
        (block.start_time or 0) <= (span.start_time or 0) and (span.end_time or 0) <= (block.end_time or 0)
        for span in (*found["durable.step email"], *found["durable.step billing"], joined)
    )


def into_sum(ctx: dict[str, Any], results: Any) -> Any:
    return ok({**ctx, "joined": len(results)})


@pytest.mark.parametrize(
    ("make_block", "branches"),
    [
        # Executed whole by the job that entered it: joined in the transaction of its results.
        (lambda: parallel(step("p1", lambda ctx: ok()), step("p2", lambda ctx: ok()), name="fan"), 2),
        # With into: joined by its join job.
        (lambda: parallel(step("p1", lambda ctx: ok()), step("p2", lambda ctx: ok()), name="fan", into=into_sum), 2),
        # More items than the first batch: the last batch, recorded by a drain job, decides it.
        (lambda: foreach("fan", lambda ctx: list(range(40)), lambda ctx: ok({"n": ctx["item"]})), 40),
    ],
    ids=["joined_with_its_results", "join_job", "drained"],
)
@runs
def test_every_block_has_one_join_span_and_one_block_span_however_it_is_joined(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter, make_block: Any, branches: int
) -> None:
    wf = define([make_block(), step("after", lambda ctx: ok())])
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    found = by_name(spans)
    assert len(found["durable.join fan"]) == 1
    block = only(spans, "durable.block fan")
    assert (block.attributes or {})["durable.branches"] == branches
    assert (block.attributes or {})["durable.status"] == "completed"
    branch_spans = [span for name, listed in found.items() if name.startswith("durable.step ") for span in listed]
    assert sum((span.attributes or {}).get("durable.block") == "fan" for span in branch_spans) == branches
    assert len(trace_ids(spans)) == 1


@runs
def test_a_block_failed_fast_has_an_error_block_span(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define(
        [parallel(step("ok_branch", lambda ctx: ok({"a": 1})), step("bad_branch", failing("no stock")), name="fan")]
    )
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    block = only(spans, "durable.block fan")
    assert (block.attributes or {})["durable.status"] == "failed"
    assert block.status.status_code == StatusCode.ERROR
    assert block.status.description == "at 'bad_branch': no stock"
    assert (only(spans, "durable.join fan").attributes or {})["durable.status"] == "failed"
    assert only(spans, "durable.step bad_branch").status.status_code == StatusCode.ERROR
    assert (only(spans, f"durable.run {wf.name}").attributes or {})["durable.status"] == "failed"


@runs
def test_a_child_workflow_is_in_its_parents_trace_under_the_step_that_called_it(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    child = define([step("authorize", lambda ctx: ok({"authorized": True}))])

    def pay(ctx: dict[str, Any]) -> Any:
        return ok({"payment": call_workflow(child, {"amount": 3}, ref="payment")[1]})

    parent = define([step("pay", pay)])
    with caller_span() as caller:
        run = parent.start()
    run = finish(embedded, run)
    assert run.status == "completed"
    child_run = WorkflowRun.objects.get(parent=run)
    assert trace_ids(spans) == {caller.get_span_context().trace_id}
    paying = only(spans, "durable.step pay")
    child_start = only(spans, f"durable.start {child.name}")
    assert parent_of(child_start) == span_id(paying)
    assert dict(child_start.attributes or {}) == {"durable.run_id": str(child_run.pk), "durable.workflow": child.name}
    authorize = only(spans, "durable.step authorize")
    assert parent_of(authorize) == span_id(child_start)
    assert (authorize.attributes or {})["durable.run_id"] == str(child_run.pk)
    child_whole = only(spans, f"durable.run {child.name}")
    assert parent_of(child_whole) == span_id(child_start)
    assert (child_whole.attributes or {})["durable.status"] == "completed"


@runs
def test_a_cancelled_run_has_a_run_span_from_its_creation(define: Definer, spans: InMemorySpanExporter) -> None:
    wf = define([step("never", lambda ctx: ok())])
    run = wf.start()
    cancelled = cancel_run(run)
    assert cancelled.status == "cancelled"
    whole = only(spans, f"durable.run {wf.name}")
    assert (whole.attributes or {})["durable.status"] == "cancelled"
    assert whole.status.status_code == StatusCode.UNSET
    assert (whole.start_time, whole.end_time) == (nanos(cancelled.created_at), nanos(cancelled.finished_at))
    assert parent_of(whole) == span_id(only(spans, f"durable.start {wf.name}"))


@runs
def test_tracing_off_stores_no_context_and_records_nothing(
    embedded: EmbeddedQueue,
    define: Definer,
    spans: InMemorySpanExporter,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.DURABLE = {"TRACING": False}
    wf = define([step("a", lambda ctx: ok()), parallel(step("b", lambda ctx: ok()), name="fan")])
    with caller_span():
        run = wf.start()
    # Not a span object is made for the run: the SDK's tracer is never asked for one.
    made: list[str] = []
    real = sdk_trace.Tracer.start_span

    def start_span(self: sdk_trace.Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        made.append(name)
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Tracer, "start_span", start_span)
    assert finish(embedded, run).status == "completed"
    assert cancel_run(wf.start()).status == "cancelled"
    assert made == []
    assert WorkflowRun.objects.get(pk=run.pk).trace_context == {}
    assert [span.name for span in spans.get_finished_spans()] == ["caller"]


@runs
def test_without_an_sdk_provider_nothing_is_recorded(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    assert tracing.enabled() is False
    wf = define([step("a", lambda ctx: ok())])
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.trace_context == {}
    assert spans.get_finished_spans() == ()


class WorkerDied(BaseException):
    """Raised by a step to stand for its worker being killed mid-step: nothing after it runs."""


def dies_then(times: int) -> Any:
    calls: list[int] = []

    def fn(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise WorkerDied
        return ok()

    return fn


def after_every_lease() -> datetime:
    return timezone.now() + timedelta(seconds=60)


@runs
def test_recovery_taking_over_lost_branches_is_in_the_runs_trace(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define([parallel(step("dies", dies_then(1)), step("fine", lambda ctx: ok()), name="fan", into=into_sum)])
    with caller_span() as caller:
        run = wf.start()
    assert finish(embedded, run).status == "running"
    assert recover(now=after_every_lease()).branches_taken_over == 2
    assert finish(embedded, run).status == "completed"
    taken = sorted(by_name(spans)["durable.recover"], key=lambda span: (span.attributes or {})["durable.step"])
    assert [dict(span.attributes or {}) for span in taken] == [
        {
            "durable.run_id": str(run.pk),
            "durable.workflow": wf.name,
            "durable.action": "branch_taken_over",
            "durable.step": name,
            "durable.attempt": 1,
            "durable.block": "fan",
        }
        for name in ("dies", "fine")
    ]
    start = span_id(only(spans, f"durable.start {wf.name}"))
    assert {parent_of(span) for span in taken} == {start}
    assert sorted((span.attributes or {})["durable.attempt"] for span in by_name(spans)["durable.step fine"]) == [2]
    assert trace_ids(spans) == {caller.get_span_context().trace_id}


@runs
@override_settings(DURABLE={"MAX_WORKER_LOST": 1})
def test_recovery_failing_a_run_for_a_lost_worker_records_the_error(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define([step("doomed", dies_then(5))])
    run = finish(embedded, wf.start())
    assert recover(now=after_every_lease()).failed_worker_lost == 1
    run.refresh_from_db()
    assert run.status == "failed"
    failed = only(spans, "durable.recover")
    assert (failed.attributes or {})["durable.action"] == "failed_worker_lost"
    assert (failed.attributes or {})["durable.status"] == "failed"
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "the worker executing this attempt went away: its lease expired"
    whole = only(spans, f"durable.run {wf.name}")
    assert whole.status.description == ("at 'doomed': the worker executing this attempt went away: its lease expired")


@runs
def test_a_compensation_has_its_span_and_the_run_span_comes_after_it(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define(
        [
            step("reserve", lambda ctx: ok({"reserved": True}), compensate=lambda ctx: ok()),
            step("charge", failing("card declined")),
        ]
    )
    run = finish(embedded, wf.start())
    assert (run.status, run.compensation) == ("failed", "completed")
    undo = only(spans, "durable.compensate reserve")
    assert dict(undo.attributes or {}) == {
        "durable.run_id": str(run.pk),
        "durable.workflow": wf.name,
        "durable.step": "reserve",
        "durable.attempt": 1,
        "durable.status": "completed",
    }
    whole = only(spans, f"durable.run {wf.name}")
    assert (whole.attributes or {})["durable.status"] == "failed"
    assert whole.status.description == "at 'charge': card declined"
    assert (undo.end_time or 0) <= (whole.end_time or 0)
    assert parent_of(undo) == parent_of(whole) == span_id(only(spans, f"durable.start {wf.name}"))


@runs
def test_a_run_resumed_by_an_event_sent_elsewhere_stays_in_its_trace(
    embedded: EmbeddedQueue, define: Definer, spans: InMemorySpanExporter
) -> None:
    wf = define([step("pay", lambda ctx: wait_for_event("paid")), step("ship", lambda ctx: ok())])
    with caller_span() as caller:
        run = wf.start()
    assert finish(embedded, run).status == "waiting"
    # Sent under another trace (a webhook's request, say): the run's spans stay in the one it began in.
    with trace.get_tracer("tests").start_as_current_span("webhook"):
        assert send_event(run.pk, "paid", {"amount": 12}) == "delivered"
    assert finish(embedded, run).status == "completed"
    waited = only(spans, "durable.step pay")
    assert (waited.attributes or {})["durable.status"] == "waiting"
    shipped = only(spans, "durable.step ship")
    start = only(spans, f"durable.start {wf.name}")
    assert parent_of(shipped) == parent_of(waited) == span_id(start)
    assert {
        span.context.trace_id for span in spans.get_finished_spans() if span.context and span.name != "webhook"
    } == {caller.get_span_context().trace_id}
    assert (only(spans, f"durable.run {wf.name}").attributes or {})["durable.status"] == "completed"
