"""Child workflows: call_workflow from sequential steps and branches, linking, replay by ref."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import call_workflow, error, ok, parallel, step
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


def payment_steps(executions: list[dict[str, Any]]) -> list[Any]:
    def authorize(ctx: dict[str, Any]) -> Any:
        executions.append(ctx)
        return ok({"authorized": ctx["amount"] * 2})

    return [step("authorize", authorize), step("capture", lambda ctx: ok({"captured": True}))]


@runs
def test_call_workflow_in_a_sequential_step_runs_the_child_inline(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))
    results: list[Any] = []

    def pay(ctx: dict[str, Any]) -> Any:
        result = call_workflow(child, {"amount": ctx["total"]}, ref="payment")
        results.append(result)
        return ok({"payment": result[1]})

    parent = define([step("prepare", lambda ctx: ok({"total": 21})), step("pay", pay)])
    run = finish(embedded, parent.start())
    assert results == [("ok", {"amount": 21, "authorized": 42, "captured": True})]
    assert run.status == "completed"
    assert run.context == {"total": 21, "payment": {"amount": 21, "authorized": 42, "captured": True}}
    assert executions == [{"amount": 21}]
    child_run = WorkflowRun.objects.get(parent=run)
    assert (child_run.workflow, child_run.parent_step, child_run.ref, child_run.status) == (
        child.name,
        "pay",
        "payment",
        "completed",
    )
    assert child_run.input == {"amount": 21}
    assert child_run.context == {"amount": 21, "authorized": 42, "captured": True}
    assert attempts(child_run) == [("authorize", 1, "completed"), ("capture", 1, "completed")]
    assert WorkflowRun.objects.count() == 2
    # Everything ran inline: no child job was left in (or ever sent to) the queue.
    assert embedded.pending_jobs() == 0


@runs
def test_call_workflow_by_name_with_numbered_default_refs(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))

    def pay_twice(ctx: dict[str, Any]) -> Any:
        first = call_workflow(child.name, {"amount": 1})
        second = call_workflow(child.name, {"amount": 2})
        return ok({"total": first[1]["authorized"] + second[1]["authorized"]})

    parent = define([step("pay_twice", pay_twice)])
    run = finish(embedded, parent.start())
    assert run.context == {"total": 6}
    refs = sorted(WorkflowRun.objects.filter(parent=run).values_list("ref", "input"))
    assert refs == [(f"{child.name}#1", {"amount": 1}), (f"{child.name}#2", {"amount": 2})]


@runs
def test_call_workflow_in_parallel_branches(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    payment = define(payment_steps(executions))
    shipping = define([step("book", lambda ctx: ok({"tracking": f"T-{ctx['order']}"}))])

    def pay(ctx: dict[str, Any]) -> Any:
        match call_workflow(payment, {"amount": ctx["total"]}, ref="payment"):
            case ("ok", result):
                return ok({"payment": result["authorized"]})
            case ("error", reason):
                return error(reason)

    def ship(ctx: dict[str, Any]) -> Any:
        status, result = call_workflow(shipping, {"order": ctx["order"]}, ref="shipping")
        return ok({"tracking": result["tracking"]}) if status == "ok" else error(result)

    parent = define([parallel(step("pay", pay), step("ship", ship), on_error="complete_all", name="fulfil")])
    run = finish(embedded, parent.start({"total": 5, "order": 9}))
    assert run.status == "completed"
    assert run.context["__results__"] == {"pay": ["ok", {"payment": 10}], "ship": ["ok", {"tracking": "T-9"}]}
    children = {child.parent_step: child for child in WorkflowRun.objects.filter(parent=run)}
    assert {name: (c.workflow, c.ref, c.status) for name, c in children.items()} == {
        "pay": (payment.name, "payment", "completed"),
        "ship": (shipping.name, "shipping", "completed"),
    }


@runs
def test_child_with_a_parallel_block_runs_inline_inside_a_branch(embedded: EmbeddedQueue, define: Definer) -> None:
    child = define(
        [
            parallel(step("left", lambda ctx: ok({"side": "l"})), step("right", lambda ctx: ok({"side": "r"}))),
            step("sum", lambda ctx: ok({"sides": sorted(r[1]["side"] for r in ctx["__results__"].values())})),
        ]
    )
    parent = define([parallel(step("outer", lambda ctx: ok({"child": call_workflow(child, {}, ref="c")[1]["sides"]})))])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert run.context == {"__results__": {"outer": ["ok", {"child": ["l", "r"]}]}}
    child_run = WorkflowRun.objects.get(parent=run)
    assert (child_run.status, child_run.parent_step, child_run.groups.get().status) == (
        "completed",
        "outer",
        "completed",
    )


@runs
def test_same_ref_returns_the_recorded_result_when_the_step_retries(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))
    seen: list[Any] = []

    def pay_then_crash(ctx: dict[str, Any]) -> Any:
        seen.append(call_workflow(child, {"amount": 4}, ref="payment"))
        if len(seen) == 1:
            raise RuntimeError("crashed after the child finished")
        return ok({"payment": seen[-1][1]["authorized"]})

    parent = define([step("pay", pay_then_crash, retry={"max_attempts": 2, **IMMEDIATE})])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert run.context == {"payment": 8}
    assert seen == [("ok", {"amount": 4, "authorized": 8, "captured": True})] * 2
    assert executions == [{"amount": 4}]
    assert WorkflowRun.objects.filter(parent=run).count() == 1
    assert attempts(run) == [("pay", 1, "failed"), ("pay", 2, "completed")]


@runs
def test_same_ref_returns_the_recorded_result_when_a_branch_retries(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))
    seen: list[Any] = []

    def pay_then_fail(ctx: dict[str, Any]) -> Any:
        seen.append(call_workflow(child, {"amount": 3}, ref="payment"))
        return error("flaky") if len(seen) == 1 else ok({"payment": seen[-1][1]["authorized"]})

    parent = define([parallel(step("pay", pay_then_fail, retry={"max_attempts": 2, **IMMEDIATE}))])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert run.context == {"__results__": {"pay": ["ok", {"payment": 6}]}}
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert executions == [{"amount": 3}]
    assert WorkflowRun.objects.filter(parent=run).count() == 1


@runs
def test_different_refs_run_the_child_again(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))

    def pay(ctx: dict[str, Any]) -> Any:
        call_workflow(child, {"amount": 1}, ref="first")
        call_workflow(child, {"amount": 2}, ref="second")
        return ok()

    parent = define([step("pay", pay)])
    finish(embedded, parent.start())
    assert executions == [{"amount": 1}, {"amount": 2}]


@runs
def test_failing_child_returns_an_error(embedded: EmbeddedQueue, define: Definer) -> None:
    child = define(
        [step("check", lambda ctx: ok({"checked": True})), step("authorize", lambda ctx: error("card_declined"))]
    )
    seen: list[Any] = []

    def pay(ctx: dict[str, Any]) -> Any:
        result = call_workflow(child, {"amount": 1}, ref="payment")
        seen.append(result)
        return result

    parent = define([step("pay", pay), step("after", lambda ctx: ok())])
    run = finish(embedded, parent.start())
    assert seen == [("error", {"step": "authorize", "reason": "card_declined"})]
    assert run.status == "failed"
    assert run.error == {"step": "pay", "reason": {"step": "authorize", "reason": "card_declined"}}
    child_run = WorkflowRun.objects.get(parent=run)
    assert (child_run.status, child_run.error, child_run.context) == (
        "failed",
        {"step": "authorize", "reason": "card_declined"},
        {"amount": 1, "checked": True},
    )


@runs
def test_child_exception_is_returned_as_an_error(embedded: EmbeddedQueue, define: Definer) -> None:
    def broken(ctx: dict[str, Any]) -> Any:
        raise ValueError("no gateway")

    child = define([step("authorize", broken)])
    seen: list[Any] = []
    parent = define([step("pay", lambda ctx: seen.append(call_workflow(child, {})) or ok())])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    [(status, reason)] = seen
    assert (status, reason["step"], reason["reason"]["type"], reason["reason"]["message"]) == (
        "error",
        "authorize",
        "ValueError",
        "no gateway",
    )


@runs
def test_failing_child_in_a_branch_fails_the_branch(embedded: EmbeddedQueue, define: Definer) -> None:
    child = define([step("authorize", lambda ctx: error("card_declined"))])
    parent = define([parallel(step("pay", lambda ctx: call_workflow(child, {}, ref="p")), name="fan")])
    run = finish(embedded, parent.start())
    assert run.status == "failed"
    assert run.error == {"step": "pay", "parallel": "fan", "reason": {"step": "authorize", "reason": "card_declined"}}


@runs
def test_child_input_must_be_valid(embedded: EmbeddedQueue, define: Definer) -> None:
    child = define([step("authorize", lambda ctx: ok())])
    parent = define([step("pay", lambda ctx: call_workflow(child, {"when": object()}, ref="p"))])
    run = finish(embedded, parent.start())
    assert run.status == "failed"
    assert run.error["reason"]["type"] == "InvalidInput"
    assert WorkflowRun.objects.filter(parent=run).count() == 0


@runs
def test_children_nest(embedded: EmbeddedQueue, define: Definer) -> None:
    grandchild = define([parallel(step("g1", lambda ctx: ok({"g": 1})), step("g2", lambda ctx: ok({"g": 2})))])
    child = define(
        [step("middle", lambda ctx: ok({"grand": call_workflow(grandchild, {}, ref="g")[1]["__results__"]}))]
    )
    parent = define([parallel(step("top", lambda ctx: ok({"child": call_workflow(child, {}, ref="c")[1]["grand"]})))])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    grand_results = {"g1": ["ok", {"g": 1}], "g2": ["ok", {"g": 2}]}
    assert run.context == {"__results__": {"top": ["ok", {"child": grand_results}]}}
    child_run = WorkflowRun.objects.get(parent=run)
    grand_run = WorkflowRun.objects.get(parent=child_run)
    assert (child_run.workflow, child_run.parent_step, child_run.ref, child_run.status) == (
        child.name,
        "top",
        "c",
        "completed",
    )
    assert (grand_run.workflow, grand_run.parent_step, grand_run.ref, grand_run.status) == (
        grandchild.name,
        "middle",
        "g",
        "completed",
    )


# -- resuming a child left unfinished by a process that died ----------------------------------------------


def leave_child(parent_run: WorkflowRun, child: Any, **fields: Any) -> WorkflowRun:
    """A child run of ``parent_run``'s step "pay" (ref "payment"), as a dead process left it."""
    return WorkflowRun.objects.create(
        workflow=child.name, parent=parent_run, parent_step="pay", ref="payment", input={"amount": 5}, **fields
    )


def pay_step(child: Any, seen: list[Any]) -> Any:
    def pay(ctx: dict[str, Any]) -> Any:
        seen.append(call_workflow(child, {"amount": 5}, ref="payment"))
        return ok({"paid": seen[-1][0]})

    return pay


@runs
def test_pending_child_is_resumed_not_started_again(embedded: EmbeddedQueue, define: Definer) -> None:
    executions: list[dict[str, Any]] = []
    child = define(payment_steps(executions))
    seen: list[Any] = []
    parent = define([step("pay", pay_step(child, seen))])
    run = parent.start()
    # Died right after the child's row was committed, before running any of its steps.
    left = leave_child(run, child, status="pending", current_step="authorize", context={"amount": 5})
    run = finish(embedded, run)
    assert seen == [("ok", {"amount": 5, "authorized": 10, "captured": True})]
    assert executions == [{"amount": 5}]
    assert list(WorkflowRun.objects.filter(parent=run).values_list("pk", "status")) == [(left.pk, "completed")]


@runs
def test_child_waiting_on_a_block_is_resumed(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    child = define(
        [
            step("prepare", lambda ctx: ok({"prepared": True})),
            parallel(
                step("left", lambda ctx: calls.append("left") or ok({"side": "l"})),
                step("right", lambda ctx: calls.append("right") or ok({"side": "r"})),
                name="fan",
            ),
        ]
    )
    seen: list[Any] = []
    parent = define([step("pay", pay_step(child, seen))])
    run = parent.start()
    # Died right after the child's fan-out committed: its branch jobs lived only in that
    # process (children run inline), so the rows are pending and no queue holds a job for them.
    left = leave_child(
        run, child, status="running", current_step="fan", context={"amount": 5, "prepared": True}, version=3
    )
    StepResult.objects.create(run=left, step="prepare", status="completed", output={"prepared": True})
    group = ParallelGroup.objects.create(run=left, name="fan", on_error="fail_fast", branch_count=2, pending_count=2)
    StepResult.objects.bulk_create([StepResult(run=left, step=name, group=group) for name in ("left", "right")])

    run = finish(embedded, run)
    assert seen == [
        (
            "ok",
            {
                "amount": 5,
                "prepared": True,
                "__results__": {"left": ("ok", {"side": "l"}), "right": ("ok", {"side": "r"})},
            },
        )
    ]
    assert calls == ["left", "right"]
    assert run.context == {"paid": "ok"}
    assert ParallelGroup.objects.filter(run=left).count() == 1


def leave_child_at_block(run: WorkflowRun, child: Any, branches: dict[str, str]) -> tuple[WorkflowRun, ParallelGroup]:
    """A child standing at its block "fan" with branch rows in the given statuses, as a dead process left it."""
    left = leave_child(run, child, status="running", current_step="fan", context={"amount": 5}, version=2)
    unfinished = sum(status in ("pending", "running") for status in branches.values())
    group = ParallelGroup.objects.create(
        run=left, name="fan", on_error="fail_fast", branch_count=len(branches), pending_count=unfinished
    )
    for name, status in branches.items():
        output = {"side": name} if status == "completed" else None
        StepResult.objects.create(run=left, step=name, group=group, status=status, output=output)
    return left, group


def sides_child(define: Definer, calls: list[str]) -> Any:
    def side(name: str) -> Any:
        def step_fn(ctx: dict[str, Any]) -> Any:
            calls.append(name)
            return ok({"side": name})

        return step_fn

    return define([parallel(step("left", side("left")), step("right", side("right")), name="fan")])


@runs
def test_branch_left_running_by_a_dead_process_gets_a_fresh_attempt(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    child = sides_child(define, calls)
    seen: list[Any] = []
    parent = define([step("pay", pay_step(child, seen))])
    run = parent.start()
    left, group = leave_child_at_block(run, child, {"left": "running", "right": "completed"})
    run = finish(embedded, run)
    assert seen == [
        ("ok", {"amount": 5, "__results__": {"left": ("ok", {"side": "left"}), "right": ("ok", {"side": "right"})}})
    ]
    # The completed branch is not executed again.
    assert calls == ["left"]
    rows = StepResult.objects.filter(run=left, step="left").order_by("id")
    assert [(row.attempt, row.status, row.group_id) for row in rows] == [
        (1, "failed", group.pk),
        (2, "completed", group.pk),
    ]
    assert rows[0].error == {"type": "worker_lost", "message": "the process executing this attempt went away"}


@runs
def test_child_whose_branches_all_finished_is_joined_on_resume(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    child = sides_child(define, calls)
    seen: list[Any] = []
    parent = define([step("pay", pay_step(child, seen))])
    run = parent.start()
    _, group = leave_child_at_block(run, child, {"left": "completed", "right": "completed"})
    finish(embedded, run)
    assert seen == [
        ("ok", {"amount": 5, "__results__": {"left": ("ok", {"side": "left"}), "right": ("ok", {"side": "right"})}})
    ]
    assert calls == []
    group.refresh_from_db()
    assert group.status == "completed"


@runs
def test_call_workflow_refuses_none_as_input(embedded: EmbeddedQueue, define: Definer) -> None:
    child = define(payment_steps([]))
    raised: list[BaseException] = []

    def pay(ctx: dict[str, Any]) -> Any:
        try:
            call_workflow(child, None, ref="payment")  # type: ignore[arg-type]
        except Exception as exc:
            raised.append(exc)
            raise
        return ok({})

    run = finish(embedded, define([step("pay", pay)]).start())
    assert [str(exc) for exc in raised] == [
        f"Input of workflow {child.name!r} must be a dict, not None; pass {{}} or omit it."
    ]
    assert run.status == "failed"
    assert not WorkflowRun.objects.filter(parent=run).exists()
