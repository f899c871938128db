"""Writes of waits: a run or branches suspended on a wait, a wait resolved once, buffered events.

Every writer that touches a run's waits or events locks, in this order, the run's open groups,
then the run, then the wait (as every writer that moves a run on from a block does). That
order serialises a step suspending on a wait with an event sent at the same moment: the sender
either finds the wait (and resolves it), or finds none and buffers the event, which the wait
takes in the transaction that creates it. Of two senders, a sender and a timeout, or two
timeouts, the first to lock the wait resolves it; the others find it resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import dispatch, leases, results
from ..attempts import Attempt
from ..conf import durable_settings
from ..leases import released_fields
from ..models import (
    Event,
    GroupStatus,
    ParallelGroup,
    RunStatus,
    StepResult,
    StepStatus,
    Wait,
    WaitKind,
    WaitStatus,
    WorkflowRun,
)
from ..results import OK, Outcome
from ..waits import WaitRequest
from . import notify
from .groups import Claimed, Counts, count_finals
from .runs import apply_move

# -- building and taking events ---------------------------------------------------------------------


def new_wait(run_id: Any, row_id: int, step_name: str, request: WaitRequest, now: datetime) -> Wait:
    """The unsaved :class:`Wait` of ``request``, returned by step ``step_name`` (row ``row_id``)."""
    return Wait(
        run_id=run_id,
        step_result_id=row_id,
        kind=request.kind,
        name=request.name or step_name,
        events=list(request.events) if request.mode != "one" else [],
        mode=request.mode,
        returns=request.returns,
        due_at=request.due_at(now),
        has_timeout_value=request.has_timeout_value,
        timeout_value=request.timeout_value if request.has_timeout_value else None,
        timeout_seconds=request.seconds if request.kind != WaitKind.SLEEP else None,
        input_kind=request.input_kind,
        prompt=request.prompt,
        spec=request.spec,
        permission=request.permission,
        created_at=now,
    )


def copy_wait(wait: Wait, row_id: int, now: datetime) -> Wait:
    """A fresh wait like ``wait`` (a run retried after its timeout), with a fresh timeout."""
    due = None
    if wait.timeout_seconds is not None:
        due = now + timedelta(seconds=wait.timeout_seconds)
    return Wait(
        run_id=wait.run_id,
        step_result_id=row_id,
        kind=wait.kind,
        name=wait.name,
        events=wait.events,
        mode=wait.mode,
        returns=wait.returns,
        due_at=due,
        has_timeout_value=wait.has_timeout_value,
        timeout_value=wait.timeout_value,
        timeout_seconds=wait.timeout_seconds,
        input_kind=wait.input_kind,
        prompt=wait.prompt,
        spec=wait.spec,
        permission=wait.permission,
        created_at=now,
    )


def names_of(wait: Wait) -> list[str]:
    """The events a wait of kind ``event`` takes."""
    return list(wait.events) if wait.mode != "one" else [wait.name]


def take(wait: Wait, event: str, payload: Any) -> bool:
    """Give ``wait`` the event ``event``: updates its payload; whether that resolves it."""
    if wait.mode == "one":
        wait.payload = payload
        return True
    if wait.mode == "any":
        wait.payload = {"event": event, "payload": payload}
        return True
    received = dict(wait.payload or {})
    received[event] = payload
    wait.payload = received
    return set(received) >= set(wait.events)


def _take_buffered(wait: Wait) -> tuple[bool, list[int]]:
    """Let a new event wait take the events of its run sent before it (oldest first): whether that
    resolved it, and the ids of the events it took (consumed once the wait is saved: :func:`_save_taking`).

    Runs in the transaction that creates ``wait``, holding its run's lock, so no sender can slip
    in between. Each event is taken by one wait only.
    """
    names = names_of(wait)
    buffered = Event.objects.filter(run_id=wait.run_id, name__in=names, consumed_at__isnull=True).order_by(
        "created_at", "id"
    )
    taken: list[int] = []
    resolved = False
    for event in buffered:
        if wait.mode == "all" and event.name in (wait.payload or {}):
            continue  # one event per name; a later one stays for a later wait
        taken.append(event.pk)
        if take(wait, event.name, event.payload):
            resolved = True
            break
    return resolved, taken


def _save_taking(wait: Wait, now: datetime, taken: list[int]) -> None:
    """Insert the new ``wait`` and mark the buffered events it took as consumed by it."""
    wait.save(force_insert=True)
    if taken:
        Event.objects.filter(pk__in=taken, consumed_at__isnull=True).update(consumed_at=now, consumed_by=wait)


def _ends_now(wait: Wait, now: datetime) -> tuple[bool, list[int]]:
    """Whether a new wait is over before it starts (a sleep until a time past, buffered events),
    and the buffered events it took."""
    if wait.kind == WaitKind.SLEEP:
        return wait.due_at is None or wait.due_at <= now, []
    if wait.kind == WaitKind.EVENT:
        return _take_buffered(wait)
    return False, []


def value_of(wait: Wait) -> tuple[bool, Any]:
    """``(has_value, value)``: what a resolved wait puts in the context (a sleep puts nothing)."""
    if wait.kind == WaitKind.SLEEP:
        return False, None
    if wait.status == WaitStatus.TIMED_OUT:
        return wait.has_timeout_value, wait.timeout_value
    return True, wait.payload


def with_value(context: dict[str, Any], wait: Wait) -> dict[str, Any]:
    has, value = value_of(wait)
    return {**context, wait.key: value} if has else context


def _wake_job(wait: Wait, now: datetime) -> dispatch.Job | None:
    """The job that ends ``wait`` when it is due, on the default queue (every deployment has its workers)."""
    if wait.due_at is None:
        return None
    delay = (wait.due_at - now).total_seconds()
    return dispatch.wake_wait_job(wait.pk, wait.run_id, durable_settings.QUEUE, delay)


# -- a sequential step suspends its run -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suspended:
    """What became of a run whose step returned a wait: ``waiting``, or resolved at once (``resumed``)."""

    wait: Wait
    resumed: bool


def suspend_run(
    run: WorkflowRun,
    row: StepResult,
    request: WaitRequest,
    waiting_fields: dict[str, Any],
    resume_fields: Any,
) -> Suspended | None:
    """Record ``row`` (the completed step) and its wait, and set ``run`` waiting: one transaction.

    ``waiting_fields``: the run while it waits. A wait that is over at once (a sleep into the past,
    events sent before it) is resolved here and the run moves on as ``resume_fields(wait)`` says,
    its lease still held by this process. ``None`` (nothing written) when the run moved on meanwhile.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().filter(
            pk=run.pk, version=run.version, status=RunStatus.RUNNING
        )
        if not list(locked.values_list("pk", flat=True)):
            return None
        row.save(force_insert=True)
        wait = new_wait(run.pk, row.pk, row.step, request, now)
        resumed, taken = _ends_now(wait, now)
        if resumed:
            wait.status, wait.resolved_at = WaitStatus.RESOLVED, now
            fields = resume_fields(wait)
        else:
            fields = waiting_fields
        _save_taking(wait, now, taken)
        WorkflowRun.objects.filter(pk=run.pk).update(version=run.version + 1, **fields)
        if not resumed:
            job = _wake_job(wait, now)
            if job is not None:
                dispatch.submit(job)
    apply_move(run, fields, [row], started=[wait], resolved=[wait] if resumed else [])
    return Suspended(wait, resumed)


# -- branches suspend on waits ----------------------------------------------------------------------


def suspend_branches(group_id: int, run_id: Any, waits: list[tuple[Claimed, Attempt]]) -> list[tuple[Claimed, Attempt]]:
    """Set branches that returned a wait waiting, with their waits (inside the recording transaction).

    Rows recovery took over meanwhile are left out. A wait over at once is resolved here: its branch
    is returned as a final result, for the caller to record with the rest of its batch.
    """
    now = timezone.now()
    run = lock_run(run_id, group_id, cancelled_group=True)
    if run is None:
        # Its run was cancelled while they executed: they are final, cancelled with what they returned.
        return list(waits)
    mine = set(
        StepResult.objects.select_for_update()
        .filter(pk__in=[row.pk for row, _ in waits], status=StepStatus.RUNNING, lease_owner=leases.owner())
        .values_list("pk", flat=True)
    )
    finals: list[tuple[Claimed, Attempt]] = []
    suspended: list[StepResult] = []
    for row, attempt in waits:
        if row.pk not in mine:
            continue
        wait = new_wait(run_id, row.pk, row.step, attempt.outcome.wait, now)
        over, taken = _ends_now(wait, now)
        if over:
            wait.status, wait.resolved_at = WaitStatus.RESOLVED, now
        # Saved at once: the events it took are consumed before the next branch's wait looks.
        _save_taking(wait, now, taken)
        notify.wait_began(run, wait)
        if over:
            notify.wait_ended(run, wait)
            output = with_value(attempt.output, wait)
            finals.append((row, replace(attempt, outcome=Outcome(OK, data=output), output=output)))
            continue
        suspended.append(
            StepResult(
                pk=row.pk,
                status=StepStatus.WAITING,
                output=attempt.output,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
                logs=attempt.logs,
                **released_fields(),
            )
        )
        job = _wake_job(wait, now)
        if job is not None:
            dispatch.submit(job)
    if suspended:
        # One statement for the batch's waiting branches, whatever their number.
        StepResult.objects.bulk_update(
            suspended,
            ["status", "output", "started_at", "finished_at", "logs", "lease_owner", "lease_expires_at"],
            batch_size=500,
        )
    if suspended:
        ParallelGroup.objects.filter(pk=group_id).update(waiting_count=F("waiting_count") + len(suspended))
    return finals


def settle(group_id: int, run_id: Any, counts: Counts | None = None) -> bool:
    """Set the run ``waiting`` when every unfinished branch of its open group waits; whether it did.

    In the recording transaction, under the group's lock: ``counts`` as the recording left them
    (read here when not given). The run's version does not move: nothing but a wait's resolution
    (or a cancel) can follow, and the resolution sets it running again.
    """
    if counts is None:
        counters = list(
            ParallelGroup.objects.filter(pk=group_id).values_list("pending_count", "waiting_count", "status")
        )
        if not counters:
            return False
        pending, waiting, status = counters[0]
    else:
        pending, waiting, status = counts.pending, counts.waiting, counts.status
    if status != GroupStatus.RUNNING or pending == 0 or pending != waiting:
        return False
    return bool(WorkflowRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(status=RunStatus.WAITING))


def lock_run(run_id: Any, group_id: int | None = None, *, cancelled_group: bool = False) -> WorkflowRun | None:
    """Lock the run's open groups (or ``group_id``), then the run, as every writer of its waits does.

    ``cancelled_group``: ``None`` (the run is not locked) when group ``group_id`` turns out cancelled.
    """
    groups = ParallelGroup.objects.select_for_update().filter(run_id=run_id, status=GroupStatus.RUNNING)
    if group_id is not None:
        groups = ParallelGroup.objects.select_for_update().filter(pk=group_id)
    statuses = list(groups.values_list("status", flat=True))
    if cancelled_group and statuses == [GroupStatus.CANCELLED]:
        return None
    return WorkflowRun.objects.select_for_update().filter(pk=run_id).first()


# -- resolving a wait -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a wait ends: ``resolved`` (with ``payload`` given to it so far) or ``timed_out``, and by whom."""

    status: str
    event: str | None = None
    payload: Any = None
    answer: dict[str, Any] | None = None
    user: Any = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """What :func:`resolve` did: the wait's new status (``partial``: a wait_for_all still missing
    events) and, for a branch's wait, the group's counters its final result left."""

    status: str
    counts: Counts | None = None


def resolve(wait: Wait, run: WorkflowRun, resolution: Resolution, run_fields: Any) -> Resolved:
    """End the locked, waiting ``wait`` of the locked ``run`` as ``resolution`` says (inside a transaction).

    A sequential step's wait moves its run as ``run_fields(wait)`` says (``(fields, job or None)``,
    the job taking the run's new version); a branch's wait records the branch's final result (the
    wait's value merged into the branch's output, or ``wait_timeout``) and counts it.
    """
    now = timezone.now()
    if resolution.status == WaitStatus.TIMED_OUT:
        wait.status = WaitStatus.TIMED_OUT
    elif resolution.answer is not None:
        wait.payload = resolution.answer
        wait.status = WaitStatus.RESOLVED
        wait.resolved_by = resolution.user
    elif resolution.event is not None:
        if not take(wait, resolution.event, resolution.payload):
            Wait.objects.filter(pk=wait.pk).update(payload=wait.payload)
            return Resolved("partial")
        wait.status = WaitStatus.RESOLVED
    else:
        wait.status = WaitStatus.RESOLVED
    wait.resolved_at = now
    Wait.objects.filter(pk=wait.pk).update(
        status=wait.status, payload=wait.payload, resolved_at=now, resolved_by=wait.resolved_by
    )
    row = wait.step_result
    if row.group_id is None:
        if row.context is not None:
            # A step with a compensation: its compensation sees the wait's value too.
            StepResult.objects.filter(pk=row.pk).update(context=with_value(row.context, wait))
        fields, job = run_fields(wait)
        WorkflowRun.objects.filter(pk=run.pk, version=run.version).update(version=run.version + 1, **fields)
        apply_move(run, fields, resolved=[wait])
        if job is not None:
            dispatch.submit(job(run.version))
        return Resolved(str(wait.status))
    notify.wait_ended(run, wait)
    return Resolved(str(wait.status), _finish_branch(wait, row, now, run))


def _finish_branch(wait: Wait, row: StepResult, now: datetime, run: WorkflowRun) -> Counts | None:
    has_value, _ = value_of(wait)
    failed = wait.status == WaitStatus.TIMED_OUT and not has_value
    finished = {
        "status": StepStatus.FAILED if failed else StepStatus.COMPLETED,
        # A timed-out branch keeps its data: retrying the run makes it wait again with it.
        "output": row.output if failed else with_value(row.output or {}, wait),
        "error": results.wait_timeout(wait.name) if failed else None,
        "finished_at": now,
    }
    updated = StepResult.objects.filter(pk=row.pk, status=StepStatus.WAITING).update(**finished)
    if updated:
        notify.step_changed(run, row, **finished)
    if not updated or row.group_id is None:
        return None
    ParallelGroup.objects.filter(pk=row.group_id).update(waiting_count=F("waiting_count") - 1)
    return count_finals(row.group_id, 1, int(failed))


def run_joins(run: WorkflowRun, group_id: int, queue: str) -> None:
    """A branch's wait decided its block: the run runs again, and its join is sent on ``queue``."""
    WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.WAITING).update(status=RunStatus.RUNNING)
    run.status = RunStatus.RUNNING
    dispatch.submit(dispatch.join_group_job(group_id, run.pk, queue))


# -- waiting again (a run retried after a timeout) ---------------------------------------------------


def wait_again(run: WorkflowRun, timed_out: Wait, fields: dict[str, Any]) -> bool:
    """Set the failed ``run`` waiting again on a fresh copy of ``timed_out`` (fresh timeout): one
    transaction with the caller's; ``False`` when the run moved since it was read."""
    now = timezone.now()
    waiting = {"status": RunStatus.WAITING, **fields}
    moved = WorkflowRun.objects.filter(pk=run.pk, version=run.version, status=RunStatus.FAILED).update(
        version=run.version + 1, **waiting
    )
    if not moved:
        return False
    wait = copy_wait(timed_out, timed_out.step_result_id, now)
    wait.save(force_insert=True)
    apply_move(run, waiting, started=[wait])
    job = _wake_job(wait, now)
    if job is not None:
        dispatch.submit(job)
    return True


def branches_wait_again(
    run: WorkflowRun, group_id: int, again: list[tuple[StepResult, Wait]], *, all_wait: bool
) -> None:
    """In a reopened group, branches whose wait timed out wait again (a new attempt each, a fresh
    timeout); when nothing else of the block is left to execute, so does the run."""
    now = timezone.now()
    jobs = []
    fresh_waits = []
    for row, timed_out in again:
        fresh = StepResult.objects.create(
            run_id=run.pk,
            group_id=group_id,
            step=row.step,
            item_index=row.item_index,
            attempt=row.attempt + 1,
            status=StepStatus.WAITING,
            output=row.output,
            started_at=now,
            finished_at=now,
        )
        wait = copy_wait(timed_out, fresh.pk, now)
        wait.save(force_insert=True)
        fresh_waits.append(wait)
        job = _wake_job(wait, now)
        if job is not None:
            jobs.append(job)
    ParallelGroup.objects.filter(pk=group_id).update(waiting_count=len(again))
    if all_wait:
        WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(status=RunStatus.WAITING)
    dispatch.submit(*jobs)
    notify.waits_began(run.pk, fresh_waits)


# -- events -----------------------------------------------------------------------------------------


def waits_for_event(run_id: Any, event: str) -> list[Wait]:
    """The run's waiting event waits that take ``event``, oldest first (their rows locked)."""
    candidates = (
        Wait.objects.select_for_update(of=("self",))
        .select_related("step_result__group")
        .filter(run_id=run_id, kind=WaitKind.EVENT, status=WaitStatus.WAITING)
        .order_by("created_at", "id")
    )
    found = []
    for wait in candidates:
        if event in names_of(wait) and not (wait.mode == "all" and event in (wait.payload or {})):
            found.append(wait)
    return found


def buffer_event(run_id: Any, event: str, payload: Any) -> Event:
    """Keep ``event`` for the next wait of the run that takes it."""
    return Event.objects.create(run_id=run_id, name=event, payload=payload)


def overdue(now: datetime, grace: float) -> Iterable[Wait]:
    """Waiting waits whose due time passed more than ``grace`` seconds ago (their wake job was lost)."""
    return (
        Wait.objects.filter(status=WaitStatus.WAITING, due_at__lt=now - timedelta(seconds=grace))
        .order_by("due_at")
        .only("pk", "run_id")
    )
