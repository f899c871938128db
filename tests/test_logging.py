"""What workers log: one line per step or branch outcome, one per finished run, each naming its run."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from durable_django import batches, error, ok, parallel, step
from durable_django.context import StepScope, step_scope
from durable_django.logging import RunContextFilter, describe_reason
from durable_django.operations import cancel_run
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)

OUTCOME = ("run_id", "workflow", "step", "attempt", "duration", "outcome")


def engine_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "durable_django"]


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """``(level, message)`` of the engine's records about steps, branches and finished runs."""
    return [
        (record.levelname, record.getMessage())
        for record in engine_records(caplog)
        if getattr(record, "outcome", None) is not None
    ]


def outcome_of(caplog: pytest.LogCaptureFixture, step_name: str) -> list[logging.LogRecord]:
    return [
        record
        for record in engine_records(caplog)
        if getattr(record, "step", None) == step_name and hasattr(record, "duration")
    ]


def boom(ctx: dict[str, Any]) -> Any:
    raise ValueError("card declined")


@runs
def test_each_step_logs_its_outcome_and_the_run_its_end(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable_django")
    wf = define([step("prepare", lambda ctx: ok({"a": 1})), step("ship", lambda ctx: ok({"b": 2}))])
    run = finish(embedded, wf.start({}))
    prepare, ship = outcome_of(caplog, "prepare")[0], outcome_of(caplog, "ship")[0]
    assert lines(caplog) == [
        ("INFO", f"run {run.pk} ({wf.name}): step 'prepare' completed in {prepare.duration:.3f}s (attempt 1)"),
        ("INFO", f"run {run.pk} ({wf.name}): step 'ship' completed in {ship.duration:.3f}s (attempt 1)"),
        ("INFO", f"run {run.pk} of workflow {wf.name!r} completed"),
    ]
    for record in (prepare, ship):
        assert [getattr(record, name) for name in OUTCOME[:4]] == [str(run.pk), wf.name, record.step, 1]
        assert isinstance(record.duration, float) and record.duration >= 0
        assert record.outcome == "completed"
    # Every record the engine emitted about this run names it.
    assert {getattr(record, "run_id", None) for record in engine_records(caplog)} == {str(run.pk)}


@runs
def test_a_failing_step_logs_a_warning_with_its_reason_per_attempt_and_the_run_its_failure(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable_django")
    wf = define([step("charge", boom, retry={"max_attempts": 2, **IMMEDIATE})])
    run = finish(embedded, wf.start({}))
    first, second = outcome_of(caplog, "charge")
    assert lines(caplog) == [
        (
            "WARNING",
            f"run {run.pk} ({wf.name}): step 'charge' failed in {first.duration:.3f}s "
            "(attempt 1, retrying in 0.00s): ValueError: card declined",
        ),
        (
            "WARNING",
            f"run {run.pk} ({wf.name}): step 'charge' failed in {second.duration:.3f}s "
            "(attempt 2, final): ValueError: card declined",
        ),
        ("WARNING", f"run {run.pk} of workflow {wf.name!r} failed at 'charge': ValueError: card declined"),
    ]
    assert (first.attempt, second.attempt, first.outcome, second.outcome) == (1, 2, "failed", "failed")
    # The reason, not the traceback the database keeps.
    assert all("Traceback" not in message for _, message in lines(caplog))


@runs
def test_branches_log_one_line_each_and_a_failed_block_fails_the_run_naming_the_branch(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable_django")
    wf = define([parallel(step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: error("no stock")), name="blk")])
    run = finish(embedded, wf.start({}))
    a, b = outcome_of(caplog, "a")[0], outcome_of(caplog, "b")[0]
    assert lines(caplog) == [
        ("INFO", f"run {run.pk} ({wf.name}): branch 'a' of 'blk' completed in {a.duration:.3f}s (attempt 1)"),
        (
            "WARNING",
            f"run {run.pk} ({wf.name}): branch 'b' of 'blk' failed in {b.duration:.3f}s (attempt 1, final): no stock",
        ),
        ("WARNING", f"run {run.pk} of workflow {wf.name!r} failed at 'blk', branch 'b': no stock"),
    ]
    assert (a.levelno, b.levelno, a.outcome, b.outcome, b.run_id) == (
        logging.INFO,
        logging.WARNING,
        "completed",
        "failed",
        str(run.pk),
    )


@runs
def test_a_batch_does_nothing_per_branch_for_a_logger_that_drops_its_lines(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="durable_django")
    called: list[str] = []
    original = batches.log_attempt
    monkeypatch.setattr(
        batches, "log_attempt", lambda *args, **kwargs: called.append(args[3]) or original(*args, **kwargs)
    )
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok({})) for i in range(5)), step("bad", boom), name="blk")])
    finish(embedded, wf.start({}))
    # Successes are INFO: not even looked at. The failure is a WARNING: logged.
    assert called == ["bad"]
    assert [record.getMessage().split(": ", 1)[1].split(" failed")[0] for record in outcome_of(caplog, "bad")] == [
        "branch 'bad' of 'blk'"
    ]


@runs
def test_a_step_finishing_after_its_run_was_cancelled_says_what_became_of_it(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable_django")
    holder: dict[str, Any] = {}

    def first(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return ok({"first": True})

    wf = define([step("first", first), step("second", lambda ctx: ok({}))])
    holder["run"] = run = wf.start({})
    finish(embedded, run)
    record = outcome_of(caplog, "first")[0]
    assert lines(caplog) == [
        ("INFO", f"run {run.pk} of workflow {wf.name!r} cancelled"),
        ("INFO", f"run {run.pk} ({wf.name}): step 'first' completed in {record.duration:.3f}s (attempt 1)"),
        (
            "INFO",
            f"run {run.pk} ({wf.name}): step 'first' finished after the run was cancelled; "
            "its attempt 1 is recorded as cancelled",
        ),
    ]


def make_record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__.update(extra)
    return record


def test_the_filter_fills_every_attribute_a_record_does_not_carry() -> None:
    record = make_record()
    assert RunContextFilter().filter(record) is True
    assert [getattr(record, name) for name in OUTCOME] == ["-"] * 6
    formatter = logging.Formatter("%(run_id)s %(workflow)s %(step)s %(message)s")
    assert formatter.format(record) == "- - - hello"


def test_the_filter_keeps_what_a_record_says_and_names_the_step_executing() -> None:
    record = make_record(run_id="3f0c1a2b", workflow="checkout")
    RunContextFilter().filter(record)
    assert (record.run_id, record.workflow, record.step, record.attempt) == ("3f0c1a2b", "checkout", "-", "-")
    with step_scope(StepScope("1234", "charge", {})):
        inside = make_record()
        RunContextFilter().filter(inside)
    assert (inside.run_id, inside.step, inside.workflow) == ("1234", "charge", "-")


def test_a_logging_config_with_the_filter_formats_any_record(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RunContextFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [%(run_id)s] %(message)s"))
    record = make_record()
    handler.filter(record)
    assert handler.format(record) == "INFO [-] hello"


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ({"type": "ValueError", "message": "card declined", "traceback": "Traceback ..."}, "ValueError: card declined"),
        ("no stock", "no stock"),
        ({"code": "not_yet"}, '{"code":"not_yet"}'),
        ("line one\nline two", "line one line two"),
        ("x" * 400, "x" * 297 + "..."),
        (None, "null"),
    ],
)
def test_a_reason_is_logged_in_one_short_line(reason: Any, text: str) -> None:
    assert describe_reason(reason) == text
