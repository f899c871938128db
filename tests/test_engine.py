"""Engine mechanics: queue hand-over, re-delivered jobs, definitions gone missing, query costs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rq import SimpleWorker

from durable_django import blocks, error, ok, parallel, step
from durable_django.definition import unregister
from durable_django.jobs import join_group, run_branch, run_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


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
    run_workflow(str(run.pk), "default", 0)
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

    run_workflow(str(run.pk), "default", 0)
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
    run_workflow("00000000-0000-0000-0000-000000000000", "default", 0)
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
# counts are the same on PostgreSQL and SQLite, except where PostgreSQL does a step in one statement.

TRANSACTION_MARKERS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

# A run job starts by claiming the run: a conditional UPDATE pending -> running, then one SELECT.
CLAIM = ["UPDATE workflowrun", "SELECT workflowrun"]
# A sequential step is one transaction: the UPDATE that moves the run (conditional on its version)
# and the INSERT of the step's StepResult row. On PostgreSQL both are one statement (a CTE), so a
# step costs one round trip and one commit.
STEP = (
    ["WITH workflowrun+stepresult"]
    if connection.vendor == "postgresql"
    else ["BEGIN", "UPDATE workflowrun", "INSERT stepresult", "COMMIT"]
)
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
# Branches run in drain jobs. The fan-out sends one; a drain job loads the group with its run,
# claims a first batch (UPDATE ... RETURNING), checks whether branches are left (then it sends the
# next drain job, up to DURABLE["PARALLEL_JOBS"]), and then, per batch,
# one transaction: store every result in one UPDATE (of the rows this worker still holds), decrement
# the group's counters (UPDATE ... RETURNING) and claim the next batch. A short batch ends the job.
DRAIN_START = ["SELECT parallelgroup", "UPDATE stepresult", "SELECT stepresult"]


@pytest.fixture
def quick_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches always count as quick, so that their sizes (and the statements) do not depend on timing."""
    monkeypatch.setattr(blocks, "TARGET_SECONDS", 3600.0)


def record(*, claim_next: bool) -> list[str]:
    return [
        "BEGIN",
        "UPDATE stepresult",
        "UPDATE parallelgroup",
        *(["UPDATE stepresult"] if claim_next else []),
        "COMMIT",
    ]


# A drain job that finds every branch taken by another: the load tells (EXISTS), nothing more.
IDLE_DRAIN = ["SELECT parallelgroup"]
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
        if verb == "WITH":
            # A CTE: name the tables it writes, in order.
            written = re.findall(r'(?:INTO|UPDATE) "durable_django_(\w+)"', sql)
            kinds.append(f"WITH {'+'.join(written)}")
            continue
        # The statement's own table, not one of a subquery (such as an EXISTS in the select list).
        tables = [
            (sql[: match.start()].count("(") - sql[: match.start()].count(")"), match.group(1))
            for match in re.finditer(r'(?:FROM|INTO|UPDATE) "durable_django_(\w+)"', sql)
        ]
        kinds.append(f"{verb} {min(tables)[1] if tables else '?'}")
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
@pytest.mark.parametrize(
    ("count", "batches"),
    [(1, [1]), (3, [1, 2]), (20, [1, 2, 4, 8, 5]), (40, [1, 2, 4, 8, 16, 9])],
)
def test_a_block_executes_its_branches_in_batches_that_double_while_they_are_quick(
    embedded: EmbeddedQueue, define: Definer, count: int, batches: list[int], quick_batches: None
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok({"x": 1})) for i in range(count)))])
    run = wf.start()
    # One worker: the first drain job takes every branch, the one it brought in finds none left. After
    # a full batch the job asks for the next one (which may come back empty); a short batch was the last.
    sizes = [2**index for index in range(len(batches))]
    records = [record(claim_next=got == asked) for got, asked in zip(batches, sizes, strict=True)]
    idle = IDLE_DRAIN * (1 if count > 1 else 0)
    expected = CLAIM + FAN_OUT + DRAIN_START + [kind for batch in records for kind in batch] + idle + JOIN
    assert drive_counting(embedded, run) == expected
    run.refresh_from_db()
    assert run.status == "completed"
    assert StepResult.objects.filter(run=run, status="completed").count() == count


@runs
@pytest.mark.parametrize("count", [20, 100, 1000])
def test_a_branch_costs_at_most_four_queries_and_one_transaction_on_the_worker(
    embedded: EmbeddedQueue, define: Definer, count: int, quick_batches: None
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok()) for i in range(count)))])
    run = wf.start()
    executed = drive_counting(embedded, run)
    # The fan-out ends at its COMMIT (SQLite inserts a big block's rows in several statements).
    fanned = executed.index("COMMIT") + 1
    assert executed[: len(CLAIM)] == CLAIM and executed[-len(JOIN) :] == JOIN
    branches = executed[fanned : -len(JOIN)]
    queries = [kind for kind in branches if kind not in TRANSACTION_MARKERS]
    # An UPDATE outside BEGIN...COMMIT is a transaction of its own (autocommit).
    depth, transactions = 0, 0
    for kind in branches:
        if kind == "BEGIN":
            depth, transactions = depth + 1, transactions + 1
        elif kind == "COMMIT":
            depth -= 1
        elif depth == 0 and not kind.startswith("SELECT"):
            transactions += 1
    assert len(queries) <= 4 * count
    assert transactions <= count
    expected = {20: (18, 6), 100: (24, 8), 1000: (33, 11)}[count]
    assert (len(queries), transactions) == expected


@runs
def test_fail_fast_join_also_cancels_pending_branches_in_its_transaction(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    wf = define(
        [parallel(step("fails", lambda ctx: error("no")), step("late", lambda ctx: ok(), queue="priority"), name="fan")]
    )
    run = wf.start()
    late = ["SELECT parallelgroup"]  # the other queue's drain job finds the block already decided
    # The join's transaction also marks the still-pending branch cancelled and stops counting it.
    cancel = [*JOIN[:-1], "UPDATE stepresult", "UPDATE parallelgroup", "COMMIT"]
    failing = DRAIN_START + record(claim_next=True)
    assert drive_counting(embedded, run) == CLAIM + FAN_OUT + failing + cancel + late
    run.refresh_from_db()
    assert run.status == "failed"
