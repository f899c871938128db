"""Compensations (sagas): a failed run undoes its completed steps and branches, latest first."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from durable_django import call_workflow, error, goto, ok, parallel, step, wait_for_event
from durable_django.dispatch import compensate_job_id
from durable_django.exceptions import RunStateError
from durable_django.jobs import run_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.operations import cancel_run, retry_run
from durable_django.recovery import recover
from durable_django.resume import send_event
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)


class WorkerDied(BaseException):
    """Raised by a compensation to stand for its worker process being killed: nothing after it runs."""


class Undo:
    """A compensation that records the context it was called with, the run's status at that moment,
    and returns ``result`` (or raises it when it is an exception)."""

    def __init__(self, log: list[tuple[str, dict[str, Any], str]], name: str, result: Any = None) -> None:
        self.log, self.name, self.result = log, name, result

    def __call__(self, ctx: dict[str, Any]) -> Any:
        status = WorkflowRun.objects.get(pk=ctx["run"]).status
        self.log.append((self.name, dict(ctx), status))
        result = (
            self.result(len([entry for entry in self.log if entry[0] == self.name]))
            if callable(self.result)
            else self.result
        )
        if isinstance(result, BaseException):
            raise result
        return result


def start_with_id(wf: Any, input: dict[str, Any] | None = None) -> WorkflowRun:
    """Start a run whose context holds its own id (so compensations can look the run up)."""
    run = wf.start(input or {})
    WorkflowRun.objects.filter(pk=run.pk).update(
        context={**run.context, "run": str(run.pk)}, input={"run": str(run.pk)}
    )
    return run


def compensations(run: WorkflowRun) -> list[tuple[str, int, str, str]]:
    """``(step, attempt, status, compensated row's step)`` of every compensation attempt, in order."""
    rows = StepResult.objects.filter(run=run, kind="compensation").select_related("compensates").order_by("id")
    return [(row.step, row.attempt, row.status, row.compensates.step) for row in rows]


def booking(define: Definer, log: list[Any], *, undo_charge: Any = None, retry: dict[str, Any] | None = None) -> Any:
    return define(
        [
            step("reserve", lambda ctx: ok({"room": 12}), compensate=Undo(log, "release")),
            step("note", lambda ctx: ok({"noted": True})),
            step(
                "charge",
                lambda ctx: ok({"charge": "ch_1"}),
                compensate=Undo(log, "refund", undo_charge),
                retry=retry,
            ),
            step("confirm", lambda ctx: error({"code": "airline_down"})),
        ]
    )


# -- the saga -------------------------------------------------------------------------------------


@runs
def test_a_failed_run_compensates_its_completed_steps_latest_first_each_with_its_context(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[Any] = []
    run = finish(embedded, start_with_id(booking(define, log)))
    error_ = {"step": "confirm", "reason": {"code": "airline_down"}}
    assert (run.status, run.error, run.compensation) == ("failed", error_, "completed")
    assert run.finished_at is not None and run.lease_owner == ""
    rid = str(run.pk)
    assert log == [
        ("refund", {"run": rid, "room": 12, "noted": True, "charge": "ch_1", "__error__": error_}, "compensating"),
        ("release", {"run": rid, "room": 12, "__error__": error_}, "compensating"),
    ]
    assert compensations(run) == [("charge", 1, "completed", "charge"), ("reserve", 1, "completed", "reserve")]
    # The context is the run's as it failed: compensations change nothing in it.
    assert run.context == {"run": rid, "room": 12, "noted": True, "charge": "ch_1"}
    # Only steps with a compensation keep their context.
    kept = dict(StepResult.objects.filter(run=run, kind="step").values_list("step", "context"))
    assert kept == {
        "reserve": {"run": rid, "room": 12},
        "note": None,
        "charge": {"run": rid, "room": 12, "noted": True, "charge": "ch_1"},
        "confirm": None,
    }


@runs
def test_a_failing_compensation_is_recorded_and_the_others_still_run(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    run = finish(embedded, start_with_id(booking(define, log, undo_charge=RuntimeError("card processor down"))))
    assert (run.status, run.compensation) == ("failed", "failed")
    assert run.error == {"step": "confirm", "reason": {"code": "airline_down"}}
    assert [name for name, _, _ in log] == ["refund", "release"]
    assert compensations(run) == [("charge", 1, "failed", "charge"), ("reserve", 1, "completed", "reserve")]
    refund = StepResult.objects.get(run=run, kind="compensation", step="charge")
    assert refund.error["type"] == "RuntimeError"
    assert refund.error["message"] == "card processor down"


@runs
def test_a_compensation_follows_its_steps_retry_policy(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    flaky = Undo(log, "refund", lambda n: error(f"attempt {n}") if n < 3 else ok({"refund": "re_1"}))
    wf = define(
        [
            step(
                "charge", lambda ctx: ok({"charge": "ch_1"}), compensate=flaky, retry={"max_attempts": 3, **IMMEDIATE}
            ),
            step("confirm", lambda ctx: error("no")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.compensation) == ("failed", "completed")
    assert compensations(run) == [
        ("charge", 1, "failed", "charge"),
        ("charge", 2, "failed", "charge"),
        ("charge", 3, "completed", "charge"),
    ]
    rows = StepResult.objects.filter(run=run, kind="compensation").order_by("id")
    assert [(row.error, row.output) for row in rows] == [
        ("attempt 1", None),
        ("attempt 2", None),
        (None, {"refund": "re_1"}),
    ]
    # Between attempts the run let go of its lease and waited for the retry, compensating.
    assert [status for _, _, status in log] == ["compensating"] * 3


@runs
def test_a_compensation_out_of_attempts_fails_and_the_next_one_runs(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 1}), compensate=Undo(log, "release")),
            step(
                "charge",
                lambda ctx: ok({"charge": 2}),
                compensate=Undo(log, "refund", error("declined")),
                retry={"max_attempts": 2, **IMMEDIATE},
            ),
            step("confirm", lambda ctx: error("no")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.compensation) == ("failed", "failed")
    assert compensations(run) == [
        ("charge", 1, "failed", "charge"),
        ("charge", 2, "failed", "charge"),
        ("reserve", 1, "completed", "reserve"),
    ]


@runs
@pytest.mark.parametrize(
    ("returned", "status", "output", "error_type"),
    [
        (None, "completed", {}, None),
        ({"refunded": 5}, "completed", {"refunded": 5}, None),
        (ok({"refunded": 5}), "completed", {"refunded": 5}, None),
        (goto("charge"), "failed", None, "invalid_step_return"),
        (wait_for_event("never"), "failed", None, "invalid_step_return"),
        ("nonsense", "failed", None, "invalid_step_return"),
    ],
)
def test_what_a_compensation_returns_is_stored_and_a_goto_or_a_wait_fails_without_retry(
    embedded: EmbeddedQueue, define: Definer, returned: Any, status: str, output: Any, error_type: str | None
) -> None:
    log: list[Any] = []
    wf = define(
        [
            step(
                "charge",
                lambda ctx: ok({"charge": 1}),
                compensate=Undo(log, "refund", returned),
                retry={"max_attempts": 3, **IMMEDIATE},
            ),
            step("confirm", lambda ctx: error("no")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    rows = list(StepResult.objects.filter(run=run, kind="compensation"))
    assert [(row.status, row.output) for row in rows] == [(status, output)]
    assert (rows[0].error or {}).get("type") == error_type
    assert run.compensation == ("completed" if status == "completed" else "failed")
    assert run.context == {"run": str(run.pk), "charge": 1}


# -- when nothing is compensated ------------------------------------------------------------------


@runs
def test_a_run_without_completed_compensable_steps_fails_as_before(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    wf = define(
        [
            step("note", lambda ctx: ok({"noted": True})),
            step("charge", lambda ctx: error("declined"), compensate=Undo(log, "refund")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.compensation, run.error) == ("failed", "", {"step": "charge", "reason": "declined"})
    assert log == []
    assert not StepResult.objects.filter(run=run, kind="compensation").exists()


@runs
def test_a_completed_run_runs_no_compensation(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    wf = define([step("charge", lambda ctx: ok({"charge": 1}), compensate=Undo(log, "refund"))])
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.compensation, log) == ("completed", "", [])


# -- parallel blocks ------------------------------------------------------------------------------


@runs
def test_completed_branches_are_compensated_with_the_blocks_context_and_their_output(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[Any] = []
    wf = define(
        [
            step("start", lambda ctx: ok({"trip": 7})),
            parallel(
                step("hotel", lambda ctx: ok({"hotel": "h1"}), compensate=Undo(log, "cancel_hotel")),
                step("car", lambda ctx: ok({"car": "c1"}), compensate=Undo(log, "cancel_car")),
                step("flight", lambda ctx: error("sold out")),
                name="book",
            ),
            step("after", lambda ctx: ok()),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.compensation) == ("failed", "completed")
    assert run.error == {"step": "flight", "parallel": "book", "reason": "sold out"}
    group = ParallelGroup.objects.get(run=run)
    rid = str(run.pk)
    assert group.context == {"run": rid, "trip": 7}
    # Branches completed one after the other: the later one is compensated first.
    assert [(name, ctx, status) for name, ctx, status in log] == [
        ("cancel_car", {"run": rid, "trip": 7, "car": "c1", "__error__": run.error}, "compensating"),
        ("cancel_hotel", {"run": rid, "trip": 7, "hotel": "h1", "__error__": run.error}, "compensating"),
    ]
    assert compensations(run) == [("car", 1, "completed", "car"), ("hotel", 1, "completed", "hotel")]


@runs
def test_a_block_without_compensations_keeps_the_context_it_started_with_for_a_fork(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([parallel(step("a", lambda ctx: ok()), step("b", lambda ctx: ok()))])
    run = finish(embedded, wf.start({"x": 1}))
    assert run.status == "completed"
    assert ParallelGroup.objects.get(run=run).context == {"x": 1}


# -- waits, children ------------------------------------------------------------------------------


@runs
def test_a_step_that_waited_is_compensated_with_the_value_its_wait_received(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[Any] = []
    wf = define(
        [
            step(
                "request",
                lambda ctx: wait_for_event("approved", data={"asked": True}),
                compensate=Undo(log, "withdraw"),
            ),
            step("confirm", lambda ctx: error("no")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    assert run.status == "waiting"
    send_event(run.pk, "approved", {"by": "ada"})
    run = finish(embedded, run)
    assert (run.status, run.compensation) == ("failed", "completed")
    assert log[0][1] == {"run": str(run.pk), "asked": True, "approved": {"by": "ada"}, "__error__": run.error}


@runs
def test_a_child_called_by_a_step_compensates_inside_that_step(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    child = define(
        [
            step("hold", lambda ctx: ok({"held": 1}), compensate=lambda ctx: log.append(dict(ctx)) and None),
            step("fail", lambda ctx: error("child broke")),
        ]
    )
    parent = define([step("call", lambda ctx: call_workflow(child, {"n": 1}))])
    run = finish(embedded, parent.start({}))
    kid = WorkflowRun.objects.get(parent=run)
    assert (kid.status, kid.compensation) == ("failed", "completed")
    assert log == [{"n": 1, "held": 1, "__error__": kid.error}]
    assert (run.status, run.error) == ("failed", {"step": "call", "reason": kid.error})


# -- operations -----------------------------------------------------------------------------------


@runs
def test_cancel_compensates_only_when_asked(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 3}), compensate=Undo(log, "release")),
            step("wait", lambda ctx: wait_for_event("go")),
        ]
    )
    plain = finish(embedded, start_with_id(wf))
    assert plain.status == "waiting"
    cancelled = cancel_run(plain.pk)
    assert (cancelled.status, cancelled.compensation) == ("cancelled", "")
    embedded.run_until_idle()
    assert log == []

    run = finish(embedded, start_with_id(wf))
    compensating = cancel_run(run.pk, compensate=True)
    assert (compensating.status, compensating.compensation, compensating.finished_at) == (
        "compensating",
        "running",
        None,
    )
    # A compensating run takes no events, and cannot be cancelled again.
    with pytest.raises(RunStateError, match="compensating"):
        send_event(run.pk, "go")
    with pytest.raises(RunStateError, match="compensating"):
        cancel_run(run.pk)
    run = finish(embedded, run)
    assert (run.status, run.compensation, run.error) == ("cancelled", "completed", None)
    assert run.finished_at is not None
    assert log == [("release", {"run": str(run.pk), "room": 3, "__error__": None}, "compensating")]
    assert list(run.waits.values_list("status", flat=True)) == ["cancelled"]


@runs
def test_cancel_with_compensate_of_a_run_with_nothing_to_undo_cancels_it_at_once(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("wait", lambda ctx: wait_for_event("go"), compensate=lambda ctx: None)])
    run = cancel_run(wf.start({}).pk, compensate=True)
    assert (run.status, run.compensation) == ("cancelled", "")


@runs
def test_a_compensated_run_cannot_be_retried(embedded: EmbeddedQueue, define: Definer) -> None:
    run = finish(embedded, start_with_id(booking(define, [])))
    assert run.compensation == "completed"
    with pytest.raises(RunStateError, match="ran its compensations"):
        retry_run(run.pk)


# -- recovery -------------------------------------------------------------------------------------


def later(seconds: float = 60) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


@runs
def test_a_compensation_whose_worker_died_runs_again_and_the_run_finishes(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[Any] = []
    wf = booking(define, log, undo_charge=lambda n: WorkerDied() if n == 1 else ok({"refund": n}))
    run = finish(embedded, start_with_id(wf))
    assert (run.status, run.lease_owner != "") == ("compensating", True)
    assert compensations(run) == [("charge", 1, "running", "charge")]
    assert recover(now=timezone.now()).total == 0  # its lease has not run out

    report = recover(now=later())
    assert (report.compensations_taken_over, report.total) == (1, 1)
    run = finish(embedded, run)
    assert (run.status, run.compensation) == ("failed", "completed")
    assert compensations(run) == [
        ("charge", 1, "failed", "charge"),
        ("charge", 2, "completed", "charge"),
        ("reserve", 1, "completed", "reserve"),
    ]
    lost = StepResult.objects.get(run=run, kind="compensation", step="charge", attempt=1)
    assert lost.error == {
        "type": "worker_lost",
        "message": "the worker executing this attempt went away: its lease expired",
        "lost_in_a_row": 1,
    }
    assert [name for name, _, _ in log] == ["refund", "refund", "release"]


@runs
def test_a_compensating_run_whose_job_vanished_is_sent_it_again(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    run = start_with_id(booking(define, log))
    embedded.connection.flushall()
    run_workflow(str(run.pk), "default", 0)  # fails the run, which then waits for its compensate job
    run.refresh_from_db()
    assert (run.status, run.compensation, run.lease_owner) == ("compensating", "running", "")
    embedded.connection.flushall()  # Redis lost the compensate job
    report = recover(now=later())
    assert report.runs_sent_again == 1
    assert recover(now=later()).total == 0  # its deadline moved on: not sent twice
    assert embedded.queues()[0].fetch_job(compensate_job_id(run.pk, run.version)) is not None
    run = finish(embedded, run)
    assert (run.status, run.compensation) == ("failed", "completed")
    assert [name for name, _, _ in log] == ["refund", "release"]


@runs
def test_durable_cancel_compensate_runs_the_compensations_first(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[Any] = []
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 3}), compensate=Undo(log, "release")),
            step("wait", lambda ctx: wait_for_event("go")),
        ]
    )
    run = finish(embedded, start_with_id(wf))
    out = StringIO()
    call_command("durable_cancel", str(run.pk), "--compensate", stdout=out)
    assert out.getvalue() == f"{run.pk}: cancelled {wf.name}; running its compensations\n"
    run = finish(embedded, run)
    assert (run.status, run.compensation) == ("cancelled", "completed")
    assert [name for name, _, _ in log] == ["release"]
