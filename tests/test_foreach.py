"""Foreach blocks: one branch per item of a list known at run time, joined like a parallel block."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import (
    WorkflowDefinitionError,
    error,
    foreach,
    goto,
    ok,
    parallel_results,
    retry_run,
    step,
    workflow,
)
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish, recorder

runs = pytest.mark.django_db(transaction=True)


def items_of(run: Any) -> list[tuple[int | None, int, str]]:
    """``(item_index, attempt, status)`` of a run's foreach rows, by item then attempt."""
    rows = StepResult.objects.filter(run=run, group__isnull=False).order_by("item_index", "attempt")
    return list(rows.values_list("item_index", "attempt", "status"))


def charge(ctx: dict[str, Any]) -> Any:
    line = ctx["line"]
    if line["price"] < 0:
        return error({"type": "negative_price", "sku": line["sku"]})
    return ok({"charged": line["price"] * line["qty"], "index": ctx["__index__"]})


LINES = [
    {"sku": "A", "price": 3, "qty": 2},
    {"sku": "B", "price": 5, "qty": 1},
    {"sku": "C", "price": 1, "qty": 10},
]


@runs
def test_results_are_a_list_in_item_order_and_each_item_sees_its_own_copy(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    seen: list[dict[str, Any]] = []
    wf = define(
        [
            step("load", lambda ctx: ok({"lines": LINES})),
            foreach("charge_lines", "lines", charge, item_key="line"),
            step("after", recorder(seen)),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    expected = [
        ["ok", {"charged": 6, "index": 0}],
        ["ok", {"charged": 5, "index": 1}],
        ["ok", {"charged": 10, "index": 2}],
    ]
    assert run.status == "completed"
    assert run.context == {"order": 1, "lines": LINES, "__results__": expected}
    assert seen[0]["__results__"] == [tuple(result) for result in expected]
    group = ParallelGroup.objects.get(run=run)
    assert (group.name, group.kind, group.items, group.results) == ("charge_lines", "foreach", LINES, expected)
    assert (group.branch_count, group.pending_count, group.failed_count) == (3, 0, 0)
    assert items_of(run) == [(0, 1, "completed"), (1, 1, "completed"), (2, 1, "completed")]
    assert set(StepResult.objects.filter(group=group).values_list("step", flat=True)) == {"charge_lines"}


@runs
def test_items_may_come_from_a_function_of_the_context_and_into_gets_the_list(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    got: list[Any] = []

    def total(ctx: dict[str, Any], results: list[tuple[str, Any]]) -> Any:
        got.append((results, parallel_results()))
        return ok({**ctx, "total": sum(data["charged"] for status, data in results if status == "ok")})

    wf = define(
        [
            foreach("charge_lines", lambda ctx: ctx["lines"][1:], charge, into=total, item_key="line"),
            step("x", recorder([])),
        ]
    )
    run = finish(embedded, wf.start({"lines": LINES}))
    assert run.status == "completed"
    assert run.context == {"lines": LINES, "total": 15}
    results = [("ok", {"charged": 5, "index": 0}), ("ok", {"charged": 10, "index": 1})]
    assert got == [(results, results)]


@runs
def test_fail_fast_fails_the_run_at_the_first_failing_item_naming_its_index(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    lines = [*LINES[:1], {"sku": "X", "price": -1, "qty": 1}, *LINES[1:]]
    wf = define([foreach("charge_lines", "lines", charge, item_key="line"), step("never", recorder([]))])
    run = finish(embedded, wf.start({"lines": lines}))
    assert run.status == "failed"
    assert run.error == {
        "step": "charge_lines",
        "foreach": "charge_lines",
        "item_index": 1,
        "reason": {"type": "negative_price", "sku": "X"},
    }
    assert ParallelGroup.objects.get(run=run).status == "failed"
    assert not StepResult.objects.filter(run=run, step="never").exists()


@runs
def test_complete_all_collects_every_item_and_continues(embedded: EmbeddedQueue, define: Definer) -> None:
    lines = [LINES[0], {"sku": "X", "price": -1, "qty": 1}]
    wf = define([foreach("charge_lines", "lines", charge, item_key="line", on_error="complete_all")])
    run = finish(embedded, wf.start({"lines": lines}))
    assert run.status == "completed"
    assert run.context["__results__"] == [
        ["ok", {"charged": 6, "index": 0}],
        ["error", {"type": "negative_price", "sku": "X"}],
    ]


@runs
def test_an_empty_list_continues_at_once_with_an_empty_list(embedded: EmbeddedQueue, define: Definer) -> None:
    got: list[Any] = []
    wf = define(
        [
            foreach("each", "things", lambda ctx: ok(), into=lambda ctx, results: got.append(results) or ok(ctx)),
            step("next", lambda ctx: ok({"reached": True})),
        ]
    )
    run = finish(embedded, wf.start({"things": []}))
    assert run.status == "completed"
    assert run.context == {"things": [], "reached": True}
    assert got == [[]]
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.branch_count, group.results) == ("completed", 0, [])

    plain = define([foreach("each", "things", lambda ctx: ok())], queue=None)
    assert finish(embedded, plain.start({"things": []})).context == {"things": [], "__results__": []}


@runs
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "context key 'things' (items of foreach block 'each') must be a list, got dict"),
        (None, "context key 'things' (items of foreach block 'each') must be a list, got NoneType"),
        ("abc", "context key 'things' (items of foreach block 'each') must be a list, got str"),
    ],
)
def test_items_that_are_not_a_list_fail_the_run_with_invalid_items(
    embedded: EmbeddedQueue, define: Definer, value: Any, message: str
) -> None:
    wf = define([step("load", lambda ctx: ok({"things": value})), foreach("each", "things", lambda ctx: ok())])
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    assert run.error == {"step": "each", "reason": {"type": "invalid_items", "message": message}}
    # The step before the block is recorded, and its output is in the context.
    assert run.context == {"things": value}
    assert list(StepResult.objects.filter(run=run).values_list("step", "status")) == [("load", "completed")]
    assert not ParallelGroup.objects.filter(run=run).exists()


@runs
def test_items_that_cannot_be_stored_or_a_raising_items_function_fail_the_run(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([foreach("each", lambda ctx: [object()], lambda ctx: ok())])
    run = finish(embedded, wf.start())
    assert run.error["reason"]["type"] == "invalid_items"
    assert run.error["reason"]["message"].startswith("items of foreach block 'each' cannot be stored as JSON:")

    def broken(ctx: dict[str, Any]) -> list[int]:
        raise KeyError("lines")

    raising = define([foreach("each", broken, lambda ctx: ok())], queue=None)
    run = finish(embedded, raising.start())
    assert run.status == "failed"
    assert (run.error["reason"]["type"], run.error["reason"]["message"]) == ("invalid_items", "'lines'")


@runs
def test_a_failing_item_is_retried_by_its_policy_keeping_its_index(embedded: EmbeddedQueue, define: Definer) -> None:
    tries: dict[int, int] = {}

    def flaky(ctx: dict[str, Any]) -> Any:
        tries[ctx["__index__"]] = tries.get(ctx["__index__"], 0) + 1
        if ctx["item"] == "b" and tries[ctx["__index__"]] < 3:
            return error("busy")
        return ok({"done": ctx["item"]})

    wf = define([foreach("each", "things", flaky, retry={"max_attempts": 3, "base": 0, "jitter": False})])
    run = finish(embedded, wf.start({"things": ["a", "b", "c"]}))
    assert run.status == "completed"
    assert run.context["__results__"] == [["ok", {"done": "a"}], ["ok", {"done": "b"}], ["ok", {"done": "c"}]]
    assert items_of(run) == [
        (0, 1, "completed"),
        (1, 1, "failed"),
        (1, 2, "failed"),
        (1, 3, "completed"),
        (2, 1, "completed"),
    ]


@runs
def test_retrying_a_failed_run_reruns_only_the_failed_items_and_keeps_the_block_history(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    broken = {"b"}

    def fn(ctx: dict[str, Any]) -> Any:
        return error("down") if ctx["item"] in broken else ok({"done": ctx["item"]})

    wf = define(
        [
            foreach(
                "each",
                "things",
                fn,
                on_error="complete_all",
                into=lambda ctx, rs: ok(ctx) if all(r[0] == "ok" for r in rs) else error("some failed"),
            )
        ]
    )
    run = finish(embedded, wf.start({"things": ["a", "b"]}))
    assert run.status == "failed"
    broken.clear()
    retry_run(run.pk)
    run = finish(embedded, run)
    assert run.status == "completed"
    assert items_of(run) == [(0, 1, "completed"), (1, 1, "failed"), (1, 2, "completed")]
    group = ParallelGroup.objects.get(run=run)
    assert group.status == "completed"
    assert [(entry["status"], entry["error"], entry["failed"]) for entry in group.history] == [
        ("failed", "some failed", 1)
    ]


@runs
def test_into_may_goto_a_top_level_step(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            foreach("each", "things", lambda ctx: ok(), into=lambda ctx, results: goto("end", {"n": len(results)})),
            step("skipped", lambda ctx: ok({"skipped": False})),
            step("end", lambda ctx: ok({"ended": True})),
        ]
    )
    run = finish(embedded, wf.start({"things": [1, 2]}))
    assert run.context == {"n": 2, "ended": True}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1 (or None for no limit), got 0"),
        ({"max_concurrency": True}, "max_concurrency must be an integer >= 1 (or None for no limit), got True"),
        ({"fn": "nope"}, "fn must be callable, got str"),
        ({"items": 3}, "items must be a function of the context or the name of a context key, got 3"),
        ({"on_error": "ignore"}, "on_error must be one of 'fail_fast', 'complete_all', got 'ignore'"),
        (
            {"item_key": "__index__"},
            "item_key must be a non-empty string other than __results__, __index__, __error__, got '__index__'",
        ),
        (
            {"retry": {"tries": 2}},
            "unknown retry option(s) 'tries'; known: max_attempts, backoff, base, max_backoff, jitter",
        ),
    ],
)
def test_a_bad_foreach_fails_at_definition_time_naming_workflow_and_block(
    define: Definer, kwargs: dict[str, Any], problem: str
) -> None:
    arguments: dict[str, Any] = {"items": "things", "fn": lambda ctx: ok(), **kwargs}
    items, fn = arguments.pop("items"), arguments.pop("fn")
    name = define.name()
    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow(name, [foreach("each", items, fn, **arguments)])
    assert str(caught.value) == f"Workflow {name!r}, foreach block 'each': {problem}"


def test_a_foreach_name_clashing_with_a_step_is_refused(define: Definer) -> None:
    name = define.name()
    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow(name, [step("each", lambda ctx: ok()), foreach("each", "things", lambda ctx: ok())])
    assert (
        str(caught.value)
        == f"Workflow {name!r}, foreach block 'each': the name is used more than once in this workflow"
    )


@runs
@pytest.mark.parametrize(("limit", "peak"), [(None, 10), (1, 1), (3, 3)])
def test_max_concurrency_bounds_how_many_items_are_taken_at_once(
    embedded: EmbeddedQueue, define: Definer, limit: int | None, peak: int
) -> None:
    # Items claimed by a job count as executing from their claim: the running rows of the block,
    # read inside each item, never exceed the limit (without one, the first batch takes all ten).
    seen: list[int] = []

    def item(ctx: dict[str, Any]) -> Any:
        seen.append(StepResult.objects.filter(run_id=ctx["run"], status="running").count())
        return ok({"n": ctx["item"]})

    wf = define([foreach("each", "things", item, max_concurrency=limit)])
    run = wf.start({"things": list(range(10))})
    WorkflowRun.objects.filter(pk=run.pk).update(
        input={"run": str(run.pk)}, context={"things": list(range(10)), "run": str(run.pk)}
    )
    run = finish(embedded, run)
    assert run.status == "completed"
    assert [result[1]["n"] for result in run.context["__results__"]] == list(range(10))
    assert max(seen) == peak
    assert len(seen) == 10


@runs
def test_a_retry_in_a_full_block_waits_for_a_free_slot(embedded: EmbeddedQueue, define: Definer) -> None:
    tries: dict[int, int] = {}
    seen: list[int] = []

    def item(ctx: dict[str, Any]) -> Any:
        seen.append(StepResult.objects.filter(run_id=ctx["run"], status="running").count())
        tries[ctx["__index__"]] = tries.get(ctx["__index__"], 0) + 1
        if ctx["__index__"] == 0 and tries[0] == 1:
            return error("once")
        return ok()

    wf = define(
        [foreach("each", "things", item, max_concurrency=1, retry={"max_attempts": 2, "base": 0, "jitter": False})]
    )
    run = wf.start({"things": [0, 1, 2]})
    WorkflowRun.objects.filter(pk=run.pk).update(context={"things": [0, 1, 2], "run": str(run.pk)})
    run = finish(embedded, run)
    assert run.status == "completed"
    assert tries == {0: 2, 1: 1, 2: 1}
    assert max(seen) == 1
