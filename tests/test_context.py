"""Context helpers (parallel_results, parallel_result, parallel_ok, assign) and context isolation."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import (
    NotInStepError,
    assign,
    call_workflow,
    error,
    ok,
    parallel,
    parallel_ok,
    parallel_result,
    parallel_results,
    step,
)
from durable_django.models import StepResult
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, finish, recorder

runs = pytest.mark.django_db(transaction=True)


# -- helpers with an explicit context -------------------------------------------------------------

STORED = {
    "user": 1,
    # As read from the database: JSON lists.
    "__results__": {"payment": ["ok", {"id": 123}], "delivery": ["error", "not_found"]},
}


def test_parallel_results_with_explicit_ctx_returns_tuples() -> None:
    assert parallel_results(STORED) == {"payment": ("ok", {"id": 123}), "delivery": ("error", "not_found")}
    assert [type(value) for value in parallel_results(STORED).values()] == [tuple, tuple]


def test_parallel_results_without_a_block_is_empty() -> None:
    assert parallel_results({"user": 1}) == {}
    assert parallel_results({"__results__": None}) == {}
    assert parallel_results({"__results__": "garbage"}) == {}


def test_parallel_result_with_explicit_ctx() -> None:
    assert parallel_result("payment", STORED) == ("ok", {"id": 123})
    assert parallel_result("delivery", STORED) == ("error", "not_found")
    assert parallel_result("missing", STORED) is None


def test_parallel_ok_with_explicit_ctx() -> None:
    assert [parallel_ok(key, STORED) for key in ("payment", "delivery", "missing")] == [True, False, False]
    assert parallel_ok("payment", {}) is False


@pytest.mark.parametrize(
    ("call", "helper"),
    [
        (lambda: parallel_results(), "parallel_results"),
        (lambda: parallel_result("payment"), "parallel_result"),
        (lambda: parallel_ok("payment"), "parallel_ok"),
        (lambda: call_workflow("anything", {}), "call_workflow"),
    ],
)
def test_helpers_without_ctx_outside_a_step_raise_not_in_step_error(call: Any, helper: str) -> None:
    with pytest.raises(NotInStepError) as excinfo:
        call()
    assert isinstance(excinfo.value, RuntimeError)
    assert str(excinfo.value) == f"{helper}() was called outside a running step; pass the context explicitly."


def test_assign_returns_a_new_dict() -> None:
    ctx = {"user": 1, "nested": {"a": 1}}
    updated = assign(ctx, "payment", {"id": 123})
    assert updated == {"user": 1, "nested": {"a": 1}, "payment": {"id": 123}}
    assert ctx == {"user": 1, "nested": {"a": 1}}
    assert updated is not ctx
    assert assign(ctx, "user", 2) == {"user": 2, "nested": {"a": 1}}
    assert ctx["user"] == 1


# -- helpers inside a running step ----------------------------------------------------------------


@runs
def test_helpers_without_ctx_read_the_running_steps_context(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[Any] = []

    def handle(ctx: dict[str, Any]) -> Any:
        seen.append(
            (
                parallel_results(),
                parallel_result("payment"),
                parallel_result("delivery"),
                parallel_result("missing"),
                parallel_ok("payment"),
                parallel_ok("delivery"),
                parallel_ok("missing"),
            )
        )
        return ok(assign({}, "handled", parallel_ok("payment")))

    wf = define(
        [
            parallel(
                step("charge", lambda ctx: ok({"id": 123}), returns="payment"),
                step("delivery", lambda ctx: error("not_found")),
                on_error="complete_all",
            ),
            step("handle", handle),
        ]
    )
    run = finish(embedded, wf.start({"user": 1}))
    assert run.status == "completed"
    assert seen == [
        (
            {"payment": ("ok", {"id": 123}), "delivery": ("error", "not_found")},
            ("ok", {"id": 123}),
            ("error", "not_found"),
            None,
            True,
            False,
            False,
        )
    ]
    assert run.context["handled"] is True


@runs
def test_helpers_inside_a_step_see_its_own_view_of_the_context(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[Any] = []

    def handle(ctx: dict[str, Any]) -> Any:
        # The helpers read the very dict the step received, including its own changes to it.
        ctx["__results__"] = {"fake": ("ok", {})}
        seen.append(parallel_results())
        return ok()

    wf = define([parallel(step("a", lambda ctx: ok({"n": 1}))), step("handle", handle)])
    run = finish(embedded, wf.start())
    assert seen == [{"fake": ("ok", {})}]
    assert run.context["__results__"] == {"a": ["ok", {"n": 1}]}


@runs
def test_helpers_inside_a_step_before_any_block_see_no_results(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[Any] = []
    wf = define([step("first", lambda ctx: seen.append((parallel_results(), parallel_ok("a"))) or ok())])
    finish(embedded, wf.start())
    assert seen == [({}, False)]


# -- isolation ------------------------------------------------------------------------------------


def mutate(ctx: dict[str, Any]) -> Any:
    ctx["items"].append("mutated")
    ctx["profile"]["name"] = "Mallory"
    ctx["added"] = True
    del ctx["order"]
    return ok({"mutator_ran": True})


@runs
def test_mutating_the_context_in_a_step_does_not_leak(embedded: EmbeddedQueue, define: Definer) -> None:
    later: list[dict[str, Any]] = []
    wf = define([step("mutate", mutate), step("later", recorder(later))])
    run = finish(embedded, wf.start({"order": 1, "items": ["a"], "profile": {"name": "Ada"}}))
    expected = {"order": 1, "items": ["a"], "profile": {"name": "Ada"}, "mutator_ran": True}
    assert run.status == "completed"
    assert later == [expected]
    assert run.context == expected
    assert run.input == {"order": 1, "items": ["a"], "profile": {"name": "Ada"}}


@runs
def test_mutating_the_context_in_a_branch_leaks_neither_to_siblings_nor_to_later_steps(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    siblings: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    wf = define(
        [
            # Branches run in order on the embedded queue: "mutate" runs before "sibling".
            parallel(step("mutate", mutate), step("sibling", recorder(siblings))),
            step("later", recorder(later)),
        ]
    )
    run = finish(embedded, wf.start({"order": 1, "items": ["a"], "profile": {"name": "Ada"}}))
    original = {"order": 1, "items": ["a"], "profile": {"name": "Ada"}}
    assert StepResult.objects.filter(run=run, step="mutate").values_list("status", flat=True).get() == "completed"
    assert siblings == [original]
    results = {"mutate": ["ok", {"mutator_ran": True}], "sibling": ["ok", {}]}
    assert run.context == {**original, "__results__": results}
    assert later == [{**original, "__results__": {"mutate": ("ok", {"mutator_ran": True}), "sibling": ("ok", {})}}]


@runs
def test_mutating_the_results_handed_to_a_step_does_not_leak(embedded: EmbeddedQueue, define: Definer) -> None:
    later: list[dict[str, Any]] = []

    def tamper(ctx: dict[str, Any]) -> Any:
        ctx["__results__"]["a"][1]["n"] = 99
        ctx["__results__"]["b"] = ("ok", {})
        return ok()

    wf = define([parallel(step("a", lambda ctx: ok({"n": 1}))), step("tamper", tamper), step("later", recorder(later))])
    run = finish(embedded, wf.start())
    assert run.context == {"__results__": {"a": ["ok", {"n": 1}]}}
    assert later == [{"__results__": {"a": ("ok", {"n": 1})}}]


@runs
def test_mutating_the_context_in_into_does_not_leak_into_the_stored_group(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        results["a"][1]["n"] = 99
        ctx["items"].append("mutated")
        return ok({"kept": ctx["items"]})

    wf = define([parallel(step("a", lambda ctx: ok({"n": 1})), into=into, name="fan")])
    run = finish(embedded, wf.start({"items": ["a"]}))
    assert run.context == {"kept": ["a", "mutated"]}
    assert run.input == {"items": ["a"]}
    assert run.groups.get().results == {"a": ["ok", {"n": 1}]}


@runs
def test_helpers_inside_into_read_the_blocks_results(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[Any] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        seen.append((parallel_results(), parallel_result("b"), parallel_ok("a"), parallel_ok("b")))
        return ok({"a_ok": parallel_ok("a")})

    wf = define(
        [
            # A block before: into must not see its results through the helpers.
            parallel(step("old", lambda ctx: ok())),
            parallel(step("a", lambda ctx: ok({"n": 1})), step("b", lambda ctx: error("x")), into=into),
        ]
    )
    run = finish(embedded, wf.start())
    assert seen == [({"a": ("ok", {"n": 1}), "b": ("error", "x")}, ("error", "x"), True, False)]
    assert run.context == {"a_ok": True}
