"""What a step may return, and what the engine makes of it: merge, goto, failure, stored errors."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest

from durable_django import error, goto, ok, parallel, step
from durable_django.models import StepResult
from durable_django.results import EXPECTED, Outcome, normalize
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, attempts, finish, recorder

# Steps run in RQ jobs that commit their own transactions, and jobs are only enqueued on commit:
# these tests need real commits.
runs = pytest.mark.django_db(transaction=True)


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ok({"a": 1}), Outcome("ok", data={"a": 1})),
        (ok(), Outcome("ok", data={})),
        ({"a": 1}, Outcome("ok", data={"a": 1})),
        ({}, Outcome("ok", data={})),
        (("ok", {"a": 1}), Outcome("ok", data={"a": 1})),
        (error("not_found"), Outcome("error", reason="not_found")),
        (("error", {"code": 7}), Outcome("error", reason={"code": 7})),
        (("error", None), Outcome("error", reason=None)),
        (goto("b", {"a": 1}), Outcome("goto", data={"a": 1}, target="b")),
        (goto("b"), Outcome("goto", data={}, target="b")),
        (("goto", "b", {"a": 1}), Outcome("goto", data={"a": 1}, target="b")),
    ],
)
def test_every_accepted_form_is_normalised(value: Any, expected: Outcome) -> None:
    assert normalize(value) == expected


def test_helpers_return_plain_tuples() -> None:
    assert ok({"a": 1}) == ("ok", {"a": 1})
    assert error("x") == ("error", "x")
    assert goto("b", {"a": 1}) == ("goto", "b", {"a": 1})
    assert [type(value) for value in (ok(), error("x"), goto("b"))] == [tuple, tuple, tuple]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, f"returned None (NoneType); expected {EXPECTED}"),
        (42, f"returned 42 (int); expected {EXPECTED}"),
        (["ok", {}], f"returned ['ok', {{}}] (list); expected {EXPECTED}"),
        ((), f"returned () (tuple); expected {EXPECTED}"),
        (("ok", 5), "ok() data must be a dict, got 5 (int)"),
        (("ok", {"a": 1}, "extra"), f"returned ('ok', {{'a': 1}}, 'extra') (tuple); expected {EXPECTED}"),
        (("done", {}), f"returned ('done', {{}}) (tuple); expected {EXPECTED}"),
        (("goto", "b"), f"returned ('goto', 'b') (tuple); expected {EXPECTED}"),
        (("goto", "", {}), "goto() target must be a step name, got '' (str)"),
        (("goto", "b", [1]), "goto() data must be a dict, got [1] (list)"),
    ],
)
def test_invalid_forms_are_normalised_to_invalid_step_return(value: Any, message: str) -> None:
    assert normalize(value) == Outcome("invalid", reason={"type": "invalid_step_return", "message": message})


# -- ok -----------------------------------------------------------------------------------------


@runs
@pytest.mark.parametrize(
    "returned",
    [ok({"total": 30}), {"total": 30}, ("ok", {"total": 30})],
    ids=["ok_helper", "plain_dict", "ok_tuple"],
)
def test_ok_forms_merge_their_data_and_continue(embedded: EmbeddedQueue, define: Definer, returned: Any) -> None:
    seen: list[dict[str, Any]] = []
    wf = define([step("price", lambda ctx: returned), step("after", recorder(seen))])
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "completed"
    assert run.context == {"order": 1, "total": 30}
    assert seen == [{"order": 1, "total": 30}]
    assert attempts(run) == [("price", 1, "completed"), ("after", 1, "completed")]
    assert StepResult.objects.get(run=run, step="price").output == {"total": 30}


@runs
def test_merge_is_shallow_and_returned_keys_win(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("update", lambda ctx: ok({"user": {"name": "Grace"}, "plan": "pro"}))])
    run = finish(embedded, wf.start({"user": {"name": "Ada", "email": "ada@example.com"}, "plan": "free", "n": 1}))
    # The nested dict is replaced, not merged: "email" is gone.
    assert run.context == {"user": {"name": "Grace"}, "plan": "pro", "n": 1}


@runs
def test_empty_ok_keeps_the_context(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("noop", lambda ctx: ok()), step("noop_dict", lambda ctx: {})])
    run = finish(embedded, wf.start({"a": 1}))
    assert (run.status, run.context, run.current_step) == ("completed", {"a": 1}, "")


# -- error --------------------------------------------------------------------------------------


@runs
@pytest.mark.parametrize(
    "returned",
    [error({"code": "card_declined"}), ("error", {"code": "card_declined"})],
    ids=["error_helper", "error_tuple"],
)
def test_error_forms_fail_the_run(embedded: EmbeddedQueue, define: Definer, returned: Any) -> None:
    later: list[dict[str, Any]] = []
    wf = define(
        [
            step("prepare", lambda ctx: ok({"ready": True})),
            step("charge", lambda ctx: returned),
            step("ship", recorder(later)),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "failed"
    assert run.error == {"step": "charge", "reason": {"code": "card_declined"}}
    assert run.context == {"order": 1, "ready": True}
    assert run.current_step == "charge"
    assert run.finished_at is not None
    assert later == []
    assert attempts(run) == [("prepare", 1, "completed"), ("charge", 1, "failed")]
    assert StepResult.objects.get(run=run, step="charge").error == {"code": "card_declined"}


@runs
def test_error_reason_that_cannot_be_stored_is_replaced(embedded: EmbeddedQueue, define: Definer) -> None:
    reason = object()
    wf = define([step("charge", lambda ctx: error(reason))])
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    assert run.error == {
        "step": "charge",
        "reason": {
            "type": "unserializable_output",
            "message": "the error reason cannot be stored as JSON: Object of type object is not JSON serializable",
            "repr": repr(reason),
        },
    }


# -- goto ---------------------------------------------------------------------------------------


@runs
@pytest.mark.parametrize(
    "returned",
    [goto("ship", {"skipped": True}), ("goto", "ship", {"skipped": True})],
    ids=["goto_helper", "goto_tuple"],
)
def test_goto_forward_merges_data_and_skips_steps(embedded: EmbeddedQueue, define: Definer, returned: Any) -> None:
    skipped: list[dict[str, Any]] = []
    wf = define(
        [
            step("check", lambda ctx: returned),
            step("backorder", recorder(skipped)),
            step("ship", lambda ctx: ok({"shipped": ctx["skipped"]})),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "completed"
    assert run.context == {"order": 1, "skipped": True, "shipped": True}
    assert skipped == []
    assert attempts(run) == [("check", 1, "completed"), ("ship", 1, "completed")]
    assert StepResult.objects.get(run=run, step="check").output == {"skipped": True}


@runs
def test_goto_backward_loops_until_a_counter_stops_it(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            step("init", lambda ctx: ok({"count": 0})),
            step("increment", lambda ctx: ok({"count": ctx["count"] + 1})),
            step("check", lambda ctx: goto("increment", {"looped": True}) if ctx["count"] < 3 else ok({"done": True})),
            step("report", lambda ctx: ok({"final": ctx["count"]})),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.context == {"count": 3, "looped": True, "done": True, "final": 3}
    # Every visit of a step is its own first attempt.
    assert attempts(run) == [
        ("init", 1, "completed"),
        ("increment", 1, "completed"),
        ("check", 1, "completed"),
        ("increment", 1, "completed"),
        ("check", 1, "completed"),
        ("increment", 1, "completed"),
        ("check", 1, "completed"),
        ("report", 1, "completed"),
    ]


@runs
def test_goto_to_a_parallel_block_runs_the_block(embedded: EmbeddedQueue, define: Definer) -> None:
    skipped: list[dict[str, Any]] = []
    wf = define(
        [
            step("start", lambda ctx: goto("fan", {"jumped": True})),
            step("skipped", recorder(skipped)),
            parallel(step("a", lambda ctx: ok({"saw_jump": ctx["jumped"]})), name="fan"),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.context == {"jumped": True, "__results__": {"a": ["ok", {"saw_jump": True}]}}
    assert skipped == []


@runs
@pytest.mark.parametrize("target", ["nowhere", "branch"], ids=["unknown", "branch_name"])
def test_goto_to_an_unknown_target_fails_the_run(embedded: EmbeddedQueue, define: Definer, target: str) -> None:
    wf = define(
        [
            step("prepare", lambda ctx: ok({"ready": True})),
            step("jump", lambda ctx: goto(target, {"lost": True})),
            parallel(step("branch", lambda ctx: ok())),
        ]
    )
    run = finish(embedded, wf.start({"order": 1}))
    reason = {
        "type": "goto_error",
        "message": f"'jump' jumped to {target!r}, which is not a top-level step or parallel block of this workflow",
        "target": target,
    }
    assert run.status == "failed"
    assert run.error == {"step": "jump", "reason": reason}
    # The goto's data is not merged.
    assert run.context == {"order": 1, "ready": True}
    assert attempts(run) == [("prepare", 1, "completed"), ("jump", 1, "failed")]
    assert StepResult.objects.get(run=run, step="jump").error == reason


# -- exceptions and invalid returns ----------------------------------------------------------------


def explode(ctx: dict[str, Any]) -> Any:
    raise ValueError(f"bad order {ctx['order']}")


@runs
def test_exception_is_stored_with_type_message_and_traceback(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("prepare", lambda ctx: ok({"ready": True})), step("validate", explode)])
    run = finish(embedded, wf.start({"order": 7}))
    assert run.status == "failed"
    assert run.error["step"] == "validate"
    reason = run.error["reason"]
    assert sorted(reason) == ["message", "traceback", "type"]
    assert (reason["type"], reason["message"]) == ("ValueError", "bad order 7")
    assert reason["traceback"].startswith("Traceback (most recent call last):\n")
    assert "in explode\n" in reason["traceback"]
    assert reason["traceback"].endswith("ValueError: bad order 7\n")
    assert run.context == {"order": 7, "ready": True}
    assert StepResult.objects.get(run=run, step="validate").error == reason


def explode_with_unstorable_text(ctx: dict[str, Any]) -> Any:
    raise ValueError("bad byte \x00 and half a pair \ud800")


@runs
def test_an_exception_message_the_database_cannot_store_is_stored_with_escapes(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("validate", explode_with_unstorable_text)])
    run = finish(embedded, wf.start({"order": 7}))
    reason = run.error["reason"]
    assert (reason["type"], reason["message"]) == ("ValueError", "bad byte \\x00 and half a pair \\ud800")
    assert reason["traceback"].endswith("ValueError: bad byte \\x00 and half a pair \\ud800\n")
    assert StepResult.objects.get(run=run, step="validate").error == reason


@runs
@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, f"returned None (NoneType); expected {EXPECTED}"),
        (42, f"returned 42 (int); expected {EXPECTED}"),
        (("ok", 5), "ok() data must be a dict, got 5 (int)"),
        ([{"a": 1}], f"returned [{{'a': 1}}] (list); expected {EXPECTED}"),
    ],
    ids=["none", "int", "ok_non_dict", "list"],
)
def test_invalid_return_fails_the_run_with_the_context_intact(
    embedded: EmbeddedQueue, define: Definer, returned: Any, message: str
) -> None:
    wf = define([step("prepare", lambda ctx: ok({"ready": True})), step("broken", lambda ctx: returned)])
    run = finish(embedded, wf.start({"order": 1}))
    reason = {"type": "invalid_step_return", "message": message}
    assert run.status == "failed"
    assert run.error == {"step": "broken", "reason": reason}
    assert run.context == {"order": 1, "ready": True}
    assert attempts(run) == [("prepare", 1, "completed"), ("broken", 1, "failed")]
    assert StepResult.objects.get(run=run, step="broken").output is None


@runs
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"value": object()}, "Object of type object is not JSON serializable"),
        ({"value": {1, 2}}, "Object of type set is not JSON serializable"),
        ({"label": "a\x00b"}, "value at ['label'] contains a NUL character (\\u0000), which the database cannot store"),
        (
            {"rows": [{"n": "\udfff"}]},
            "value at ['rows'][0]['n'] contains a lone surrogate (such as \\ud800), which is not valid Unicode text",
        ),
    ],
    ids=["object", "set", "nul", "lone-surrogate"],
)
def test_unserializable_output_fails_the_step_with_a_stored_error_and_the_context_intact(
    embedded: EmbeddedQueue, define: Definer, value: dict[str, Any], problem: str
) -> None:
    wf = define([step("prepare", lambda ctx: ok({"ready": True})), step("load", lambda ctx: ok(value))])
    run = finish(embedded, wf.start({"order": 1}))
    assert run.status == "failed"
    assert run.error == {
        "step": "load",
        "reason": {
            "type": "unserializable_output",
            "message": f"step 'load' returned data that cannot be stored as JSON: {problem}",
        },
    }
    assert run.context == {"order": 1, "ready": True}
    assert attempts(run) == [("prepare", 1, "completed"), ("load", 1, "failed")]
    assert StepResult.objects.get(run=run, step="load").output is None


@runs
def test_nan_output_is_unserializable(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("measure", lambda ctx: ok({"ratio": float("nan")}))])
    run = finish(embedded, wf.start({"order": 1}))
    assert (run.status, run.error["reason"]["type"], run.context) == ("failed", "unserializable_output", {"order": 1})


@runs
def test_django_json_types_are_stored_and_read_back_as_strings(embedded: EmbeddedQueue, define: Definer) -> None:
    seen: list[dict[str, Any]] = []
    when = datetime.datetime(2024, 5, 17, 9, 30, 15, tzinfo=datetime.UTC)
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    wf = define(
        [
            step(
                "load",
                lambda ctx: ok(
                    {
                        "when": when,
                        "day": datetime.date(2024, 5, 17),
                        "amount": decimal.Decimal("12.50"),
                        "token": token,
                    }
                ),
            ),
            step("after", recorder(seen)),
        ]
    )
    run = finish(embedded, wf.start())
    stored = {"when": "2024-05-17T09:30:15Z", "day": "2024-05-17", "amount": "12.50", "token": str(token)}
    assert run.status == "completed"
    assert run.context == stored
    assert seen == [stored]
    assert StepResult.objects.get(run=run, step="load").output == stored
