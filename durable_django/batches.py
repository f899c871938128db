"""Executing a claimed batch of branches, one after another, in the job that claimed it.

Branches are executed one at a time, each with its own copy of the context, and a batch's results
are recorded together, after it, by the drain loop of :mod:`durable_django.blocks`. A batch that
runs past its budget (OVERRUN_SECONDS) is watched over from the overrun watchdog's thread: the
branches it has not started go back to other workers (:func:`give_back`), and the results it has
are recorded at once (:func:`record_early`); from then on, each result is recorded before the next
branch starts, so that a slow or hung branch holds no other branch's result. Right before a branch
starts, whether a cancel of its run has committed is asked (:func:`durable_django.store.may_start`).

Retry or final for branches (:func:`retries_of`) and the log lines of a batch are here too, for
both the batch and the drain loop. Every write goes through :mod:`durable_django.store`.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import DatabaseError, connections
from django.utils import timezone

from . import dispatch, items, join, leases, store, tracing
from .attempts import Attempt, call_step, retry_delay
from .definition import Block, Foreach, Step, Workflow, queue_for
from .logging import log_attempt, run_fields, seconds
from .models import GroupStatus, ParallelGroup, StepResult, WorkflowRun
from .store import Claimed

logger = logging.getLogger("durable_django")

# A batch still executing after this long gives the branches it has not started to other workers,
# and records the results it has.
OVERRUN_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Place:
    """Where a batch executes: its group, run, workflow, block, and the queue of the job."""

    group: ParallelGroup
    run: WorkflowRun
    wf: Workflow
    block: Block
    queue: str


Outcomes = list[tuple[Claimed, Step, Attempt]]


class Batch:
    """The branches of a batch being executed: those not started yet, which the watchdog may give
    back meanwhile, and the outcomes not recorded yet, which are recorded early once the batch has
    run past its budget."""

    def __init__(self, rows: list[Claimed]) -> None:
        self._rows = deque(rows)
        self._done: Outcomes = []
        self._lock = threading.Lock()
        # Held while outcomes are recorded early (by the watchdog, or between branches), so that
        # the end of the batch waits for such a recording instead of racing it.
        self.recording = threading.Lock()
        self.overran = False
        self.ended = False

    def next(self) -> Claimed | None:
        with self._lock:
            return self._rows.popleft() if self._rows else None

    def finished(self, outcome: tuple[Claimed, Step, Attempt]) -> None:
        with self._lock:
            self._done.append(outcome)

    def take_unstarted(self) -> list[Claimed]:
        with self._lock:
            rows, self._rows = list(self._rows), deque()
            return rows

    def put_back(self, rows: list[Claimed]) -> None:
        """Rows that could not be given back are this batch's to execute after all."""
        with self._lock:
            self._rows.extendleft(reversed(rows))

    def take_finished(self) -> Outcomes:
        with self._lock:
            done, self._done = self._done, []
            return done

    def put_back_finished(self, outcomes: Outcomes) -> None:
        """Outcomes whose early recording failed are recorded with the rest of the batch."""
        with self._lock:
            self._done[:0] = outcomes


def overran(place: Place, batch: Batch, let_go: Callable[[list[Any]], None]) -> None:
    """A branch ran past the batch's budget (the watchdog's call): the branches not started go to
    other workers, and the results already there are recorded now rather than behind it."""
    with batch.recording:
        if batch.ended:
            return
        batch.overran = True
        give_back(place.group, place.queue, batch, let_go)
        record_early(place, batch, let_go)


def give_back(group: ParallelGroup, queue: str, batch: Batch, let_go: Callable[[list[Any]], None]) -> None:
    """The branches of the batch not started go to a drain job of their own."""
    rows = batch.take_unstarted()
    if not rows:
        return
    job = dispatch.run_branches_job(group.pk, group.run_id, queue, 1, tag=str(rows[0].pk))
    for attempt in range(3):
        try:
            released = store.release_claimed(group.pk, [row.pk for row in rows], job.job_id)
            break
        except DatabaseError:
            # A passing fault (a lock, a dropped connection): the batch keeps its rows if it persists.
            logger.warning(
                "group %s: could not hand branches over (try %d of 3)",
                group.pk,
                attempt + 1,
                exc_info=True,
                extra={"run_id": str(group.run_id)},
            )
            connections.close_all()
            time.sleep(0.05)
    else:
        batch.put_back(rows)
        return
    let_go([row.pk for row in rows])
    if released:
        dispatch.submit(job)
        logger.info(
            "group %s: a branch overran its batch; %d branches handed to other workers",
            group.pk,
            len(rows),
            extra={"run_id": str(group.run_id)},
        )


def record_early(place: Place, batch: Batch, let_go: Callable[[list[Any]], None]) -> None:
    """Record the finished branches of a batch that overran, before the batch ends: one
    transaction, claiming nothing (the caller holds ``batch.recording``).

    When they decide the block, its join is sent as a job: this may run in the watchdog's thread,
    beside the branch the batch still executes, and cannot go on with the run.
    """
    outcomes = batch.take_finished()
    if not outcomes:
        return
    group, run, wf, block = place.group, place.run, place.wf, place.block

    def decide(counts: store.Counts) -> None:
        if join.decides(block, counts):
            dispatch.submit(dispatch.join_group_job(group.pk, group.run_id, queue_for(wf)))

    try:
        retries = retries_of(group, wf, outcomes)
        log_branches(run, group, outcomes, retries)
        waits = [(row, attempt) for row, _, attempt in outcomes if attempt.waits]
        results = [(row, attempt) for row, _, attempt in outcomes if not attempt.waits]
        recorded = store.record_batch(group.pk, results, retries, None, decide, waits=waits, run_id=run.pk)
    except DatabaseError:
        logger.warning(
            "group %s: could not record %d finished branches early; they are recorded with their batch",
            group.pk,
            len(outcomes),
            exc_info=True,
            extra={"run_id": str(group.run_id)},
        )
        connections.close_all()
        batch.put_back_finished(outcomes)
        return
    let_go([row.pk for row, _, _ in outcomes])
    log_cancelled(run, group, recorded)


def context_of(group: ParallelGroup, block: Block, ctx: dict[str, Any]) -> Callable[[Claimed], dict[str, Any]]:
    """How the context of one branch of ``group`` is made from the run's: a copy, with its item for
    a foreach block."""
    if isinstance(block, Foreach):
        listed = group.items or []
        return lambda row: items.item_context(ctx, block, listed, row.index or 0)
    return lambda row: copy.deepcopy(ctx)


def execute(
    place: Place, context_of: Callable[[Claimed], dict[str, Any]], steps: dict[str, Step], rows: list[Claimed]
) -> Outcomes:
    """Execute a claimed batch one branch after another, each with its own copy of the context;
    returns the outcomes not recorded yet.

    Once the batch has run past OVERRUN_SECONDS, the watchdog gives the branches not started to
    other workers and records the results already there; from then on each result is recorded
    before the next branch starts, so a slow (or hung) branch holds no other branch's result.

    Right before a branch starts, :func:`~durable_django.store.may_start` says whether a cancel of
    the run has committed (a Redis read, no statement, unless a cancel is under way): once one has,
    no branch starts, and the branches left are cancelled.
    """
    run = place.run
    batch = Batch(rows)
    token = None
    # A child executed inline by its calling step keeps its branches in this process.
    watched = len(rows) > 1 and not dispatch.executes_inline(run.pk)
    with store.heartbeat.hold_many(StepResult, [row.pk for row in rows]) as let_go:
        on_overrun = partial(overran, place, batch, let_go)
        row = batch.next()
        try:
            while row is not None:
                if watched and token is None:
                    token = leases.watchdog.arm(OVERRUN_SECONDS, on_overrun)
                started = timezone.now()
                if not store.may_start(run.pk):
                    store.cancel_claimed([row.pk, *(left.pk for left in batch.take_unstarted())])
                    break
                step = steps[row.step]
                with tracing.span(
                    f"durable.step {step.name}", run, step=step.name, attempt=row.attempt, block=place.group.name
                ) as span:
                    attempt = call_step(step, context_of(row), run.pk, in_parallel=True, started_at=started)
                    tracing.record_attempt(span, attempt)
                batch.finished((row, step, attempt))
                row = batch.next()
                if row is not None and batch.overran:
                    # Branches that could not be given back: each gets a budget of its own, and
                    # the results before it are recorded first.
                    if token is not None:
                        leases.watchdog.disarm(token)
                        token = None
                    with batch.recording:
                        record_early(place, batch, let_go)
        finally:
            if token is not None:
                leases.watchdog.disarm(token)
            with batch.recording:
                batch.ended = True
    return batch.take_finished()


# -- retry or final, and the lines of a batch ---------------------------------------------------


def retries_of(
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
            group.run_id, group.pk, row.step, row.attempt + 1, queue_for(wf, step), delay, row.index
        )
    return again


def log_branches(
    run: WorkflowRun,
    group: ParallelGroup,
    outcomes: list[tuple[Claimed, Step, Attempt]],
    retries: dict[int, store.NextAttempt] | None = None,
) -> None:
    """One line per branch of a batch (see :func:`durable_django.logging.log_attempt`), written
    before the batch is recorded; nothing at all is done per branch when the logger would drop it."""
    if not logger.isEnabledFor(logging.WARNING):
        return
    quiet = not logger.isEnabledFor(logging.INFO)
    for row, _, attempt in outcomes:
        failed = attempt.failed
        if quiet and not failed:
            continue
        nxt = retries.get(row.pk) if failed and retries else None
        log_attempt(
            logger,
            run.pk,
            run.workflow,
            row.step,
            row.attempt,
            "failed" if failed else "waiting" if attempt.waits else "completed",
            seconds(attempt.started_at, attempt.finished_at),
            reason=attempt.reason if failed else None,
            retry_in=nxt.delay if nxt is not None else None,
            branch_of=group.name,
        )


def log_cancelled(run: WorkflowRun, group: ParallelGroup, recorded: store.Recorded | None) -> None:
    """The line of a batch whose results arrived after its run was cancelled: they are recorded as cancelled."""
    if recorded is None or recorded.counts is None or recorded.counts.status != GroupStatus.CANCELLED:
        return
    logger.info(
        "run %s (%s): %d branch(es) of %r finished after the run was cancelled; recorded as cancelled",
        run.pk,
        run.workflow,
        len(recorded.mine),
        group.name,
        extra=run_fields(run.pk, run.workflow, step=group.name, outcome="cancelled"),
    )
