"""Rerunning a finished run from one of its steps: a fork, a new run that starts there.

A fork is a new run of the same workflow, with the original's input, positioned at a top-level
step or block of it and holding the context the original had right before that step (or one the
caller gives). The steps before it do not run again and their rows are not copied: what they
produced is in that context (``__results__`` of a block included). The original is not touched;
the fork points back at it (``forked_from``, ``forked_from_step``) and the original lists its
forks (``forks``).

The context before a top-level step is recorded where the step starts, in the row the engine
writes anyway: a sequential step's (or branch block's) first attempt keeps it in
``StepResult.context_before``, a block's group in ``ParallelGroup.context``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from . import engine, operations
from .context import Unserializable, roundtrip
from .definition import Foreach, Parallel, Workflow, find_workflow, get_workflow
from .exceptions import ContextNotRecorded, InvalidInput, RunStateError, UnknownStep
from .models import ParallelGroup, RunStatus, StepResult, WorkflowRun

#: The statuses a run may be forked in.
FORKABLE = (RunStatus.COMPLETED, RunStatus.FAILED)


def top_level_names(wf: Workflow) -> list[str]:
    """The names of ``wf``'s top-level steps and blocks, in order: where a fork may start."""
    return [node.name for node in wf.steps]


def fork_run(run_id: Any, *, from_step: str, context: dict[str, Any] | None = None) -> WorkflowRun:
    """Start a new run of the same workflow as run ``run_id`` (a UUID or its string) at ``from_step``.

    ``from_step`` is a top-level step or block of the workflow; the new run starts there with the
    context the original had right before it (the latest time it got there), or with ``context``
    when given (a JSON-serializable dict, checked as a run's input is). The new run keeps the
    original's input and is dispatched once the surrounding transaction commits; the original is
    not changed. Raises ``WorkflowRun.DoesNotExist`` for an unknown run,
    :class:`~durable_django.exceptions.RunStateError` unless the run is completed or failed (or
    when it ran its compensations and no ``context`` is given: they undid its completed steps),
    ``ValueError`` for a ``from_step`` that is not a top-level step or block (naming those that
    are: :class:`~durable_django.exceptions.UnknownStep`), or whose context before was not
    recorded (an older run: pass ``context=``;
    :class:`~durable_django.exceptions.ContextNotRecorded`), and
    :class:`~durable_django.exceptions.InvalidInput` for an invalid ``context``.
    """
    original = operations.load_run(run_id)
    if original.status not in FORKABLE:
        raise RunStateError(f"Run {original.pk} is {original.status}; only a completed or failed run can be forked.")
    wf = get_workflow(original.workflow)
    names = top_level_names(wf)
    if from_step not in names:
        raise UnknownStep(
            f"Workflow {wf.name!r} has no top-level step or block {from_step!r}; a fork starts at one of: "
            f"{', '.join(names)}.",
            names,
        )
    if original.compensation and context is None:
        # Its completed steps were undone: the context before a later step describes undone work.
        raise RunStateError(
            f"Run {original.pk} ran its compensations (compensation {original.compensation}), which undid its "
            "completed steps; fork it with an explicit context= that describes what is done."
        )
    stored = validated_context(wf, context) if context is not None else context_before(original, wf, from_step)
    with transaction.atomic():
        return engine.start_fork(wf, from_step, stored, original)


def validated_context(wf: Workflow, context: Any) -> dict[str, Any]:
    """``context`` as a fork of ``wf`` stores it; :class:`InvalidInput` if it is no JSON-serializable dict."""
    if not isinstance(context, dict):
        raise InvalidInput(
            f"The context of a fork of workflow {wf.name!r} must be a dict, got {type(context).__name__}."
        )
    try:
        return roundtrip(context)
    except Unserializable as exc:
        raise InvalidInput(f"The context of a fork of workflow {wf.name!r} is not JSON-serializable: {exc}") from None


def context_before(run: WorkflowRun, wf: Workflow, name: str) -> dict[str, Any]:
    """The context ``run`` had right before its top-level step or block ``name``, the latest time it got there.

    The one the step's latest first attempt, or the block's latest group, recorded: one indexed
    read. Without one, a run that failed at that step (not at a wait after it) still holds it: it
    did not move since. Raises :class:`~durable_django.exceptions.ContextNotRecorded` otherwise
    (the run never got there, or predates the record).
    """
    if isinstance(wf.node(name), Parallel | Foreach):
        found: Any = (
            ParallelGroup.objects.filter(run=run, name=name, context__isnull=False)
            .order_by("-id")
            .values_list("context", flat=True)
            .first()
        )
    else:
        found = (
            StepResult.objects.filter(run=run, step=name, group__isnull=True, context_before__isnull=False)
            .order_by("-id")
            .values_list("context_before", flat=True)
            .first()
        )
    if isinstance(found, dict):
        return found
    if run.status == RunStatus.FAILED and run.current_step == name and not _failed_at_a_wait(run):
        return dict(run.context)
    raise ContextNotRecorded(
        f"The context run {run.pk} had before step {name!r} of workflow {wf.name!r} was not recorded "
        "(the run never got there, or it ran before contexts were recorded); pass context= to fork it."
    )


def _failed_at_a_wait(run: WorkflowRun) -> bool:
    """Whether ``run`` failed because the wait of its current step timed out (its context holds the step's output)."""
    reason = run.error.get("reason") if isinstance(run.error, dict) else None
    return isinstance(reason, dict) and reason.get("type") == "wait_timeout"


def known_context(run: WorkflowRun, name: str) -> dict[str, Any] | None:
    """The context a fork of ``run`` from ``name`` would start with, or ``None`` when it is not known
    (what the admin's form and the API offer to edit)."""
    wf = find_workflow(run.workflow)
    if wf is None:
        return None
    try:
        return context_before(run, wf, name)
    except ContextNotRecorded:
        return None
