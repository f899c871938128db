"""Parallel blocks: __results__, fail_fast, complete_all, into, and the rows a block leaves behind."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import error, goto, ok, parallel, step
from durable_django.models import ParallelGroup, StepResult
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, attempts, finish, recorder

runs = pytest.mark.django_db(transaction=True)


def branch_rows(run: Any) -> dict[str, tuple[str, int | None]]:
    """``{branch: (status, group id)}`` of a run's branch rows."""
    return {row.step: (row.status, row.group_id) for row in StepResult.objects.filter(run=run, group__isnull=False)}


# -- without into: __results__ ----------------------------------------------------------------------


@runs
def test_results_are_keyed_by_returns_or_name_and_the_context_is_left_alone(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    seen: list[dict[str, Any]] = []
    wf = define(
        [
            step("prepare", lambda ctx: ok({"user_id": 7})),
            parallel(
                step("send_welcome_email", lambda ctx: ok({"email_sent": ctx["user_id"]})),
                # A branch's data never reaches the context directly, even under a key it already has.
                step("provision_workspace", lambda ctx: ok({"user_id": 99, "workspace_id": 3}), returns="workspace"),
                step("setup_billing", lambda ctx: {"billing_ready": True}),
                name="onboard",
            ),
            step("complete", recorder(seen, {"onboarded": True})),
        ]
    )
    run = finish(embedded, wf.start({"email": "ada@example.com"}))
    stored_results = {
        "send_welcome_email": ["ok", {"email_sent": 7}],
        "workspace": ["ok", {"user_id": 99, "workspace_id": 3}],
        "setup_billing": ["ok", {"billing_ready": True}],
    }
    assert run.status == "completed"
    assert run.context == {
        "email": "ada@example.com",
        "user_id": 7,
        "__results__": stored_results,
        "onboarded": True,
    }
    # Step code gets tuples.
    assert seen == [
        {
            "email": "ada@example.com",
            "user_id": 7,
            "__results__": {
                "send_welcome_email": ("ok", {"email_sent": 7}),
                "workspace": ("ok", {"user_id": 99, "workspace_id": 3}),
                "setup_billing": ("ok", {"billing_ready": True}),
            },
        }
    ]
    assert [type(value) for value in seen[0]["__results__"].values()] == [tuple, tuple, tuple]
    group = ParallelGroup.objects.get(run=run)
    assert (group.name, group.on_error, group.status, group.error) == ("onboard", "fail_fast", "completed", None)
    assert (group.branch_count, group.pending_count, group.failed_count) == (3, 0, 0)
    assert group.results == stored_results
    assert group.finished_at is not None
    assert branch_rows(run) == {
        "send_welcome_email": ("completed", group.pk),
        "provision_workspace": ("completed", group.pk),
        "setup_billing": ("completed", group.pk),
    }
    assert StepResult.objects.filter(run=run, group__isnull=True).count() == 2
    assert StepResult.objects.get(run=run, step="provision_workspace").output == {"user_id": 99, "workspace_id": 3}


@runs
def test_results_stay_until_a_later_block_replaces_them(embedded: EmbeddedQueue, define: Definer) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    third: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: ok({"b": 2}))),
            step("first", recorder(first, {"x": 1})),
            step("second", recorder(second)),
            parallel(step("c", lambda ctx: ok({"c": 3}))),
            step("third", recorder(third)),
        ]
    )
    run = finish(embedded, wf.start())
    block_one = {"a": ("ok", {"a": 1}), "b": ("ok", {"b": 2})}
    assert first == [{"__results__": block_one}]
    assert second == [{"__results__": block_one, "x": 1}]
    assert third == [{"__results__": {"c": ("ok", {"c": 3})}, "x": 1}]
    assert run.context == {"__results__": {"c": ["ok", {"c": 3}]}, "x": 1}
    assert list(ParallelGroup.objects.filter(run=run).values_list("name", "status")) == [
        ("parallel_1", "completed"),
        ("parallel_2", "completed"),
    ]


@runs
def test_goto_back_to_a_block_runs_it_again_with_a_new_group(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            step("init", lambda ctx: ok({"round": 0})),
            parallel(step("fetch", lambda ctx: ok({"round": ctx["round"]})), name="fan"),
            step("check", lambda ctx: goto("fan", {"round": ctx["round"] + 1}) if ctx["round"] < 2 else ok()),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.context == {"round": 2, "__results__": {"fetch": ["ok", {"round": 2}]}}
    groups = ParallelGroup.objects.filter(run=run).order_by("id")
    assert [(group.name, group.status, group.results) for group in groups] == [
        ("fan", "completed", {"fetch": ["ok", {"round": 0}]}),
        ("fan", "completed", {"fetch": ["ok", {"round": 1}]}),
        ("fan", "completed", {"fetch": ["ok", {"round": 2}]}),
    ]
    assert [row.group_id for row in StepResult.objects.filter(run=run, step="fetch").order_by("id")] == [
        group.pk for group in groups
    ]


@runs
def test_block_as_last_node_completes_the_run(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: ok({"b": 2})))])
    run = finish(embedded, wf.start({"n": 1}))
    assert (run.status, run.current_step) == ("completed", "")
    assert run.context == {"n": 1, "__results__": {"a": ["ok", {"a": 1}], "b": ["ok", {"b": 2}]}}


@runs
def test_branches_get_the_context_before_the_block(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[dict[str, Any]] = []
    wf = define(
        [
            step("prepare", lambda ctx: ok({"user_id": 7})),
            parallel(step("a", recorder(seen)), step("b", recorder(seen))),
        ]
    )
    finish(embedded, wf.start({"n": 1}))
    assert seen == [{"n": 1, "user_id": 7}, {"n": 1, "user_id": 7}]


@runs
def test_goto_from_a_branch_fails_that_branch(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            step("prepare", lambda ctx: ok()),
            parallel(
                step("jumper", lambda ctx: goto("prepare", {"x": 1})),
                step("fine", lambda ctx: ok({"fine": True})),
                on_error="complete_all",
                name="fan",
            ),
        ]
    )
    run = finish(embedded, wf.start())
    reason = {
        "type": "goto_error",
        "message": "step 'jumper' returned goto('prepare') inside a parallel block; "
        "a branch can only return ok or error (use the block's into= callback to jump).",
    }
    assert run.status == "completed"
    assert run.context == {"__results__": {"jumper": ["error", reason], "fine": ["ok", {"fine": True}]}}
    assert attempts(run) == [("prepare", 1, "completed"), ("jumper", 1, "failed"), ("fine", 1, "completed")]


# -- fail_fast ---------------------------------------------------------------------------------------


@runs
def test_fail_fast_fails_run_and_cancels_branches_still_pending(embedded: EmbeddedQueue, define: Definer) -> None:
    shipped: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(
                step("charge", lambda ctx: error("card_declined")),
                # The embedded worker drains "default" before "priority": the failure is joined
                # while this branch's job still waits in the queue.
                step("ship", recorder(shipped), queue="priority"),
                name="checkout",
            ),
            step("after", recorder(after)),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "failed"
    assert run.error == {"step": "charge", "parallel": "checkout", "reason": "card_declined"}
    assert run.current_step == "checkout"
    assert run.context == {"order": 1}
    # The cancelled branch's job was still delivered afterwards, and did nothing.
    assert embedded.pending_jobs() == 0
    assert shipped == []
    assert after == []
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.failed_count, group.results) == ("failed", 1, {"charge": ["error", "card_declined"]})
    assert attempts(run) == [("charge", 1, "failed"), ("ship", 1, "cancelled")]
    ship = StepResult.objects.get(run=run, step="ship")
    assert (ship.group_id, ship.started_at, ship.output, ship.error) == (group.pk, None, None, None)
    assert ship.finished_at is not None


@runs
def test_fail_fast_keeps_results_of_branches_finished_before_the_failure(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [
            parallel(
                step("a", lambda ctx: ok({"a": 1})),
                step("b", lambda ctx: error({"code": 7}), returns="bee"),
                name="fan",
            )
        ]
    )
    run = finish(embedded, wf.start())
    # The error names the branch's step, the results use its key.
    assert run.error == {"step": "b", "parallel": "fan", "reason": {"code": 7}}
    group = ParallelGroup.objects.get(run=run)
    assert group.results == {"a": ["ok", {"a": 1}], "bee": ["error", {"code": 7}]}
    assert (group.status, group.branch_count, group.pending_count, group.failed_count) == ("failed", 2, 0, 1)


@runs
def test_fail_fast_names_the_first_failure(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            parallel(
                step("first_fail", lambda ctx: error("one")),
                step("second_fail", lambda ctx: error("two")),
                name="fan",
            )
        ]
    )
    run = finish(embedded, wf.start())
    assert run.error == {"step": "first_fail", "parallel": "fan", "reason": "one"}


@runs
def test_fail_fast_branch_exception_is_stored(embedded: EmbeddedQueue, define: Definer) -> None:
    def boom(ctx: dict[str, Any]) -> Any:
        raise KeyError("missing")

    wf = define([parallel(step("boom", boom), name="fan")])
    run = finish(embedded, wf.start())
    assert (run.error["step"], run.error["parallel"]) == ("boom", "fan")
    assert (run.error["reason"]["type"], run.error["reason"]["message"]) == ("KeyError", "'missing'")
    assert run.error["reason"]["traceback"].endswith("KeyError: 'missing'\n")


@runs
def test_fail_fast_without_failures_continues(embedded: EmbeddedQueue, define: Definer) -> None:
    after: list[dict[str, Any]] = []
    wf = define(
        [parallel(step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: ok())), step("after", recorder(after))]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert after == [{"__results__": {"a": ("ok", {"a": 1}), "b": ("ok", {})}}]


# -- complete_all ------------------------------------------------------------------------------------


@runs
def test_complete_all_collects_every_result_and_continues(embedded: EmbeddedQueue, define: Definer) -> None:
    shipped: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(
                step("send_sms", lambda ctx: error("no_phone")),
                step("ship", recorder(shipped, {"shipped": True}), queue="priority"),
                step("send_email", lambda ctx: ok({"email_sent": True})),
                on_error="complete_all",
                name="notify",
            ),
            step("after", recorder(after, {"checked": True})),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "completed"
    assert shipped == [{"order": 1}]
    assert after == [
        {
            "order": 1,
            "__results__": {
                "send_sms": ("error", "no_phone"),
                "ship": ("ok", {"shipped": True}),
                "send_email": ("ok", {"email_sent": True}),
            },
        }
    ]
    group = ParallelGroup.objects.get(run=run)
    assert (group.on_error, group.status, group.error) == ("complete_all", "completed", None)
    assert (group.branch_count, group.pending_count, group.failed_count) == (3, 0, 1)
    assert group.results == {
        "send_sms": ["error", "no_phone"],
        "ship": ["ok", {"shipped": True}],
        "send_email": ["ok", {"email_sent": True}],
    }
    assert run.context["checked"] is True


@runs
def test_complete_all_with_every_branch_failing_still_continues(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            parallel(step("a", lambda ctx: error("x")), step("b", lambda ctx: error("y")), on_error="complete_all"),
            step("after", lambda ctx: ok({"all_failed": not any(r[0] == "ok" for r in ctx["__results__"].values())})),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.context == {"__results__": {"a": ["error", "x"], "b": ["error", "y"]}, "all_failed": True}
    assert ParallelGroup.objects.get(run=run).failed_count == 2


# -- into --------------------------------------------------------------------------------------------


@runs
def test_into_is_called_once_with_the_context_before_the_block_and_the_results(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
    after: list[dict[str, Any]] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        calls.append((ctx, results))
        return ok({"order_id": ctx["order_id"], "payment_id": results["payment"][1]["id"]})

    wf = define(
        [
            step("validate", lambda ctx: ok({"order_id": 5})),
            parallel(
                step("check_payment", lambda ctx: ok({"id": 123, "order_id": 0}), returns="payment"),
                # Under the default fail_fast, a block with into still hands every result to into.
                step("delivery", lambda ctx: error("not_found")),
                into=into,
                name="checks",
            ),
            step("fulfill", recorder(after, {"fulfilled": True})),
        ]
    )
    run = finish(embedded, wf.start({"input": 1}))
    assert calls == [
        (
            {"input": 1, "order_id": 5},
            {"payment": ("ok", {"id": 123, "order_id": 0}), "delivery": ("error", "not_found")},
        )
    ]
    assert [type(value) for value in calls[0][1].values()] == [tuple, tuple]
    # ok(...) from into replaces the context: no __results__, and "input" is gone.
    assert after == [{"order_id": 5, "payment_id": 123}]
    assert run.status == "completed"
    assert run.context == {"order_id": 5, "payment_id": 123, "fulfilled": True}
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.error, group.failed_count) == ("completed", None, 1)
    assert group.results == {"payment": ["ok", {"id": 123, "order_id": 0}], "delivery": ["error", "not_found"]}


@runs
def test_into_error_fails_the_run_naming_the_block(embedded: EmbeddedQueue, define: Definer) -> None:
    after: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(
                step("a", lambda ctx: ok({"a": 1})), into=lambda ctx, results: error("Critical failure"), name="checks"
            ),
            step("after", recorder(after)),
        ]
    )
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error == {"step": "checks", "reason": "Critical failure"}
    assert run.context == {"n": 1}
    assert after == []
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.error, group.results) == ("failed", "Critical failure", {"a": ["ok", {"a": 1}]})


@runs
def test_into_goto_jumps_with_the_given_context(embedded: EmbeddedQueue, define: Definer) -> None:
    fulfilled: list[dict[str, Any]] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        if results["check_inventory"] == ("error", "out_of_stock"):
            return goto("handle_backorder", {**ctx, "reason": "out_of_stock"})
        return ok(ctx)

    wf = define(
        [
            parallel(
                step("check_inventory", lambda ctx: error("out_of_stock")),
                step("check_payment", lambda ctx: ok({"authorized": True})),
                into=into,
            ),
            step("fulfill_order", recorder(fulfilled)),
            step("handle_backorder", lambda ctx: ok({"backordered": True})),
        ]
    )
    run = finish(embedded, wf.start({"order_id": 5}))
    assert run.status == "completed"
    assert run.context == {"order_id": 5, "reason": "out_of_stock", "backordered": True}
    assert fulfilled == []
    assert [row[0] for row in attempts(run)] == ["check_inventory", "check_payment", "handle_backorder"]


@runs
def test_into_goto_to_an_unknown_target_fails_the_run(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("a", lambda ctx: ok()), into=lambda ctx, results: goto("nowhere", ctx), name="fan")])
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error == {
        "step": "fan",
        "reason": {
            "type": "goto_error",
            "message": "'fan' jumped to 'nowhere', which is not a top-level step or parallel block of this workflow",
            "target": "nowhere",
        },
    }
    assert run.context == {"n": 1}


def broken_into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
    raise ZeroDivisionError("division by zero")


@runs
def test_into_exception_fails_the_run_with_into_error(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("a", lambda ctx: ok()), into=broken_into, name="fan")])
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error["step"] == "fan"
    reason = run.error["reason"]
    assert sorted(reason) == ["message", "traceback", "type"]
    assert (reason["type"], reason["message"]) == ("into_error", "division by zero")
    assert "in broken_into\n" in reason["traceback"]
    assert reason["traceback"].endswith("ZeroDivisionError: division by zero\n")
    assert run.context == {"n": 1}
    assert ParallelGroup.objects.get(run=run).error == reason


@runs
def test_into_invalid_return_fails_the_run(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("a", lambda ctx: ok()), into=lambda ctx, results: None, name="fan")])
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error["step"] == "fan"
    assert run.error["reason"]["type"] == "invalid_step_return"
    assert run.context == {"n": 1}


@runs
def test_into_unserializable_context_fails_the_run(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("a", lambda ctx: ok()), into=lambda ctx, results: ok({"x": {1}}), name="fan")])
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error == {
        "step": "fan",
        "reason": {
            "type": "unserializable_output",
            "message": "into of 'fan' returned a context that cannot be stored as JSON: "
            "Object of type set is not JSON serializable",
        },
    }
    assert run.context == {"n": 1}
