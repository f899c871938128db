"""Engine mechanics: queue hand-over, re-delivered jobs, definitions gone missing, query costs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rq import SimpleWorker

from durable_django import batches, blocks, dispatch, error, foreach, ok, parallel, step
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

POSTGRESQL = connection.vendor == "postgresql"

# A run job starts by claiming the run: one conditional UPDATE pending -> running ... RETURNING the row.
CLAIM = ["UPDATE workflowrun"]
# A sequential step is one transaction: the UPDATE that moves the run (conditional on its version)
# and the INSERT of the step's StepResult row. On PostgreSQL both are one statement (a CTE), so a
# step costs one round trip and one commit.
STEP = ["WITH workflowrun+stepresult"] if POSTGRESQL else ["BEGIN", "UPDATE workflowrun", "INSERT stepresult", "COMMIT"]
# Entering a block, whatever the number of branches: one transaction that moves the run (storing
# the row of the step before the block, when one ran in the same job), creates the group and
# inserts every branch row, the first batch already claimed by the job that entered the block.
# On PostgreSQL it is one statement.
FAN_OUT = (
    ["WITH workflowrun+parallelgroup+stepresult"]
    if POSTGRESQL
    else ["BEGIN", "UPDATE workflowrun", "INSERT parallelgroup", "INSERT stepresult", "COMMIT"]
)
STEP_AND_FAN_OUT = (
    ["WITH workflowrun+stepresult+parallelgroup+stepresult"]
    if POSTGRESQL
    else ["BEGIN", "UPDATE workflowrun", "INSERT stepresult", "INSERT parallelgroup", "INSERT stepresult", "COMMIT"]
)
# A drain job loads the group with its run, claims a first batch (UPDATE ... RETURNING), checks
# whether branches are left (then it sends the next drain job, up to DURABLE["PARALLEL_JOBS"]).
DRAIN_START = ["SELECT parallelgroup", "UPDATE stepresult", "SELECT stepresult"]
# Then, per batch, one transaction: store every result in one UPDATE (of the rows this worker still
# holds) and decrement the group's counters (UPDATE ... RETURNING), one statement on PostgreSQL;
# then claim the next batch.
STORE_AND_COUNT = ["WITH stepresult+parallelgroup"] if POSTGRESQL else ["UPDATE stepresult", "UPDATE parallelgroup"]
RECORD = ["BEGIN", *STORE_AND_COUNT, "UPDATE stepresult", "COMMIT"]
# A short batch asks for no next one.
LAST_RECORD = ["BEGIN", *STORE_AND_COUNT, "COMMIT"]
# The batch that decides a block without into joins it in the same transaction: it reads the final
# branch rows (unless it holds every branch's result itself), moves the run and closes the group
# (one statement on PostgreSQL).
MOVE_AND_CLOSE = ["WITH workflowrun+parallelgroup"] if POSTGRESQL else ["UPDATE workflowrun", "UPDATE parallelgroup"]
RECORD_AND_JOIN = ["BEGIN", *STORE_AND_COUNT, "SELECT stepresult", *MOVE_AND_CLOSE, "COMMIT"]
# When the batch holds every branch of the block, the join is known before anything is written:
# on PostgreSQL the results, the counters, the group's close and the run's move are one statement.
RECORD_ALL_AND_JOIN = (
    ["WITH stepresult+parallelgroup+workflowrun"]
    if POSTGRESQL
    else ["BEGIN", *STORE_AND_COUNT, *MOVE_AND_CLOSE, "COMMIT"]
)


@pytest.fixture
def quick_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches always count as quick and never overrun: their sizes and statements do not depend on timing."""
    monkeypatch.setattr(blocks, "TARGET_SECONDS", 3600.0)
    monkeypatch.setattr(batches, "OVERRUN_SECONDS", 3600.0)


# A drain job that finds the block closed or every branch taken: the load tells (EXISTS), nothing more.
IDLE_DRAIN = ["SELECT parallelgroup"]
# The join job of a block with into, or whose join runs on another queue: take the group's lease
# (a duplicate join claims nothing), load the group with its run, load the final branch rows, then
# one transaction that locks the group, moves the run and closes the group.
JOIN = [
    "UPDATE parallelgroup",
    "SELECT parallelgroup",
    "SELECT stepresult",
    "BEGIN",
    "SELECT parallelgroup",
    *MOVE_AND_CLOSE,
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
@pytest.mark.parametrize("count", [1, 3, 40, 50])
def test_a_foreach_block_costs_what_a_parallel_block_of_as_many_branches_costs(
    embedded: EmbeddedQueue, define: Definer, count: int, quick_batches: None
) -> None:
    # The items are evaluated in the job that reaches the block and stored on the group: the
    # statements are the same, batch for batch, as for a static block of the same width.
    static = define([parallel(*(step(f"b{i}", lambda ctx: ok({"x": 1})) for i in range(count)))])
    dynamic = define([foreach("each", "things", lambda ctx: ok({"x": 1}))])
    static_cost = drive_counting(embedded, static.start())
    run = dynamic.start({"things": list(range(count))})
    assert drive_counting(embedded, run) == static_cost
    run.refresh_from_db()
    assert (run.status, len(run.context["__results__"])) == ("completed", count)


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
def test_an_onboarding_shaped_run_is_one_job_of_four_commits(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    wf = define(
        [
            step("create", lambda ctx: ok({"user": 1})),
            parallel(
                step("email", lambda ctx: ok()), step("workspace", lambda ctx: ok()), step("billing", lambda ctx: ok())
            ),
            step("complete", lambda ctx: ok({"done": True})),
        ]
    )
    run = wf.start()
    # After the claim, the first step's row, the group and its three branches (claimed by this job)
    # in one commit; the three results, the join and the move to the last step in another; the last
    # step in a third. On PostgreSQL each of the four is one statement.
    assert drive_counting(embedded, run) == CLAIM + STEP_AND_FAN_OUT + RECORD_ALL_AND_JOIN + STEP
    run.refresh_from_db()
    assert run.status == "completed"
    assert {row.job_id for row in StepResult.objects.filter(run=run)} == {f"durable-run-{run.pk}-0"}


@pytest.fixture
def flag_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The runs whose cancel flag is read in Redis, one entry per read (before each step and branch starts)."""
    reads: list[Any] = []
    read = dispatch.cancel_flag_raised

    def counted(run_id: Any) -> bool | None:
        reads.append(run_id)
        return read(run_id)

    monkeypatch.setattr(dispatch, "cancel_flag_raised", counted)
    return reads


@runs
def test_the_cancel_check_before_each_start_is_one_redis_read_and_no_statement(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None, flag_reads: list[Any]
) -> None:
    wf = onboarding(define)
    run = wf.start()
    # The statements are those of the onboarding run above, not one more; Redis is read once per
    # step and branch, right before it starts.
    assert drive_counting(embedded, run) == CLAIM + STEP_AND_FAN_OUT + RECORD_ALL_AND_JOIN + STEP
    assert flag_reads == [run.pk] * 5


@runs
def test_while_a_cancel_flag_is_up_each_start_also_reads_the_runs_status(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None, flag_reads: list[Any]
) -> None:
    wf = onboarding(define)
    run = wf.start()
    # A cancel that raised the flag and rolled back (or has not committed yet): every start asks
    # the database whether the run is still running, one SELECT, and goes ahead.
    dispatch.raise_cancel_flag(run.pk, dispatch.CANCEL_PENDING_TTL)
    check = ["SELECT workflowrun"]
    assert drive_counting(embedded, run) == (
        CLAIM + check + STEP_AND_FAN_OUT + check * 3 + RECORD_ALL_AND_JOIN + check + STEP
    )
    run.refresh_from_db()
    assert (run.status, len(flag_reads)) == ("completed", 5)


def onboarding(define: Definer) -> Any:
    return define(
        [
            step("create", lambda ctx: ok({"user": 1})),
            parallel(*(step(name, lambda ctx: ok()) for name in ("email", "workspace", "billing"))),
            step("complete", lambda ctx: ok({"done": True})),
        ]
    )


@runs
@pytest.mark.parametrize(
    ("count", "batches"),
    [(1, [1]), (3, [3]), (32, [32]), (40, [32, 8]), (50, [32, 18])],
)
def test_the_job_that_reaches_a_block_executes_its_branches_in_batches_that_double_while_they_are_quick(
    embedded: EmbeddedQueue, define: Definer, count: int, batches: list[int], quick_batches: None
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok({"x": 1})) for i in range(count)))])
    run = wf.start()
    # One worker: the run's job claims a first batch of up to blocks.FIRST_BATCH branches when it
    # enters the block, and a drain job is sent for the rest only when there is a rest (it finds
    # them taken). After a full batch the job claims the next, twice as large; the batch that
    # decides the block joins it.
    # The batch of a block's every branch holds every result; a later one reads them.
    records = [RECORD] * (len(batches) - 1) + [RECORD_ALL_AND_JOIN if len(batches) == 1 else RECORD_AND_JOIN]
    idle = IDLE_DRAIN if count > blocks.FIRST_BATCH else []
    expected = CLAIM + FAN_OUT + [kind for batch in records for kind in batch] + idle
    assert drive_counting(embedded, run) == expected
    run.refresh_from_db()
    assert run.status == "completed"
    assert StepResult.objects.filter(run=run, status="completed").count() == count


@runs
def test_branches_on_another_queue_run_in_a_drain_job_whose_join_is_sent_to_the_workflows_queue(
    embedded: EmbeddedQueue, define: Definer, quick_batches: None
) -> None:
    wf = define(
        [parallel(step("a", lambda ctx: ok(), queue="priority"), step("b", lambda ctx: ok(), queue="priority"))]
    )
    run = wf.start()
    # The run's job only opens the group; the priority queue's drain job executes both branches in
    # batches of 1 and 1 (the second asked for 2) and sends the join to the workflow's queue, whose
    # job continues the run; the drain job the first one brought in finds nothing left.
    records = RECORD + LAST_RECORD
    assert drive_counting(embedded, run) == CLAIM + FAN_OUT + DRAIN_START + records + JOIN + IDLE_DRAIN
    run.refresh_from_db()
    assert run.status == "completed"


@runs
@pytest.mark.parametrize("count", [20, 100, 1000])
def test_a_branch_costs_at_most_four_queries_and_one_transaction_on_the_worker(
    embedded: EmbeddedQueue, define: Definer, count: int, quick_batches: None
) -> None:
    wf = define([parallel(*(step(f"b{i}", lambda ctx: ok()) for i in range(count)))])
    run = wf.start()
    executed = drive_counting(embedded, run)
    # The fan-out ends at its COMMIT (SQLite inserts a big block's rows in several statements; it is
    # one statement on PostgreSQL); after it, the branches execute and the block is joined; then a
    # drain job sent for the branches beyond the first batch finds none left.
    fanned = len(CLAIM) + len(FAN_OUT) if POSTGRESQL else executed.index("COMMIT") + 1
    idle = IDLE_DRAIN if count > blocks.FIRST_BATCH else []
    assert executed[: len(CLAIM)] == CLAIM and executed[len(executed) - len(idle) :] == idle
    branches = executed[fanned : len(executed) - len(idle)]
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
    # Vendors differ only where PostgreSQL does two statements in one.
    expected = ({20: (1, 1), 100: (7, 3), 1000: (13, 6)} if POSTGRESQL else {20: (4, 1), 100: (11, 3), 1000: (20, 6)})[
        count
    ]
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
    # The transaction that records the failure joins the block: it also marks the still-pending
    # branch cancelled and stops counting it.
    failing = [
        "BEGIN",
        *STORE_AND_COUNT,
        "SELECT stepresult",
        *MOVE_AND_CLOSE,
        "UPDATE stepresult",
        "UPDATE parallelgroup",
        "COMMIT",
    ]
    assert drive_counting(embedded, run) == CLAIM + FAN_OUT + failing + late
    run.refresh_from_db()
    assert run.status == "failed"
