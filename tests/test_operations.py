"""Operator actions: retry a failed run where it failed, cancel a pending, running or waiting one."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from rq.registry import StartedJobRegistry

from durable_django import call_workflow, dispatch, error, foreach, ok, parallel, step, store, wait_for_event
from durable_django.exceptions import RunStateError
from durable_django.models import ParallelGroup, RunStatus, StepResult, Wait, WorkflowRun
from durable_django.operations import cancel_run, retry_run
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


class Switch:
    """A step that fails until the test turns it on, recording the contexts it was called with."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.on = False
        self.data = data
        self.seen: list[dict[str, Any]] = []

    def __call__(self, ctx: dict[str, Any]) -> Any:
        self.seen.append(dict(ctx))
        return ok(self.data) if self.on else error({"code": "not_yet"})


# -- retry ----------------------------------------------------------------------------------------


@runs
def test_retry_runs_the_failed_step_again_with_the_context_it_had(embedded: EmbeddedQueue, define: Definer) -> None:
    charge = Switch({"charged": True})
    wf = define(
        [
            step("prepare", lambda ctx: ok({"prepared": 1})),
            step("charge", charge),
            step("ship", lambda ctx: ok({"shipped": ctx["charged"]})),
        ]
    )
    run = finish(embedded, wf.start({"order": 5}))
    assert (run.status, run.current_step, run.error) == (
        "failed",
        "charge",
        {"step": "charge", "reason": {"code": "not_yet"}},
    )
    failed_at = run.finished_at

    charge.on = True
    retried = retry_run(run.pk)
    assert (retried.status, retried.error, retried.finished_at, retried.current_attempt) == ("running", None, None, 2)
    assert len(retried.error_history) == 1
    entry = retried.error_history[0]
    assert entry["error"] == {"step": "charge", "reason": {"code": "not_yet"}}
    assert entry["failed_at"] == DjangoJSONEncoder().default(failed_at)
    assert set(entry) == {"error", "failed_at", "retried_at"}

    run = finish(embedded, run)
    assert run.status == "completed"
    assert run.context == {"order": 5, "prepared": 1, "charged": True, "shipped": True}
    assert charge.seen == [{"order": 5, "prepared": 1}, {"order": 5, "prepared": 1}]
    assert attempts(run) == [
        ("prepare", 1, "completed"),
        ("charge", 1, "failed"),
        ("charge", 2, "completed"),
        ("ship", 1, "completed"),
    ]
    assert StepResult.objects.get(run=run, step="charge", attempt=1).error == {"code": "not_yet"}


@runs
def test_retry_of_a_parallel_block_reruns_only_failed_branches_then_joins_all_results(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    flaky = Switch({"b": 2})
    calls = {"a": 0, "c": 0}

    def counted(name: str, value: int) -> Any:
        def fn(ctx: dict[str, Any]) -> Any:
            calls[name] += 1
            return ok({name: value})

        return fn

    wf = define(
        [
            parallel(step("a", counted("a", 1)), step("b", flaky), step("c", counted("c", 3)), name="block"),
            step(
                "sum", lambda ctx: ok({"total": sum(data[k] for _, data in ctx["__results__"].values() for k in data)})
            ),
        ]
    )
    run = finish(embedded, wf.start({}))
    assert run.status == "failed"
    assert run.error == {"step": "b", "parallel": "block", "reason": {"code": "not_yet"}}

    flaky.on = True
    retry_run(run)
    run = finish(embedded, run)
    assert (run.status, run.context["total"]) == ("completed", 6)
    assert calls == {"a": 1, "c": 1}
    assert sorted(attempts(run)) == [
        ("a", 1, "completed"),
        ("b", 1, "failed"),
        ("b", 2, "completed"),
        ("c", 1, "completed"),
        ("sum", 1, "completed"),
    ]
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.failed_count, group.error) == ("completed", 0, 0, None)
    assert group.results == {"a": ["ok", {"a": 1}], "b": ["ok", {"b": 2}], "c": ["ok", {"c": 3}]}


@runs
def test_retry_after_a_failed_into_runs_the_join_again_without_rerunning_branches(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    state = {"into_calls": 0, "branch_calls": 0}

    def branch(ctx: dict[str, Any]) -> Any:
        state["branch_calls"] += 1
        return ok({"v": 1})

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        state["into_calls"] += 1
        if state["into_calls"] == 1:
            raise RuntimeError("into is broken")
        return ok({**ctx, "joined": sorted(results)})

    wf = define([parallel(step("x", branch), step("y", branch), name="block", on_error="complete_all", into=into)])
    run = finish(embedded, wf.start({}))
    assert (run.status, run.error["step"], run.error["reason"]["type"]) == ("failed", "block", "into_error")
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.error["type"]) == ("failed", "into_error")

    retry_run(run)
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"joined": ["x", "y"]})
    assert state == {"into_calls": 2, "branch_calls": 2}
    assert attempts(run) == [("x", 1, "completed"), ("y", 1, "completed")]
    assert run.error_history[0]["error"]["reason"]["message"] == "into is broken"


@runs
def test_retry_of_a_step_retries_the_failed_child_it_called(embedded: EmbeddedQueue, define: Definer) -> None:
    inner = Switch({"paid": True})
    child = define([step("pay", inner)])

    def call(ctx: dict[str, Any]) -> Any:
        status, result = call_workflow(child.name, {"amount": 3})
        return ok({"payment": result}) if status == "ok" else error({"child": result})

    parent = define([step("call", call)])
    run = finish(embedded, parent.start({}))
    assert run.status == "failed"
    child_run = WorkflowRun.objects.get(parent=run)
    assert child_run.status == "failed"

    inner.on = True
    retry_run(run)
    run = finish(embedded, run)
    child_run.refresh_from_db()
    assert (run.status, run.context) == ("completed", {"payment": {"amount": 3, "paid": True}})
    assert (child_run.status, len(child_run.error_history)) == ("completed", 1)
    assert attempts(child_run) == [("pay", 1, "failed"), ("pay", 2, "completed")]
    assert attempts(run) == [("call", 1, "failed"), ("call", 2, "completed")]


@runs
@pytest.mark.parametrize("status", ["pending", "running", "completed", "cancelled"])
def test_retry_refuses_a_run_that_is_not_failed(status: str) -> None:
    run = WorkflowRun.objects.create(workflow="anything", status=status, current_step="s")
    with pytest.raises(RunStateError, match=f"Run {run.pk} is {status}; only a failed run can be retried."):
        retry_run(run)
    run.refresh_from_db()
    assert (run.status, run.version, run.error_history) == (status, 0, [])


@runs
@pytest.mark.parametrize("operation", [retry_run, cancel_run])
@pytest.mark.parametrize("run_id", [uuid.UUID(int=1), "not-a-uuid"])
def test_operations_on_an_unknown_run_raise_does_not_exist(operation: Any, run_id: Any) -> None:
    with pytest.raises(WorkflowRun.DoesNotExist):
        operation(run_id)


# -- cancel ---------------------------------------------------------------------------------------


@runs
def test_cancelling_a_pending_run_means_none_of_its_steps_run(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[str] = []
    wf = define([step("only", lambda ctx: seen.append("only") or ok({}))])
    run = wf.start({})
    embedded.run_commit_hooks()
    cancelled = cancel_run(run)
    assert (cancelled.status, cancelled.finished_at is not None) == ("cancelled", True)
    run = finish(embedded, run)
    assert (run.status, seen, attempts(run)) == ("cancelled", [], [])


@runs
def test_cancel_during_a_block_stops_unstarted_branches_and_the_result_does_not_advance(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    # The job that entered the block claimed all three branches: right before each one starts, it
    # asks whether a cancel committed.
    holder: dict[str, Any] = {}
    ran: list[str] = []

    def canceller(ctx: dict[str, Any]) -> Any:
        ran.append("a")
        cancel_run(holder["run"])
        return ok({"a": 1})

    def other(name: str) -> Any:
        return lambda ctx: ran.append(name) or ok({name: 1})

    wf = define(
        [
            parallel(step("a", canceller), step("b", other("b")), step("c", other("c")), name="block"),
            step("after", other("after")),
        ]
    )
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, run.current_step, ran) == ("cancelled", "block", ["a"])
    # The branch that was executing ran to its end: it is cancelled too, with what it returned.
    assert attempts(run) == [("a", 1, "cancelled"), ("b", 1, "cancelled"), ("c", 1, "cancelled")]
    assert StepResult.objects.get(run=run, step="a").output == {"a": 1}
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.results) == ("cancelled", None)
    # Its counters are final: nothing pending, nothing waiting, the late result counted by nobody.
    assert (group.pending_count, group.waiting_count, group.failed_count) == (0, 0, 0)
    # The two branches claimed with it never started.
    assert list(StepResult.objects.filter(run=run, step__in=("b", "c")).values_list("started_at", flat=True)) == [
        None,
        None,
    ]


@runs
def test_a_step_finishing_after_cancel_does_not_move_the_run(embedded: EmbeddedQueue, define: Definer) -> None:
    holder: dict[str, Any] = {}
    ran: list[str] = []

    def first(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return ok({"first": True})

    wf = define([step("first", first), step("second", lambda ctx: ran.append("second") or ok({}))])
    holder["run"] = run = wf.start({"x": 1})
    run = finish(embedded, run)
    assert (run.status, run.current_step, run.context, ran) == ("cancelled", "first", {"x": 1}, [])


@runs
def test_cancelling_a_parent_cancels_its_unfinished_children(embedded: EmbeddedQueue, define: Definer) -> None:
    holder: dict[str, Any] = {}

    def child_step(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return ok({"child": True})

    child = define([step("inner", child_step), step("never", lambda ctx: ok({"never": True}))])
    parent = define([step("call", lambda ctx: ok({"result": call_workflow(child.name, {})}))])
    holder["run"] = run = parent.start({})
    run = finish(embedded, run)
    child_run = WorkflowRun.objects.get(parent=run)
    assert (run.status, child_run.status) == ("cancelled", "cancelled")
    # The child's step ran to its end after the cancel: recorded as cancelled, with its output.
    assert attempts(child_run) == [("inner", 1, "cancelled")]
    assert StepResult.objects.get(run=child_run).output == {"child": True}
    assert attempts(run) == [("call", 1, "cancelled")]


@runs
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_refuses_a_finished_run(status: str) -> None:
    run = WorkflowRun.objects.create(workflow="anything", status=status)
    with pytest.raises(RunStateError, match=f"is {status}; only a pending, running or waiting run can be cancelled"):
        cancel_run(run.pk)
    run.refresh_from_db()
    assert (run.status, run.version) == (status, 0)


@runs
def test_a_cancelled_run_cannot_be_retried_and_a_retried_one_can_be_cancelled(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("fails", lambda ctx: error("no"))])
    run = finish(embedded, wf.start({}))
    retried = retry_run(run)
    assert retried.status == RunStatus.RUNNING
    cancelled = cancel_run(retried)
    assert cancelled.status == RunStatus.CANCELLED
    with pytest.raises(RunStateError):
        retry_run(cancelled)
    run = finish(embedded, run)
    assert (run.status, attempts(run)) == ("cancelled", [("fails", 1, "failed")])


# -- what a cancel leaves behind --------------------------------------------------------------------


@runs
def test_a_step_failing_after_cancel_is_recorded_as_cancelled_with_its_error(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    holder: dict[str, Any] = {}

    def first(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        raise ValueError("too late")

    wf = define([step("first", first, retry={"max_attempts": 3, **IMMEDIATE}), step("second", lambda ctx: ok({}))])
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, attempts(run)) == ("cancelled", [("first", 1, "cancelled")])
    row = StepResult.objects.get(run=run)
    assert (row.output, row.error["type"], row.error["message"]) == (None, "ValueError", "too late")
    assert (row.finished_at is not None, row.lease_owner) == (True, "")


@runs
def test_a_step_before_a_block_finishing_after_cancel_is_recorded_and_the_block_never_opens(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    holder: dict[str, Any] = {}

    def first(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return ok({"first": 1})

    wf = define([step("first", first), parallel(step("a", lambda ctx: ok({})), name="blk")])
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, attempts(run)) == ("cancelled", [("first", 1, "cancelled")])
    assert StepResult.objects.get(run=run).output == {"first": 1}
    assert not ParallelGroup.objects.filter(run=run).exists()


@runs
def test_branches_executing_when_the_run_is_cancelled_end_cancelled_with_their_outputs(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    # The last branch cancels the run: all three had started, and run to their end.
    holder: dict[str, Any] = {}

    def last(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return ok({"c": 3})

    wf = define(
        [
            parallel(
                step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: error("no")), step("c", last), name="blk"
            ),
            step("after", lambda ctx: ok({})),
        ]
    )
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, run.current_step) == ("cancelled", "blk")
    rows = {row.step: row for row in StepResult.objects.filter(run=run)}
    assert {name: row.status for name, row in rows.items()} == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert (rows["a"].output, rows["b"].error, rows["c"].output) == ({"a": 1}, "no", {"c": 3})
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.results) == ("cancelled", None)
    # The failure of b, recorded after the cancel, is counted by nobody either.
    assert (group.pending_count, group.waiting_count, group.failed_count) == (0, 0, 0)


@runs
def test_a_branch_attempt_of_its_own_finishing_after_cancel_is_recorded_as_cancelled(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    holder: dict[str, Any] = {"calls": 0}

    def flaky(ctx: dict[str, Any]) -> Any:
        holder["calls"] += 1
        if holder["calls"] == 1:
            return error("first try")
        cancel_run(holder["run"])
        return ok({"second": True})

    wf = define([parallel(step("a", flaky, retry={"max_attempts": 2, **IMMEDIATE}), name="blk")])
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert (run.status, attempts(run)) == ("cancelled", [("a", 1, "failed"), ("a", 2, "cancelled")])
    assert StepResult.objects.get(run=run, attempt=2).output == {"second": True}


@runs
def test_a_cancel_committed_after_the_claim_of_a_run_means_its_next_step_never_starts(
    embedded: EmbeddedQueue, define: Definer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    claim = store.claim_run

    def claim_then_cancelled(run_id: Any, version: int) -> Any:
        claimed = claim(run_id, version)
        cancel_run(run_id)  # commits between the claim and the step's start
        return claimed

    monkeypatch.setattr(store, "claim_run", claim_then_cancelled)
    wf = define([step("first", lambda ctx: ran.append("first") or ok({}))])
    run = finish(embedded, wf.start({}))
    assert (run.status, ran, attempts(run)) == ("cancelled", [], [])


@runs
def test_a_cancel_committed_after_a_drain_job_claimed_its_batch_means_none_of_it_starts(
    embedded: EmbeddedQueue, define: Definer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    claim = store.claim_batch

    def claim_then_cancelled(group_id: int, *args: Any) -> Any:
        claimed = claim(group_id, *args)
        cancel_run(ParallelGroup.objects.get(pk=group_id).run_id)
        return claimed

    monkeypatch.setattr(store, "claim_batch", claim_then_cancelled)
    # On another queue than the run's job: a drain job claims them.
    names = [f"b{i}" for i in range(3)]
    wf = define([parallel(*(step(name, lambda ctx: ran.append("b") or ok({}), queue="priority") for name in names))])
    run = finish(embedded, wf.start({}))
    assert (run.status, ran) == ("cancelled", [])
    # The one the drain job claimed never started; the others were pending, cancelled with the run.
    assert list(StepResult.objects.filter(run=run).values_list("status", "started_at")) == [("cancelled", None)] * 3
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.waiting_count, group.failed_count) == ("cancelled", 0, 0, 0)


@runs
def test_a_foreach_item_executing_when_its_run_is_cancelled_ends_cancelled_with_its_output(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    holder: dict[str, Any] = {}

    def item(ctx: dict[str, Any]) -> Any:
        if ctx["item"] == 1:
            cancel_run(holder["run"])
        return ok({"doubled": ctx["item"] * 2})

    wf = define([foreach("each", "things", item), step("after", lambda ctx: ok({}))])
    holder["run"] = run = wf.start({"things": [0, 1, 2]})
    run = finish(embedded, run)
    assert (run.status, run.current_step) == ("cancelled", "each")
    items = StepResult.objects.filter(run=run).order_by("item_index")
    assert list(items.values_list("item_index", "status", "output")) == [
        (0, "cancelled", {"doubled": 0}),
        (1, "cancelled", {"doubled": 2}),
        (2, "cancelled", None),
    ]
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.waiting_count, group.failed_count) == ("cancelled", 0, 0, 0)


@runs
def test_a_branch_that_returns_a_wait_after_its_run_was_cancelled_ends_cancelled_without_a_wait(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    holder: dict[str, Any] = {}

    def waits(ctx: dict[str, Any]) -> Any:
        cancel_run(holder["run"])
        return wait_for_event("approved", data={"asked": True})

    wf = define([parallel(step("asks", waits), name="blk"), step("after", lambda ctx: ok({}))])
    holder["run"] = run = wf.start({})
    run = finish(embedded, run)
    assert run.status == "cancelled"
    assert list(StepResult.objects.filter(run=run).values_list("step", "status", "output")) == [
        ("asks", "cancelled", {"asked": True})
    ]
    assert not Wait.objects.filter(run=run).exists()
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.waiting_count, group.failed_count) == ("cancelled", 0, 0, 0)


def test_a_cancel_asks_rq_to_stop_the_started_jobs_of_the_run_and_of_its_blocks_only(
    embedded: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(dispatch, "send_stop_job_command", lambda connection, job_id: asked.append(job_id))
    run_id, other = uuid.uuid4(), uuid.uuid4()
    mine = [
        dispatch.run_job_id(run_id, 3),
        dispatch.drain_job_id(7, "default", 1) + "-42",
        dispatch.join_job_id(7),
        "a-branch-attempts-own-job",
    ]
    others = [
        dispatch.run_job_id(other, 0),
        dispatch.drain_job_id(70, "default", 0),  # another group, whose id starts with 7
        dispatch.join_job_id(8),
        "another-job",
    ]
    # What rq's started registry holds: "<job id>:<execution id>", scored by when it expires.
    registry = StartedJobRegistry(queue=dispatch.get_queue("default"))
    embedded.connection.zadd(registry.key, {f"{job_id}:x": time.time() + 600 for job_id in mine + others})
    stopped = dispatch.stop_jobs(run_id, [7], ["a-branch-attempts-own-job"], ["default", "priority"])
    assert sorted(stopped) == sorted(asked) == sorted(mine)


@runs
def test_only_a_cancel_that_directly_followed_the_attempt_records_it() -> None:
    run = WorkflowRun.objects.create(workflow="anything", status=RunStatus.RUNNING, current_step="s", version=3)
    stale = WorkflowRun.objects.get(pk=run.pk)
    # Something else moved the run first (recovery took the attempt over, say), then it was cancelled.
    WorkflowRun.objects.filter(pk=run.pk).update(version=4)
    cancel_run(run.pk)
    row = StepResult(run=run, step="s", attempt=1, output={"x": 1})
    assert store.record_cancelled_attempt(stale, row) is False
    assert not StepResult.objects.filter(run=run).exists()
    # Read at version 4, the cancel (version 5) is what it lost to: recorded once.
    stale.version = 4
    assert store.record_cancelled_attempt(stale, row) is True
    assert list(StepResult.objects.filter(run=run).values_list("step", "status", "output")) == [
        ("s", "cancelled", {"x": 1})
    ]
