"""Branch blocks: the steps of one case, chosen at run time, then the run goes on after the block."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import WorkflowDefinitionError, branch, error, foreach, goto, ok, parallel, step, workflow
from durable_django.models import StepResult
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish

runs = pytest.mark.django_db(transaction=True)


def done(name: str) -> Any:
    return step(name, lambda ctx: ok({"path": [*ctx.get("path", []), name]}))


def history(run: Any) -> list[tuple[str, str, str]]:
    return list(
        StepResult.objects.filter(run=run, group__isnull=True).order_by("id").values_list("step", "kind", "status")
    )


def shipping(define: Definer, **kwargs: Any) -> Any:
    return define(
        [
            done("pack"),
            branch(
                "ship",
                "kind",
                {
                    "express": [done("book_courier"), done("notify_courier")],
                    "standard": [done("print_label")],
                    "digital": [],
                },
                **kwargs,
            ),
            done("close"),
        ]
    )


@runs
@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("express", ["pack", "book_courier", "notify_courier", "close"]),
        ("standard", ["pack", "print_label", "close"]),
        ("digital", ["pack", "close"]),
    ],
)
def test_the_steps_of_the_matching_case_run_in_order_then_the_run_goes_on(
    embedded: EmbeddedQueue, define: Definer, kind: str, path: list[str]
) -> None:
    run = finish(embedded, shipping(define).start({"kind": kind}))
    assert run.status == "completed"
    assert run.context == {"kind": kind, "path": path}
    assert history(run) == [
        ("pack", "step", "completed"),
        ("ship", "branch", "completed"),
        *((name, "step", "completed") for name in path[1:]),
    ]
    assert StepResult.objects.get(run=run, step="ship").output == {"case": kind, "default": False, "value": kind}


@runs
def test_the_value_is_compared_as_its_string_and_the_default_runs_when_nothing_matches(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [
            branch(
                "by_count",
                lambda ctx: len(ctx["items"]),
                {"0": [done("empty")], "1": [done("single")]},
                default=[done("many")],
            ),
        ]
    )
    assert finish(embedded, wf.start({"items": []})).context["path"] == ["empty"]
    assert finish(embedded, wf.start({"items": [1]})).context["path"] == ["single"]
    run = finish(embedded, wf.start({"items": [1, 2, 3]}))
    assert run.context["path"] == ["many"]
    assert StepResult.objects.get(run=run, step="by_count").output == {"case": None, "default": True, "value": 3}


@runs
def test_no_match_and_no_default_fails_the_run_with_the_value_as_returned(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    run = finish(embedded, shipping(define).start({"kind": 42}))
    assert run.status == "failed"
    assert run.error == {"step": "ship", "reason": {"type": "no_branch_matched", "value": 42}}
    assert history(run) == [("pack", "step", "completed"), ("ship", "branch", "failed")]
    assert run.context == {"kind": 42, "path": ["pack"]}


@runs
def test_an_on_function_that_raises_fails_the_run_with_a_stored_error(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([branch("pick", lambda ctx: ctx["missing"], {"a": [done("a")]})])
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    assert run.error["step"] == "pick"
    assert (run.error["reason"]["type"], run.error["reason"]["message"]) == ("branch_error", "'missing'")


@runs
def test_cases_may_hold_blocks_and_nested_branches(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            branch(
                "route",
                "mode",
                {
                    "fan": [
                        parallel(done("left"), done("right"), name="both"),
                        foreach("each", "things", lambda ctx: ok({"x": ctx["item"] * 2})),
                    ],
                    "nested": [branch("inner", "sub", {"x": [done("inner_x")]}, default=[done("inner_other")])],
                },
            ),
            done("end"),
        ]
    )
    run = finish(embedded, wf.start({"mode": "fan", "things": [1, 2]}))
    assert run.status == "completed"
    assert run.context["__results__"] == [["ok", {"x": 2}], ["ok", {"x": 4}]]
    assert run.context["path"] == ["end"]
    run = finish(embedded, wf.start({"mode": "nested", "sub": "x"}))
    assert run.context["path"] == ["inner_x", "end"]


@runs
def test_goto_may_leave_a_case_for_a_top_level_step_but_not_enter_one(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            branch(
                "route",
                "mode",
                {"out": [step("jump", lambda ctx: goto("end", {"jumped": True}))], "in": [done("inside")]},
                default=[],
            ),
            step("in_goto", lambda ctx: goto("inside") if ctx["mode"] == "retry" else ok()),
            done("end"),
        ]
    )
    run = finish(embedded, wf.start({"mode": "out"}))
    assert run.status == "completed"
    assert run.context == {"mode": "out", "jumped": True, "path": ["end"]}
    run = finish(embedded, wf.start({"mode": "retry"}))
    assert run.status == "failed"
    assert run.error == {
        "step": "in_goto",
        "reason": {
            "type": "goto_error",
            "message": "'in_goto' jumped to 'inside', which is not a top-level step or parallel block of this workflow",
            "target": "inside",
        },
    }


def test_step_names_are_unique_across_cases(define: Definer) -> None:
    name = define.name()
    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow(name, [done("a"), branch("b", "k", {"x": [done("a")]})])
    assert str(caught.value) == f"Workflow {name!r}, step 'a': the name is used more than once in this workflow"


@pytest.mark.parametrize(
    ("args", "where", "problem"),
    [
        (
            ("b", 3, {"x": []}),
            "branch block 'b'",
            "on must be a function of the context or the name of a context key, got 3",
        ),
        (("b", "k", {}), "branch block 'b'", "cases must be a non-empty dict of case -> list of steps, got {}"),
        (
            ("b", "k", {1: []}),
            "branch block 'b'",
            "case keys must be strings (the value of on is compared as str(value)), got 1",
        ),
        (("b", "k", {"x": "steps"}), "branch block 'b'", "case 'x' must be a list of steps, got str"),
        (
            ("b", "k", {"x": [step("bad", "nope")]}),
            "step 'bad' in case 'x' of branch block 'b'",
            "fn must be callable, got str",
        ),
    ],
)
def test_a_bad_branch_fails_at_definition_time(
    define: Definer, args: tuple[Any, ...], where: str, problem: str
) -> None:
    name = define.name()
    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow(name, [branch(*args)])
    assert str(caught.value) == f"Workflow {name!r}, {where}: {problem}"


@runs
def test_a_case_step_may_fail_and_retry_like_any_step(embedded: EmbeddedQueue, define: Definer) -> None:
    tries: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        tries.append(1)
        return error("busy") if len(tries) < 2 else ok({"ok": True})

    wf = define(
        [branch("b", "k", {"x": [step("flaky", flaky, retry={"max_attempts": 2, "base": 0, "jitter": False})]})]
    )
    run = finish(embedded, wf.start({"k": "x"}))
    assert run.status == "completed"
    assert history(run) == [("b", "branch", "completed"), ("flaky", "step", "failed"), ("flaky", "step", "completed")]
