"""What the store's changes tell the receivers of :mod:`durable_django.signals`.

Each function here is called by the code path that won its change (the conditional ``UPDATE``
that matched, the claim that took the row), inside the transaction that made it or right after
it, and the signals go out once that transaction commits: a duplicate job, or the loser of a
race, never gets here. Every function first asks whether anything listens, and builds nothing
and reads nothing when nothing does; only then are the rows a signal carries built, or read when
the transaction's own data cannot say them (a batch's run, a closed group: one query each).

The run a signal carries is a copy taken when the change was made: receivers see the run as that
change left it, whatever the engine does with it next.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import router

from ..attempts import Attempt
from ..models import (
    FINISHED_RUN_STATUSES,
    ParallelGroup,
    RunStatus,
    StepKind,
    StepResult,
    StepStatus,
    Wait,
    WorkflowRun,
)
from ..signals import (
    group_finished,
    listening,
    run_finished,
    run_started,
    send_on_commit,
    step_finished,
    wait_resolved,
    wait_started,
)

if TYPE_CHECKING:
    from .groups import Claimed

FINAL_ATTEMPT = (StepStatus.COMPLETED, StepStatus.FAILED)


def _using() -> str:
    return router.db_for_write(WorkflowRun)


def _send(signal: Any, run: WorkflowRun, **named: Any) -> None:
    send_on_commit(signal, run.workflow, _using(), run=run, **named)


def started(run: WorkflowRun) -> None:
    """``run`` was saved: ``run_started``."""
    if listening(run_started):
        _send(run_started, copy.copy(run))


def moved(
    run: WorkflowRun,
    rows: Iterable[StepResult] = (),
    *,
    started: Iterable[Wait] = (),
    resolved: Iterable[Wait] = (),
    group_id: int | None = None,
) -> None:
    """``run`` moved (see :func:`durable_django.store.runs.apply_move`): in this order, the attempts
    ``rows`` it finished, the waits it ``started`` and ``resolved``, the group it closed (read
    once, when something listens), and its end when it finished."""
    if not listening(step_finished, wait_started, wait_resolved, group_finished, run_finished):
        return
    snapshot = copy.copy(run)
    _steps(snapshot, rows)
    if listening(wait_started):
        for wait in started:
            _send(wait_started, snapshot, wait=wait)
    if listening(wait_resolved):
        for wait in resolved:
            _send(wait_resolved, snapshot, wait=wait)
    if group_id is not None and listening(group_finished):
        _send(group_finished, snapshot, group=ParallelGroup.objects.get(pk=group_id))
    if run.status in FINISHED_RUN_STATUSES and listening(run_finished):
        _send(run_finished, snapshot)


def steps(run: WorkflowRun, rows: Iterable[StepResult]) -> None:
    """The attempts ``rows`` of ``run`` (which did not move) finished."""
    if listening(step_finished):
        _steps(copy.copy(run), rows)


def _steps(run: WorkflowRun, rows: Iterable[StepResult]) -> None:
    if not listening(step_finished):
        return
    for row in rows:
        if row.status in FINAL_ATTEMPT:
            _send(step_finished, run, step_result=row)


def step_changed(run: WorkflowRun, row: StepResult, **fields: Any) -> None:
    """The attempt ``row`` of ``run`` finished with ``fields`` written to it (``row`` as read before)."""
    if listening(step_finished):
        now = copy.copy(row)
        for name, value in fields.items():
            setattr(now, name, value)
        _steps(copy.copy(run), [now])


def attempts_by_id(ids: list[int], run: WorkflowRun | None = None) -> None:
    """The attempts ``ids`` finished, written by a statement that does not return them: read here
    (with their run, unless given) when something listens."""
    if not ids or not listening(step_finished):
        return
    found = StepResult.objects.filter(pk__in=ids).order_by("pk")
    for row in found if run is not None else found.select_related("run"):
        _steps(copy.copy(run) if run is not None else row.run, [row])


def branch_rows(
    run_id: Any, group_id: int, outcomes: list[tuple[Claimed, Attempt]], mine: set[int]
) -> list[StepResult]:
    """The branch rows a batch recorded (those of ``mine``), as the batch wrote them, when
    something listens to ``step_finished``; no query.

    The columns the batch did not write (``created_at``, ``job_id``, ``context``, ...) are
    deferred: Django reads one from the database if a receiver asks for it.
    """
    if not mine or not listening(step_finished):
        return []
    fields = StepResult._meta.concrete_fields
    db = router.db_for_write(StepResult)
    built = []
    for row, attempt in outcomes:
        if row.pk not in mine:
            continue
        known = {
            "id": row.pk,
            "run_id": run_id,
            "group_id": group_id,
            "step": row.step,
            "kind": StepKind.STEP,
            "item_index": row.index,
            "attempt": row.attempt,
            "status": StepStatus.FAILED if attempt.failed else StepStatus.COMPLETED,
            "output": None if attempt.failed else attempt.output,
            "error": attempt.reason if attempt.failed else None,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "logs": attempt.logs,
            "lease_owner": "",
            "lease_expires_at": None,
        }
        names = [field.attname for field in fields if field.attname in known]
        built.append(StepResult.from_db(db, names, [known[name] for name in names]))
    return built


def branches(group_id: int, run_id: Any, outcomes: list[tuple[Claimed, Attempt]], mine: set[int]) -> None:
    """A batch of branches recorded the results of ``mine``: one ``step_finished`` each, with the
    run read once for the batch."""
    built = branch_rows(run_id, group_id, outcomes, mine)
    if not built:
        return
    found = WorkflowRun.objects.filter(pk=run_id) if run_id is not None else WorkflowRun.objects.filter(groups=group_id)
    run = found.first()
    if run is not None:
        _steps(run, built)


def branch(row_id: int) -> None:
    """The branch attempt ``row_id`` finished, written by an ``UPDATE``: read here with its run."""
    if listening(step_finished):
        row = StepResult.objects.select_related("run").filter(pk=row_id).first()
        if row is not None:
            _steps(row.run, [row])


def wait_began(run: WorkflowRun | None, wait: Wait) -> None:
    """``wait`` of ``run`` was created waiting (or over at once: then :func:`wait_ended` follows)."""
    if run is not None and listening(wait_started):
        _send(wait_started, copy.copy(run), wait=wait)


def waits_began(run_id: Any, waits: list[Wait]) -> None:
    """``waits`` of run ``run_id`` were created waiting, by a transaction that did not read the run
    as it left it: read here when something listens."""
    if waits and listening(wait_started):
        run = WorkflowRun.objects.filter(pk=run_id).first()
        for wait in waits:
            wait_began(run, wait)


def wait_ended(run: WorkflowRun | None, wait: Wait) -> None:
    """``wait`` of ``run`` was resolved, timed out or cancelled."""
    if run is not None and listening(wait_resolved):
        _send(wait_resolved, copy.copy(run), wait=wait)


def collecting_waits() -> list[Wait] | None:
    """A list for the waits a cancel ends, when something listens to ``wait_resolved`` (else ``None``)."""
    return [] if listening(wait_resolved) else None


def cancelled(run_id: Any, group_ids: list[int], waits: Iterable[Wait]) -> None:
    """The run ``run_id`` was cancelled or timed out (or now compensates after that), with its open groups
    ``group_ids`` and the waits ``waits``: the run is read, and the groups, when something listens."""
    if not listening(wait_resolved, group_finished, run_finished):
        return
    run = WorkflowRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    if listening(wait_resolved):
        for wait in waits:
            _send(wait_resolved, run, wait=wait)
    if group_ids and listening(group_finished):
        for group in ParallelGroup.objects.filter(pk__in=group_ids).order_by("pk"):
            _send(group_finished, run, group=group)
    if run.status in (RunStatus.CANCELLED, RunStatus.FAILED) and listening(run_finished):
        _send(run_finished, run)
