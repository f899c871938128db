"""Child workflows: ``call_workflow`` runs a workflow inline, inside the calling step, and resumes
an unfinished one; ``start_child`` starts one that runs on its own (fire and forget).

The child is a run of its own, linked to its parent, so it can be inspected like any other. Its
jobs (branches, joins, retries) execute in the calling process, one after another; the step
that called it gets the child's outcome as a return value. A child is identified by
(parent run, calling step, ``ref``): when the calling step runs again, a finished child's
recorded result is returned instead of running it twice, and an unfinished one is resumed.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.utils import timezone

from . import blocks, dispatch, engine, jobs, join, results, store, timer_jobs
from .attempts import Attempt
from .context import current_scope, to_step_context
from .definition import Step, Workflow, given_input, queue_for, resolve
from .logging import run_fields
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun

logger = logging.getLogger("durable_django")


def call_workflow(
    workflow_or_name: Workflow | str, input: dict[str, Any], *, ref: str | None = None
) -> tuple[str, Any]:
    """Run a child workflow to completion inside the current step.

    Returns ``("ok", child_final_context)`` or ``("error", reason)`` where ``reason`` is the
    child's error (``{"step": ..., "reason": ...}``). ``ref`` names the call within the step;
    without one, calls are numbered per child workflow in the order the step makes them.
    """
    scope = current_scope("call_workflow")
    wf = resolve(workflow_or_name)
    input = given_input(wf.name, input)
    if ref is None:
        count = scope.child_calls.get(wf.name, 0) + 1
        scope.child_calls[wf.name] = count
        ref = f"{wf.name}#{count}"
    elif not isinstance(ref, str) or not ref:
        raise TypeError(f"call_workflow ref must be a non-empty string, got {ref!r}")

    child = WorkflowRun.objects.filter(parent_id=scope.run_id, parent_step=scope.step, ref=ref).first()
    if child is None:
        run_id = uuid.uuid4()
        with dispatch.inline(run_id) as sink:
            parent = WorkflowRun(pk=scope.run_id)
            child, _ = engine.get_or_start_run(wf, input, parent=parent, parent_step=scope.step, ref=ref, run_id=run_id)
            if child.pk == run_id:
                _drain(sink)
                child.refresh_from_db()
                return _outcome(child)
        # Another execution of this step created the child first: treat it as found.
    if not child.is_finished:
        logger.info(
            "resuming unfinished child run %s (ref %r)", child.pk, ref, extra=run_fields(child.pk, child.workflow)
        )
        with dispatch.inline(child.pk) as sink:
            sink.jobs.extend(resume_jobs(child, wf))
            _drain(sink)
        child.refresh_from_db()
    return _outcome(child)


def start_child(workflow_or_name: Workflow | str, input: dict[str, Any], *, ref: str | None = None) -> WorkflowRun:
    """Start a child run of the current step's run without waiting for it (fire and forget).

    The child is linked to its parent (``parent``, ``parent_step``, ``ref``, ``detached=True``)
    and runs on the workers like any run. ``ref`` names the child within the step; without one,
    children are numbered per workflow in the order the step starts them. When the step runs
    again (a retry, a worker lost), the same ``ref`` returns the child started the first time.
    Cancelling the parent does not cancel its detached children.
    """
    scope = current_scope("start_child")
    wf = resolve(workflow_or_name)
    input = given_input(wf.name, input)
    if ref is None:
        counter = f"start_child:{wf.name}"
        count = scope.child_calls.get(counter, 0) + 1
        scope.child_calls[counter] = count
        ref = f"{wf.name}~{count}"
    elif not isinstance(ref, str) or not ref:
        raise TypeError(f"start_child ref must be a non-empty string, got {ref!r}")
    existing = WorkflowRun.objects.filter(parent_id=scope.run_id, parent_step=scope.step, ref=ref).first()
    if existing is None:
        parent = WorkflowRun(pk=scope.run_id)
        existing, _ = engine.get_or_start_run(wf, input, parent=parent, parent_step=scope.step, ref=ref, detached=True)
    if not existing.detached or existing.workflow != wf.name:
        raise ValueError(
            f"step {scope.step!r} already has a child with ref {ref!r} (a run of {existing.workflow!r}"
            f"{'' if existing.detached else ' called with call_workflow'}); give this one another ref"
        )
    logger.info(
        "run %s started detached child run %s of %r (ref %r)",
        scope.run_id,
        existing.pk,
        wf.name,
        ref,
        extra=run_fields(scope.run_id, wf.name, step=scope.step),
    )
    return existing


def resume_jobs(run: WorkflowRun, wf: Workflow) -> list[dispatch.Job]:
    """Set an unfinished child moving again from what the database holds, taking over its work.

    Its earlier executor (the calling step) is gone, so whatever it left executing (a step,
    branches, a join) is taken over at once, without waiting for leases to run out. The jobs it
    needs are collected by the inline sink of the calling step, or returned.
    """
    run.refresh_from_db()
    if run.status == RunStatus.COMPENSATING:
        # It failed and was executing its compensations: they go on from what is recorded.
        if run.lease_owner:
            store.compensations.take_over_compensation(run, timezone.now(), queue_for(wf))
            return []
        return [dispatch.compensate_job(run.pk, queue_for(wf), run.version)]
    group = ParallelGroup.objects.filter(run=run, status=GroupStatus.RUNNING).order_by("-id").first()
    if group is None:
        node = wf.node(run.current_step)
        lost = node.name if run.lease_owner and isinstance(node, Step) else None
        store.take_over_child(run, lost, queue_for(wf, node))
        return []
    if group.lease_owner:
        store.release_join(group.pk, owner=group.lease_owner)
    block = wf.block(group.name)
    for row in StepResult.objects.filter(group=group, status=StepStatus.RUNNING).select_related("run"):
        step = block.branch(row.step) if block else None
        attempt = Attempt.failure(results.worker_lost(), row.started_at)
        if step is not None:
            blocks.retry_lost_branch(row, wf, step, attempt)
        else:
            blocks.finish_branch(row, group, wf, block, attempt)
    jobs = [
        dispatch.run_branch_job(
            row.pk, row.run_id, row.job_id, queue_for(wf, block.branch(row.step) if block else None)
        )
        for row in StepResult.objects.filter(group=group, status=StepStatus.PENDING)
    ]
    group.refresh_from_db(fields=["pending_count", "failed_count"])
    if join.decided(block, group.pending_count, group.failed_count):
        jobs.append(dispatch.join_group_job(group.pk, run.pk, queue_for(wf)))
    return jobs


def _drain(sink: dispatch.InlineSink) -> None:
    """Execute the child's jobs in this process until none is left."""
    while sink.jobs:
        job = sink.jobs.popleft()
        if job.func in timer_jobs.CLOCK:
            # Its timeout (or start) job is kept by RQ for its time, not waited for here: a
            # child that completes at once must not hold its parent's step until its deadline.
            dispatch.send_or_leave([job])
            continue
        if job.delay > 0:
            # The child is synchronous by definition: its retry backoff waits here.
            time.sleep(job.delay)
        jobs.ENTRY_POINTS[job.func](*job.args)


def _outcome(child: WorkflowRun) -> tuple[str, Any]:
    if child.status == RunStatus.COMPLETED:
        return ("ok", to_step_context(child.context))
    if child.status == RunStatus.FAILED:
        return ("error", child.error)
    return ("error", results.child_incomplete(child.pk, child.workflow, child.status))
