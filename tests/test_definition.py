"""Workflow definitions: validation at definition time, block naming and the registry."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import (
    Parallel,
    Step,
    WorkflowDefinitionError,
    WorkflowNotFound,
    get_workflow,
    ok,
    parallel,
    start_workflow,
    step,
    workflow,
)
from durable_django.definition import registered_workflows, unregister
from tests.engine_support import Definer


def first(ctx: dict[str, Any]) -> Any:
    return ok({"first": True})


def second(ctx: dict[str, Any]) -> Any:
    return ok({"second": True})


def third(ctx: dict[str, Any]) -> Any:
    return ok({"third": True})


def definition_error(steps: list[Any], name: str = "wf") -> str:
    """The message ``workflow(name, steps)`` raises (and check that nothing was registered)."""
    with pytest.raises(WorkflowDefinitionError) as excinfo:
        workflow(name, steps)
    assert name not in registered_workflows()
    return str(excinfo.value)


# -- duplicate names ----------------------------------------------------------------------------


def test_duplicate_sequential_step_names_are_rejected() -> None:
    message = definition_error([step("a", first), step("b", second), step("a", third)])
    assert message == "Workflow 'wf', step 'a': the name is used more than once in this workflow"


def test_duplicate_step_names_across_parallel_blocks_are_rejected() -> None:
    message = definition_error([parallel(step("a", first), step("b", second)), parallel(step("a", third))])
    assert message == "Workflow 'wf', step 'a': the name is used more than once in this workflow"


def test_branch_named_like_a_sequential_step_is_rejected() -> None:
    message = definition_error([step("a", first), parallel(step("b", second), step("a", third))])
    assert message == "Workflow 'wf', step 'a': the name is used more than once in this workflow"


def test_duplicate_branch_names_inside_one_block_are_rejected() -> None:
    message = definition_error([parallel(step("a", first), step("a", second))])
    assert message == "Workflow 'wf', step 'a': the name is used more than once in this workflow"


def test_block_name_taken_by_a_step_is_rejected() -> None:
    message = definition_error([step("fan", first), parallel(step("b", second), name="fan")])
    assert message == "Workflow 'wf', parallel block 'fan': the name is used more than once in this workflow"


def test_block_name_taken_by_its_own_branch_is_rejected() -> None:
    message = definition_error([parallel(step("fan", first), name="fan")])
    assert message == "Workflow 'wf', step 'fan': the name is used more than once in this workflow"


def test_generated_block_name_taken_by_a_step_is_rejected() -> None:
    # Block names are goto targets, so the generated name must be unique too.
    message = definition_error([step("parallel_1", first), parallel(step("b", second))])
    assert message == "Workflow 'wf', parallel block 'parallel_1': the name is used more than once in this workflow"


def test_two_blocks_with_the_same_name_are_rejected() -> None:
    message = definition_error([parallel(step("a", first), name="x"), parallel(step("b", second), name="x")])
    assert message == "Workflow 'wf', parallel block 'x': the name is used more than once in this workflow"


# -- parallel blocks ----------------------------------------------------------------------------


def test_empty_parallel_block_is_rejected() -> None:
    message = definition_error([step("a", first), parallel()])
    assert message == "Workflow 'wf', parallel block 'parallel_1': a parallel block needs at least one step"


def test_unknown_on_error_is_rejected() -> None:
    message = definition_error([parallel(step("a", first), step("b", second), on_error="ignore", name="fan")])
    assert message == (
        "Workflow 'wf', parallel block 'fan' (first step 'a'): "
        "on_error must be one of 'fail_fast', 'complete_all', got 'ignore'"
    )


def test_duplicate_returns_keys_in_one_block_are_rejected() -> None:
    message = definition_error(
        [parallel(step("fetch_order", first, returns="data"), step("fetch_user", second, returns="data"))]
    )
    assert message == (
        "Workflow 'wf', parallel block 'parallel_1' (first step 'fetch_order'): "
        "steps 'fetch_order' and 'fetch_user' both return their result under the key 'data'"
    )


def test_returns_key_equal_to_a_sibling_name_is_rejected() -> None:
    message = definition_error([parallel(step("user", first), step("fetch_user", second, returns="user"))])
    assert message == (
        "Workflow 'wf', parallel block 'parallel_1' (first step 'user'): "
        "steps 'user' and 'fetch_user' both return their result under the key 'user'"
    )


def test_same_returns_key_in_different_blocks_is_allowed(define: Definer) -> None:
    wf = define([parallel(step("a", first, returns="data")), parallel(step("b", second, returns="data"))])
    assert [[member.key for member in block.steps] for block in wf.steps] == [["data"], ["data"]]


def test_parallel_block_holding_a_block_is_rejected() -> None:
    message = definition_error([parallel(step("a", first), parallel(step("b", second)))])
    assert message == (
        "Workflow 'wf', parallel block 'parallel_1' (first step 'a'): a parallel block holds steps only, got Parallel"
    )


def test_non_callable_into_is_rejected() -> None:
    message = definition_error([parallel(step("a", first), into="merge")])
    assert message == "Workflow 'wf', parallel block 'parallel_1' (first step 'a'): into must be callable, got str"


# -- steps --------------------------------------------------------------------------------------


def test_non_callable_fn_is_rejected() -> None:
    message = definition_error([step("a", first), step("charge", 42)])
    assert message == "Workflow 'wf', step 'charge': fn must be callable, got int"


def test_non_callable_fn_of_a_branch_names_step_and_block() -> None:
    message = definition_error([parallel(step("a", first), step("charge", "charge"), name="pay")])
    assert message == "Workflow 'wf', step 'charge' in parallel block 'pay': fn must be callable, got str"


@pytest.mark.parametrize(
    ("retry", "problem"),
    [
        (
            {"max_attempts": 3, "tries": 2},
            "unknown retry option(s) 'tries'; known: max_attempts, backoff, base, max_backoff, jitter",
        ),
        ({"max_attempts": 0}, "retry max_attempts must be an integer >= 1, got 0"),
        ({"max_attempts": -2}, "retry max_attempts must be an integer >= 1, got -2"),
        ({"max_attempts": 2.5}, "retry max_attempts must be an integer >= 1, got 2.5"),
        ({"max_attempts": True}, "retry max_attempts must be an integer >= 1, got True"),
        ({"backoff": "fibonacci"}, "retry backoff must be one of exponential, linear, constant, got 'fibonacci'"),
        ({"base": -1}, "retry base must be a number of seconds >= 0, got -1"),
        ({"base": "1"}, "retry base must be a number of seconds >= 0, got '1'"),
        ({"max_backoff": -0.5}, "retry max_backoff must be a number of seconds >= 0, got -0.5"),
        ({"jitter": "yes"}, "retry jitter must be True or False, got 'yes'"),
        ({"jitter": 1}, "retry jitter must be True or False, got 1"),
        ([("max_attempts", 3)], "retry must be a dict, got list"),
    ],
)
def test_bad_retry_options_are_rejected(retry: Any, problem: str) -> None:
    message = definition_error([step("call_api", first, retry=retry)])
    assert message == f"Workflow 'wf', step 'call_api': {problem}"


def test_bad_retry_option_of_a_branch_names_step_and_block() -> None:
    message = definition_error([parallel(step("call_api", first, retry={"max_attempts": 0}))])
    assert message == (
        "Workflow 'wf', step 'call_api' in parallel block 'parallel_1': retry max_attempts must be an integer >= 1, got 0"
    )


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        (step("", first), "step '': step name must be a non-empty string, got ''"),
        (step("a", first, returns=""), "step 'a': returns must be a non-empty string, got ''"),
        (step("a", first, queue=" "), "step 'a': queue must be a non-empty string, got ' '"),
        ("a", "item 1: expected step(...), parallel(...), foreach(...) or branch(...), got str"),
    ],
)
def test_malformed_steps_are_rejected(node: Any, problem: str) -> None:
    assert definition_error([node]) == f"Workflow 'wf', {problem}"


def test_workflow_needs_a_name_and_steps() -> None:
    with pytest.raises(WorkflowDefinitionError) as excinfo:
        workflow("", [step("a", first)])
    assert str(excinfo.value) == "Workflow name must be a non-empty string, got ''"
    assert definition_error([]) == "Workflow 'wf' needs a non-empty list of steps"


def test_retry_options_are_kept_on_the_step(define: Definer) -> None:
    wf = define([step("a", first, retry={"max_attempts": 4, "backoff": "linear", "base": 2, "jitter": False})])
    assert wf.steps[0].retry.as_dict() == {
        "max_attempts": 4,
        "backoff": "linear",
        "base": 2.0,
        "max_backoff": 30.0,
        "jitter": False,
    }


# -- structure ----------------------------------------------------------------------------------


def test_unnamed_blocks_are_numbered_in_order(define: Definer) -> None:
    wf = define(
        [
            parallel(step("a", first)),
            step("b", second),
            parallel(step("c", third), name="named"),
            parallel(step("d", first)),
        ]
    )
    assert [node.name for node in wf.steps] == ["parallel_1", "b", "named", "parallel_3"]
    assert [type(node) for node in wf.steps] == [Parallel, Step, Parallel, Parallel]
    assert [wf.position(name) for name in ("parallel_1", "b", "named", "parallel_3", "a", "nope")] == [
        0,
        1,
        2,
        3,
        None,
        None,
    ]


def test_describe_lists_steps_and_blocks(define: Definer) -> None:
    wf = define(
        [step("a", first, queue="priority"), parallel(step("b", second, returns="bee"), on_error="complete_all")]
    )
    default_retry = {"max_attempts": 1, "backoff": "exponential", "base": 1.0, "max_backoff": 30.0, "jitter": True}
    assert wf.describe() == [
        {
            "type": "step",
            "name": "a",
            "returns": None,
            "queue": "priority",
            "timeout": None,
            "retry": default_retry,
            "compensate": False,
        },
        {
            "type": "parallel",
            "name": "parallel_1",
            "on_error": "complete_all",
            "into": False,
            "steps": [
                {
                    "type": "step",
                    "name": "b",
                    "returns": "bee",
                    "queue": None,
                    "timeout": None,
                    "retry": default_retry,
                    "compensate": False,
                }
            ],
        },
    ]


# -- registry -----------------------------------------------------------------------------------


def build(retry: dict[str, Any] | None = None) -> list[Any]:
    return [step("a", first, retry=retry), parallel(step("b", second), step("c", third), name="fan")]


def test_registering_an_identical_definition_again_is_allowed(define: Definer) -> None:
    name = define.name()
    original = workflow(name, build())
    again = workflow(name, build())
    assert again == original
    assert get_workflow(name) is again


@pytest.mark.parametrize(
    "changed",
    [
        [step("a", first)],
        build(retry={"max_attempts": 2}),
        [step("a", second), parallel(step("b", second), step("c", third), name="fan")],
        [step("a", first), parallel(step("b", second), step("c", third), name="fan", on_error="complete_all")],
        [step("a", first), parallel(step("b", second), step("c", third, returns="cee"), name="fan")],
    ],
    ids=["fewer_steps", "other_retry", "other_fn", "other_on_error", "other_returns"],
)
def test_a_different_definition_under_a_taken_name_is_rejected(define: Definer, changed: list[Any]) -> None:
    name = define.name()
    original = workflow(name, build())
    with pytest.raises(WorkflowDefinitionError) as excinfo:
        workflow(name, changed)
    assert str(excinfo.value) == (
        f"Workflow {name!r} is already registered with a different definition; "
        "pick another name or unregister the old one first."
    )
    assert get_workflow(name) is original


def test_unregistering_frees_the_name(define: Definer) -> None:
    name = define.name()
    workflow(name, build())
    unregister(name)
    replacement = workflow(name, [step("other", third)])
    assert get_workflow(name) is replacement


def test_get_workflow_of_an_unknown_name_raises_workflow_not_found() -> None:
    with pytest.raises(WorkflowNotFound) as excinfo:
        get_workflow("no_such_workflow")
    assert isinstance(excinfo.value, LookupError)
    assert str(excinfo.value) == "No workflow named 'no_such_workflow' is registered."


def test_start_workflow_of_an_unknown_name_raises_workflow_not_found() -> None:
    # Raised before touching the database, so no database access is needed.
    with pytest.raises(WorkflowNotFound) as excinfo:
        start_workflow("no_such_workflow", {})
    assert str(excinfo.value) == "No workflow named 'no_such_workflow' is registered."
