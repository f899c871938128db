"""Decisions for parallel blocks: the fan-out, the drain loop, one branch, and the join.

The fan-out writes the group and a pending row per branch (:func:`fan_out`); drain jobs
(:func:`run_branches`) claim those rows in batches whose size follows how quick the branches
are, so a thousand no-op branches cost a handful of commits while slow ones spread over every
worker; a retry of a branch, or a branch sent again, is a job of its own (:func:`run_branch`).
Each recorded final result takes one off the group's counter in the transaction that records
it, and whoever records the result that decides the block (:func:`decides`) sends the join.
:func:`join_group` claims the group (its lease), applies ``on_error`` or ``into``, and closes the
group in the transaction that moves the run; continuing the run is the engine's part.

Every write goes through :mod:`durable_django.store`; this module only decides.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from django.db.models import Exists, OuterRef
from django.utils import timezone

from . import dispatch, results, store
from .attempts import Attempt, call_step, retry_delay
from .conf import durable_settings
from .context import RESULTS_KEY, StepScope, Unserializable, results_to_tuples, roundtrip, step_scope, to_step_context
from .definition import Parallel, Step, Workflow, find_workflow, queue_for
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from .results import ERROR, GOTO, OK, Outcome, normalize
from .store import Claimed, Counts

logger = logging.getLogger("durable_django")

# A batch grows while executing it takes less than half of TARGET_SECONDS and shrinks above twice.
TARGET_SECONDS = 0.05
MAX_BATCH = 500


# -- what decides a block -------------------------------------------------------------------------


def stops_at_first_failure(block: Parallel | None) -> bool:
    """Whether ``block`` is decided by its first failing branch (``fail_fast`` without ``into``)."""
    return block is not None and block.on_error == "fail_fast" and block.into is None


def decided(block: Parallel | None, pending: int, failed: int) -> bool:
    """Whether a group with these counters is decided: its join can run."""
    return pending == 0 or (failed > 0 and stops_at_first_failure(block))


def decides(block: Parallel | None, counts: Counts) -> bool:
    """Whether the results just counted decided the block: it is decided now and was not before.

    Exactly one batch (or branch) of a block sees this, so the join is sent exactly once.
    """
    before = (counts.pending + counts.finals, counts.failed - counts.failures)
    return decided(block, counts.pending, counts.failed) and not decided(block, *before)


def _send_join_if_decided(
    group_id: int, run_id: Any, block: Parallel | None, counts: Counts | None, queue: str
) -> None:
    if counts is not None and decides(block, counts):
        dispatch.submit(dispatch.join_group_job(group_id, run_id, queue))


# -- fan-out --------------------------------------------------------------------------------------


def fan_out(run: WorkflowRun, wf: Workflow, block: Parallel) -> bool:
    """Open the block's group with one pending row per branch and send the drain jobs that execute them.

    ``False`` when the block's group is already open (a duplicate job) or the run moved on.
    """
    if ParallelGroup.objects.filter(run_id=run.pk, name=block.name, status=GroupStatus.RUNNING).exists():
        return False
    by_queue: dict[str, list[str]] = {}
    for member in block.steps:
        # One drain job per queue to begin with; it brings in more while there is work left for them.
        by_queue.setdefault(queue_for(wf, member), []).append(member.name)
    if store.open_group(run, block.name, block.on_error, by_queue) is None:
        return False
    logger.info("run %s fanned out %d branches of %r", run.pk, len(block.steps), block.name)
    return True


# -- retry or final -------------------------------------------------------------------------------


def _retries(
    group: ParallelGroup, wf: Workflow, outcomes: list[tuple[Claimed, Step, Attempt]]
) -> dict[int, store.NextAttempt]:
    """Retry or final: the failed attempts among ``outcomes`` that get another attempt, and that attempt.

    A block decided meanwhile (``fail_fast``) needs no further attempt: its failures are final.
    """
    again: dict[int, store.NextAttempt] = {}
    group_open: bool | None = None
    for row, step, attempt in outcomes:
        delay = retry_delay(step, attempt, row.attempt, group.run_id, group.pk)
        if delay is None:
            continue
        if group_open is None:
            group_open = ParallelGroup.objects.filter(pk=group.pk, status=GroupStatus.RUNNING).exists()
        if not group_open:
            return {}
        again[row.pk] = store.next_attempt(
            group.run_id, group.pk, row.step, row.attempt + 1, queue_for(wf, step), delay
        )
    return again


# -- the drain loop -------------------------------------------------------------------------------


def run_branches(group_id: int, queue: str, index: int = 0) -> None:
    """Execute the block's pending first attempts on ``queue`` in batches (drain job ``index``).

    Drain job ``index`` sends drain job ``index + 1`` as soon as it has claimed work and some is
    left, up to ``DURABLE["PARALLEL_JOBS"]`` jobs: slow branches spread over idle workers within
    moments, while quick ones are mostly done by the first job and leave few idle jobs behind.
    """
    unclaimed = StepResult.objects.filter(group=OuterRef("pk"), status=StepStatus.PENDING, attempt=1)
    group = (
        ParallelGroup.objects.select_related("run").annotate(unclaimed=Exists(unclaimed)).filter(pk=group_id).first()
    )
    if group is None or group.status != GroupStatus.RUNNING or group.run.status != RunStatus.RUNNING:
        return
    if not group.unclaimed:
        # The other drain jobs of the block took every branch already: a job that cost one read.
        return
    run = group.run
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    if wf is None or block is None:
        reason = results.unknown_step(
            f"workflow {run.workflow!r} has no parallel block {group.name!r} with these branches"
        )
        # Every pending branch fails at once; the join then decides.
        _send_join_if_decided(group.pk, run.pk, None, store.fail_pending_branches(group.pk, reason), queue_for(wf))
        return
    steps = {member.name: member for member in block.steps if queue_for(wf, member) == queue}
    if not steps:
        return
    names = None if len(steps) == len(block.steps) else list(steps)
    ctx = to_step_context(run.context)
    size = 1
    batch = store.claim_batch(group.pk, names, size)
    if batch and index + 1 < durable_settings.PARALLEL_JOBS and _unclaimed(group, names):
        dispatch.submit(dispatch.run_branches_job(group.pk, run.pk, queue, index + 1))
    while batch:
        started = time.monotonic()
        outcomes: list[tuple[Claimed, Step, Attempt]] = []
        with store.heartbeat.hold_many(StepResult, [row.pk for row in batch]):
            for row in batch:
                step = steps[row.step]
                outcomes.append((row, step, call_step(step, copy.deepcopy(ctx), run.pk, in_parallel=True)))
        elapsed = time.monotonic() - started
        # A short batch means nothing was left to claim: no need to ask again.
        more = len(batch) == size
        if elapsed < TARGET_SECONDS / 2:
            size = min(size * 2, MAX_BATCH)
        elif elapsed > TARGET_SECONDS * 2:
            size = max(size // 2, 1)
        retries = _retries(group, wf, outcomes)
        # Recording a batch and claiming the next one is one transaction: one commit per batch.
        recorded = store.record_batch(
            group.pk, [(row, attempt) for row, _, attempt in outcomes], retries, (names, size) if more else None
        )
        _send_join_if_decided(group.pk, run.pk, block, recorded.counts, queue_for(wf))
        batch = recorded.next_batch


def _unclaimed(group: ParallelGroup, names: list[str] | None) -> bool:
    pending = StepResult.objects.filter(group=group, status=StepStatus.PENDING, attempt=1)
    return (pending.filter(step__in=names) if names is not None else pending).exists()


# -- one branch -----------------------------------------------------------------------------------


def run_branch(row_id: int) -> None:
    """Run the one attempt of a branch that row ``row_id`` is, and record its result once."""
    if not store.claim_branch(row_id, dispatch.current_job_id()):
        logger.debug("branch %s is not pending (duplicate or cancelled job); nothing to do", row_id)
        return
    row = StepResult.objects.select_related("run", "group").get(pk=row_id)
    run, group = row.run, row.group
    if group is None:
        logger.error("step result %s is not a branch of a parallel group; dropping its job", row_id)
        return
    if run.status != RunStatus.RUNNING or group.status != GroupStatus.RUNNING:
        store.cancel_branch(row_id)
        return
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    step = block.branch(row.step) if block else None
    if wf is None or step is None:
        reason = results.unknown_step(f"workflow {run.workflow!r} has no branch {row.step!r} in block {group.name!r}")
        finish_branch(row, group, wf, None, Attempt.failure(reason, row.started_at))
        return
    with store.heartbeat.hold(StepResult, row_id):
        attempt = call_step(step, to_step_context(run.context), run.pk, in_parallel=True)
    claimed = Claimed(row.pk, row.step, row.attempt)
    nxt = _retries(group, wf, [(claimed, step, attempt)]).get(row.pk)
    if nxt is None:
        finish_branch(row, group, wf, block, attempt)
    elif store.retry_branch(row.pk, attempt, nxt):
        logger.info(
            "branch %r of run %s failed (attempt %d); retrying in %.2fs", row.step, run.pk, row.attempt, nxt.delay
        )


def finish_branch(
    row: StepResult, group: ParallelGroup, wf: Workflow | None, block: Parallel | None, attempt: Attempt
) -> bool:
    """Record ``attempt`` as the final result of branch ``row`` and send the join if it decides the block."""
    counts = store.record_branch(row.pk, group.pk, attempt)
    _send_join_if_decided(group.pk, group.run_id, block, counts, queue_for(wf))
    return counts is not None


def retry_lost_branch(row: StepResult, wf: Workflow, step: Step, attempt: Attempt) -> bool:
    """Record a branch attempt whose worker was lost and send its next attempt at once."""
    nxt = store.next_attempt(row.run_id, row.group_id, row.step, row.attempt + 1, queue_for(wf, step), 0.0)
    return store.retry_branch(row.pk, attempt, nxt)


# -- the join -------------------------------------------------------------------------------------


def join_group(group_id: int) -> tuple[WorkflowRun, Workflow] | None:
    """Apply a decided block's error strategy and ``into``, close its group and move its run on.

    Returns the run and its workflow when this join moved the run to its next step (for the
    engine to continue), ``None`` otherwise: the run finished or failed here, a duplicate join
    claimed nothing, or the run is not running (the group is left to whoever comes next).
    """
    # The group's lease makes a duplicate join job (or one recovery sent again) a no-op.
    if not store.claim_join(group_id):
        logger.debug("group %s is closed or joined by another worker; nothing to do", group_id)
        return None
    group = ParallelGroup.objects.select_related("run").get(pk=group_id)
    with store.heartbeat.hold(ParallelGroup, group_id):
        closed, wf = _join(group)
    if not closed:
        # The join did not close the group (its run was not running): leave it to whoever comes next.
        store.release_join(group_id)
        return None
    # The group is closed and its lease let go: the run goes on under its own lease.
    return (group.run, wf) if wf is not None else None


def _join(group: ParallelGroup) -> tuple[bool, Workflow | None]:
    """Decide ``group``: whether it is closed (by this join or, in a lost race, another), and the
    workflow to continue ``group.run`` in when this join moved the run on to its next step."""
    run = group.run
    if run.status != RunStatus.RUNNING:
        return False, None
    wf = find_workflow(run.workflow)
    if wf is None:
        store.fail_run(run, run.current_step, results.workflow_not_found(run.workflow))
        logger.error("run %s failed: its workflow %r is not registered", run.pk, run.workflow)
        return False, None
    position = wf.position(group.name)
    block = wf.block(group.name)
    if block is None or position is None:
        reason = results.unknown_step(f"workflow {wf.name!r} has no parallel block {group.name!r}")
        return store.close_group(
            run, group.pk, GroupStatus.FAILED, None, reason, store.fail_fields(group.name, reason)
        ), None
    latest = _final_attempts(group)
    keys = {member.name: member.key for member in block.steps}
    collected = {
        keys.get(name, name): ["ok", output] if status == StepStatus.COMPLETED else ["error", error]
        for name, (_, _, status, output, error, _) in latest.items()
    }
    if block.into is not None:
        return _join_into(run, wf, group, block, position, collected)
    failures = [branch for branch in latest.values() if branch[2] == StepStatus.FAILED]
    if block.on_error == "fail_fast" and failures:
        _, name, _, _, error, _ = min(failures, key=lambda b: (b[5] or timezone.now(), b[0]))
        fields = store.fail_fields(name, error, parallel=group.name)
        if not store.close_group(run, group.pk, GroupStatus.FAILED, collected, None, fields, cancel_pending=True):
            return False, None
        logger.info("run %s failed fast at branch %r of %r", run.pk, name, group.name)
        return True, None
    fields = store.move_fields(wf, position + 1, {**run.context, RESULTS_KEY: collected})
    if not store.close_group(run, group.pk, GroupStatus.COMPLETED, collected, None, fields):
        return False, None
    return True, wf


def _final_attempts(group: ParallelGroup) -> dict[str, tuple[Any, ...]]:
    """Each branch's latest final attempt ``(pk, step, status, output, error, finished_at)``, by step.

    One batched read of plain tuples: a block may have thousands of branches.
    """
    final = (
        StepResult.objects.filter(group=group, status__in=(StepStatus.COMPLETED, StepStatus.FAILED))
        .order_by("id")
        .values_list("pk", "step", "status", "output", "error", "finished_at")
    )
    latest: dict[str, tuple[Any, ...]] = {}
    for branch in final:  # ordered by id: a later attempt replaces an earlier one
        latest[branch[1]] = branch
    return latest


def _join_into(
    run: WorkflowRun, wf: Workflow, group: ParallelGroup, block: Parallel, position: int, collected: dict[str, Any]
) -> tuple[bool, Workflow | None]:
    assert block.into is not None
    ctx = to_step_context(run.context)
    # Inside into, the parallel_* helpers read this block's results, as a step after the block would.
    scope_ctx = {**ctx, RESULTS_KEY: results_to_tuples(roundtrip(collected))}
    try:
        with step_scope(StepScope(run.pk, group.name, scope_ctx)):
            outcome = normalize(block.into(ctx, results_to_tuples(roundtrip(collected))))
    except Exception as exc:
        outcome = Outcome(ERROR, reason=results.exception_reason(exc, "into_error"))
    if outcome.kind == "invalid":
        outcome = Outcome(ERROR, reason=outcome.reason)
    context: dict[str, Any] = {}
    if outcome.kind in (OK, GOTO):
        try:
            context = roundtrip(outcome.data)
        except Unserializable as exc:
            message = f"into of {group.name!r} returned a context that cannot be stored as JSON: {exc}"
            outcome = Outcome(ERROR, reason=results.unserializable_output(message))
    target = position + 1 if outcome.kind == OK else wf.position(outcome.target) if outcome.kind == GOTO else None
    if target is None:
        reason = (
            results.goto_error(group.name, outcome.target)
            if outcome.kind == GOTO
            else results.stored_reason(outcome.reason)
        )
        fields = store.fail_fields(group.name, reason)
        return store.close_group(run, group.pk, GroupStatus.FAILED, collected, reason, fields), None
    if not store.close_group(
        run, group.pk, GroupStatus.COMPLETED, collected, None, store.move_fields(wf, target, context)
    ):
        return False, None
    return True, wf
