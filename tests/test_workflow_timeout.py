"""Workflow timeout: a run not finished ``timeout`` seconds after it started fails with ``workflow_timeout``."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from durable_django import call_workflow, ok, parallel, retry_run, step, wait_for_event, workflow
from durable_django.exceptions import WorkflowDefinitionError
from durable_django.models import ParallelGroup, RunStatus, StepResult, Wait, WorkflowRun
from durable_django.recovery import recover
from durable_django.signals import run_finished
from durable_django.testing import EmbeddedQueue
from durable_django.timer_jobs import TIMEOUT_PREFIX
from durable_django.timers import time_out_run
from tests.engine_support import Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)

REASON = {
    "type": "workflow_timeout",
    "timeout": 30.0,
    "message": "the run did not finish within its workflow's timeout of 30 s",
}


def later(run: WorkflowRun, seconds: float = 1) -> dt.datetime:
    """A moment ``seconds`` past the run's deadline."""
    deadline = WorkflowRun.objects.get(pk=run.pk).deadline_at
    assert deadline is not None
    return deadline + dt.timedelta(seconds=seconds)


@pytest.fixture
def finished() -> Iterator[list[tuple[str, str]]]:
    """``(run id, status)`` of every ``run_finished`` signal sent during the test."""
    heard: list[tuple[str, str]] = []

    def receiver(sender: Any, run: WorkflowRun, **named: Any) -> None:
        heard.append((str(run.pk), run.status))

    run_finished.connect(receiver, dispatch_uid="test_workflow_timeout")
    try:
        yield heard
    finally:
        run_finished.disconnect(dispatch_uid="test_workflow_timeout")


# -- the definition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -5, "30", True, float("inf"), dt.timedelta(0)])
def test_a_bad_timeout_is_refused_naming_the_workflow(define: Definer, timeout: Any) -> None:
    name = define.name()
    with pytest.raises(
        WorkflowDefinitionError,
        match=re.escape(f"Workflow '{name}', timeout: must be a positive number of seconds or a timedelta, got "),
    ):
        workflow(name, [step("only", lambda ctx: ok({}))], timeout=timeout)


def test_a_timeout_is_kept_in_seconds(define: Definer) -> None:
    wf = workflow(define.name(), [step("only", lambda ctx: ok({}))], timeout=dt.timedelta(minutes=2))
    assert wf.timeout == 120.0
    assert define([step("only", lambda ctx: ok({}))]).timeout is None


def test_a_different_timeout_is_a_different_definition(define: Definer) -> None:
    name = define.name()
    only = step("only", lambda ctx: ok({}))
    workflow(name, [only], timeout=10)
    workflow(name, [only], timeout=10)
    with pytest.raises(WorkflowDefinitionError, match="already registered with a different definition"):
        workflow(name, [only], timeout=20)


# -- the deadline -----------------------------------------------------------------------------------


@runs
def test_a_run_gets_its_deadline_when_it_starts_and_its_timeout_job_is_scheduled(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", lambda ctx: ok({}))], timeout=30)
    before = timezone.now()
    run = wf.start({})
    embedded.run_commit_hooks()
    stored = WorkflowRun.objects.get(pk=run.pk)
    assert stored.deadline_at is not None
    assert before + dt.timedelta(seconds=30) <= stored.deadline_at <= timezone.now() + dt.timedelta(seconds=30)
    queue = embedded.queues()[0]
    ids = [job.decode() for job in queue.connection.zrange(queue.scheduled_job_registry.key, 0, -1)]
    assert ids == [f"{TIMEOUT_PREFIX}{run.pk}-{int(stored.deadline_at.timestamp())}"]
    # A run that finished in time: its timeout job finds nothing to do.
    run = finish(embedded, run)
    assert run.status == "completed"
    assert time_out_run(run.pk, later(run)) is False
    assert WorkflowRun.objects.get(pk=run.pk).status == "completed"


@runs
def test_nothing_times_out_before_the_deadline(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("only", lambda ctx: ok({}))], timeout=30)
    run = wf.start({})
    assert time_out_run(run.pk, later(run, -1)) is False
    assert recover(later(run, -1)).runs_timed_out == 0
    assert WorkflowRun.objects.get(pk=run.pk).status == "pending"


# -- timing out -------------------------------------------------------------------------------------


@runs
def test_a_timeout_during_a_step_fails_the_run_and_the_steps_late_result_is_dropped(
    embedded: EmbeddedQueue, define: Definer, finished: list[tuple[str, str]]
) -> None:
    holder: dict[str, Any] = {}
    ran: list[str] = []

    def slow(ctx: dict[str, Any]) -> Any:
        # The deadline passes while this step still executes.
        holder["timed_out"] = time_out_run(holder["run"].pk, later(holder["run"]))
        holder["status"] = WorkflowRun.objects.get(pk=holder["run"].pk).status
        return ok({"slow": "done"})

    wf = define([step("slow", slow), step("next", lambda ctx: ran.append("next") or ok({}))], timeout=30)
    holder["run"] = run = wf.start({"x": 1})
    run = finish(embedded, run)
    assert (holder["timed_out"], holder["status"]) == (True, "failed")
    assert (run.status, run.current_step, run.context, ran) == ("failed", "slow", {"x": 1}, [])
    assert run.error == {"step": "slow", "reason": REASON}
    assert run.finished_at is not None
    # The step ran to its end: its attempt is recorded, cancelled, with what it returned.
    assert attempts(run) == [("slow", 1, "cancelled")]
    assert StepResult.objects.get(run=run).output == {"slow": "done"}
    assert finished == [(str(run.pk), "failed")]


@runs
def test_a_timeout_during_a_block_stops_the_branches_not_started(embedded: EmbeddedQueue, define: Definer) -> None:
    holder: dict[str, Any] = {}
    ran: list[str] = []

    def first(ctx: dict[str, Any]) -> Any:
        ran.append("a")
        time_out_run(holder["run"].pk, later(holder["run"]))
        return ok({"a": 1})

    def other(name: str) -> Any:
        return lambda ctx: ran.append(name) or ok({name: 1})

    wf = define(
        [
            parallel(step("a", first), step("b", other("b")), step("c", other("c")), name="block"),
            step("after", other("after")),
        ],
        timeout=30,
    )
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, run.current_step, ran) == ("failed", "block", ["a"])
    assert run.error == {"step": "block", "reason": REASON}
    assert attempts(run) == [("a", 1, "cancelled"), ("b", 1, "cancelled"), ("c", 1, "cancelled")]
    assert list(StepResult.objects.filter(run=run, step__in=("b", "c")).values_list("started_at", flat=True)) == [
        None,
        None,
    ]
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.results, group.pending_count) == ("cancelled", None, 0)


@runs
def test_a_timeout_of_a_waiting_run_cancels_its_wait(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [step("ask", lambda ctx: wait_for_event("paid")), step("after", lambda ctx: ok({}))],
        timeout=30,
    )
    run = finish(embedded, wf.start({}))
    assert run.status == "waiting"
    report = recover(later(run))
    assert report.runs_timed_out == 1
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", {"step": "ask", "reason": REASON})
    assert list(Wait.objects.filter(run=run).values_list("name", "status")) == [("paid", "cancelled")]
    assert attempts(run) == [("ask", 1, "completed")]
    # Once only: the next sweep (or the timeout job) finds it finished.
    assert recover(later(run, 2)).runs_timed_out == 0
    assert time_out_run(run.pk, later(run, 3)) is False


@runs
def test_a_pending_run_past_its_deadline_never_runs_a_step(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[str] = []
    wf = define([step("only", lambda ctx: seen.append("only") or ok({}))], timeout=30)
    run = wf.start({})
    embedded.run_commit_hooks()
    assert time_out_run(run.pk, later(run)) is True
    run = finish(embedded, run)
    assert (run.status, run.error, seen, attempts(run)) == ("failed", {"step": "only", "reason": REASON}, [], [])


@runs
def test_a_timed_out_parent_cancels_its_child(embedded: EmbeddedQueue, define: Definer) -> None:
    holder: dict[str, Any] = {}

    def inner(ctx: dict[str, Any]) -> Any:
        time_out_run(holder["run"].pk, later(holder["run"]))
        return ok({"inner": True})

    child = define([step("inner", inner), step("never", lambda ctx: ok({"never": True}))])
    parent = define([step("call", lambda ctx: ok({"result": call_workflow(child.name, {})}))], timeout=30)
    holder["run"] = run = parent.start({})
    run = finish(embedded, run)
    child_run = WorkflowRun.objects.get(parent=run)
    assert (run.status, run.error, child_run.status) == ("failed", {"step": "call", "reason": REASON}, "cancelled")
    assert attempts(child_run) == [("inner", 1, "cancelled")]


@runs
def test_a_timed_out_run_runs_its_compensations_then_fails(embedded: EmbeddedQueue, define: Definer) -> None:
    undone: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}

    def slow(ctx: dict[str, Any]) -> Any:
        time_out_run(holder["run"].pk, later(holder["run"]))
        return ok({})

    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 12}), compensate=lambda ctx: undone.append(ctx) or ok({})),
            step("slow", slow),
        ],
        timeout=30,
    )
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, run.compensation, run.error) == ("failed", "completed", {"step": "slow", "reason": REASON})
    assert [ctx["room"] for ctx in undone] == [12]
    assert undone[0]["__error__"] == {"step": "slow", "reason": REASON}


@runs
def test_a_retried_timed_out_run_gets_a_new_deadline(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    holder: dict[str, Any] = {}

    def slow(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            time_out_run(holder["run"].pk, later(holder["run"]))
        return ok({"slow": len(calls)})

    wf = define([step("slow", slow)], timeout=30)
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert run.status == "failed"
    before = timezone.now()
    retried = retry_run(run)
    assert retried.status == RunStatus.RUNNING
    assert retried.deadline_at is not None and retried.deadline_at >= before + dt.timedelta(seconds=30)
    run = finish(embedded, run)
    assert (run.status, run.context, attempts(run)) == (
        "completed",
        {"slow": 2},
        [("slow", 1, "cancelled"), ("slow", 2, "completed")],
    )
    assert run.error_history[0]["error"] == {"step": "slow", "reason": REASON}


@runs
@pytest.mark.timeout(60)
def test_a_child_with_a_timeout_called_inline_does_not_hold_its_parent_until_its_deadline(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    child = define([step("inner", lambda ctx: ok({"inner": True}))], timeout=600)
    parent = define([step("call", lambda ctx: ok({"result": call_workflow(child.name, {})}))])

    run = finish(embedded, parent.start({}))

    child_run = WorkflowRun.objects.get(parent=run)
    assert (run.status, child_run.status) == ("completed", "completed")
    assert run.context["result"] == ["ok", {"inner": True}]
    # The child's timeout job went to RQ for its time, where it will find the child finished.
    scheduled = [job_id for queue in embedded.queues() for job_id in queue.scheduled_job_registry.get_job_ids()]
    assert [job_id for job_id in scheduled if job_id.startswith(TIMEOUT_PREFIX)] == [
        f"{TIMEOUT_PREFIX}{child_run.pk}-{int(child_run.deadline_at.timestamp())}"
    ]


def test_a_timeout_beyond_a_hundred_years_is_refused_at_definition(define: Definer) -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"timeout: must be a positive number .* \(at most 100 years\)"):
        define([step("s", lambda ctx: ok())], timeout=1e12)
