"""Per-step log capture: what a step logs (and prints) while it runs is stored with its attempt."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from durable_django import (
    batches,
    blocks,
    call_workflow,
    capture,
    error,
    foreach,
    ok,
    parallel,
    send_event,
    step,
    wait_for_event,
)
from durable_django.attempts import call_step
from durable_django.models import StepResult, WorkflowRun
from durable_django.operations import cancel_run
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish
from tests.test_engine import CLAIM, RECORD_ALL_AND_JOIN, STEP, STEP_AND_FAN_OUT, statements

runs = pytest.mark.django_db(transaction=True)

shop = logging.getLogger("shop.orders")


def durable(**values: Any) -> Any:
    return override_settings(DURABLE=values)


def logs_of(run: WorkflowRun, name: str, attempt: int = 1) -> list[tuple[str, str, str]]:
    """``(level, logger, message)`` of the records stored with ``attempt`` of step ``name``."""
    row = StepResult.objects.get(run=run, step=name, attempt=attempt, kind="step")
    return [(record["level"], record["logger"], record["message"]) for record in row.logs]


def logging_step(*messages: str, data: dict[str, Any] | None = None) -> Any:
    def step_fn(ctx: dict[str, Any]) -> Any:
        for message in messages:
            shop.info(message)
        return ok(data or {})

    return step_fn


@pytest.fixture
def quick_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches never overrun: one job executes every branch of a block in one batch."""
    monkeypatch.setattr(blocks, "TARGET_SECONDS", 3600.0)
    monkeypatch.setattr(batches, "OVERRUN_SECONDS", 3600.0)


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """The root logger's level and handlers as before the test: a test that captures DEBUG lowers it."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    levels = [(handler, handler.level) for handler in handlers]
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler, former in levels:
        handler.setLevel(former)
    root.setLevel(level)


@pytest.fixture
def uninstalled() -> Iterator[None]:
    """No capture handler on the root logger when the test starts (an earlier test may have put it there)."""
    root = logging.getLogger()
    root.removeHandler(capture.handler())
    yield


# -- what is captured -----------------------------------------------------------------------------------


@runs
def test_records_of_any_logger_at_or_above_info_are_stored_with_the_attempt(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    def charge(ctx: dict[str, Any]) -> Any:
        shop.debug("not kept: below INFO")
        shop.info("charging %s cents", ctx["amount"])
        logging.getLogger().warning("root logger, kept")
        logging.getLogger("payments.gateway").error("gateway slow")
        return ok({"charged": True})

    run = finish(embedded, define([step("charge", charge)]).start({"amount": 8900}))
    assert run.status == "completed"
    row = StepResult.objects.get(run=run)
    assert [sorted(record) for record in row.logs] == [["at", "level", "logger", "message"]] * 3
    assert logs_of(run, "charge") == [
        ("INFO", "shop.orders", "charging 8900 cents"),
        ("WARNING", "root", "root logger, kept"),
        ("ERROR", "payments.gateway", "gateway slow"),
    ]
    times = [datetime.fromisoformat(record["at"]) for record in row.logs]
    assert row.started_at <= times[0] <= times[1] <= times[2] <= row.finished_at


@runs
@pytest.mark.parametrize(
    ("level", "kept"),
    [("WARNING", ["WARNING"]), ("DEBUG", ["DEBUG", "INFO", "WARNING"]), (logging.INFO, ["INFO", "WARNING"])],
)
def test_the_lowest_level_captured_is_configurable(
    embedded: EmbeddedQueue, define: Definer, level: Any, kept: list[str]
) -> None:
    def noisy(ctx: dict[str, Any]) -> Any:
        shop.debug("d")
        shop.info("i")
        shop.warning("w")
        return ok()

    with durable(CAPTURE_LOGS_LEVEL=level):
        run = finish(embedded, define([step("noisy", noisy)]).start())
    assert [level for level, _, _ in logs_of(run, "noisy")] == kept


@runs
def test_the_engines_own_loggers_are_not_captured(embedded: EmbeddedQueue, define: Definer) -> None:
    def quiet(ctx: dict[str, Any]) -> Any:
        logging.getLogger("durable_django").warning("engine")
        logging.getLogger("durable_django.dispatch").warning("engine too")
        logging.getLogger("durable_djangoish").warning("not the engine")
        return ok()

    run = finish(embedded, define([step("quiet", quiet), step("next", lambda ctx: ok())]).start())
    assert logs_of(run, "quiet") == [("WARNING", "durable_djangoish", "not the engine")]
    # The engine's own line about each step is not the step's either.
    assert logs_of(run, "next") == []


@runs
def test_prints_are_captured_only_with_capture_print_and_still_printed(
    embedded: EmbeddedQueue, define: Definer, capsys: pytest.CaptureFixture[str]
) -> None:
    def chatty(ctx: dict[str, Any]) -> Any:
        print("hello", "world")
        print("two\nlines", end="")
        shop.info("logged")
        return ok()

    wf = define([step("chatty", chatty)])
    plain = finish(embedded, wf.start())
    with durable(CAPTURE_PRINT=True):
        printing = finish(embedded, wf.start())
    assert logs_of(plain, "chatty") == [("INFO", "shop.orders", "logged")]
    assert logs_of(printing, "chatty") == [
        ("INFO", "print", "hello world"),
        ("INFO", "print", "two"),
        ("INFO", "shop.orders", "logged"),
        ("INFO", "print", "lines"),
    ]
    assert capsys.readouterr().out == "hello world\ntwo\nlineshello world\ntwo\nlines"


@runs
def test_a_failing_step_keeps_what_it_logged_before_raising(embedded: EmbeddedQueue, define: Definer) -> None:
    def broken(ctx: dict[str, Any]) -> Any:
        shop.info("about to fail")
        try:
            {}["missing"]
        except KeyError:
            shop.exception("lookup failed")
        raise RuntimeError("boom")

    run = finish(embedded, define([step("broken", broken)]).start())
    assert run.status == "failed"
    row = StepResult.objects.get(run=run)
    assert row.error["message"] == "boom"
    (info_level, _, first), (level, name, second) = logs_of(run, "broken")
    assert (info_level, first, level, name) == ("INFO", "about to fail", "ERROR", "shop.orders")
    # The step's own logger.exception carries its traceback once; the exception that failed the
    # step is in the row's error, not in its logs.
    assert second.startswith("lookup failed\nTraceback (most recent call last):")
    assert second.endswith("KeyError: 'missing'") and second.count("Traceback") == 1
    assert "boom" not in str(row.logs)


@runs
def test_each_attempt_of_a_retried_step_keeps_its_own_logs(embedded: EmbeddedQueue, define: Definer) -> None:
    tries: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        tries.append(1)
        shop.info("try %d", len(tries))
        return error("down") if len(tries) < 3 else ok()

    run = finish(embedded, define([step("flaky", flaky, retry={"max_attempts": 3, **IMMEDIATE})]).start())
    assert run.status == "completed"
    assert [logs_of(run, "flaky", attempt) for attempt in (1, 2, 3)] == [
        [("INFO", "shop.orders", "try 1")],
        [("INFO", "shop.orders", "try 2")],
        [("INFO", "shop.orders", "try 3")],
    ]


@runs
def test_each_attempt_of_a_retried_branch_keeps_its_own_logs(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    tries: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        tries.append(1)
        shop.info("branch try %d", len(tries))
        return error("down") if len(tries) == 1 else ok()

    wf = define(
        [parallel(step("flaky", flaky, retry={"max_attempts": 2, **IMMEDIATE}), step("steady", logging_step("s")))]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert logs_of(run, "flaky", 1) == [("INFO", "shop.orders", "branch try 1")]
    assert logs_of(run, "flaky", 2) == [("INFO", "shop.orders", "branch try 2")]
    assert logs_of(run, "steady") == [("INFO", "shop.orders", "s")]


@runs
def test_steps_and_branches_that_wait_keep_their_logs(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    def waiting(name: str) -> Any:
        def step_fn(ctx: dict[str, Any]) -> Any:
            shop.info("%s waits", name)
            return wait_for_event(f"{name}-done")

        return step_fn

    wf = define([step("first", waiting("first")), parallel(step("a", waiting("a")), step("b", waiting("b")))])
    run = finish(embedded, wf.start())
    assert (run.status, logs_of(run, "first")) == ("waiting", [("INFO", "shop.orders", "first waits")])
    send_event(run.pk, "first-done")
    run = finish(embedded, run)
    assert run.status == "waiting"
    assert (logs_of(run, "a"), logs_of(run, "b")) == (
        [("INFO", "shop.orders", "a waits")],
        [("INFO", "shop.orders", "b waits")],
    )


@runs
def test_attempts_recorded_as_cancelled_keep_their_logs(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    holder: dict[str, Any] = {}

    def canceller(ctx: dict[str, Any]) -> Any:
        shop.info("cancelling my own run")
        cancel_run(holder["run"])
        return ok()

    sequential = define([step("first", canceller), step("second", lambda ctx: ok())])
    holder["run"] = run = sequential.start()
    run = finish(embedded, run)
    assert run.status == "cancelled"
    assert StepResult.objects.get(run=run).status == "cancelled"
    assert logs_of(run, "first") == [("INFO", "shop.orders", "cancelling my own run")]

    block = define([parallel(step("a", canceller), step("b", lambda ctx: ok()))])
    holder["run"] = run = block.start()
    run = finish(embedded, run)
    assert (run.status, StepResult.objects.get(run=run, step="a").status) == ("cancelled", "cancelled")
    assert logs_of(run, "a") == [("INFO", "shop.orders", "cancelling my own run")]


@runs
def test_a_compensation_keeps_its_own_logs(embedded: EmbeddedQueue, define: Definer) -> None:
    def release(ctx: dict[str, Any]) -> None:
        shop.info("releasing room %s", ctx["room"])

    wf = define(
        [
            step("reserve", logging_step("reserved", data={"room": 12}), compensate=release),
            step("charge", lambda ctx: error("card declined")),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    undo = StepResult.objects.get(run=run, kind="compensation")
    assert [(record["level"], record["message"]) for record in undo.logs] == [("INFO", "releasing room 12")]
    assert logs_of(run, "reserve") == [("INFO", "shop.orders", "reserved")]


# -- caps -----------------------------------------------------------------------------------------------


@runs
def test_the_record_cap_keeps_the_first_records_and_says_how_many_were_cut(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    with durable(CAPTURE_LOGS_MAX_RECORDS=3):
        run = finish(embedded, define([step("many", logging_step(*(f"m{i}" for i in range(7))))]).start())
    assert logs_of(run, "many") == [
        ("INFO", "shop.orders", "m0"),
        ("INFO", "shop.orders", "m1"),
        ("INFO", "shop.orders", "m2"),
        ("WARNING", "durable_django", "4 more records not kept (cap of 3 records)"),
    ]


@runs
def test_the_byte_cap_counts_the_bytes_of_the_messages_and_cuts_everything_after_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    # 10 + 10 bytes fit in 25; the third would not, and nothing after it is kept, however small.
    messages = ["a" * 10, "é" * 5, "c" * 10, "d"]
    with durable(CAPTURE_LOGS_MAX_BYTES=25):
        run = finish(embedded, define([step("big", logging_step(*messages))]).start())
    assert logs_of(run, "big") == [
        ("INFO", "shop.orders", "a" * 10),
        ("INFO", "shop.orders", "é" * 5),
        ("WARNING", "durable_django", "2 more records not kept (cap of 25 bytes)"),
    ]


def test_one_record_over_the_cap_is_cut_alone_and_a_long_message_is_shortened() -> None:
    buffer = capture.Buffer(logging.INFO, max_records=5, max_bytes=10_000)
    buffer.add("INFO", "x", "y" * (capture.MAX_MESSAGE + 10))
    buffer.add("INFO", "x", "nul\x00 and \udcff")
    (long, odd) = buffer.result()
    assert long["message"] == "y" * capture.MAX_MESSAGE + "…"
    assert odd["message"] == "nul\\x00 and \\udcff"
    single = capture.Buffer(logging.INFO, max_records=5, max_bytes=3)
    single.add("INFO", "x", "four")
    assert [record["message"] for record in single.result()] == ["1 more record not kept (cap of 3 bytes)"]


# -- off ------------------------------------------------------------------------------------------------


@runs
def test_capture_off_stores_nothing_installs_no_handler_and_opens_no_buffer(
    embedded: EmbeddedQueue, define: Definer, uninstalled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def opened(*args: Any) -> None:
        raise AssertionError("a buffer was opened")

    def looking(ctx: dict[str, Any]) -> Any:
        seen.append(capture.current.get())
        shop.warning("not kept")
        return ok()

    monkeypatch.setattr(capture, "Buffer", opened)
    with durable(CAPTURE_LOGS=False, CAPTURE_PRINT=True):
        run = finish(embedded, define([step("looking", looking), parallel(step("a", looking))]).start())
    assert run.status == "completed"
    assert list(StepResult.objects.filter(run=run).values_list("logs", flat=True)) == [[], []]
    assert (seen, capture.installed()) == ([None, None], False)


def test_installing_the_handler_changes_nothing_for_the_processs_other_logging(
    uninstalled: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, level = logging.getLogger(), logging.getLogger().level
    written: list[str] = []
    console = logging.Handler()
    console.emit = lambda record: written.append(record.getMessage())  # type: ignore[method-assign]
    # The root logger as a process without capture has it: level WARNING, one handler of no level.
    monkeypatch.setattr(root, "handlers", [console])
    root.setLevel(logging.WARNING)
    try:
        capture.install(logging.INFO)
        assert (capture.installed(), root.level, console.level) == (True, logging.INFO, logging.WARNING)
        # The root's other handler writes what it wrote before: not the INFO records now let through.
        logging.getLogger("elsewhere").info("quiet")
        logging.getLogger("elsewhere").warning("loud")
        assert written == ["loud"]
        root.removeHandler(console)
        # A record no other handler takes still goes to Python's last resort (stderr), as without capture.
        logging.getLogger("nobody.listens").warning("to stderr")
        assert capsys.readouterr().err == "to stderr\n"
    finally:
        root.removeHandler(capture.handler())
        root.setLevel(level)


# -- isolation ------------------------------------------------------------------------------------------


@runs
def test_branches_executed_in_one_batch_each_keep_only_their_own_records(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    def each(ctx: dict[str, Any]) -> Any:
        shop.info("item %s", ctx["item"])
        if ctx["item"] == 2:
            shop.warning("item 2 is odd one out")
            return error("two")
        return ok()

    wf = define([foreach("each", "things", each, on_error="complete_all")])
    run = finish(embedded, wf.start({"things": [0, 1, 2, 3]}))
    rows = StepResult.objects.filter(run=run, step="each").order_by("item_index")
    # One job executed the whole block: its four branches shared it, not their records.
    assert len({row.job_id for row in rows}) == 1
    assert [[record["message"] for record in row.logs] for row in rows] == [
        ["item 0"],
        ["item 1"],
        ["item 2", "item 2 is odd one out"],
        ["item 3"],
    ]
    # complete_all: the failed branch is one of the results.
    assert (run.status, [kind for kind, _ in run.context["__results__"]]) == ("completed", ["ok", "ok", "error", "ok"])


@runs
def test_branches_of_a_parallel_block_in_one_batch_keep_their_own_records(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    wf = define([parallel(step("left", logging_step("left")), step("right", logging_step("right", "right again")))])
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert len(set(StepResult.objects.filter(run=run).values_list("job_id", flat=True))) == 1
    assert logs_of(run, "left") == [("INFO", "shop.orders", "left")]
    assert logs_of(run, "right") == [("INFO", "shop.orders", "right"), ("INFO", "shop.orders", "right again")]


@runs
def test_a_child_called_inside_a_step_keeps_its_records_and_the_parent_step_its_own(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    child = define([step("inner", logging_step("in the child"))])

    def outer(ctx: dict[str, Any]) -> Any:
        shop.info("before the call")
        call_workflow(child, {})
        shop.info("after the call")
        return ok()

    run = finish(embedded, define([step("outer", outer)]).start())
    assert run.status == "completed"
    assert logs_of(run, "outer") == [
        ("INFO", "shop.orders", "before the call"),
        ("INFO", "shop.orders", "after the call"),
    ]
    inner = WorkflowRun.objects.get(parent=run)
    assert logs_of(inner, "inner") == [("INFO", "shop.orders", "in the child")]


def test_concurrent_threads_each_keep_only_their_own_records(settings: Any) -> None:
    settings.DURABLE = {"CAPTURE_PRINT": True}
    rounds, threads = 20, 4
    barrier = threading.Barrier(threads + 1)
    found: dict[int, list[dict[str, Any]]] = {}

    def worker_step(number: int) -> Any:
        def step_fn(ctx: dict[str, Any]) -> Any:
            barrier.wait(timeout=10)
            for index in range(rounds):
                shop.info("thread %d record %d", number, index)
                print(f"thread {number} print {index}")
            return ok()

        return step_fn

    def run_one(number: int) -> None:
        attempt = call_step(step(f"t{number}", worker_step(number)), {}, "run-id")
        found[number] = attempt.logs

    workers = [threading.Thread(target=run_one, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=10)
    # A thread that runs no step logs meanwhile: its records belong to no attempt.
    for index in range(rounds):
        shop.warning("outside any step %d", index)
    for worker in workers:
        worker.join(timeout=10)
    for number in range(threads):
        expected = [
            message
            for index in range(rounds)
            for message in (f"thread {number} record {index}", f"thread {number} print {index}")
        ]
        assert [record["message"] for record in found[number]] == expected


# -- cost -----------------------------------------------------------------------------------------------


@runs
def test_capture_adds_no_statement(embedded: EmbeddedQueue, define: Definer, quick_batches: None) -> None:
    wf = define(
        [
            step("create", logging_step("creating", "created", data={"user": 1})),
            parallel(*(step(name, logging_step(f"{name} sent")) for name in ("email", "workspace", "billing"))),
            step("complete", logging_step("done")),
        ]
    )
    expected = CLAIM + STEP_AND_FAN_OUT + RECORD_ALL_AND_JOIN + STEP
    costs = []
    for on in (True, False):
        with durable(CAPTURE_LOGS=on):
            run = wf.start()
            with CaptureQueriesContext(connection) as captured:
                embedded.run_until_idle(timeout=30)
        costs.append(statements(captured))
        run.refresh_from_db()
        assert run.status == "completed"
        assert logs_of(run, "email") == ([("INFO", "shop.orders", "email sent")] if on else [])
        assert logs_of(run, "create") == (
            [("INFO", "shop.orders", "creating"), ("INFO", "shop.orders", "created")] if on else []
        )
    assert costs == [expected, expected]
