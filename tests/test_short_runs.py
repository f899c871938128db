"""A short run executes in the job that started it; slow branches still spread over workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from rq import SimpleWorker

from durable_django import batches, call_workflow, dispatch, error, jobs, ok, parallel, step
from durable_django.models import ParallelGroup, StepResult
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent() -> Iterator[list[dispatch.Job]]:
    """Every job sent to Redis while the test runs."""
    jobs: list[dispatch.Job] = []
    dispatch.before_send.append(jobs.extend)
    try:
        yield jobs
    finally:
        dispatch.before_send.remove(jobs.extend)


def onboarding(define: Definer) -> Any:
    return define(
        [
            step("create_user", lambda ctx: ok({"user_id": 7})),
            parallel(
                step("send_welcome_email", lambda ctx: ok({"email_sent": ctx["user_id"]})),
                step("provision_workspace", lambda ctx: ok({"workspace": f"ws-{ctx['user_id']}"})),
                step("setup_billing", lambda ctx: ok({"billing": True})),
            ),
            step("complete", lambda ctx: ok({"onboarded": len(ctx["__results__"])})),
        ]
    )


@runs
def test_an_onboarding_shaped_run_needs_no_job_but_the_one_its_start_sent(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job]
) -> None:
    run = finish(embedded, onboarding(define).start())
    assert run.status == "completed"
    assert [(job.func, job.args) for job in sent] == [(dispatch.RUN_WORKFLOW, (str(run.pk), "default", 0))]
    assert run.context == {
        "user_id": 7,
        "__results__": {
            "send_welcome_email": ["ok", {"email_sent": 7}],
            "provision_workspace": ["ok", {"workspace": "ws-7"}],
            "setup_billing": ["ok", {"billing": True}],
        },
        "onboarded": 3,
    }
    # Every step and branch was executed by that one job.
    assert set(StepResult.objects.filter(run=run).values_list("job_id", flat=True)) == {sent[0].job_id}


@runs
def test_a_branch_that_overruns_its_batch_hands_the_branches_not_started_to_another_job(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any branch overruns a budget of zero: the watchdog gives the others back at once.
    monkeypatch.setattr(batches, "OVERRUN_SECONDS", 0.0)
    seen_pending: list[int] = []

    def slow(ctx: dict[str, Any]) -> Any:
        # Wait (not for a time: for the hand-over) until the two other branches are pending again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = StepResult.objects.filter(step__in=("quick_1", "quick_2"), status="pending").count()
            if pending == 2:
                seen_pending.append(pending)
                break
            time.sleep(0.02)
        return ok({"slow": True})

    wf = define(
        [
            parallel(
                step("slow", slow),
                step("quick_1", lambda ctx: ok({"q1": True})),
                step("quick_2", lambda ctx: ok({"q2": True})),
                name="block",
            ),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = finish(embedded, wf.start())
    assert seen_pending == [2]
    assert run.status == "completed"
    assert attempts(run) == [
        ("slow", 1, "completed"),
        ("quick_1", 1, "completed"),
        ("quick_2", 1, "completed"),
        ("after", 1, "completed"),
    ]
    group = ParallelGroup.objects.get(run=run)
    handed = [job for job in sent if job.func == dispatch.RUN_BRANCHES]
    # One drain job took the two branches given back; the slow one stayed with the job that entered the block.
    assert [(job.args, job.job_id) for job in handed] == [
        (
            (group.pk, "default", 1, str(quick_1_id(run))),
            dispatch.drain_job_id(group.pk, "default", 1) + f"-{quick_1_id(run)}",
        )
    ]
    jobs = dict(StepResult.objects.filter(run=run, group=group).values_list("step", "job_id"))
    assert jobs == {"slow": sent[0].job_id, "quick_1": handed[0].job_id, "quick_2": handed[0].job_id}
    assert (group.status, group.pending_count, group.failed_count) == ("completed", 0, 0)


def statuses_while_waiting(names: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[str, ...]:
    """Poll the statuses of branches ``names`` until they are ``wanted`` (at most 10 s); the last seen."""
    deadline = time.monotonic() + 10
    while True:
        found = dict(StepResult.objects.filter(step__in=names).values_list("step", "status"))
        seen = tuple(found.get(name, "") for name in names)
        if seen == wanted or time.monotonic() >= deadline:
            return seen
        time.sleep(0.02)


@runs
def test_once_a_batch_overran_the_results_before_its_slow_branch_are_recorded_without_waiting_for_it(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job]
) -> None:
    seen: list[tuple[str, ...]] = []
    names = ("quick_0", "quick_1", "quick_3")

    def slow(ctx: dict[str, Any]) -> Any:
        # Still executing: the watchdog has recorded the two before it and given quick_3 back.
        seen.append(statuses_while_waiting(names, ("completed", "completed", "pending")))
        return ok({"slow": True})

    wf = define(
        [
            parallel(
                step("quick_0", lambda ctx: ok({"q0": True})),
                step("quick_1", lambda ctx: ok({"q1": True})),
                step("slow", slow),
                step("quick_3", lambda ctx: ok({"q3": True})),
                name="block",
            ),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = finish(embedded, wf.start())
    assert seen == [("completed", "completed", "pending")]
    assert (run.status, sorted(run.context["__results__"])) == ("completed", ["quick_0", "quick_1", "quick_3", "slow"])
    assert [row[1:] for row in attempts(run)] == [(1, "completed")] * 5
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.failed_count) == ("completed", 0, 0)
    # The run's job executed quick_0, quick_1 and slow; a drain job of its own took quick_3.
    jobs = dict(StepResult.objects.filter(group=group).values_list("step", "job_id"))
    assert jobs == {
        "quick_0": sent[0].job_id,
        "quick_1": sent[0].job_id,
        "slow": sent[0].job_id,
        "quick_3": dispatch.drain_job_id(group.pk, "default", 1) + f"-{jobs_pk(run, 'quick_3')}",
    }


@runs
def test_a_failure_recorded_early_fails_a_fail_fast_block_while_its_slow_branch_still_executes(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job]
) -> None:
    seen: list[tuple[str, ...]] = []

    def slow(ctx: dict[str, Any]) -> Any:
        seen.append(statuses_while_waiting(("fails",), ("failed",)))
        # The failure decided the block: its join was sent as a job, which the job executing this
        # branch cannot run.
        seen.append(tuple(job.func for job in sent[1:]))
        return ok({"slow": True})

    wf = define(
        [
            parallel(step("fails", lambda ctx: error("no")), step("slow", slow), name="block"),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = finish(embedded, wf.start())
    assert seen == [("failed",), (dispatch.JOIN_GROUP,)]
    assert (run.status, run.error) == ("failed", {"step": "fails", "parallel": "block", "reason": "no"})
    assert attempts(run) == [("fails", 1, "failed"), ("slow", 1, "completed")]
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.pending_count, group.failed_count) == ("failed", 0, 1)


def jobs_pk(run: Any, name: str) -> int:
    return StepResult.objects.get(run=run, step=name).pk


def quick_1_id(run: Any) -> int:
    return StepResult.objects.get(run=run, step="quick_1").pk


@runs
def test_a_child_executed_by_its_calling_step_keeps_an_overrunning_block_in_its_process(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "OVERRUN_SECONDS", 0.0)

    def slow(ctx: dict[str, Any]) -> Any:
        time.sleep(0.05)
        return ok({"slow": True})

    child = define([parallel(step("slow", slow), step("quick", lambda ctx: ok({"quick": True})), name="block")])
    parent = define([step("call", lambda ctx: call_workflow(child, {}))])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert run.context["__results__"] == {"slow": ["ok", {"slow": True}], "quick": ["ok", {"quick": True}]}
    # Nothing of the child went to Redis: only the parent's own run job was sent.
    assert [job.func for job in sent] == [dispatch.RUN_WORKFLOW]


@runs
def test_a_short_block_whose_branch_was_taken_over_meanwhile_is_not_closed_by_the_job_that_entered_it(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from durable_django.models import WorkflowRun
    from durable_django.recovery import recover

    def steals_c(ctx: dict[str, Any]) -> Any:
        # As recovery does when this worker looks dead: branch c, claimed but not started, changes hands.
        StepResult.objects.filter(step="c", attempt=1).update(
            lease_owner="elsewhere:1:dead", lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        return ok({"b": True})

    wf = define(
        [
            parallel(step("a", lambda ctx: ok({"a": True})), step("b", steals_c), step("c", lambda ctx: ok({"c": 1}))),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = wf.start()
    embedded.run_until_idle()
    run.refresh_from_db()
    group = ParallelGroup.objects.get(run=run)
    # a and b are recorded; c, no longer this worker's, is neither recorded nor counted; nothing is closed.
    assert (run.status, run.current_step) == ("running", group.name)
    assert (group.status, group.pending_count, group.failed_count) == ("running", 1, 0)
    assert attempts(run) == [("a", 1, "completed"), ("b", 1, "completed"), ("c", 1, "running")]
    # Recovery takes c over; its new attempt decides the block, which is joined once.
    assert recover().branches_taken_over == 1
    run = finish(embedded, run)
    assert (run.status, run.context["after"]) == ("completed", True)
    assert attempts(run) == [
        ("a", 1, "completed"),
        ("b", 1, "completed"),
        ("c", 1, "failed"),
        ("c", 2, "completed"),
        ("after", 1, "completed"),
    ]
    assert ParallelGroup.objects.filter(run=run).count() == 1
    assert WorkflowRun.objects.get(pk=run.pk).context["__results__"] == {
        "a": ["ok", {"a": True}],
        "b": ["ok", {"b": True}],
        "c": ["ok", {"c": 1}],
    }


@runs
def test_the_drain_jobs_sent_by_a_drain_job_of_branches_given_back_keep_its_tag(
    embedded: EmbeddedQueue, define: Definer, sent: list[dispatch.Job]
) -> None:
    # Two chains of drain jobs can work on one block: the block's own (drain job 1, 2, ...) and the
    # one the branches a busy batch gave back start. Were two of them given one id, RQ would run
    # one twice over and find the other's record gone.
    wf = define([parallel(*(step(f"b_{i:02}", lambda ctx: ok(), queue="priority") for i in range(5)), name="block")])
    run = wf.start()
    default, _ = embedded.queues()
    SimpleWorker([default], connection=embedded.connection).work(burst=True, logging_level="WARNING")
    group = ParallelGroup.objects.get(run=run)
    sent.clear()
    jobs.run_branches(group.pk, "priority", 1, "77")
    successors = [job for job in sent if job.func == dispatch.RUN_BRANCHES]
    assert [(job.args, job.job_id) for job in successors] == [
        ((group.pk, "priority", 2, "77"), dispatch.drain_job_id(group.pk, "priority", 2) + "-77")
    ]
