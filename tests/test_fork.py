"""Forks: a new run of a finished run's workflow, started at one of its top-level steps or blocks."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from durable_django import (
    InvalidInput,
    RunStateError,
    branch,
    error,
    fork_run,
    goto,
    ok,
    parallel,
    step,
    timer_jobs,
    wait_for_event,
)
from durable_django.definition import foreach
from durable_django.exceptions import ContextNotRecorded
from durable_django.models import ParallelGroup, StepResult, Wait, WorkflowRun
from durable_django.testing import EmbeddedQueue, make_due
from tests.engine_support import Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


class Calls:
    """A step recording the contexts it is called with, returning ``data`` (or failing while ``fail``)."""

    def __init__(self, data: dict[str, Any], *, fail: bool = False) -> None:
        self.data, self.fail = data, fail
        self.seen: list[dict[str, Any]] = []

    def __call__(self, ctx: dict[str, Any]) -> Any:
        self.seen.append(dict(ctx))
        return error({"code": "broken"}) if self.fail else ok(self.data)


def three_steps(define: Definer) -> tuple[Any, Calls, Calls, Calls]:
    first, second, third = Calls({"a": 1}), Calls({"b": 2}), Calls({"c": 3})
    wf = define([step("first", first), step("second", second), step("third", third)])
    return wf, first, second, third


@runs
def test_a_fork_from_a_sequential_step_starts_there_with_the_context_before_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf, first, second, third = three_steps(define)
    original = finish(embedded, wf.start({"order": 7}))
    assert original.status == "completed"
    before = (original.context, original.version, original.finished_at, attempts(original))

    fork = fork_run(str(original.pk), from_step="second")
    assert (fork.status, fork.current_step, fork.context, fork.input) == (
        "pending",
        "second",
        {"order": 7, "a": 1},
        {"order": 7},
    )
    assert (fork.forked_from_id, fork.forked_from_step) == (original.pk, "second")
    fork = finish(embedded, fork)

    assert fork.status == "completed"
    assert fork.context == {"order": 7, "a": 1, "b": 2, "c": 3}
    assert attempts(fork) == [("second", 1, "completed"), ("third", 1, "completed")]
    assert len(first.seen) == 1
    assert second.seen == [{"order": 7, "a": 1}, {"order": 7, "a": 1}]
    assert third.seen == [{"order": 7, "a": 1, "b": 2}] * 2
    original.refresh_from_db()
    assert (original.context, original.version, original.finished_at, attempts(original)) == before
    assert list(original.forks.values_list("pk", flat=True)) == [fork.pk]


@runs
def test_a_fork_from_the_first_step_starts_with_the_input(embedded: EmbeddedQueue, define: Definer) -> None:
    wf, first, _, _ = three_steps(define)
    original = finish(embedded, wf.start({"order": 1}))
    fork = finish(embedded, fork_run(original.pk, from_step="first"))
    assert fork.status == "completed"
    assert first.seen == [{"order": 1}, {"order": 1}]


@runs
def test_a_fork_of_a_failed_run_with_a_corrected_context_completes(embedded: EmbeddedQueue, define: Definer) -> None:
    def charge(ctx: dict[str, Any]) -> Any:
        return ok({"charged": ctx["amount"]}) if ctx["amount"] > 0 else error({"code": "bad_amount"})

    wf = define([step("prepare", lambda ctx: ok({"amount": ctx["asked"]})), step("charge", charge)])
    original = finish(embedded, wf.start({"asked": -5}))
    assert (original.status, original.current_step) == ("failed", "charge")

    fork = finish(embedded, fork_run(original.pk, from_step="charge", context={"asked": -5, "amount": 5}))
    assert (fork.status, fork.context) == ("completed", {"asked": -5, "amount": 5, "charged": 5})
    original.refresh_from_db()
    assert (original.status, original.current_step) == ("failed", "charge")

    again = fork_run(original.pk, from_step="charge")
    assert again.context == {"asked": -5, "amount": -5}


@runs
def test_a_fork_from_a_parallel_block_runs_its_branches_again_with_the_context_before_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    left, right = Calls({"l": True}), Calls({"r": True})
    after = Calls({"done": True})
    wf = define(
        [
            step("prepare", lambda ctx: ok({"prepared": ctx["n"] * 2})),
            parallel(step("left", left), step("right", right), name="fan"),
            step("after", after),
        ]
    )
    original = finish(embedded, wf.start({"n": 3}))
    assert original.status == "completed"

    fork = fork_run(original.pk, from_step="fan")
    assert (fork.current_step, fork.context) == ("fan", {"n": 3, "prepared": 6})
    fork = finish(embedded, fork)
    assert fork.status == "completed"
    assert fork.context == original.context
    assert left.seen == right.seen == [{"n": 3, "prepared": 6}] * 2
    assert [g.name for g in ParallelGroup.objects.filter(run=fork)] == ["fan"]
    assert sorted(attempts(fork)) == [("after", 1, "completed"), ("left", 1, "completed"), ("right", 1, "completed")]

    # From the step after the block: the block's results are in the context it starts with.
    later = fork_run(original.pk, from_step="after")
    assert later.context["__results__"] == original.context["__results__"]
    assert finish(embedded, later).status == "completed"


@runs
def test_a_fork_from_a_foreach_block_and_from_a_branch_block(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            step("load", lambda ctx: ok({"items": [1, 2], "kind": "big"})),
            foreach("each", "items", lambda ctx: ok({"twice": ctx["item"] * 2})),
            branch("size", "kind", {"big": [step("big", lambda ctx: ok({"big": True}))]}),
        ]
    )
    original = finish(embedded, wf.start({}))
    assert original.status == "completed"

    each = fork_run(original.pk, from_step="each")
    assert each.context == {"items": [1, 2], "kind": "big"}
    assert finish(embedded, each).status == "completed"
    size = fork_run(original.pk, from_step="size")
    assert size.context == {k: v for k, v in original.context.items() if k != "big"}
    size = finish(embedded, size)
    assert (size.status, size.context["big"]) == ("completed", True)


@runs
def test_a_fork_takes_the_context_of_the_latest_time_the_run_got_to_the_step(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    def count(ctx: dict[str, Any]) -> Any:
        n = ctx.get("n", 0) + 1
        return ok({"n": n}) if n >= 3 else goto("count", {"n": n})

    wf = define([step("count", count), step("end", lambda ctx: ok())])
    original = finish(embedded, wf.start({}))
    assert original.context == {"n": 3}
    assert fork_run(original.pk, from_step="count").context == {"n": 2}


@runs
def test_an_unknown_step_names_the_ones_a_fork_can_start_at(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define(
        [
            step("a", lambda ctx: ok()),
            parallel(step("x", lambda ctx: ok()), step("y", lambda ctx: ok()), name="fan"),
            step("z", lambda ctx: ok()),
        ]
    )
    original = finish(embedded, wf.start({}))
    with pytest.raises(ValueError) as raised:
        fork_run(original.pk, from_step="x")
    assert str(raised.value) == (
        f"Workflow {wf.name!r} has no top-level step or block 'x'; a fork starts at one of: a, fan, z."
    )
    assert WorkflowRun.objects.count() == 1


@runs
def test_only_a_completed_or_failed_run_can_be_forked(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: wait_for_event("go")), step("b", lambda ctx: ok())])
    waiting = finish(embedded, wf.start({}))
    assert waiting.status == "waiting"
    with pytest.raises(RunStateError) as raised:
        fork_run(waiting.pk, from_step="a")
    assert str(raised.value) == f"Run {waiting.pk} is waiting; only a completed or failed run can be forked."
    with pytest.raises(WorkflowRun.DoesNotExist):
        fork_run("not-a-run", from_step="a")


@runs
def test_a_run_without_a_recorded_context_needs_one_given(embedded: EmbeddedQueue, define: Definer) -> None:
    wf, _, _, _ = three_steps(define)
    original = finish(embedded, wf.start({"order": 2}))
    StepResult.objects.filter(run=original).update(context_before=None)  # as a run stored before the record
    with pytest.raises(ValueError) as raised:
        fork_run(original.pk, from_step="third")
    assert str(raised.value) == (
        f"The context run {original.pk} had before step 'third' of workflow {wf.name!r} was not recorded "
        "(the run never got there, or it ran before contexts were recorded); pass context= to fork it."
    )
    fork = finish(embedded, fork_run(original.pk, from_step="third", context={"given": True}))
    assert (fork.status, fork.context) == ("completed", {"given": True, "c": 3})


@runs
def test_a_run_failed_at_a_step_without_a_record_is_forked_with_the_context_it_holds(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: error("broken"))])
    original = finish(embedded, wf.start({"in": 1}))
    assert (original.status, original.current_step) == ("failed", "b")
    StepResult.objects.filter(run=original).update(context_before=None)
    assert fork_run(original.pk, from_step="b").context == {"in": 1, "a": 1}


@runs
def test_a_run_whose_wait_timed_out_is_forked_with_the_context_before_the_step(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("ask", lambda ctx: wait_for_event("go", timeout=60), returns="asked"), step("b", ok)])
    original = finish(embedded, wf.start({"in": 1}))
    make_due(Wait.objects.get(run=original))
    embedded.run_due()
    embedded.run_until_idle()
    original.refresh_from_db()
    assert (original.status, original.current_step, original.error["reason"]["type"]) == (
        "failed",
        "ask",
        "wait_timeout",
    )
    assert fork_run(original.pk, from_step="ask").context == {"in": 1}
    StepResult.objects.filter(run=original).update(context_before=None)
    with pytest.raises(ContextNotRecorded):
        fork_run(original.pk, from_step="ask")


@runs
def test_a_given_context_is_checked_like_input(embedded: EmbeddedQueue, define: Definer) -> None:
    wf, _, _, _ = three_steps(define)
    original = finish(embedded, wf.start({}))
    with pytest.raises(InvalidInput) as raised:
        fork_run(original.pk, from_step="second", context=["a"])  # type: ignore[arg-type]
    assert str(raised.value) == f"The context of a fork of workflow {wf.name!r} must be a dict, got list."
    with pytest.raises(InvalidInput) as raised:
        fork_run(original.pk, from_step="second", context={"when": object()})
    assert str(raised.value).startswith(f"The context of a fork of workflow {wf.name!r} is not JSON-serializable: ")
    assert WorkflowRun.objects.count() == 1


@runs
def test_only_first_attempts_of_top_level_steps_keep_the_context_before(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [
            step("a", lambda ctx: ok({"a": 1})),
            branch("pick", "a", {"1": [step("inner", lambda ctx: ok({"inner": 1}))]}),
            parallel(step("x", lambda ctx: ok()), name="fan"),
        ]
    )
    run = finish(embedded, wf.start({"in": 0}))
    kept = dict(StepResult.objects.filter(run=run).values_list("step", "context_before"))
    assert kept == {"a": {"in": 0}, "pick": {"in": 0, "a": 1}, "inner": None, "x": None}
    assert ParallelGroup.objects.get(run=run).context == {"in": 0, "a": 1, "inner": 1}


@runs
def test_recording_the_context_before_costs_no_statement(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: ok({"a": 1})), step("b", lambda ctx: ok())])
    run = wf.start({})
    with CaptureQueriesContext(connection) as captured:
        finish(embedded, run)
    inserts = [q["sql"] for q in captured.captured_queries if "durable_django_stepresult" in q["sql"]]
    assert len(inserts) == 2
    assert all("context_before" in sql for sql in inserts)


# -- the command ------------------------------------------------------------------------------------


@runs
def test_durable_fork_starts_a_fork_and_says_why_it_refuses(embedded: EmbeddedQueue, define: Definer) -> None:
    wf, _, _, _ = three_steps(define)
    original = finish(embedded, wf.start({"order": 3}))
    out = StringIO()
    call_command("durable_fork", str(original.pk)[:8], "--from-step", "third", stdout=out)
    fork = WorkflowRun.objects.get(forked_from=original)
    assert out.getvalue() == f"{fork.pk}: forked from {original.pk} at 'third'\n"
    assert fork.context == {"order": 3, "a": 1, "b": 2}
    call_command("durable_fork", str(original.pk), "--from-step", "second", "--context", '{"x": 1}', stdout=out)
    assert WorkflowRun.objects.get(forked_from=original, forked_from_step="second").context == {"x": 1}

    refusals = {
        ("--from-step", "nope"): f"Workflow {wf.name!r} has no top-level step or block 'nope'; a fork starts at "
        "one of: first, second, third.",
        ("--from-step", "first", "--context", "{x"): "--context is not valid JSON: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)",
        ("--from-step", "first", "--context", "[]"): f"Invalid --context: The context of a fork of workflow "
        f"{wf.name!r} must be a dict, got list.",
    }
    for args, message in refusals.items():
        with pytest.raises(CommandError) as raised:
            call_command("durable_fork", str(original.pk), *args, stdout=out)
        assert str(raised.value) == message
    pending = wf.start({})
    with pytest.raises(CommandError) as raised:
        call_command("durable_fork", str(pending.pk), "--from-step", "first", stdout=out)
    assert str(raised.value) == f"Refused: Run {pending.pk} is pending; only a completed or failed run can be forked."
    assert WorkflowRun.objects.filter(forked_from=original).count() == 2


@runs
def test_a_fork_of_a_workflow_with_a_timeout_has_its_own_deadline_from_its_start(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("first", lambda ctx: ok({"a": 1})), step("second", lambda ctx: ok())], timeout=60)
    original = finish(embedded, wf.start({}))
    WorkflowRun.objects.filter(pk=original.pk).update(deadline_at=original.created_at)  # long past

    fork = fork_run(original.pk, from_step="second")

    assert fork.deadline_at is not None
    assert 59 <= (fork.deadline_at - fork.created_at).total_seconds() <= 60
    embedded.run_commit_hooks()
    scheduled = [job_id for queue in embedded.queues() for job_id in queue.scheduled_job_registry.get_job_ids()]
    assert [job_id for job_id in scheduled if str(fork.pk) in job_id] == [
        timer_jobs.timeout_job_id(fork.pk, fork.deadline_at)
    ]
    fork = finish(embedded, fork)
    assert (fork.status, fork.context) == ("completed", {"a": 1})


@runs
def test_a_run_whose_compensations_ran_is_forked_only_with_an_explicit_context(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [
            step("reserve", lambda ctx: ok({"room": 12}), compensate=lambda ctx: ok({})),
            step("pay", lambda ctx: error({"code": "declined"})),
        ]
    )
    original = finish(embedded, wf.start({}))
    assert (original.status, original.compensation) == ("failed", "completed")

    with pytest.raises(RunStateError) as caught:
        fork_run(original.pk, from_step="pay")
    assert str(caught.value) == (
        f"Run {original.pk} ran its compensations (compensation completed), which undid its completed steps; "
        "fork it with an explicit context= that describes what is done."
    )
    fork = fork_run(original.pk, from_step="reserve", context={})
    assert (fork.status, fork.current_step) == ("pending", "reserve")
