"""Recovery from the database alone: lost workers, lost jobs, lost joins, overdue retries, timeouts."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rq.job import Job as RQJob

from durable_django import dispatch, error, ok, parallel, step
from durable_django.apps import is_rq_worker_process, runs_scheduler, warn_without_scheduler
from durable_django.checks import check_settings
from durable_django.conf import DEFAULTS
from durable_django.dispatch import run_job_id
from durable_django.jobs import join_group, run_branch, run_branches, run_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.recovery import NO_SCHEDULER_NOTICE, Report, recover
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer, attempts, finish, recorder

runs = pytest.mark.django_db(transaction=True)


class WorkerDied(BaseException):
    """Raised by a step to stand for its worker process being killed mid-step: nothing after it runs."""


def dies_then(times: int, data: dict[str, Any]) -> Any:
    """A step whose first ``times`` executions lose their worker, then returns ``ok(data)``."""
    calls: list[int] = []

    def fn(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise WorkerDied
        return ok(data)

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


# The default lease, which the sweeps of these tests use.
LEASE = DEFAULTS["LEASE_SECONDS"]


def later(seconds: float = 60) -> Any:
    """A moment after every lease taken now has run out."""
    return timezone.now() + timedelta(seconds=seconds)


def lost_reason(streak: int) -> dict[str, Any]:
    return {
        "type": "worker_lost",
        "message": "the worker executing this attempt went away: its lease expired",
        "lost_in_a_row": streak,
    }


# -- lost workers ---------------------------------------------------------------------------------


@runs
def test_a_step_whose_worker_died_runs_again_without_using_its_retry_budget(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    # No retries at all: the lost attempt must not count as the one attempt it has.
    wf = define([step("first", dies_then(1, {"a": 1})), step("second", lambda ctx: ok({"b": ctx["a"]}))])
    run = finish(embedded, wf.start({}))
    assert (run.status, run.current_step, run.lease_owner != "") == ("running", "first", True)
    assert recover(now=timezone.now()).total == 0  # the lease has not run out yet

    report = recover(now=later())
    assert (report.steps_taken_over, report.total) == (1, 1)
    run = finish(embedded, run)
    assert (run.status, run.context, run.lease_owner, run.lease_expires_at) == (
        "completed",
        {"a": 1, "b": 1},
        "",
        None,
    )
    assert attempts(run) == [("first", 1, "failed"), ("first", 2, "completed"), ("second", 1, "completed")]
    lost = StepResult.objects.get(run=run, step="first", attempt=1)
    # The lost first attempt keeps the context before the step, as the attempt would have (for a fork).
    assert (lost.error, lost.context_before) == (lost_reason(1), {})
    assert StepResult.objects.get(run=run, step="first", attempt=2).context_before is None


@runs
@override_settings(DURABLE={"MAX_WORKER_LOST": 2})
def test_a_step_that_loses_its_worker_too_often_in_a_row_fails_with_worker_lost(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("doomed", dies_then(5, {}), retry={"max_attempts": 5})])
    run = finish(embedded, wf.start({}))
    recover(now=later())
    run = finish(embedded, run)
    report = recover(now=later(120))
    assert report.failed_worker_lost == 1
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", {"step": "doomed", "reason": lost_reason(2)})
    assert attempts(run) == [("doomed", 1, "failed"), ("doomed", 2, "failed")]


@runs
def test_a_branch_whose_worker_died_gets_a_new_attempt_and_the_join_runs_once(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    joined: list[dict[str, Any]] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        joined.append(results)
        return ok({"joined": sorted(results)})

    ran_fine: list[dict[str, Any]] = []
    fine = recorder(ran_fine, {"f": 1})
    wf = define([parallel(step("dies", dies_then(1, {"d": 1})), step("fine", fine), into=into)])
    run = finish(embedded, wf.start({}))
    assert run.status == "running"
    # The run's job had claimed both branches: the one it never started is lost with it.
    assert recover(now=later()).branches_taken_over == 2
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"joined": ["dies", "fine"]})
    assert len(joined) == 1
    assert attempts(run) == [
        ("dies", 1, "failed"),
        ("fine", 1, "failed"),
        ("dies", 2, "completed"),
        ("fine", 2, "completed"),
    ]
    assert [row.error["type"] for row in StepResult.objects.filter(run=run, attempt=1)] == [
        "worker_lost",
        "worker_lost",
    ]
    assert recover(now=later(120)).total == 0


@runs
def test_a_join_whose_worker_died_is_sent_again(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise WorkerDied
        return ok({"joined": True})

    wf = define([parallel(step("a", lambda ctx: ok()), into=into, name="block")])
    run = finish(embedded, wf.start({}))
    group = ParallelGroup.objects.get(run=run)
    assert (group.status, group.lease_owner != "") == ("running", True)
    assert recover(now=later()).joins_taken_over == 1
    run = finish(embedded, run)
    assert (run.status, run.context, len(calls)) == ("completed", {"joined": True}, 2)


# -- lost jobs ------------------------------------------------------------------------------------


@runs
def test_runs_and_branches_whose_jobs_vanished_from_redis_are_sent_again(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    # Branches on a queue of their own: the run's job cannot execute them itself, a drain job must.
    wf = define(
        [
            step("s", lambda ctx: ok({"s": 1})),
            parallel(step("b1", lambda ctx: ok(), queue="priority"), step("b2", lambda ctx: ok(), queue="priority")),
        ]
    )
    fresh = wf.start({})
    embedded.run_commit_hooks()
    embedded.connection.flushall()  # Redis restarted without persistence
    assert recover(now=later()).runs_sent_again == 1
    # The deadline moved on: a second sweep right after sends nothing twice.
    assert recover(now=later()).total == 0
    embedded.run_until_idle()

    # The same for a block whose branch jobs were lost.
    fresh.refresh_from_db()
    assert fresh.status == "completed"
    other = wf.start({})
    run_workflow(str(other.pk), "default", 0)
    embedded.connection.flushall()
    embedded.run_commit_hooks()
    embedded.connection.flushall()
    # Both branches wait for the block's one drain job: it is sent again once.
    assert recover(now=later()).branches_sent_again == 1
    other = finish(embedded, other)
    assert other.status == "completed"
    assert [row[0] for row in attempts(other)] == ["s", "b1", "b2"]


@runs
def test_queued_jobs_are_left_alone_however_late(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("s", lambda ctx: ok())])
    run = wf.start({})
    embedded.run_commit_hooks()
    assert recover(now=later(3600)) == Report()
    assert embedded.pending_jobs() == 1
    assert finish(embedded, run).status == "completed"


@runs
@pytest.mark.parametrize("backlog", [3, 30])
def test_a_backlog_of_queued_runs_is_put_off_in_one_statement_whatever_its_size(
    embedded: EmbeddedQueue, define: Definer, backlog: int
) -> None:
    wf = define([step("s", lambda ctx: ok())])
    runs = [wf.start({}) for _ in range(backlog)]
    embedded.run_commit_hooks()
    lost = runs.pop()
    embedded.queues()[0].remove(run_job_id(lost.pk, 0))  # one job lost from the queue
    when = later()
    with CaptureQueriesContext(connection) as queries:
        report = recover(now=when)
    assert report == Report(runs_sent_again=1)
    # The sweep's reads, one UPDATE for the whole backlog, and the lost run's conditional UPDATE.
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2
    deadlines = set(
        WorkflowRun.objects.filter(pk__in=[run.pk for run in runs]).values_list("lease_expires_at", flat=True)
    )
    assert deadlines == {when + timedelta(seconds=LEASE)}
    assert embedded.pending_jobs() == backlog
    assert recover(now=when) == Report()


@runs
def test_a_decided_block_whose_join_job_was_lost_is_joined(embedded: EmbeddedQueue, define: Definer) -> None:
    # The branch runs on another queue than its workflow: its worker sends the join to the workflow's queue.
    wf = define(
        [parallel(step("a", lambda ctx: ok({"a": 1}), queue="priority"), name="block"), step("after", lambda ctx: ok())]
    )
    run = wf.start({})
    run_workflow(str(run.pk), "default", 0)
    embedded.run_commit_hooks()
    group = ParallelGroup.objects.get(run=run)
    run_branches(group.pk, "priority", 0)
    embedded.connection.flushall()  # the join job never reached Redis
    embedded.run_commit_hooks()
    embedded.connection.flushall()
    assert recover(now=timezone.now()).total == 0  # the last branch finished just now: not yet
    assert recover(now=later()).joins_sent_again == 1
    run = finish(embedded, run)
    assert (run.status, run.context) == ("completed", {"__results__": {"a": ["ok", {"a": 1}]}})


@runs
def test_an_overdue_scheduled_retry_is_moved_to_its_queue(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error("once") if len(calls) == 1 else ok()

    wf = define([step("flaky", flaky, retry={"max_attempts": 2, "backoff": "constant", "base": 30, "jitter": False})])
    run = wf.start({})
    embedded.run_commit_hooks()
    worker_pass(embedded)
    assert embedded.pending_jobs() == 0
    assert recover(now=later(20)).total == 0  # due in 30 s: not overdue
    report = recover(now=later(120))
    assert report.retries_released == 1
    assert embedded.pending_jobs() == 1
    run = finish(embedded, run)
    assert (run.status, len(calls)) == ("completed", 2)


def worker_pass(embedded: EmbeddedQueue) -> None:
    """Execute what is queued now, without waiting for scheduled jobs."""
    embedded.run_queued()


@runs
def test_a_pass_with_nothing_to_recover_costs_nine_reads() -> None:
    # With the default RECOVER_INTERVAL, one such pass a second for the whole installation.
    recover()
    with CaptureQueriesContext(connection) as captured:
        assert recover() == Report()
    verbs = [query["sql"].split(None, 1)[0] for query in captured.captured_queries]
    assert len(verbs) == 9
    assert set(verbs) <= {"SELECT", "DECLARE"}


# -- timeouts -------------------------------------------------------------------------------------


@runs
def test_a_step_over_its_timeout_fails_the_attempt_and_follows_its_retry_policy(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[int] = []

    def slow_once(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(5)
        return ok({"fast": True})

    wf = define([step("slow", slow_once, timeout=0.2, retry={"max_attempts": 2, "base": 0, "jitter": False})])
    run = finish(embedded, wf.start({}))
    assert (run.status, run.context) == ("completed", {"fast": True})
    assert attempts(run) == [("slow", 1, "failed"), ("slow", 2, "completed")]
    assert StepResult.objects.get(run=run, attempt=1).error == {
        "type": "timeout",
        "message": "step 'slow' ran longer than its timeout of 0.2 s",
    }


@runs
def test_a_branch_over_its_timeout_fails_like_any_failing_branch(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([parallel(step("stuck", lambda ctx: time.sleep(5) or ok(), timeout=0.1), name="block")])
    run = finish(embedded, wf.start({}))
    assert run.status == "failed"
    assert run.error["reason"]["type"] == "timeout"


@runs
def test_default_timeout_bounds_every_step_branch_and_compensation_without_a_timeout_of_their_own(
    embedded: EmbeddedQueue, define: Definer, settings: Any
) -> None:
    settings.DURABLE = {"DEFAULT_TIMEOUT": 0.2}
    undone: list[str] = []

    def hangs_in_undo(ctx: dict[str, Any]) -> Any:
        undone.append("undo")
        time.sleep(5)

    wf = define(
        [
            step("reserve", lambda ctx: ok({"reserved": True}), compensate=hangs_in_undo),
            # Its own timeout, longer than the default, is the one that counts (for its compensation too).
            step("own", lambda ctx: time.sleep(0.4) or ok({"own": True}), timeout=2),
            parallel(step("quick", lambda ctx: ok()), step("stuck", lambda ctx: time.sleep(5) or ok()), name="block"),
        ]
    )
    run = finish(embedded, wf.start({}))
    limit = 'ran longer than DURABLE["DEFAULT_TIMEOUT"] of 0.2 s'
    assert (run.status, run.compensation, undone) == ("failed", "failed", ["undo"])
    assert run.error == {
        "step": "stuck",
        "parallel": "block",
        "reason": {"type": "timeout", "message": f"step 'stuck' {limit}"},
    }
    assert StepResult.objects.get(run=run, step="own", kind="step").status == "completed"
    assert StepResult.objects.get(run=run, kind="compensation").error == {
        "type": "timeout",
        "message": f"step 'reserve (compensation)' {limit}",
    }


@pytest.mark.parametrize("value", [0, -1, "5", True, [1]])
def test_default_timeout_must_be_none_or_a_positive_number_of_seconds(value: Any) -> None:
    with override_settings(DURABLE={"DEFAULT_TIMEOUT": value}):
        assert [(message.id, message.msg) for message in check_settings()] == [
            (
                "durable_django.E004",
                f"settings.DURABLE['DEFAULT_TIMEOUT'] must be None or a positive number of seconds, not {value!r}.",
            )
        ]


# -- poison jobs ----------------------------------------------------------------------------------


@runs
def test_jobs_for_rows_that_do_not_exist_end_quietly() -> None:
    run_workflow(str(uuid.uuid4()), "default", 0)
    run_workflow("not-a-uuid", "default", 0)
    run_branch(10**9)
    join_group(10**9, "default")
    assert WorkflowRun.objects.count() == 0


# -- entry points ---------------------------------------------------------------------------------


@runs
def test_durable_recover_prints_what_it_did(embedded: EmbeddedQueue, define: Definer) -> None:
    out = StringIO()
    call_command("durable_recover", stdout=out)
    assert out.getvalue() == "recovery: nothing to recover\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "rqworker", "default"], True),
        (["/venv/lib/django/__main__.py", "rqworker"], True),
        (["manage.py", "rqworker-pool", "default"], True),
        (["manage.py", "runserver"], False),
        (["manage.py"], False),
    ],
)
def test_the_sweeper_starts_only_in_worker_processes(argv: list[str], expected: bool) -> None:
    assert is_rq_worker_process(argv) is expected


# -- without RQ's scheduler -----------------------------------------------------------------------


def notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "no worker seems to run RQ's scheduler" in record.getMessage()
    ]


@runs
def test_overdue_scheduled_jobs_are_noticed_at_most_once_a_minute(
    embedded: EmbeddedQueue, define: Definer, caplog: pytest.LogCaptureFixture
) -> None:
    wf = define(
        [
            step(
                "flaky",
                lambda ctx: error("down"),
                retry={"max_attempts": 9, "backoff": "constant", "base": 30, "jitter": False},
            )
        ]
    )
    caplog.set_level("WARNING", logger="durable_django.recovery")
    first, second = wf.start({}), wf.start({})
    embedded.run_commit_hooks()
    worker_pass(embedded)
    assert recover(now=later(20)).total == 0  # due in 30 s: not overdue, nothing said
    assert notices(caplog) == []

    assert recover(now=later(120)).retries_released == 2
    assert notices(caplog) == [
        "2 scheduled job(s) (retries with a delay, wake-ups of sleeps and timeouts) were overdue and moved by "
        "recovery, late: no worker seems to run RQ's scheduler for their queue. Run at least one worker with it "
        "(manage.py durable_worker without --without-scheduler, or rqworker --with-scheduler). Said at most once "
        "every 60 s."
    ]
    worker_pass(embedded)  # both fail again: their next retries are scheduled
    assert recover(now=later(300)).retries_released == 2
    assert len(notices(caplog)) == 1  # within the minute: not said again

    embedded.connection.delete(NO_SCHEDULER_NOTICE)  # the minute has passed
    worker_pass(embedded)
    assert recover(now=later(600)).retries_released == 2
    assert len(notices(caplog)) == 2
    assert {run.pk for run in (first, second)} == set(
        WorkflowRun.objects.filter(status="running").values_list("pk", flat=True)
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "durable_worker"], True),
        (["manage.py", "durable_worker", "default", "--without-scheduler"], False),
        (["manage.py", "durable_worker", "--without-sch"], False),
        (["manage.py", "rqworker", "default"], False),
        (["manage.py", "rqworker", "default", "--with-scheduler"], True),
        (["manage.py", "rqworker-pool", "default"], True),
        (["manage.py", "rqworker", "--help"], None),
        (["manage.py", "rqworker", "--no-such-option"], None),
    ],
)
def test_a_worker_command_line_says_whether_it_runs_the_scheduler(argv: list[str], expected: bool | None) -> None:
    assert runs_scheduler(argv) is expected


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["manage.py", "durable_worker", "--without-scheduler"], "(durable_worker --without-scheduler)"),
        (["manage.py", "rqworker", "default"], "(rqworker without --with-scheduler)"),
        (["manage.py", "durable_worker"], None),
        (["manage.py", "rqworker", "--with-scheduler"], None),
    ],
)
def test_a_worker_without_the_scheduler_says_so_when_it_starts(
    argv: list[str], said: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="durable_django.worker")
    warn_without_scheduler(argv)
    logged = [record.getMessage() for record in caplog.records]
    if said is None:
        assert logged == []
    else:
        assert len(logged) == 1
        assert logged[0].startswith(f"this worker runs without RQ's scheduler {said}: retries with a delay")
        assert "about 20 s late" in logged[0]
        with override_settings(DURABLE={"RECOVER_IN_WORKERS": False}):
            warn_without_scheduler(argv)
        assert "unless durable_recover --loop runs" in caplog.records[-1].getMessage()


# -- jobs handed to a worker that died ------------------------------------------------------------


def _hand_over(embedded: EmbeddedQueue, queue_name: str = "default") -> None:
    """Move the queue's oldest job to its intermediate list, as RQ does for a worker that takes it."""
    queue = dispatch.get_queue(queue_name)
    assert embedded.connection.lmove(queue.key, queue.intermediate_queue_key, "RIGHT", "LEFT") is not None


@runs
def test_a_run_whose_job_was_taken_by_a_worker_that_died_is_sent_again_after_a_lease(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[Any] = []
    wf = define([step("s", recorder(calls))])
    run = wf.start({})
    embedded.run_commit_hooks()
    _hand_over(embedded)  # the worker that took it was killed before marking it started
    when = later()
    # Seen there for the first time: it may still be on its way to a live worker.
    assert recover(now=when) == Report()
    assert embedded.connection.zscore(dispatch.hand_over_seen_key("default"), run_job_id(run.pk, 0)) == pytest.approx(
        when.timestamp()
    )
    assert recover(now=when + timedelta(seconds=LEASE - 1)) == Report()
    # There for longer than a lease: lost, although RQ still says "queued".
    assert recover(now=when + timedelta(seconds=LEASE + 1)) == Report(runs_sent_again=1)
    assert recover(now=when + timedelta(seconds=LEASE + 2)) == Report()
    assert finish(embedded, run).status == "completed"
    assert len(calls) == 1


@runs
def test_a_job_in_the_intermediate_list_counts_as_queued_for_a_lease_then_as_missing(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("s", lambda ctx: ok())])
    run = wf.start({})
    embedded.run_commit_hooks()
    job_id = run_job_id(run.pk, 0)
    now = timezone.now()
    assert dispatch.job_state("default", job_id, now) == ("queued", None)
    _hand_over(embedded)
    assert dispatch.job_state("default", job_id, now) == ("queued", None)
    assert dispatch.QueuedJobs(now + timedelta(seconds=LEASE - 1)).among([("default", job_id)]) == {("default", job_id)}
    assert dispatch.job_state("default", job_id, now + timedelta(seconds=LEASE + 1)) == ("missing", None)
    assert dispatch.QueuedJobs(now + timedelta(seconds=LEASE + 1)).among([("default", job_id)]) == set()
    # Once the job leaves the list its sighting is forgotten: a later hand-over starts afresh.
    queue = dispatch.get_queue("default")
    embedded.connection.lmove(queue.intermediate_queue_key, queue.key, "RIGHT", "LEFT")
    assert dispatch.QueuedJobs(now).among([("default", job_id)]) == {("default", job_id)}
    assert embedded.connection.zcard(dispatch.hand_over_seen_key("default")) == 0


@runs
def test_a_started_job_without_a_live_worker_counts_as_missing_past_a_lease(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define([step("s", lambda ctx: ok())])
    run = wf.start({})
    embedded.run_commit_hooks()
    job_id = run_job_id(run.pk, 0)
    _hand_over(embedded)
    started = timezone.now()
    # The worker marked it started, then died before claiming its row.
    embedded.connection.hset(
        RQJob.key_for(job_id), mapping={"status": "started", "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    )
    assert dispatch.job_state("default", job_id, started + timedelta(seconds=LEASE - 1)) == ("queued", None)
    assert dispatch.job_state("default", job_id, started + timedelta(seconds=LEASE + 1)) == ("missing", None)
    assert recover(now=started + timedelta(seconds=LEASE - 1)).total == 0
    assert recover(now=started + timedelta(seconds=LEASE + 1)) == Report(runs_sent_again=1)
    assert finish(embedded, run).status == "completed"
