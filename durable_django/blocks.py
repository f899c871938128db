"""Decisions for parallel blocks: entering one, executing batches of branches, one branch, the join.

The job that reaches a block opens its group (:func:`enter`), in the transaction that records the
step before it, and claims a first batch of branches at once: it executes them itself, so a short
block costs no other job. Branches beyond that batch, and those of other queues, are left pending
for drain jobs (:func:`run_branches`), which claim them in batches whose size follows how quick the
branches are; executing one batch is :mod:`durable_django.batches`' part (a batch that runs past
its budget gives the branches it has not started back to other workers, so slow branches still
run side by side, and records the results it has). A retry of a branch, or a branch sent again,
is a job of its own (:func:`run_branch`).

Each recorded final result takes one off the group's counter in the transaction that records it,
and the results that decide the block (:func:`decides`, true for exactly one batch or branch) are
joined by whoever recorded them: in that same transaction for a block without ``into``, right after
it otherwise (:func:`join_group`); the run then goes on in the same job. Continuing the run is the
engine's part: these functions return the run they moved on (:class:`Moved`).

Every write goes through :mod:`durable_django.store`; this module only decides.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from django.db.models import Case, Exists, F, JSONField, OuterRef, When
from django.utils import timezone

from . import batches, dispatch, items, join, results, store, tracing
from .attempts import Attempt, call_step
from .conf import durable_settings
from .context import to_step_context
from .definition import Block, Foreach, Step, Workflow, find_workflow, queue_for
from .join import Moved
from .logging import run_fields
from .models import BlockKind, GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from .store import Claimed

logger = logging.getLogger("durable_django")

# A batch grows while executing it takes less than half of TARGET_SECONDS and shrinks above twice.
TARGET_SECONDS = 0.05
MAX_BATCH = 500
# How many branches the job that reaches a block claims at once; more are left to drain jobs.
FIRST_BATCH = 32
# An attempt of a foreach block that runs max_concurrency items already is sent again this much later.
HOLD_BACK = 0.5


# -- entering a block -----------------------------------------------------------------------------


def enter(
    run: WorkflowRun,
    wf: Workflow,
    block: Block,
    queue: str,
    *,
    fields: dict[str, Any] | None = None,
    rows: list[StepResult] | None = None,
) -> Moved | None:
    """Open ``block``'s group for ``run`` and execute its first batch of branches in this job.

    ``fields`` and ``rows``: the outcome of the step before the block, committed with the group.
    Returns the run when it went past the block in this job (its join moved it to the next step).
    """
    if isinstance(block, Foreach):
        return _enter_foreach(run, wf, block, queue, fields, rows)
    first = [member.name for member in block.steps if queue_for(wf, member) == queue][:FIRST_BATCH]
    taken = set(first)
    rest: dict[str, list[str]] = {}
    for member in block.steps:
        if member.name not in taken:
            rest.setdefault(queue_for(wf, member), []).append(member.name)
    # The context the block started with: what its branches are compensated with, and what a fork from it starts with.
    context = (fields or {}).get("context", run.context)
    plan = store.Plan(first, rest, queue)
    opening = store.Opening(context=context)
    opened = store.open_group(run, block.name, block.on_error, plan, fields=fields, rows=rows, opening=opening)
    if opened is None:
        return None
    group, claimed = opened
    logger.info(
        "run %s fanned out %d branches of %r",
        run.pk,
        len(block.steps),
        block.name,
        extra=run_fields(run.pk, run.workflow, step=block.name),
    )
    return _drain(group, run, wf, block, queue, claimed) if claimed else None


def _enter_foreach(
    run: WorkflowRun,
    wf: Workflow,
    block: Foreach,
    queue: str,
    fields: dict[str, Any] | None,
    rows: list[StepResult] | None,
) -> Moved | None:
    """Evaluate a foreach block's items and open its group, one row per item (see :func:`enter`).

    Items that are not a JSON list fail the run (with the step before the block recorded); an
    empty list opens an empty group that is joined at once (``into`` sees ``[]``).
    """
    context = fields["context"] if fields and "context" in fields else run.context
    listed, reason = items.evaluate(block, run.pk, to_step_context(context))
    if listed is None:
        logger.info(
            "run %s failed: the items of %r are not a list", run.pk, block.name, extra=run_fields(run.pk, run.workflow)
        )
        store.fail_run(run, block.name, reason, rows, context=context)
        return None
    here = queue_for(wf, block.member) == queue
    first = min(len(listed), FIRST_BATCH, block.max_concurrency or FIRST_BATCH) if here else 0
    rest = {queue_for(wf, block.member): [block.name] * (len(listed) - first)} if len(listed) > first else {}
    plan = store.Plan([block.name] * first, rest, queue, indexed=True)
    opening = store.Opening(BlockKind.FOREACH, listed, context)
    opened = store.open_group(run, block.name, block.on_error, plan, fields=fields, rows=rows, opening=opening)
    if opened is None:
        return None
    group, claimed = opened
    logger.info(
        "run %s fanned out %d items of %r",
        run.pk,
        len(listed),
        block.name,
        extra=run_fields(run.pk, run.workflow, step=block.name),
    )
    if not listed:
        return join.join_group(group.pk)
    return _drain(group, run, wf, block, queue, claimed) if claimed else None


# -- the drain loop -----------------------------------------------------------------------------


def _drain(
    group: ParallelGroup, run: WorkflowRun, wf: Workflow, block: Block, queue: str, batch: list[Claimed]
) -> Moved | None:
    """Execute ``batch``, then claim and execute more of the block's branches on ``queue`` until none is left.

    Recording a batch and claiming the next one is one transaction (one commit per batch), in which
    the block is also joined when the batch decided it. Returns the run if that moved it on.
    """
    steps = {member.name: member for member in block.steps if queue_for(wf, member) == queue}
    names = None if len(steps) == len(block.steps) else list(steps)
    joins_here = queue_for(wf) == queue
    context_of = batches.context_of(group, block, to_step_context(run.context))
    limit = block.max_concurrency if isinstance(block, Foreach) else None
    size = len(batch)
    place = batches.Place(group, run, wf, block, queue)
    while batch:
        started = time.monotonic()
        outcomes = batches.execute(place, context_of, steps, batch)
        elapsed = time.monotonic() - started
        # A short batch means nothing was left to claim: no need to ask again (unless the
        # block's max_concurrency is what made it short).
        more = len(batch) == size or limit is not None
        if elapsed < TARGET_SECONDS / 2:
            size = min(size * 2, MAX_BATCH)
        elif elapsed > TARGET_SECONDS * 2:
            size = max(size // 2, 1)
        retries = batches.retries_of(group, wf, outcomes)
        waits = [(row, attempt) for row, _, attempt in outcomes if attempt.waits]
        if waits and dispatch.executes_inline(run.pk):
            outcomes, waits = [_no_wait_in_child(row, step, attempt) for row, step, attempt in outcomes], []
        results = [(row, attempt) for row, _, attempt in outcomes if not attempt.waits]
        batches.log_branches(run, group, outcomes, retries)
        if joins_here and block.into is None and not retries and not waits and len(outcomes) == group.branch_count:
            # The job that entered a short block executed all of it: its join is known before
            # anything is written, and is recorded with the results.
            closing = join.joined_here(group, run, wf, block, join.latest_of(outcomes))
            recorded = store.record_block_and_join(group.pk, run, results, closing)
            batches.log_cancelled(run, group, recorded)
            if recorded.closed:
                join.trace_block(group, run)
                return Moved(run, wf, queue) if run.status == RunStatus.RUNNING else None
            if recorded.counts is not None and join.decides(block, recorded.counts):
                # Some results were taken over meanwhile, and the block is decided all the same.
                return join.join_group(group.pk)
            return None
        decide = (
            partial(join.decide_in_transaction, group, run, wf, block, [] if waits else outcomes)
            if joins_here and block.into is None
            else None
        )
        recorded = store.record_batch(
            group.pk, results, retries, (names, size, limit) if more else None, decide, waits=waits, run_id=run.pk
        )
        batches.log_cancelled(run, group, recorded)
        if recorded.counts is not None and join.decides(block, recorded.counts):
            return _joined(group, run, wf, block, queue, recorded.closed, joins_here)
        batch = recorded.next_batch
    return None


def _joined(
    group: ParallelGroup, run: WorkflowRun, wf: Workflow, block: Block, queue: str, closed: bool, joins_here: bool
) -> Moved | None:
    """After the results that decided ``block`` were recorded: join it here, or have its queue's worker do it."""
    if block.into is None and joins_here:
        # Closed in the recording transaction (or the run had moved on, cancelled say).
        if closed:
            join.trace_block(group, run)
        return Moved(run, wf, queue) if closed and run.status == RunStatus.RUNNING else None
    if joins_here:
        return join.join_group(group.pk)
    dispatch.submit(dispatch.join_group_job(group.pk, group.run_id, queue_for(wf)))
    return None


def run_branches(group_id: int, queue: str, index: int = 0, tag: str = "") -> Moved | None:
    """Execute the block's pending first attempts on ``queue`` in batches (drain job ``index``).

    Drain job ``index`` sends drain job ``index + 1`` as soon as it has claimed work and some is
    left, up to ``DURABLE["PARALLEL_JOBS"]`` jobs: slow branches spread over idle workers within
    moments, while quick ones are mostly done by the first job and leave few idle jobs behind.
    """
    unclaimed = Exists(StepResult.objects.filter(group=OuterRef("pk"), status=StepStatus.PENDING, attempt=1))
    # A foreach block's list is read only when there is something to claim: the drain jobs that
    # find every branch taken already read no more than the group's counters.
    group = (
        ParallelGroup.objects.select_related("run")
        .defer("items")
        .annotate(
            unclaimed=unclaimed,
            claimable_items=Case(When(unclaimed, then=F("items")), default=None, output_field=JSONField()),
        )
        .filter(pk=group_id)
        .first()
    )
    if group is None or group.status != GroupStatus.RUNNING or group.run.status != RunStatus.RUNNING:
        return None
    if not group.unclaimed:
        # The other drain jobs of the block took every branch already: a job that cost one read.
        return None
    group.items = group.claimable_items
    run = group.run
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    if wf is None or block is None:
        reason = results.unknown_step(
            f"workflow {run.workflow!r} has no parallel block {group.name!r} with these branches"
        )
        # Every pending branch fails at once; the join then decides.
        counts = store.fail_pending_branches(group.pk, reason)
        if counts is not None and join.decides(None, counts):
            dispatch.submit(dispatch.join_group_job(group.pk, run.pk, queue_for(wf)))
        return None
    names = [member.name for member in block.steps if queue_for(wf, member) == queue]
    if not names:
        return None
    only = None if len(names) == len(block.steps) else names
    batch = store.claim_batch(group.pk, only, 1, block.max_concurrency if isinstance(block, Foreach) else None)
    if batch and index + 1 < durable_settings.PARALLEL_JOBS and _unclaimed(group, only):
        dispatch.submit(dispatch.run_branches_job(group.pk, run.pk, queue, index + 1, tag=tag))
    return _drain(group, run, wf, block, queue, batch)


def _unclaimed(group: ParallelGroup, names: list[str] | None) -> bool:
    pending = StepResult.objects.filter(group=group, status=StepStatus.PENDING, attempt=1)
    return (pending.filter(step__in=names) if names is not None else pending).exists()


# -- one branch -----------------------------------------------------------------------------------


def run_branch(row_id: int) -> Moved | None:
    """Run the one attempt of a branch that row ``row_id`` is, and record its result once."""
    if not store.claim_branch(row_id, dispatch.current_job_id()):
        logger.debug("branch %s is not pending (duplicate or cancelled job); nothing to do", row_id)
        return None
    row = StepResult.objects.select_related("run", "group").get(pk=row_id)
    run, group = row.run, row.group
    if group is None:
        logger.error("step result %s is not a branch of a parallel group; dropping its job", row_id)
        return None
    if run.status != RunStatus.RUNNING or group.status != GroupStatus.RUNNING:
        store.cancel_branch(row_id)
        return None
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    step = block.branch(row.step) if block else None
    if wf is None or block is None or step is None:
        reason = results.unknown_step(f"workflow {run.workflow!r} has no branch {row.step!r} in block {group.name!r}")
        finish_branch(row, group, wf, None, Attempt.failure(reason, row.started_at))
        return None
    if (
        isinstance(block, Foreach)
        and block.max_concurrency is not None
        and store.hold_back_branch(row_id, group.pk, block.max_concurrency, run.pk, queue_for(wf, step), HOLD_BACK)
    ):
        logger.debug(
            "branch %s waits for a free slot of %r", row_id, group.name, extra=run_fields(run.pk, run.workflow)
        )
        return None
    claimed = Claimed(row.pk, row.step, row.attempt, row.item_index)
    context = batches.context_of(group, block, to_step_context(run.context))(claimed)
    started = timezone.now()
    if not store.may_start(run.pk):
        store.cancel_branch(row_id)
        return None
    with (
        store.heartbeat.hold(StepResult, row_id),
        tracing.span(f"durable.step {step.name}", run, step=step.name, attempt=row.attempt, block=group.name) as span,
    ):
        attempt = call_step(step, context, run.pk, in_parallel=True, started_at=started)
        tracing.record_attempt(span, attempt)
    nxt = batches.retries_of(group, wf, [(claimed, step, attempt)]).get(row.pk)
    if nxt is not None:
        batches.log_branches(run, group, [(claimed, step, attempt)], {row.pk: nxt})
        store.retry_branch(row.pk, attempt, nxt)
        return None
    queue = queue_for(wf, step)
    joins_here = queue_for(wf) == queue
    if attempt.waits and dispatch.executes_inline(run.pk):
        _, _, attempt = _no_wait_in_child(claimed, step, attempt)
    outcome = [(claimed, step, attempt)]
    decide = (
        partial(join.decide_in_transaction, group, run, wf, block, [] if attempt.waits else outcome)
        if joins_here and block.into is None
        else None
    )
    batches.log_branches(run, group, outcome)
    if attempt.waits:
        recorded: store.Recorded | None = store.record_batch(
            group.pk, [], {}, None, decide, waits=[(claimed, attempt)], run_id=run.pk
        )
    else:
        recorded = store.record_branch(row.pk, group.pk, attempt, decide)
    batches.log_cancelled(run, group, recorded)
    if recorded is None or recorded.counts is None or not join.decides(block, recorded.counts):
        return None
    return _joined(group, run, wf, block, queue, recorded.closed, joins_here)


def _no_wait_in_child(row: Claimed, step: Step, attempt: Attempt) -> tuple[Claimed, Step, Attempt]:
    """A branch of a child workflow executed inside its parent's step cannot wait: it fails."""
    if not attempt.waits:
        return row, step, attempt
    reason = results.invalid_step_return(
        f"branch {step.name!r} returned a wait, but its run is a child workflow executed inside its parent's "
        "step by call_workflow, which cannot wait; wait in the parent workflow instead"
    )
    return row, step, attempt.failing(reason)


def finish_branch(
    row: StepResult, group: ParallelGroup, wf: Workflow | None, block: Block | None, attempt: Attempt
) -> bool:
    """Record ``attempt`` as the final result of branch ``row``; the join job is sent if that decides the block.

    For recovery and for resuming a child: neither executes a join or the steps after it in place.
    """
    recorded = store.record_branch(row.pk, group.pk, attempt)
    if recorded is not None and recorded.counts is not None and join.decides(block, recorded.counts):
        dispatch.submit(dispatch.join_group_job(group.pk, group.run_id, queue_for(wf)))
    return recorded is not None


def retry_lost_branch(row: StepResult, wf: Workflow, step: Step, attempt: Attempt) -> bool:
    """Record a branch attempt whose worker was lost and send its next attempt at once."""
    nxt = store.next_attempt(
        row.run_id, row.group_id, row.step, row.attempt + 1, queue_for(wf, step), 0.0, row.item_index
    )
    return store.retry_branch(row.pk, attempt, nxt)
