"""The join of a parallel block: whether recorded results decide it, and how it closes.

Exactly one batch (or branch) of a block records the results that decide it (:func:`decides`).
For a block without ``into`` whose join runs on the queue of the job that recorded them, the join
is computed where they were recorded (:func:`decide_in_transaction`, :func:`closing_for`) and
written in the same transaction; otherwise :func:`join_group` claims the group's lease, so that it
joins once however often it is asked, applies ``on_error`` or ``into``, and closes the group in the
transaction that moves the run. Continuing the run is the engine's part: these functions return
the run they moved on (:class:`Moved`). Every write goes through :mod:`durable_django.store`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from . import items, results, store, tracing
from .attempts import Attempt
from .context import RESULTS_KEY, StepScope, Unserializable, results_to_tuples, roundtrip, step_scope, to_step_context
from .definition import Block, Foreach, Step, Workflow, find_workflow, queue_for
from .logging import run_fields
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from .results import ERROR, GOTO, OK, Outcome, normalize
from .store import Claimed, Closing, Counts

logger = logging.getLogger("durable_django")


@dataclass(frozen=True, slots=True)
class Moved:
    """A run that a block's join moved on to its next step in this job, to continue on ``queue``."""

    run: WorkflowRun
    wf: Workflow
    queue: str


# -- what decides a block -------------------------------------------------------------------------


def stops_at_first_failure(block: Block | None) -> bool:
    """Whether ``block`` is decided by its first failing branch (``fail_fast`` without ``into``)."""
    return block is not None and block.on_error == "fail_fast" and block.into is None


def decided(block: Block | None, pending: int, failed: int) -> bool:
    """Whether a group with these counters is decided: its join can run."""
    return pending == 0 or (failed > 0 and stops_at_first_failure(block))


def decides(block: Block | None, counts: Counts) -> bool:
    """Whether the results just counted decided the block: it is decided now and was not before.

    Exactly one batch (or branch) of a block sees this, so the block is joined exactly once.
    """
    if counts.status != GroupStatus.RUNNING:
        return False  # closed meanwhile (its run was cancelled): nothing is left to decide
    before = (counts.pending + counts.finals, counts.failed - counts.failures)
    return decided(block, counts.pending, counts.failed) and not decided(block, *before)


# -- the join -------------------------------------------------------------------------------------


def decide_in_transaction(
    group: ParallelGroup,
    run: WorkflowRun,
    wf: Workflow,
    block: Block,
    outcomes: list[tuple[Claimed, Step, Attempt]],
    counts: Counts,
) -> tuple[WorkflowRun, Closing] | None:
    """Asked in the transaction that counted ``outcomes``: if they decided ``block``, how it closes.

    When they are the final result of every branch of the block (a short block executed by the job
    that entered it), they are all there is to read.
    """
    if not decides(block, counts):
        return None
    if outcomes and counts.finals == group.branch_count:
        return run, joined_here(group, run, wf, block, latest_of(outcomes), waiting=counts.waiting)
    return run, joined_here(group, run, wf, block, waiting=counts.waiting)


def joined_here(
    group: ParallelGroup,
    run: WorkflowRun,
    wf: Workflow,
    block: Block,
    latest: Latest | None = None,
    *,
    waiting: int | None = None,
) -> Closing:
    """:func:`closing_for`, in the block's ``durable.join`` span: for a join computed where the
    results that decided it are recorded."""
    with tracing.span(f"durable.join {group.name}", run, block=group.name) as current:
        closing = closing_for(group, run, wf, block, latest, waiting=waiting)
        tracing.record(current, str(closing.status), closing.run_fields.get("error"))
    return closing


Latest = dict[tuple[str, int | None], tuple[Any, ...]]


def latest_of(outcomes: list[tuple[Claimed, Step, Attempt]]) -> Latest:
    """``outcomes`` as :func:`final_attempts` reads them back: each branch's final attempt."""
    return {
        (row.step, row.index): (row.pk, row.step, *stored_values(attempt), attempt.finished_at, row.index)
        for row, _, attempt in outcomes
    }


def stored_values(attempt: Attempt) -> tuple[str, Any, Any]:
    """``(status, output, error)`` of a final attempt, as its row holds them."""
    if attempt.failed:
        return StepStatus.FAILED, None, attempt.reason
    return StepStatus.COMPLETED, attempt.output, None


def closing_for(
    group: ParallelGroup,
    run: WorkflowRun,
    wf: Workflow,
    block: Block,
    latest: Latest | None = None,
    *,
    waiting: int | None = None,
) -> Closing:
    """How a decided block without ``into`` closes: failed at its first failure (``fail_fast``), or
    completed with every result in ``__results__`` and the run moved to the next step."""
    if latest is None:
        latest = final_attempts(group)
    collected = collected_results(block, latest, group.branch_count)
    failures = [branch for branch in latest.values() if branch[2] == StepStatus.FAILED]
    if block.on_error == "fail_fast" and failures:
        _, name, _, _, error, _, item = min(failures, key=lambda b: (b[5] or timezone.now(), b[0]))
        logger.info(
            "run %s failed fast at branch %r of %r",
            run.pk,
            name,
            group.name,
            extra=run_fields(run.pk, run.workflow, step=name),
        )
        where: dict[str, Any] = (
            {"parallel": group.name} if item is None else {"foreach": group.name, "item_index": item}
        )
        done = [branch[1] for branch in latest.values() if branch[2] == StepStatus.COMPLETED]
        fields = store.failing_fields(run, name, error, done=done, **where)
        # Branches still waiting are cancelled with their waits (``waiting``: how many, as counted last).
        waits = group.waiting_count if waiting is None else waiting
        return Closing(GroupStatus.FAILED, collected, None, fields, cancel_pending=True, cancel_waits=waits > 0)
    target = wf.following(group.name)
    fields = store.move_fields(wf, target, {**run.context, RESULTS_KEY: collected})
    return Closing(GroupStatus.COMPLETED, collected, None, fields)


def final_attempts(group: ParallelGroup) -> Latest:
    """Each branch's latest final attempt ``(pk, step, status, output, error, finished_at, item_index)``,
    by ``(step, item_index)``.

    One batched read of plain tuples: a block may have thousands of branches.
    """
    final = (
        StepResult.objects.filter(group=group, status__in=(StepStatus.COMPLETED, StepStatus.FAILED))
        .order_by("id")
        .values_list("pk", "step", "status", "output", "error", "finished_at", "item_index")
    )
    latest: Latest = {}
    for branch in final:  # ordered by id: a later attempt replaces an earlier one
        latest[(branch[1], branch[6])] = branch
    return latest


def collected_results(block: Block, latest: Latest, count: int = 0) -> Any:
    """The block's results as they are stored: by key for a parallel block, a list in item order
    (of ``count`` items) for a foreach block."""
    if isinstance(block, Foreach):
        return items.as_list(latest, count)
    keys = {member.name: member.key for member in block.steps}
    return {
        keys.get(name, name): ["ok", output] if status == StepStatus.COMPLETED else ["error", error]
        for (name, _), (_, _, status, output, error, _, _) in latest.items()
    }


def join_group(group_id: int) -> Moved | None:
    """Join a decided group that was not joined where its results were recorded (a block with
    ``into``, or whose join runs on another queue), claiming its lease so that it runs once.

    Returns the run when this join moved it on to its next step (for the engine to continue).
    """
    if not store.claim_join(group_id):
        logger.debug("group %s is closed or joined by another worker; nothing to do", group_id)
        return None
    group = ParallelGroup.objects.select_related("run").get(pk=group_id)
    with (
        store.heartbeat.hold(ParallelGroup, group_id),
        tracing.span(f"durable.join {group.name}", group.run, block=group.name) as current,
    ):
        closed, wf = _join(group)
        tracing.record(current, *(block_outcome(group.run) if closed else ("skipped", None)))
    if not closed:
        # The join did not close the group (its run was not running): leave it to whoever comes next.
        store.release_join(group_id)
        return None
    trace_block(group, group.run)
    # The group is closed and its lease let go: the run goes on under its own lease.
    return Moved(group.run, wf, queue_for(wf)) if wf is not None else None


def block_outcome(run: WorkflowRun) -> tuple[str, Any]:
    """The status and error of the block whose close just moved ``run``: a block fails exactly when
    its close fails the run (or has it compensate first)."""
    if run.status in (RunStatus.FAILED, RunStatus.COMPENSATING):
        return str(GroupStatus.FAILED), run.error
    return str(GroupStatus.COMPLETED), None


def trace_block(group: ParallelGroup, run: WorkflowRun) -> None:
    """The ``durable.block`` span of ``group``, closed by this process with the move of ``run``:
    from the block's fan-out until now (nothing when tracing is off)."""
    if run.trace_context:
        status, error = block_outcome(run)
        tracing.emit(
            f"durable.block {group.name}",
            run,
            start=group.created_at,
            status=status,
            error=error,
            block=group.name,
            branches=group.branch_count,
        )


def _join(group: ParallelGroup) -> tuple[bool, Workflow | None]:
    """Decide ``group``: whether it is closed (by this join or, in a lost race, another), and the
    workflow to continue ``group.run`` in when this join moved the run on to its next step."""
    run = group.run
    if run.status != RunStatus.RUNNING:
        return False, None
    wf = find_workflow(run.workflow)
    if wf is None:
        store.fail_run(run, run.current_step, results.workflow_not_found(run.workflow))
        logger.error(
            "run %s failed: its workflow %r is not registered",
            run.pk,
            run.workflow,
            extra=run_fields(run.pk, run.workflow, outcome="failed"),
        )
        return False, None
    position = wf.position(group.name)
    block = wf.block(group.name)
    if block is None or position is None:
        reason = results.unknown_step(f"workflow {wf.name!r} has no parallel block {group.name!r}")
        closing = Closing(GroupStatus.FAILED, None, reason, store.failing_fields(run, group.name, reason))
        return store.close_group(run, group.pk, closing), None
    if block.into is not None:
        return _join_into(run, wf, group, block, position)
    closing = closing_for(group, run, wf, block)
    if not store.close_group(run, group.pk, closing):
        return False, None
    return True, wf if closing.status == GroupStatus.COMPLETED else None


def _join_into(
    run: WorkflowRun, wf: Workflow, group: ParallelGroup, block: Block, position: int
) -> tuple[bool, Workflow | None]:
    assert block.into is not None
    collected = collected_results(block, final_attempts(group), group.branch_count)
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
    target = (
        wf.following(group.name)
        if outcome.kind == OK
        else wf.goto_position(outcome.target)
        if outcome.kind == GOTO
        else None
    )
    if target is None:
        reason = (
            results.goto_error(group.name, outcome.target)
            if outcome.kind == GOTO
            else results.stored_reason(outcome.reason)
        )
        closing = Closing(GroupStatus.FAILED, collected, reason, store.failing_fields(run, group.name, reason))
        return store.close_group(run, group.pk, closing), None
    closing = Closing(GroupStatus.COMPLETED, collected, None, store.move_fields(wf, target, context))
    if not store.close_group(run, group.pk, closing):
        return False, None
    return True, wf
