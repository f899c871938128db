"""Starting runs: Workflow.start / start_workflow, input validation, idempotency, enqueue on commit."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import transaction

from durable_django import InvalidInput, ok, parallel, start_workflow, step
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish

runs = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wf(define: Definer) -> Any:
    return define([step("first", lambda ctx: ok({"first": True})), step("second", lambda ctx: ok({"second": True}))])


def queued_job_args(queue: EmbeddedQueue) -> list[tuple[str, tuple[Any, ...]]]:
    """``(function name, args)`` of every job waiting in the embedded queues."""
    return [(job.func_name, tuple(job.args)) for q in queue.queues() for job in q.get_jobs()]


@runs
def test_start_saves_a_pending_run_and_enqueues_it(embedded: EmbeddedQueue, wf: Any) -> None:
    run = wf.start({"email": "ada@example.com"})
    stored = WorkflowRun.objects.get()
    assert stored.pk == run.pk
    assert (stored.workflow, stored.status, stored.current_step, stored.current_attempt) == (
        wf.name,
        "pending",
        "first",
        1,
    )
    assert (stored.input, stored.context) == ({"email": "ada@example.com"}, {"email": "ada@example.com"})
    assert (stored.parent, stored.parent_step, stored.ref, stored.idempotency_key) == (None, "", "", None)
    assert (stored.error, stored.started_at, stored.finished_at) == (None, None, None)
    assert queued_job_args(embedded) == [("durable_django.jobs.run_workflow", (str(run.pk), "default", 0))]


@runs
def test_started_run_completes(embedded: EmbeddedQueue, wf: Any) -> None:
    run = finish(embedded, wf.start({"n": 1}))
    assert (run.status, run.current_step, run.error) == ("completed", "", None)
    assert run.context == {"n": 1, "first": True, "second": True}
    assert run.input == {"n": 1}
    assert run.started_at is not None
    assert run.finished_at >= run.started_at


@runs
def test_start_workflow_by_name(embedded: EmbeddedQueue, wf: Any) -> None:
    run = start_workflow(wf.name, {"n": 2})
    assert (run.workflow, run.input) == (wf.name, {"n": 2})
    assert finish(embedded, run).context == {"n": 2, "first": True, "second": True}


@runs
def test_start_without_input_uses_an_empty_dict(embedded: EmbeddedQueue, wf: Any) -> None:
    run = wf.start()
    run.refresh_from_db()
    assert (run.input, run.context) == ({}, {})


@runs
def test_start_workflow_without_input_uses_an_empty_dict(embedded: EmbeddedQueue, wf: Any) -> None:
    run = start_workflow(wf.name)
    run.refresh_from_db()
    assert (run.input, run.context) == ({}, {})


@runs
def test_none_as_input_is_refused_naming_the_workflow(embedded: EmbeddedQueue, wf: Any) -> None:
    expected = f"Input of workflow {wf.name!r} must be a dict, not None; pass {{}} or omit it."
    with pytest.raises(InvalidInput) as by_object:
        wf.start(None)
    with pytest.raises(InvalidInput) as by_name:
        start_workflow(wf.name, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        wf.start(None, idempotency_key="k")
    assert str(by_object.value) == str(by_name.value) == expected
    assert WorkflowRun.objects.count() == 0
    assert embedded.pending_jobs() == 0


@runs
def test_start_with_a_parallel_block_first(embedded: EmbeddedQueue, define: Definer) -> None:
    flow = define([parallel(step("a", lambda ctx: ok({"a": 1})), name="fan")])
    run = flow.start()
    assert run.current_step == "fan"
    assert finish(embedded, run).context == {"__results__": {"a": ["ok", {"a": 1}]}}


@runs
def test_input_with_django_json_types_is_stored_as_strings(embedded: EmbeddedQueue, wf: Any) -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    run = wf.start({"when": when})
    assert run.input == {"when": "2024-01-02T03:04:05Z"}
    run.refresh_from_db()
    assert (run.input, run.context) == ({"when": "2024-01-02T03:04:05Z"}, {"when": "2024-01-02T03:04:05Z"})


@runs
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "must be a dict, got list."),
        ("ada@example.com", "must be a dict, got str."),
        (5, "must be a dict, got int."),
        ({"user": object()}, "is not JSON-serializable: Object of type object is not JSON serializable"),
        ({"tags": {"a", "b"}}, "is not JSON-serializable: Object of type set is not JSON serializable"),
        (
            {"user": {"name": "a\x00b"}},
            "is not JSON-serializable: value at ['user']['name'] contains a NUL character (\\u0000), "
            "which the database cannot store",
        ),
        (
            {"notes": ["fine", "\ud800"]},
            "is not JSON-serializable: value at ['notes'][1] contains a lone surrogate (such as \\ud800), "
            "which is not valid Unicode text",
        ),
        (
            {"a\x00": 1},
            "is not JSON-serializable: key ['a\\x00'] contains a NUL character (\\u0000), "
            "which the database cannot store",
        ),
    ],
    ids=["list", "str", "int", "object", "set", "nul", "lone-surrogate", "nul-key"],
)
def test_invalid_input_raises_and_saves_nothing(embedded: EmbeddedQueue, wf: Any, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        wf.start(value)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value) == f"Input of workflow {wf.name!r} {message}"
    with pytest.raises(InvalidInput):
        start_workflow(wf.name, value)
    assert WorkflowRun.objects.count() == 0
    assert embedded.pending_jobs() == 0


@runs
def test_text_that_only_looks_like_an_escape_is_stored_as_given(embedded: EmbeddedQueue, wf: Any) -> None:
    # A backslash and "u0000" typed as text, and characters outside the BMP (surrogate pairs in
    # escaped JSON), are ordinary text.
    value = {"path": "C:\\u0000", "emoji": "\U0001f600 done", "pair": "\ud83d\ude00"}
    run = wf.start(value)
    run.refresh_from_db()
    assert run.input == {"path": "C:\\u0000", "emoji": "\U0001f600 done", "pair": "\U0001f600"}


@runs
def test_non_finite_number_in_input_is_invalid(embedded: EmbeddedQueue, wf: Any) -> None:
    with pytest.raises(InvalidInput):
        wf.start({"ratio": float("inf")})
    assert WorkflowRun.objects.count() == 0


# -- idempotency ----------------------------------------------------------------------------------


@runs
def test_same_idempotency_key_returns_the_existing_run(embedded: EmbeddedQueue, wf: Any) -> None:
    first = wf.start({"n": 1}, idempotency_key="order-42")
    again = wf.start({"n": 2}, idempotency_key="order-42")
    by_name = start_workflow(wf.name, {"n": 3}, idempotency_key="order-42")
    assert again.pk == first.pk == by_name.pk
    assert again.input == {"n": 1}
    assert WorkflowRun.objects.count() == 1
    assert WorkflowRun.objects.get().idempotency_key == "order-42"
    assert embedded.pending_jobs() == 1


@runs
def test_same_idempotency_key_after_the_run_finished_returns_it(embedded: EmbeddedQueue, wf: Any) -> None:
    first = finish(embedded, wf.start({"n": 1}, idempotency_key="order-42"))
    again = wf.start({"n": 2}, idempotency_key="order-42")
    assert (again.pk, again.status) == (first.pk, "completed")
    assert embedded.pending_jobs() == 0


@runs
def test_idempotency_keys_are_per_workflow(embedded: EmbeddedQueue, define: Definer, wf: Any) -> None:
    other = define([step("only", lambda ctx: ok())])
    first = wf.start({}, idempotency_key="k")
    second = other.start({}, idempotency_key="k")
    plain = [wf.start(), wf.start()]
    assert len({first.pk, second.pk, *(run.pk for run in plain)}) == 4
    assert WorkflowRun.objects.count() == 4


@runs
@pytest.mark.parametrize("key", ["", "x" * 256, 42])
def test_bad_idempotency_key_is_invalid_input(embedded: EmbeddedQueue, wf: Any, key: Any) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        wf.start({}, idempotency_key=key)
    assert str(excinfo.value) == "idempotency_key must be a non-empty string of at most 255 characters."
    assert WorkflowRun.objects.count() == 0


# -- enqueue after commit ---------------------------------------------------------------------------


@runs
def test_nothing_is_enqueued_before_the_transaction_commits(embedded: EmbeddedQueue, wf: Any) -> None:
    with transaction.atomic():
        run = wf.start({"n": 1})
        assert WorkflowRun.objects.filter(pk=run.pk).exists()
        assert embedded.pending_jobs() == 0
    assert queued_job_args(embedded) == [("durable_django.jobs.run_workflow", (str(run.pk), "default", 0))]


@runs
def test_rolled_back_transaction_enqueues_nothing(embedded: EmbeddedQueue, wf: Any) -> None:
    with pytest.raises(RuntimeError, match="rolled back"), transaction.atomic():
        wf.start({"n": 1})
        raise RuntimeError("rolled back")
    assert WorkflowRun.objects.count() == 0
    assert embedded.pending_jobs() == 0


@pytest.mark.django_db
def test_start_registers_exactly_one_on_commit_callback(
    embedded: EmbeddedQueue, wf: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        run = wf.start({"n": 1})
    assert len(callbacks) == 1
    assert embedded.pending_jobs() == 0
    callbacks[0]()
    assert queued_job_args(embedded) == [("durable_django.jobs.run_workflow", (str(run.pk), "default", 0))]


@pytest.mark.django_db
def test_rejected_input_registers_no_on_commit_callback(
    embedded: EmbeddedQueue, wf: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(InvalidInput):
        wf.start({"user": object()})
    assert callbacks == []


@runs
def test_workflow_queue_is_used_for_the_first_job(embedded: EmbeddedQueue, define: Definer) -> None:
    flow = define([step("only", lambda ctx: ok())], queue="priority")
    run = flow.start()
    assert [(q.name, q.count) for q in embedded.queues()] == [("default", 0), ("priority", 1)]
    assert queued_job_args(embedded) == [("durable_django.jobs.run_workflow", (str(run.pk), "priority", 0))]
    assert finish(embedded, run).status == "completed"
