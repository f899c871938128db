"""Parallel blocks: the fan-out, one attempt of one branch and its record, and the join.

The fan-out writes the group and a pending row per branch in one transaction; the drain jobs of
:mod:`durable_django.batches` (or a job per branch for a retry) execute them; each recorded final
result decrements the group's counter in the same transaction, and the job that records the last
one sends the join. The join claims the group with a conditional UPDATE (its lease), so it runs
once however often its job is delivered, applies the block's ``on_error`` and ``into``, and moves
the run on in the transaction that closes the group.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from . import dispatch, leases, results
from .attempts import Attempt, call_step, has_budget, lost_attempts
from .context import (
    RESULTS_KEY,
    StepScope,
    Unserializable,
    results_to_tuples,
    roundtrip,
    step_scope,
    to_step_context,
)
from .definition import IntoFn, Parallel, Step, Workflow, find_workflow, queue_for
from .engine import (
    _fail_fields,
    _load_workflow,
    _move_fields,
    _transition,
    advance,
)
from .leases import held_fields, released_fields
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun
from .results import ERROR, GOTO, OK, Outcome, normalize

logger = logging.getLogger("durable_django")


def fan_out(run: WorkflowRun, wf: Workflow, block: Parallel) -> bool:
    """Write the block's group and one pending row per branch, then send the drain jobs that execute them.

    ``False`` when the block's group is already open (a duplicate job) or the run moved on.
    """
    if ParallelGroup.objects.filter(run_id=run.pk, name=block.name, status=GroupStatus.RUNNING).exists():
        return False
    with transaction.atomic():
        # The run now waits on its branches, whose rows carry their own leases.
        updated = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.RUNNING).update(
            version=run.version + 1, **released_fields()
        )
        if not updated:
            return False
        count = len(block.steps)
        group = ParallelGroup.objects.create(
            run=run, name=block.name, on_error=block.on_error, branch_count=count, pending_count=count
        )
        from .batches import plan

        dispatch.submit(*plan(group, wf, block))
    run.version += 1
    logger.info("run %s fanned out %d branches of %r", run.pk, count, block.name)
    return True


def _cancel_branch(row_id: int) -> None:
    StepResult.objects.filter(pk=row_id, status=StepStatus.RUNNING).update(
        status=StepStatus.CANCELLED, finished_at=timezone.now(), **released_fields()
    )


def execute_branch(row_id: int) -> None:
    """Entry point of a branch job: run one attempt of one branch and record its result once."""
    now = timezone.now()
    claimed = StepResult.objects.filter(pk=row_id, status=StepStatus.PENDING).update(
        status=StepStatus.RUNNING,
        started_at=now,
        job_id=dispatch.current_job_id() or F("job_id"),
        **held_fields(now),
    )
    if not claimed:
        logger.debug("branch %s is not pending (duplicate or cancelled job); nothing to do", row_id)
        return
    row = StepResult.objects.select_related("run", "group").get(pk=row_id)
    run, group = row.run, row.group
    if group is None:
        logger.error("step result %s is not a branch of a parallel group; dropping its job", row_id)
        return
    if run.status != RunStatus.RUNNING or group.status != GroupStatus.RUNNING:
        _cancel_branch(row_id)
        return
    wf = find_workflow(run.workflow)
    block = wf.block(group.name) if wf else None
    step = block.branch(row.step) if block else None
    if wf is None or step is None:
        reason = results.unknown_step(f"workflow {run.workflow!r} has no branch {row.step!r} in block {group.name!r}")
        attempt = Attempt.failure(reason, row.started_at)
        _record_branch(row, group, None, attempt, queue_for(wf))
        return
    with leases.heartbeat.hold(StepResult, row_id):
        attempt = call_step(step, to_step_context(run.context), run.pk, in_parallel=True)
    if (
        attempt.failed
        and attempt.retryable
        and has_budget(step, row.attempt, lambda: lost_attempts(row.run_id, row.step, row.group_id))
        # A block decided meanwhile (fail_fast) needs no further attempt: record this one as final.
        and ParallelGroup.objects.filter(pk=group.pk, status=GroupStatus.RUNNING).exists()
    ):
        _retry_branch(row, wf, step, attempt)
        return
    _record_branch(row, group, block, attempt, queue_for(wf))


def next_attempt(run_id: Any, group_id: int | None, step: str, attempt: int, delay: float) -> StepResult:
    """The unsaved row of attempt ``attempt`` of branch ``step``, due in ``delay`` seconds (its own job)."""
    return StepResult(
        run_id=run_id,
        step=step,
        attempt=attempt,
        group_id=group_id,
        job_id=dispatch.new_job_id(),
        lease_expires_at=leases.expiry(timezone.now() + timedelta(seconds=math.ceil(delay))),
    )


def _retry_branch(
    row: StepResult, wf: Workflow, step: Step, attempt: Attempt, *, delay: float | None = None
) -> StepResult | None:
    """Record ``attempt`` as failed and create (and send) the branch's next attempt; ``None`` if it lost a race."""
    if delay is None:
        delay = step.retry.delay(row.attempt)
    nxt = next_attempt(row.run_id, row.group_id, row.step, row.attempt + 1, delay)
    with transaction.atomic():
        updated = StepResult.objects.filter(pk=row.pk, status=StepStatus.RUNNING).update(
            status=StepStatus.FAILED,
            error=attempt.reason,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            **released_fields(),
        )
        if not updated:
            return None
        nxt.save(force_insert=True)
        dispatch.submit(dispatch.run_branch_job(nxt.pk, nxt.run_id, nxt.job_id, queue_for(wf, step), delay))
    logger.info("branch %r of run %s failed (attempt %d); retrying in %.2fs", row.step, row.run_id, row.attempt, delay)
    return nxt


def _record_branch(
    row: StepResult, group: ParallelGroup, block: Parallel | None, attempt: Attempt, join_queue: str
) -> bool:
    """Store a branch's final result and, if it is the one that decides the block, enqueue the join."""
    failed = attempt.failed
    connection = connections[router.db_for_write(ParallelGroup)]
    table = connection.ops.quote_name(ParallelGroup._meta.db_table)
    with transaction.atomic():
        updated = StepResult.objects.filter(pk=row.pk, status=StepStatus.RUNNING).update(
            status=StepStatus.FAILED if failed else StepStatus.COMPLETED,
            output=None if failed else attempt.output,
            error=attempt.reason if failed else None,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            **released_fields(),
        )
        if not updated:
            return False
        # The row lock of this UPDATE serialises finishing branches: each one sees its own counts.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET pending_count = pending_count - 1, failed_count = failed_count + %s "
                "WHERE id = %s RETURNING pending_count, failed_count",
                [int(failed), group.pk],
            )
            pending, failures = cursor.fetchone()
        fail_fast = block is not None and block.on_error == "fail_fast" and block.into is None
        # Under fail_fast (without into) the first failure decides at once; otherwise the last branch does.
        decides = ((failed and failures == 1) or (pending == 0 and failures == 0)) if fail_fast else pending == 0
        if decides:
            dispatch.submit(dispatch.join_group_job(group.pk, group.run_id, join_queue))
    return True


def execute_join(group_id: int, queue: str) -> None:
    """Entry point of a join job: apply the block's error strategy and ``into``, then continue the run."""
    # The group's lease makes a duplicate join job (or one recovery sent again) a no-op.
    claimed = ParallelGroup.objects.filter(pk=group_id, status=GroupStatus.RUNNING, lease_owner="").update(
        **held_fields()
    )
    if not claimed:
        logger.debug("group %s is closed or joined by another worker; nothing to do", group_id)
        return
    group = ParallelGroup.objects.select_related("run").get(pk=group_id)
    with leases.heartbeat.hold(ParallelGroup, group_id):
        closed, then = _join(group, queue)
    if then is not None:
        # The group is closed and its lease let go: the run goes on under its own lease.
        advance(group.run, then, queue)
    elif not closed:
        # The join did not close the group (its run was not running): leave it to whoever comes next.
        ParallelGroup.objects.filter(pk=group_id, lease_owner=leases.owner()).update(**released_fields())


def _join(group: ParallelGroup, queue: str) -> tuple[bool, Workflow | None]:
    """Decide ``group``: whether it is closed (by this join or, in a lost race, another), and the
    workflow to advance ``group.run`` in when this join moved the run on to its next step."""
    run = group.run
    if run.status != RunStatus.RUNNING:
        return False, None
    wf = _load_workflow(run)
    if wf is None:
        return False, None
    position = wf.position(group.name)
    block = wf.block(group.name)
    if block is None or position is None:
        reason = results.unknown_step(f"workflow {wf.name!r} has no parallel block {group.name!r}")
        return _finish_group(run, group, GroupStatus.FAILED, None, reason, _fail_fields(group.name, reason)), None
    keys = {member.name: member.key for member in block.steps}
    # One batched read of the final attempts, as plain tuples: a block may have thousands of branches.
    final = (
        StepResult.objects.filter(group=group, status__in=(StepStatus.COMPLETED, StepStatus.FAILED))
        .order_by("id")
        .values_list("pk", "step", "status", "output", "error", "finished_at")
    )
    latest: dict[str, tuple[Any, ...]] = {}
    for branch in final:  # ordered by id: a later attempt replaces an earlier one
        latest[branch[1]] = branch
    collected = {
        keys.get(name, name): ["ok", output] if status == StepStatus.COMPLETED else ["error", error]
        for name, (_, _, status, output, error, _) in latest.items()
    }

    if block.into is not None:
        return _join_into(run, wf, group, block.into, position, collected)
    failures = [branch for branch in latest.values() if branch[2] == StepStatus.FAILED]
    if block.on_error == "fail_fast" and failures:
        _, name, _, _, error, _ = min(failures, key=lambda b: (b[5] or timezone.now(), b[0]))
        fields = _fail_fields(name, error, parallel=group.name)
        if not _finish_group(run, group, GroupStatus.FAILED, collected, None, fields, cancel_pending=True):
            return False, None
        logger.info("run %s failed fast at branch %r of %r", run.pk, name, group.name)
        return True, None
    fields = _move_fields(wf, position + 1, {**run.context, RESULTS_KEY: collected})
    if not _finish_group(run, group, GroupStatus.COMPLETED, collected, None, fields):
        return False, None
    return True, wf


def _join_into(
    run: WorkflowRun,
    wf: Workflow,
    group: ParallelGroup,
    into: IntoFn,
    position: int,
    collected: dict[str, Any],
) -> tuple[bool, Workflow | None]:
    ctx = to_step_context(run.context)
    # Inside into, the parallel_* helpers read this block's results, as a step after the block would.
    scope_ctx = {**ctx, RESULTS_KEY: results_to_tuples(roundtrip(collected))}
    try:
        with step_scope(StepScope(run.pk, group.name, scope_ctx)):
            outcome = normalize(into(ctx, results_to_tuples(roundtrip(collected))))
    except Exception as exc:
        outcome = Outcome(ERROR, reason=results.exception_reason(exc, "into_error"))
    if outcome.kind == "invalid":
        outcome = Outcome(ERROR, reason=outcome.reason)
    fields: dict[str, Any]
    context: dict[str, Any] = {}
    if outcome.kind in (OK, GOTO):
        try:
            context = roundtrip(outcome.data)
        except Unserializable as exc:
            message = f"into of {group.name!r} returned a context that cannot be stored as JSON: {exc}"
            outcome = Outcome(ERROR, reason=results.unserializable_output(message))
    target = position + 1 if outcome.kind == OK else wf.position(outcome.target) if outcome.kind == GOTO else None
    if target is not None:
        fields = _move_fields(wf, target, context)
    else:
        reason = (
            results.goto_error(group.name, outcome.target)
            if outcome.kind == GOTO
            else results.stored_reason(outcome.reason)
        )
        return _finish_group(run, group, GroupStatus.FAILED, collected, reason, _fail_fields(group.name, reason)), None
    if not _finish_group(run, group, GroupStatus.COMPLETED, collected, None, fields):
        return False, None
    return True, wf


def _finish_group(
    run: WorkflowRun,
    group: ParallelGroup,
    status: str,
    results: dict[str, Any] | None,
    error: Any,
    run_fields: dict[str, Any],
    *,
    cancel_pending: bool = False,
) -> bool:
    """Close ``group`` and move ``run`` in one transaction; only the first join to get here wins."""
    now = timezone.now()
    with transaction.atomic():
        closed = ParallelGroup.objects.filter(pk=group.pk, status=GroupStatus.RUNNING).update(
            status=status, results=results, error=error, finished_at=now, **released_fields()
        )
        if not closed:
            return False
        if not _transition(run, run_fields):
            transaction.set_rollback(True)
            return False
        if cancel_pending:
            cancelled = StepResult.objects.filter(group=group, status=StepStatus.PENDING).update(
                status=StepStatus.CANCELLED, finished_at=now, **released_fields()
            )
            if cancelled:
                ParallelGroup.objects.filter(pk=group.pk).update(pending_count=F("pending_count") - cancelled)
    return True
