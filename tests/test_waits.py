"""Durable waits on the embedded queue: sleeps, events (buffered or not), inputs, timeouts, branches."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from durable_django import (
    InvalidInput,
    RunStateError,
    cancel_run,
    ok,
    parallel,
    provide_input,
    retry_run,
    send_event,
    sleep,
    sleep_until,
    step,
    wait_for_all,
    wait_for_any,
    wait_for_event,
    wait_for_input,
)
from durable_django.models import Event, StepResult, Wait, WorkflowRun
from durable_django.testing import EmbeddedQueue, make_due
from tests.engine_support import Definer, attempts

runs = pytest.mark.django_db(transaction=True)


def calls_to(log: list[str], name: str, data: dict[str, Any] | None = None) -> Any:
    def fn(ctx: dict[str, Any]) -> Any:
        log.append(name)
        return ok(data or {})

    return fn


def returning(value: Any) -> Any:
    return lambda ctx: value


def seen(log: list[dict[str, Any]]) -> Any:
    def fn(ctx: dict[str, Any]) -> Any:
        log.append(dict(ctx))
        return ok({"after": True})

    return fn


def drive(q: EmbeddedQueue, run: WorkflowRun) -> WorkflowRun:
    q.run_until_idle(timeout=20)
    run.refresh_from_db()
    return run


# -- sleeping ---------------------------------------------------------------------------------------


@runs
def test_a_sleep_completes_its_step_and_the_run_waits_until_it_is_due(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[str] = []
    wf = define(
        [
            step("nap", lambda ctx: (log.append("nap"), sleep(3600, data={"slept": True}))[1]),
            step("after", calls_to(log, "after", {"after": True})),
        ]
    )
    run = drive(embedded, wf.start({"n": 1}))
    assert (run.status, run.current_step, run.context) == ("waiting", "nap", {"n": 1, "slept": True})
    assert attempts(run) == [("nap", 1, "completed")]
    wait = run.waits.get()
    assert (wait.kind, wait.name, wait.status) == ("sleep", "nap", "waiting")
    assert wait.due_at is not None and 3590 < (wait.due_at - wait.created_at).total_seconds() <= 3600
    make_due(wait)
    embedded.run_due()
    run.refresh_from_db()
    wait.refresh_from_db()
    assert (run.status, log, wait.status) == ("completed", ["nap", "after"], "resolved")
    assert run.context == {"n": 1, "slept": True, "after": True}


@runs
def test_a_sleep_into_the_past_goes_on_at_once_in_the_same_job(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[str] = []
    past = timezone.now() - dt.timedelta(days=1)
    wf = define([step("nap", returning(sleep_until(past))), step("after", calls_to(log, "after"))])
    run = wf.start()
    embedded.run_due()
    run.refresh_from_db()
    assert (run.status, log) == ("completed", ["after"])
    assert run.waits.get().status == "resolved"


@runs
def test_a_short_sleep_ends_by_its_scheduled_wake_up_job(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("nap", returning(sleep(dt.timedelta(seconds=0.3)))), step("after", returning(ok({"x": 1})))])
    run = wf.start()
    embedded.run_until_idle(timeout=10, include_waits=True)
    run.refresh_from_db()
    assert (run.status, run.context) == ("completed", {"x": 1})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (sleep_until(dt.datetime(2030, 1, 1)), "aware datetime"),  # naive on purpose
        (sleep("soon"), "sleep() must be a number of seconds"),
        (wait_for_event(""), "the event's name must be a non-empty string"),
        (wait_for_any([]), "non-empty list of event names"),
        (wait_for_input("ok", kind="vote"), "kind must be one of approval, choice, text, form"),
        (wait_for_input("pick", kind="choice"), "a choice input needs choices"),
        (wait_for_input("f", kind="form", fields={"a": {"type": "money"}}), "has type 'money'"),
        (wait_for_event("e", timeout=-1), "timeout must be more than 0 seconds"),
        (wait_for_event("e", data=[1]), "data must be a dict"),  # type: ignore[arg-type]
    ],
)
@runs
def test_a_malformed_wait_fails_its_step_with_invalid_step_return(
    embedded: EmbeddedQueue, define: Definer, value: Any, message: str
) -> None:
    wf = define([step("first", returning(ok({"kept": 1}))), step("bad", returning(value))])
    run = drive(embedded, wf.start())
    assert run.status == "failed"
    assert run.error["step"] == "bad"
    assert run.error["reason"]["type"] == "invalid_step_return"
    assert message in run.error["reason"]["message"]
    assert run.context == {"kept": 1}
    assert attempts(run) == [("first", 1, "completed"), ("bad", 1, "failed")]
    assert not Wait.objects.filter(run=run).exists()


# -- events -----------------------------------------------------------------------------------------


@runs
def test_an_event_sent_to_a_waiting_run_is_delivered_and_lands_in_the_context(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[dict[str, Any]] = []
    wf = define([step("pay", returning(wait_for_event("paid", data={"asked": True}))), step("after", seen(log))])
    run = drive(embedded, wf.start())
    assert run.status == "waiting"
    assert send_event(run.pk, "paid", {"amount": 12}) == "delivered"
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log == [{"asked": True, "paid": {"amount": 12}}]
    wait = run.waits.get()
    assert (wait.status, wait.payload) == ("resolved", {"amount": 12})
    assert not Event.objects.filter(run=run).exists()


@runs
def test_an_event_sent_before_the_run_waits_is_buffered_and_taken_by_the_wait(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[dict[str, Any]] = []
    wf = define([step("pay", returning(wait_for_event("paid", returns="payment"))), step("after", seen(log))])
    run = wf.start()
    assert send_event(run.pk, "paid", "early") == "buffered"
    assert send_event(run.pk, "paid", "second") == "buffered"
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log == [{"payment": "early"}]
    # Each event is taken by one wait: the second stays buffered.
    assert list(Event.objects.filter(run=run).values_list("payload", "consumed_by_id")) == [
        ("early", run.waits.get().pk),
        ("second", None),
    ]


@runs
def test_wait_for_any_takes_the_first_event_and_names_it(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[dict[str, Any]] = []
    wf = define([step("w", returning(wait_for_any(["ok", "ko"]))), step("after", seen(log))])
    run = drive(embedded, wf.start())
    assert send_event(run.pk, "ko", {"why": "card"}) == "delivered"
    assert send_event(run.pk, "ok", 1) == "buffered"
    run = drive(embedded, run)
    assert log == [{"__event__": {"event": "ko", "payload": {"why": "card"}}}]


@runs
def test_wait_for_all_waits_for_every_event_in_any_order(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[dict[str, Any]] = []
    wf = define([step("w", returning(wait_for_all(["a", "b", "c"], returns="got"))), step("after", seen(log))])
    run = wf.start()
    assert send_event(run.pk, "b", 2) == "buffered"
    run = drive(embedded, run)
    assert run.status == "waiting"
    assert send_event(run.pk, "c", 3) == "delivered"
    run.refresh_from_db()
    assert run.status == "waiting"
    assert run.waits.get().payload == {"b": 2, "c": 3}
    assert send_event(run.pk, "a", 1) == "delivered"
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log == [{"got": {"b": 2, "c": 3, "a": 1}}]


@runs
def test_send_event_refuses_finished_and_unknown_runs_and_unstorable_payloads(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("only", returning(ok()))])
    run = drive(embedded, wf.start())
    with pytest.raises(RunStateError, match="is completed"):
        send_event(run.pk, "late")
    with pytest.raises(WorkflowRun.DoesNotExist):
        send_event("00000000-0000-0000-0000-000000000000", "x")
    with pytest.raises(WorkflowRun.DoesNotExist):
        send_event("not-a-uuid", "x")
    waiting = drive(embedded, define([step("w", returning(wait_for_event("x")))]).start())
    with pytest.raises(InvalidInput, match="not JSON-serializable"):
        send_event(waiting.pk, "x", object())
    with pytest.raises(InvalidInput, match="NUL character"):
        send_event(waiting.pk, "x", {"note": "a\x00b"})
    with pytest.raises(InvalidInput, match="of text"):
        send_event(waiting.pk, "x\x00")
    assert waiting.waits.get().status == "waiting"


# -- timeouts ---------------------------------------------------------------------------------------


@runs
def test_a_timeout_without_timeout_value_fails_the_run_with_wait_timeout(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[str] = []
    wf = define(
        [step("w", returning(wait_for_event("paid", timeout=60, data={"a": 1}))), step("after", calls_to(log, "after"))]
    )
    run = drive(embedded, wf.start())
    make_due(run.waits.get())
    embedded.run_due()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == {
        "step": "w",
        "reason": {"type": "wait_timeout", "wait": "paid", "message": "the wait for 'paid' timed out"},
    }
    assert run.context == {"a": 1}
    assert log == []
    assert run.waits.get().status == "timed_out"


@runs
def test_a_timeout_with_a_timeout_value_goes_on_with_that_value(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[dict[str, Any]] = []
    wf = define(
        [step("w", returning(wait_for_event("paid", timeout=60, timeout_value=None))), step("after", seen(log))]
    )
    run = drive(embedded, wf.start())
    make_due(run.waits.get())
    embedded.run_due()
    run.refresh_from_db()
    assert run.status == "completed"
    assert log == [{"paid": None}]


@runs
def test_retrying_a_run_failed_by_a_timeout_waits_again_with_a_fresh_timeout(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[str] = []
    wf = define(
        [
            step("w", lambda ctx: (calls.append("w"), wait_for_event("paid", timeout=600))[1]),
            step("after", calls_to(calls, "after")),
        ]
    )
    run = drive(embedded, wf.start())
    make_due(run.waits.get())
    embedded.run_due()
    run.refresh_from_db()
    assert run.status == "failed"
    run = retry_run(run)
    assert run.status == "waiting"
    first, second = run.waits.order_by("id")
    assert (first.status, second.status) == ("timed_out", "waiting")
    assert second.due_at is not None and second.due_at > first.due_at
    assert 590 < (second.due_at - timezone.now()).total_seconds() <= 600
    assert send_event(run.pk, "paid", 5) == "delivered"
    run = drive(embedded, run)
    # The step that returned the wait ran once: it is not executed again by the retry.
    assert (run.status, calls, run.context) == ("completed", ["w", "after"], {"paid": 5})
    assert run.error_history[0]["error"]["reason"]["type"] == "wait_timeout"


# -- inputs -----------------------------------------------------------------------------------------


@pytest.fixture
def manager(db: Any) -> Any:
    return get_user_model().objects.create_user("manager")


@runs
def test_an_approval_answered_lands_in_the_context_with_who_answered(
    embedded: EmbeddedQueue, define: Definer, manager: Any
) -> None:
    log: list[dict[str, Any]] = []
    wf = define([step("ask", returning(wait_for_input("approval", prompt="Pay 12 EUR?"))), step("after", seen(log))])
    run = drive(embedded, wf.start())
    wait = run.waits.get()
    assert (wait.kind, wait.input_kind, wait.prompt, wait.name) == ("input", "approval", "Pay 12 EUR?", "approval")
    answered = provide_input(run.pk, "approval", {"approved": True, "comment": "fine"}, user=manager)
    assert answered.status == "running"
    run = drive(embedded, run)
    assert log == [{"approval": {"approved": True, "comment": "fine", "by": "manager"}}]
    wait.refresh_from_db()
    assert (wait.status, wait.resolved_by, wait.payload["by"]) == ("resolved", manager, "manager")


@runs
def test_a_form_input_is_validated_field_by_field_and_nothing_changes_on_a_bad_answer(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[dict[str, Any]] = []
    fields = {"amount": {"type": "integer", "required": True}, "note": {"type": "string", "required": False}}
    wf = define(
        [step("ask", returning(wait_for_input("director", kind="form", fields=fields))), step("after", seen(log))]
    )
    run = drive(embedded, wf.start())
    with pytest.raises(InvalidInput) as bad:
        provide_input(run.pk, "director", {"amount": "a lot"})
    assert (bad.value.field, str(bad.value)) == ("amount", "amount must be a whole number, got 'a lot'.")
    with pytest.raises(InvalidInput) as missing:
        provide_input(run.pk, "director", {"note": "x"})
    assert missing.value.field == "amount"
    run.refresh_from_db()
    assert (run.status, run.waits.get().status) == ("waiting", "waiting")
    provide_input(run.pk, "director", {"amount": "250"})
    drive(embedded, run)
    assert log == [{"director": {"amount": 250, "note": None, "by": ""}}]


@runs
def test_a_choice_input_takes_one_of_its_choices_only(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("ask", returning(wait_for_input("size", kind="choice", choices=["S", "M"])))])
    run = drive(embedded, wf.start())
    with pytest.raises(InvalidInput) as bad:
        provide_input(run.pk, "size", {"choice": "XL"})
    assert bad.value.field == "choice"
    provide_input(run.pk, "size", {"choice": "M"})
    run = drive(embedded, run)
    assert (run.status, run.context) == ("completed", {"size": {"choice": "M", "by": ""}})


@runs
def test_an_input_is_not_buffered_and_cannot_be_answered_twice(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("ask", returning(wait_for_input("note", kind="text")))])
    run = wf.start()
    with pytest.raises(RunStateError, match="does not wait for the input 'note'"):
        provide_input(run.pk, "note", {"text": "early"})
    run = drive(embedded, run)
    with pytest.raises(InvalidInput) as nul:
        provide_input(run.pk, "note", {"text": "a\x00b"})
    assert nul.value.field == "text"
    provide_input(run.pk, "note", {"text": "hello"})
    with pytest.raises(RunStateError, match="does not wait for the input 'note'"):
        provide_input(run.pk, "note", {"text": "again"})
    run = drive(embedded, run)
    assert run.context == {"note": {"text": "hello", "by": ""}}


# -- cancel -----------------------------------------------------------------------------------------


@runs
def test_cancelling_a_waiting_run_cancels_its_waits(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("w", returning(wait_for_event("x", timeout=600))), step("after", returning(ok()))])
    run = drive(embedded, wf.start())
    cancel_run(run)
    run.refresh_from_db()
    assert (run.status, run.waits.get().status) == ("cancelled", "cancelled")
    with pytest.raises(RunStateError):
        send_event(run.pk, "x")
    # The wake-up job was withdrawn: nothing is left scheduled.
    assert embedded.next_scheduled_in() is None


# -- waits in branches ------------------------------------------------------------------------------


@runs
def test_a_branch_that_waits_keeps_its_block_open_and_the_run_waits_once_nothing_else_runs(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    log: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(
                step("quick", returning(ok({"q": 1}))),
                step("packed", returning(wait_for_event("packed", data={"box": 7}))),
                name="fulfil",
            ),
            step("after", seen(log)),
        ]
    )
    run = drive(embedded, wf.start())
    assert run.status == "waiting"
    branch = StepResult.objects.get(run=run, step="packed")
    assert (branch.status, branch.output) == ("waiting", {"box": 7})
    group = run.groups.get()
    assert (group.status, group.pending_count, group.waiting_count) == ("running", 1, 1)
    assert send_event(run.pk, "packed", {"weight": 3}) == "delivered"
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log[0]["__results__"] == {
        "quick": ("ok", {"q": 1}),
        "packed": ("ok", {"box": 7, "packed": {"weight": 3}}),
    }


@runs
def test_a_fail_fast_block_cancels_branches_that_still_wait(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            parallel(
                step("nap", returning(wait_for_event("never", timeout=600))),
                step("ask", returning(wait_for_input("ok?"))),
                step("short", returning(wait_for_event("soon", timeout=60))),
                name="fan",
            ),
        ]
    )
    run = drive(embedded, wf.start())
    assert run.status == "waiting"
    make_due(Wait.objects.get(run=run, name="soon"))
    embedded.run_due()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["reason"]["type"] == "wait_timeout"
    assert (run.error["step"], run.error["parallel"]) == ("short", "fan")
    assert dict(run.waits.values_list("name", "status")) == {
        "never": "cancelled",
        "ok?": "cancelled",
        "soon": "timed_out",
    }
    assert sorted(attempts(run)) == [("ask", 1, "cancelled"), ("nap", 1, "cancelled"), ("short", 1, "failed")]
    group = run.groups.get()
    assert (group.status, group.pending_count, group.waiting_count) == ("failed", 0, 0)


@runs
def test_complete_all_collects_a_branch_timeout_as_its_error(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[dict[str, Any]] = []
    wf = define(
        [
            parallel(
                step("a", returning(wait_for_event("a", timeout=60))),
                step("b", returning(wait_for_event("b", timeout=60, timeout_value="none"))),
                step("c", returning(ok({"c": 1}))),
                name="all",
                on_error="complete_all",
            ),
            step("after", seen(log)),
        ]
    )
    run = drive(embedded, wf.start())
    for wait in run.waits.all():
        make_due(wait)
    embedded.run_due()
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log[0]["__results__"] == {
        "a": ("error", {"type": "wait_timeout", "wait": "a", "message": "the wait for 'a' timed out"}),
        "b": ("ok", {"b": "none"}),
        "c": ("ok", {"c": 1}),
    }


@runs
def test_retrying_a_block_failed_by_a_branch_timeout_makes_that_branch_wait_again(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[str] = []

    def waits(ctx: dict[str, Any]) -> Any:
        calls.append("w")
        return wait_for_event("go", timeout=60, data={"d": 1})

    wf = define([parallel(step("w", waits), step("c", returning(ok())), name="fan"), step("end", returning(ok()))])
    run = drive(embedded, wf.start())
    make_due(run.waits.get())
    embedded.run_due()
    run.refresh_from_db()
    assert run.status == "failed"
    run = retry_run(run)
    assert run.status == "waiting"
    assert [w.status for w in run.waits.order_by("id")] == ["timed_out", "waiting"]
    send_event(run.pk, "go", "now")
    run = drive(embedded, run)
    assert (run.status, calls) == ("completed", ["w"])
    assert StepResult.objects.filter(run=run, step="w").order_by("-id").first().output == {"d": 1, "go": "now"}


@runs
def test_a_branch_event_sent_before_the_branch_waits_is_taken_at_once(embedded: EmbeddedQueue, define: Definer) -> None:
    log: list[dict[str, Any]] = []
    wf = define([parallel(step("w", returning(wait_for_event("go"))), name="fan"), step("after", seen(log))])
    run = wf.start()
    assert send_event(run.pk, "go", 1) == "buffered"
    run = drive(embedded, run)
    assert run.status == "completed"
    assert log[0]["__results__"] == {"w": ("ok", {"go": 1})}


# -- children ---------------------------------------------------------------------------------------


@runs
def test_a_child_workflow_cannot_wait_and_says_so(embedded: EmbeddedQueue, define: Definer) -> None:
    from durable_django import call_workflow

    child = define([step("w", returning(sleep(60)))])
    parent = define([step("call", lambda ctx: call_workflow(child, {}))])
    run = drive(embedded, parent.start())
    assert run.status == "failed"
    reason = run.error["reason"]["reason"]
    assert reason["type"] == "invalid_step_return"
    assert "child workflow" in reason["message"]


@runs
def test_current_run_id_names_the_run_of_the_executing_step(embedded: EmbeddedQueue, define: Definer) -> None:
    from durable_django import NotInStepError, current_run_id

    wf = define([step("who", lambda ctx: ok({"me": current_run_id()}))])
    run = drive(embedded, wf.start())
    assert run.context == {"me": str(run.pk)}
    with pytest.raises(NotInStepError, match="current_run_id"):
        current_run_id()
