"""Engine mechanics: queue hand-over, re-delivered jobs, definitions gone missing, query costs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rq import SimpleWorker

from durable_django import error, ok, parallel, step
from durable_django.definition import unregister
from durable_django.jobs import join_group, run_branch, run_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, attempts, defining, finish

runs = pytest.mark.django_db(transaction=True)


@pytest.fixture
def define(request: pytest.FixtureRequest) -> Iterator[Definer]:
    with defining(request.node.name) as definer:
        yield definer


def counting(calls: list[str], name: str, data: dict[str, Any] | None = None) -> Any:
    def step_fn(ctx: dict[str, Any]) -> Any:
        calls.append(name)
        return ok(data or {})

    return step_fn


# -- queues ------------------------------------------------------------------------------------------


@runs
def test_step_on_another_queue_is_handed_over_to_that_queue(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    wf = define(
        [
            step("a", counting(calls, "a")),
            step("b", counting(calls, "b"), queue="priority"),
            step("c", counting(calls, "c")),
        ]
    )
    run = wf.start()
    default, priority = embedded.queues()
    # A worker of "default" only: it runs "a" and hands the run over to "priority".
    SimpleWorker([default], connection=embedded.connection).work(burst=True, logging_level="WARNING")
    run.refresh_from_db()
    assert (calls, run.status, run.current_step) == (["a"], "running", "b")
    assert (default.count, priority.count) == (0, 1)
    # "priority" runs "b", then hands "c" back to "default".
    SimpleWorker([priority], connection=embedded.connection).work(burst=True, logging_level="WARNING")
    run.refresh_from_db()
    assert (calls, run.current_step, default.count, priority.count) == (["a", "b"], "c", 1, 0)
    assert finish(embedded, run).status == "completed"
    assert calls == ["a", "b", "c"]


# -- re-delivered jobs ------------------------------------------------------------------------------------


@runs
def test_duplicate_run_job_does_not_fan_out_a_block_twice(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    wf = define(
        [
            step("a", counting(calls, "a")),
            parallel(step("b", counting(calls, "b")), step("c", counting(calls, "c")), name="fan"),
            step("d", counting(calls, "d")),
        ]
    )
    run = wf.start()
    # The same run job delivered twice (RQ delivers at least once): the copy runs first, in this process.
    run_workflow(str(run.pk), "default")
    assert ParallelGroup.objects.filter(run=run).count() == 1
    run = finish(embedded, run)
    assert run.status == "completed"
    assert calls == ["a", "b", "c", "d"]
    assert ParallelGroup.objects.filter(run=run).count() == 1
    assert attempts(run) == [
        ("a", 1, "completed"),
        ("b", 1, "completed"),
        ("c", 1, "completed"),
        ("d", 1, "completed"),
    ]


@runs
def test_jobs_delivered_again_after_the_run_finished_change_nothing(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[str] = []
    joined: list[dict[str, Any]] = []

    def into(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
        joined.append(results)
        return ok({"joined": len(joined)})

    wf = define([step("a", counting(calls, "a")), parallel(step("b", counting(calls, "b")), into=into, name="fan")])
    run = finish(embedded, wf.start())
    group = ParallelGroup.objects.get(run=run)
    branch = StepResult.objects.get(run=run, step="b")
    before = (run.status, run.context, run.version, group.status, group.results)

    run_workflow(str(run.pk), "default")
    run_branch(branch.pk)
    join_group(group.pk, "default")

    run.refresh_from_db()
    group.refresh_from_db()
    assert (run.status, run.context, run.version, group.status, group.results) == before
    assert calls == ["a", "b"]
    assert len(joined) == 1
    assert StepResult.objects.filter(run=run).count() == 2
    assert embedded.pending_jobs() == 0


@runs
def test_run_job_for_a_missing_run_is_dropped(embedded: EmbeddedQueue) -> None:
    run_workflow("00000000-0000-0000-0000-000000000000", "default")
    assert WorkflowRun.objects.count() == 0


# -- definitions gone missing ----------------------------------------------------------------------------


@runs
def test_run_of_an_unregistered_workflow_fails(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: ok())])
    run = wf.start({"n": 1})
    unregister(wf.name)
    run = finish(embedded, run)
    assert run.status == "failed"
    assert run.error == {
        "step": "a",
        "reason": {"type": "workflow_not_found", "message": f"No workflow named {wf.name!r} is registered."},
    }
    assert run.context == {"n": 1}


@runs
def test_run_at_a_step_the_definition_no_longer_has_fails(embedded: EmbeddedQueue, define: Definer) -> None:
    wf = define([step("a", lambda ctx: ok())])
    run = wf.start()
    WorkflowRun.objects.filter(pk=run.pk).update(current_step="removed")
    run = finish(embedded, run)
    assert run.status == "failed"
    assert run.error == {
        "step": "removed",
        "reason": {
            "type": "unknown_step",
            "message": f"workflow {wf.name!r} has no step 'removed' (was the definition changed?)",
        },
    }


# -- query costs --------------------------------------------------------------------------------------------
#
# Every captured statement is reduced to "<VERB> <model>" (or the bare transaction marker), so the
# tests below pin both how many statements each unit of work costs and which ones they are. The
# counts are the same on PostgreSQL and SQLite.

TRANSACTION_MARKERS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

# A run job starts by claiming the run: a conditional UPDATE pending -> running, then one SELECT.
CLAIM = ["UPDATE workflowrun", "SELECT workflowrun"]
# A sequential step is one transaction: the UPDATE that moves the run (conditional on its version)
# and the INSERT of the step's StepResult row.
STEP = ["BEGIN", "UPDATE workflowrun", "INSERT stepresult", "COMMIT"]
# Fanning out, whatever the number of branches: the duplicate-job guard, then one transaction that
# bumps the run, creates the group and bulk-inserts every branch row.
FAN_OUT = [
    "SELECT parallelgroup",
    "BEGIN",
    "UPDATE workflowrun",
    "INSERT parallelgroup",
    "INSERT stepresult",
    "COMMIT",
]
# A branch: claim its row (conditional UPDATE pending -> running), load it with run and group
# (one SELECT with joins), then one transaction that records the result and decrements the
# group's counters (UPDATE ... RETURNING).
BRANCH = [
    "UPDATE stepresult",
    "SELECT stepresult",
    "BEGIN",
    "UPDATE stepresult",
    "UPDATE parallelgroup",
    "COMMIT",
]
# The join, whatever the number of branches: take the group's lease (a duplicate join claims
# nothing), load the group with its run, load the final branch rows, then one transaction that
# closes the group and moves the run.
JOIN = [
    "UPDATE parallelgroup",
    "SELECT parallelgroup",
    "SELECT stepresult",
    "BEGIN",
    "UPDATE parallelgroup",
    "UPDATE workflowrun",
    "COMMIT",
]


def statements(captured: CaptureQueriesContext) -> list[str]:
    kinds = []
    for query in captured.captured_queries:
        sql = query["sql"].strip()
        verb = sql.split(None, 1)[0].upper()
        if verb in TRANSACTION_MARKERS:
            kinds.append(verb)
            continue
        table = re.search(r'(?:FROM|INTO|UPDATE) "durable_django_(\w+)"', sql)
        kinds.append(f"{verb} {table.group(1) if table else '?'}")
    return kinds


def drive_counting(queue: EmbeddedQueue, run: WorkflowRun) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        queue.run_until_idle(timeout=30)
    return statements(captured)


@runs
@pytest.mark.parametrize("count", [1, 2, 5])
def test_each_sequential_step_costs_one_update_and_one_insert(
    embedded: EmbeddedQueue, define: Definer, count: int
) -> None:
    wf = define([step(f"s{i}", lambda ctx: ok({"x": 1})) for i in range(count)])
    run = wf.start()
    assert drive_counting(embedded, run) == CLAIM + STEP * count
    run.refresh_from_db()
    assert run.status == "completed"


@runs
def test_failed_attempt_costs_the_same_as_a_step_and_the_retry_claims_again(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error("once") if len(calls) == 1 else ok()

    wf = define([step("flaky", flaky, retry={"max_attempts": 2, **IMMEDIATE})])
    run = wf.start()
    # Attempt 1 stores its failed row and bumps current_attempt in one transaction; the retry is
    # a new run job, which claims the (already running) run again before attempt 2.
    assert drive_counting(embedded, run) == CLAIM + STEP + CLAIM + STEP
    assert attempts(run) == [("flaky", 1, "failed"), ("flaky", 2, "completed")]


@runs
@pytest.mark.parametrize("count", [1, 3, 20])
def test_each_branch_costs_claim_load_record_and_counter(embedded: EmbeddedQueue, define: Definer, count: int) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok({"x": 1})) for i in range(count)))])
    run = wf.start()
    assert drive_counting(embedded, run) == CLAIM + FAN_OUT + BRANCH * count + JOIN
    run.refresh_from_db()
    assert run.status == "completed"


@runs
def test_block_cost_grows_by_six_statements_per_branch(
    embedded: EmbeddedQueue, define: Definer, django_assert_num_queries: Any
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok()) for i in range(10)))])
    wf.start()
    # 2 (claim) + 6 (fan-out) + 10 * 6 (branches) + 7 (join): no per-branch query in fan-out or join.
    with django_assert_num_queries(2 + 6 + 10 * 6 + 7):
        embedded.run_until_idle(timeout=30)


@runs
def test_fail_fast_join_also_cancels_pending_branches_in_its_transaction(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [parallel(step("fails", lambda ctx: error("no")), step("late", lambda ctx: ok(), queue="priority"), name="fan")]
    )
    run = wf.start()
    late = ["UPDATE stepresult"]  # the cancelled branch's job finds its row no longer pending
    # The join's transaction also marks the still-pending branch cancelled and stops counting it.
    cancel = [*JOIN[:-1], "UPDATE stepresult", "UPDATE parallelgroup", "COMMIT"]
    assert drive_counting(embedded, run) == CLAIM + FAN_OUT + BRANCH + cancel + late
    run.refresh_from_db()
    assert run.status == "failed"
