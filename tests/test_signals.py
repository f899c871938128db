"""The signals of durable_django.signals: once per change, after its commit, robust to a raising receiver."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from durable_django import (
    batches,
    blocks,
    call_workflow,
    cancel_run,
    current_run_id,
    error,
    foreach,
    ok,
    parallel,
    retry_run,
    send_event,
    step,
    wait_for_event,
)
from durable_django.compensation import compensate
from durable_django.exceptions import RunStateError
from durable_django.jobs import join_group, run_branch, run_workflow
from durable_django.models import ParallelGroup, StepResult, Wait, WorkflowRun
from durable_django.recovery import recover
from durable_django.results import wait_timeout
from durable_django.resume import wake
from durable_django.signals import NAMES, step_finished
from durable_django.testing import EmbeddedQueue, make_due
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)


@dataclass
class Heard:
    """One signal as a receiver got it, and whether a transaction was open then."""

    signal: str
    sender: Any
    run: WorkflowRun
    obj: Any
    in_transaction: bool

    def summary(self) -> tuple[Any, ...]:
        if self.signal in ("run_started", "run_finished"):
            return (self.signal, self.run.status)
        if self.signal == "step_finished":
            row = self.obj
            return (self.signal, row.step, row.kind, row.item_index, row.attempt, row.status)
        return (self.signal, self.obj.name, self.obj.status)


class Listener:
    """A receiver of every signal that keeps what it heard."""

    def __init__(self) -> None:
        self.heard: list[Heard] = []

    def __call__(self, signal: Any, sender: Any, run: WorkflowRun, **named: Any) -> None:
        assert set(named) <= {"step_result", "group", "wait"}
        obj = named.get("step_result") or named.get("group") or named.get("wait")
        self.heard.append(Heard(NAMES[signal], sender, run, obj, connection.in_atomic_block))

    def summaries(self) -> list[tuple[Any, ...]]:
        return [heard.summary() for heard in self.heard]

    def of(self, signal: str) -> list[Heard]:
        return [heard for heard in self.heard if heard.signal == signal]


@pytest.fixture
def heard() -> Iterator[Listener]:
    listener = Listener()
    for signal in NAMES:
        signal.connect(listener, weak=False)
    try:
        yield listener
    finally:
        for signal in NAMES:
            signal.disconnect(listener)


@pytest.fixture
def quick_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches always count as quick and never overrun: their sizes do not depend on timing."""
    monkeypatch.setattr(blocks, "TARGET_SECONDS", 3600.0)
    monkeypatch.setattr(batches, "OVERRUN_SECONDS", 3600.0)


def rows_of(run: WorkflowRun) -> list[StepResult]:
    return list(StepResult.objects.filter(run=run).order_by("id"))


STARTED = ("run_started", "pending")


def step_of(name: str, attempt: int = 1, status: str = "completed", *, kind: str = "step", item: Any = None) -> Any:
    return ("step_finished", name, kind, item, attempt, status)


def assert_after_commit_by(listener: Listener, workflow: str) -> None:
    assert {heard.sender for heard in listener.heard} == {workflow}
    assert [heard.in_transaction for heard in listener.heard] == [False] * len(listener.heard)


# -- runs and steps ---------------------------------------------------------------------------------


@runs
def test_a_run_sends_its_start_each_step_and_its_end_once_each_after_commit(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([step("a", lambda ctx: ok({"x": 1})), step("b", lambda ctx: ok({"y": 2}))])
    run = finish(embedded, wf.start({"n": 1}))

    assert heard.summaries() == [
        ("run_started", "pending"),
        step_of("a"),
        step_of("b"),
        ("run_finished", "completed"),
    ]
    assert_after_commit_by(heard, wf.name)
    a, b = rows_of(run)
    first, step_a, step_b, last = heard.heard
    assert (first.run.pk, first.run.input, first.run.current_step, first.run.version) == (run.pk, {"n": 1}, "a", 0)
    # Each step_result is the stored row; each run is the run as that transition left it.
    assert (step_a.obj.pk, step_a.obj.output, step_a.obj.run_id) == (a.pk, {"x": 1}, run.pk)
    assert (step_b.obj.pk, step_b.obj.output) == (b.pk, {"y": 2})
    assert (step_a.run.status, step_a.run.current_step, step_a.run.context) == ("running", "b", {"n": 1, "x": 1})
    assert (step_b.run.status, step_b.run.version) == ("completed", run.version)
    assert (last.run.pk, last.run.status, last.run.context, last.run.version) == (
        run.pk,
        "completed",
        {"n": 1, "x": 1, "y": 2},
        run.version,
    )


@runs
def test_a_start_is_sent_when_its_transaction_commits_and_never_when_it_rolls_back(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([step("a", lambda ctx: ok())])
    with pytest.raises(RuntimeError), transaction.atomic():
        wf.start()
        raise RuntimeError("rolled back")
    assert heard.heard == []

    with transaction.atomic():
        run = wf.start()
        assert heard.heard == []
    assert [(h.signal, h.run.pk, h.in_transaction) for h in heard.heard] == [("run_started", run.pk, False)]
    assert WorkflowRun.objects.count() == 1


@runs
def test_a_failed_attempt_that_is_retried_and_a_final_failure_each_send_step_finished(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error({"try": len(calls)}) if len(calls) < 3 else ok()

    wf = define([step("flaky", flaky, retry={"max_attempts": 2, **IMMEDIATE})])
    run = finish(embedded, wf.start())

    assert heard.summaries() == [
        STARTED,
        step_of("flaky", 1, "failed"),
        step_of("flaky", 2, "failed"),
        ("run_finished", "failed"),
    ]
    assert [h.obj.error for h in heard.of("step_finished")] == [{"try": 1}, {"try": 2}]
    assert heard.of("run_finished")[0].run.error == run.error == {"step": "flaky", "reason": {"try": 2}}
    assert_after_commit_by(heard, wf.name)


@runs
def test_a_receiver_that_raises_is_logged_and_breaks_neither_the_run_nor_the_other_receivers(
    embedded: EmbeddedQueue, define: Definer, heard: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **named: Any) -> None:
        raise ValueError("receiver bug")

    for signal in NAMES:
        signal.connect(broken, weak=False)
    try:
        wf = define([step("a", lambda ctx: ok()), step("b", lambda ctx: ok())])
        with caplog.at_level(logging.ERROR, logger="durable_django"):
            run = finish(embedded, wf.start())
    finally:
        for signal in NAMES:
            signal.disconnect(broken)

    assert run.status == "completed"
    assert heard.summaries() == [STARTED, step_of("a"), step_of("b"), ("run_finished", "completed")]
    ours = [record for record in caplog.records if record.name == "durable_django" and record.levelno == logging.ERROR]
    receiver = f"{__name__}.{broken.__qualname__}"
    assert [record.getMessage() for record in ours] == [
        f"receiver {receiver} of signal {name} (workflow {wf.name!r}) raised ValueError: receiver bug; "
        "the other receivers still run"
        for name in ("run_started", "step_finished", "step_finished", "run_finished")
    ]
    assert all(record.exc_info is not None for record in ours)


@runs
def test_a_receiver_connected_for_one_workflow_hears_only_that_workflow(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    mine, other = define([step("a", lambda ctx: ok())]), define([step("a", lambda ctx: ok())])
    listener = Listener()
    # Django matches senders by identity: the engine sends the interned name.
    step_finished.connect(listener, sender=sys.intern(mine.name), weak=False)
    try:
        finish(embedded, other.start())
        run = finish(embedded, mine.start())
    finally:
        step_finished.disconnect(listener, sender=sys.intern(mine.name))
    assert [(h.sender, h.run.pk, h.obj.step) for h in listener.heard] == [(mine.name, run.pk, "a")]


@runs
def test_a_child_called_by_a_step_sends_its_own_start_and_end(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    child = define([step("inner", lambda ctx: ok({"inner": True}))])
    parent = define([step("outer", lambda ctx: ok({"child": call_workflow(child, {})[0]}))])
    run = finish(embedded, parent.start())

    kid = WorkflowRun.objects.get(parent=run)
    assert [(h.sender, h.run.pk, *h.summary()) for h in heard.heard] == [
        (parent.name, run.pk, "run_started", "pending"),
        (child.name, kid.pk, "run_started", "pending"),
        (child.name, kid.pk, *step_of("inner")),
        (child.name, kid.pk, "run_finished", "completed"),
        (parent.name, run.pk, *step_of("outer")),
        (parent.name, run.pk, "run_finished", "completed"),
    ]


# -- duplicates and lost races ------------------------------------------------------------------------


@runs
def test_jobs_delivered_twice_send_nothing_the_second_time(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [step("a", lambda ctx: ok()), parallel(step("b", lambda ctx: ok()), name="fan"), step("c", lambda ctx: ok())]
    )
    run = wf.start()
    # The same run job delivered twice: the copy runs first, in this process; the original finds
    # the run moved on.
    run_workflow(str(run.pk), "default", 0)
    run = finish(embedded, run)
    expected = [
        STARTED,
        step_of("a"),
        step_of("b"),
        ("group_finished", "fan", "completed"),
        step_of("c"),
        ("run_finished", "completed"),
    ]
    assert heard.summaries() == expected

    # Late copies of every job, after the run finished.
    run_workflow(str(run.pk), "default", 0)
    run_branch(StepResult.objects.get(run=run, step="b").pk)
    join_group(ParallelGroup.objects.get(run=run).pk, "default")
    embedded.run_until_idle(timeout=30)
    assert heard.summaries() == expected


@runs
def test_a_step_whose_transition_lost_to_a_cancel_sends_no_step_finished(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    def cancels_its_run(ctx: dict[str, Any]) -> Any:
        cancel_run(current_run_id())
        return ok({"late": True})

    wf = define([step("a", cancels_its_run), step("b", lambda ctx: ok())])
    run = finish(embedded, wf.start())

    assert run.status == "cancelled"
    assert [(row.step, row.status) for row in rows_of(run)] == [("a", "cancelled")]
    assert heard.summaries() == [STARTED, ("run_finished", "cancelled")]
    assert heard.heard[-1].run.version == run.version


# -- parallel and foreach blocks ----------------------------------------------------------------------


@runs
def test_a_short_block_sends_each_branch_then_its_group_then_the_runs_end(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [
            step("a", lambda ctx: ok()),
            parallel(*(step(f"b{i}", lambda ctx, i=i: ok({"i": i})) for i in range(3)), name="fan"),
        ]
    )
    run = finish(embedded, wf.start())

    assert heard.summaries() == [
        STARTED,
        step_of("a"),
        step_of("b0"),
        step_of("b1"),
        step_of("b2"),
        ("group_finished", "fan", "completed"),
        ("run_finished", "completed"),
    ]
    assert_after_commit_by(heard, wf.name)
    group = ParallelGroup.objects.get(run=run)
    branches = heard.of("step_finished")[1:]
    stored = {row.pk: row for row in StepResult.objects.filter(group=group)}
    assert [(h.obj.pk, h.obj.group_id, h.obj.output) for h in branches] == [
        (pk, group.pk, stored[pk].output) for pk in sorted(stored)
    ]
    assert [h.obj.output for h in branches] == [{"i": 0}, {"i": 1}, {"i": 2}]
    # Each branch with the run as its result found it; the join that closed the block moved it on.
    assert {(h.run.status, h.run.current_step) for h in branches} == {("running", "fan")}
    closed = heard.of("group_finished")[0]
    assert (closed.obj.pk, closed.obj.results, closed.obj.finished_at) == (group.pk, group.results, group.finished_at)
    assert closed.run.status == "completed"


@runs
def test_a_batch_of_branches_sends_one_step_finished_per_branch_for_one_query_per_batch(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx, i=i: ok({"i": i})) for i in range(40)), name="wide")])
    with CaptureQueriesContext(connection) as quiet:
        finish(embedded, wf.start())

    listener = Listener()
    step_finished.connect(listener, weak=False)
    try:
        with CaptureQueriesContext(connection) as listened:
            run = finish(embedded, wf.start())
    finally:
        step_finished.disconnect(listener)

    stored = list(StepResult.objects.filter(run=run).order_by("id").values_list("pk", "step", "status", "output"))
    assert [(h.obj.pk, h.obj.step, h.obj.status, h.obj.output) for h in listener.heard] == stored
    assert len(stored) == 40
    assert {h.run.pk for h in listener.heard} == {run.pk}
    # Built from what the batches wrote: the batches of 32 and 8 cost one more query each (their
    # run), and nothing else changes.
    assert len(listened.captured_queries) - len(quiet.captured_queries) == 2
    assert listener.heard[0].obj.get_deferred_fields() == {
        "created_at",
        "job_id",
        "context",
        "compensates_id",
        "context_before",
    }
    # The batch wrote each attempt's logs: the receiver has them without a query.
    assert listener.heard[0].obj.logs == []
    assert listener.heard[0].obj.job_id == f"durable-run-{run.pk}-0"


@runs
def test_branches_on_another_queue_and_a_retried_branch_each_send_their_attempts(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error("once") if len(calls) == 1 else ok({"second": True})

    wf = define(
        [
            parallel(
                step("flaky", flaky, retry={"max_attempts": 2, **IMMEDIATE}),
                step("far", lambda ctx: ok(), queue="priority"),
                name="fan",
            )
        ]
    )
    run = finish(embedded, wf.start())

    assert run.status == "completed"
    summaries = heard.summaries()
    assert summaries[0] == STARTED
    assert sorted(summaries[1:4]) == sorted([step_of("flaky", 1, "failed"), step_of("far"), step_of("flaky", 2)])
    assert summaries[4:] == [("group_finished", "fan", "completed"), ("run_finished", "completed")]
    assert sorted(h.obj.pk for h in heard.of("step_finished")) == [row.pk for row in rows_of(run)]
    assert_after_commit_by(heard, wf.name)


@runs
def test_a_fail_fast_block_sends_its_failure_its_group_and_the_runs_end_not_its_cancelled_branches(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [parallel(step("fails", lambda ctx: error("no")), step("late", lambda ctx: ok(), queue="priority"), name="fan")]
    )
    run = finish(embedded, wf.start())

    assert [(row.step, row.status) for row in rows_of(run)] == [("fails", "failed"), ("late", "cancelled")]
    assert heard.summaries() == [
        STARTED,
        step_of("fails", 1, "failed"),
        ("group_finished", "fan", "failed"),
        ("run_finished", "failed"),
    ]
    assert heard.of("run_finished")[0].run.error == run.error


@runs
def test_foreach_items_send_one_step_finished_each_with_their_index(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([foreach("each", "things", lambda ctx: ok({"twice": ctx["item"] * 2}))])
    run = finish(embedded, wf.start({"things": [10, 20, 30]}))

    assert heard.summaries() == [
        STARTED,
        *(step_of("each", item=index) for index in range(3)),
        ("group_finished", "each", "completed"),
        ("run_finished", "completed"),
    ]
    assert [h.obj.output for h in heard.of("step_finished")] == [{"twice": 20}, {"twice": 40}, {"twice": 60}]
    assert [h.obj.pk for h in heard.of("step_finished")] == [row.pk for row in rows_of(run)]


# -- compensations ------------------------------------------------------------------------------------


@runs
def test_a_compensating_run_sends_each_compensation_and_its_end_once_compensated(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 12}), compensate=lambda ctx: ok({"released": 12})),
            step("confirm", lambda ctx: error("airline down")),
        ]
    )
    run = finish(embedded, wf.start())

    assert (run.status, run.compensation) == ("failed", "completed")
    assert heard.summaries() == [
        STARTED,
        step_of("reserve"),
        step_of("confirm", 1, "failed"),
        step_of("reserve", kind="compensation"),
        ("run_finished", "failed"),
    ]
    # The failure moved the run to compensating: that is no end yet.
    assert heard.of("step_finished")[1].run.status == "compensating"
    undo = heard.of("step_finished")[2].obj
    assert (undo.output, undo.compensates_id) == ({"released": 12}, rows_of(run)[0].pk)
    ended = heard.of("run_finished")[0].run
    assert (ended.status, ended.compensation, ended.error) == ("failed", "completed", run.error)

    # The compensate job delivered again finds nothing to do.
    compensate(str(run.pk), "default", run.version - 1)
    compensate(str(run.pk), "default", run.version)
    assert len(heard.heard) == 5


# -- waits ----------------------------------------------------------------------------------------


@runs
def test_a_steps_wait_sends_its_start_and_its_resolution(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([step("ask", lambda ctx: wait_for_event("approved")), step("done", lambda ctx: ok())])
    run = finish(embedded, wf.start())
    wait = Wait.objects.get(run=run)
    assert heard.summaries() == [STARTED, step_of("ask"), ("wait_started", "approved", "waiting")]
    began = heard.of("wait_started")[0]
    assert (began.obj.pk, began.run.status) == (wait.pk, "waiting")

    assert send_event(run.pk, "approved", {"by": "ada"}) == "delivered"
    run = finish(embedded, run)

    assert heard.summaries()[3:] == [
        ("wait_resolved", "approved", "resolved"),
        step_of("done"),
        ("run_finished", "completed"),
    ]
    resolved = heard.of("wait_resolved")[0]
    assert (resolved.obj.pk, resolved.obj.payload, resolved.run.status) == (wait.pk, {"by": "ada"}, "running")
    assert_after_commit_by(heard, wf.name)
    with pytest.raises(RunStateError):
        send_event(run.pk, "approved")
    assert len(heard.heard) == 6


@runs
def test_a_branchs_wait_sends_its_start_then_at_its_resolution_the_branchs_attempt(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [
            parallel(
                step("w", lambda ctx: wait_for_event("go", data={"asked": 1})), step("x", lambda ctx: ok()), name="fan"
            )
        ]
    )
    run = finish(embedded, wf.start())
    # One transaction records the batch: the wait of the branch that returned it, then the other's result.
    assert heard.summaries() == [STARTED, ("wait_started", "go", "waiting"), step_of("x")]
    assert heard.of("wait_started")[0].run.status == "running"  # the run waits once the batch is recorded

    send_event(run.pk, "go", {"went": True})
    run = finish(embedded, run)

    assert heard.summaries()[3:] == [
        ("wait_resolved", "go", "resolved"),
        step_of("w"),
        ("group_finished", "fan", "completed"),
        ("run_finished", "completed"),
    ]
    branch = heard.of("step_finished")[1].obj
    stored = StepResult.objects.get(run=run, step="w")
    assert (branch.pk, branch.status, branch.output) == (stored.pk, "completed", stored.output)
    assert stored.output == {"asked": 1, "go": {"went": True}}


@runs
def test_a_cancelled_run_sends_its_waits_and_groups_ended_then_its_end(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([parallel(step("w", lambda ctx: wait_for_event("go")), step("x", lambda ctx: ok()), name="fan")])
    run = finish(embedded, wf.start())
    assert run.status == "waiting"

    cancel_run(run)

    assert heard.summaries()[3:] == [
        ("wait_resolved", "go", "cancelled"),
        ("group_finished", "fan", "cancelled"),
        ("run_finished", "cancelled"),
    ]
    assert {h.run.status for h in heard.heard[3:]} == {"cancelled"}
    assert_after_commit_by(heard, wf.name)
    with pytest.raises(RunStateError):
        cancel_run(run)
    assert len(heard.heard) == 6


@runs
def test_a_wait_that_times_out_sends_its_end_once_however_often_its_wake_up_comes(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define([step("ask", lambda ctx: wait_for_event("approved", timeout=3600))])
    run = finish(embedded, wf.start())
    wait = Wait.objects.get(run=run)

    make_due(wait)
    embedded.run_due()
    assert wake(wait.pk) == "not waiting"  # the wake-up job delivered again

    assert heard.summaries() == [
        STARTED,
        step_of("ask"),
        ("wait_started", "approved", "waiting"),
        ("wait_resolved", "approved", "timed_out"),
        ("run_finished", "failed"),
    ]
    assert heard.of("run_finished")[0].run.error == {"step": "ask", "reason": wait_timeout("approved")}


# -- operators ---------------------------------------------------------------------------------------


@runs
def test_a_retried_run_is_not_started_again_and_sends_its_end_again(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    calls: list[int] = []

    def fails_once(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error("once") if len(calls) == 1 else ok()

    wf = define([step("a", fails_once)])
    run = finish(embedded, wf.start())
    retry_run(run)
    run = finish(embedded, run)

    assert heard.summaries() == [
        STARTED,
        step_of("a", 1, "failed"),
        ("run_finished", "failed"),
        step_of("a", 2),
        ("run_finished", "completed"),
    ]
    assert heard.heard[-1].run.version == run.version


# -- recovery ----------------------------------------------------------------------------------------


class WorkerDied(BaseException):
    """Raised by a step to stand for its worker process being killed mid-step: nothing after it runs."""


def dies_once(data: dict[str, Any]) -> Any:
    calls: list[int] = []

    def fn(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise WorkerDied
        return ok(data)

    return fn


@runs
def test_attempts_recovery_records_as_lost_send_step_finished_once_however_many_sweeps(
    embedded: EmbeddedQueue, define: Definer, heard: Listener
) -> None:
    wf = define(
        [
            step("first", dies_once({})),
            parallel(step("dies", dies_once({})), step("fine", lambda ctx: ok()), name="fan"),
        ]
    )
    run = finish(embedded, wf.start())
    later = timezone.now() + timedelta(seconds=60)
    assert recover(now=later).steps_taken_over == 1
    assert recover(now=later).total == 0
    assert heard.summaries() == [STARTED, step_of("first", 1, "failed")]
    lost = heard.heard[-1]
    assert (lost.obj.error["type"], lost.run.current_attempt, lost.run.lease_owner) == ("worker_lost", 2, "")

    run = finish(embedded, run)
    # The run's job had claimed both branches: the one it never started is lost with it.
    assert recover(now=later + timedelta(seconds=60)).branches_taken_over == 2
    assert recover(now=later + timedelta(seconds=60)).total == 0
    run = finish(embedded, run)

    assert run.status == "completed"
    assert heard.summaries()[2:] == [
        step_of("first", 2),
        step_of("dies", 1, "failed"),
        step_of("fine", 1, "failed"),
        step_of("dies", 2),
        step_of("fine", 2),
        ("group_finished", "fan", "completed"),
        ("run_finished", "completed"),
    ]
    assert [h.obj.error["type"] for h in heard.heard[3:5]] == ["worker_lost", "worker_lost"]
    assert sorted(h.obj.pk for h in heard.of("step_finished")) == [row.pk for row in rows_of(run)]
