"""Recovery: find work that should be moving but is not, and send it again.

The database says what must happen next; Redis only carries it. :func:`recover` reads the rows,
not RQ's registries, to find:

- a sequential step or a branch whose worker's lease ran out (the worker died): the lost attempt
  is recorded as ``worker_lost`` and a new attempt is sent, without using up the retry budget,
  until the step has lost its worker ``DURABLE["MAX_WORKER_LOST"]`` times in a row;
- a join whose worker's lease ran out, or a block whose branches are all done but whose join job
  never arrived;
- a run whose compensations were executing when its worker's lease ran out: the compensation
  attempt that was executing is recorded as ``worker_lost`` and the run's compensate job is sent
  again (see :mod:`durable_django.compensation`);
- a delayed run due for a while whose start job never came, and a run past its workflow's
  timeout (:func:`durable_django.timers.sweep`);
- a run, branch or retry whose job should have started by now but is not in Redis (a crash
  between commit and enqueue, a flushed or restarted Redis), or a scheduled retry that is overdue
  because no RQ scheduler is moving it.

Every action is a conditional update (or a claim that only one job can win), so two sweepers at
once, or a sweeper next to a slow but live worker, never run a join twice or move a run twice.
Runs of child workflows are left to their parent: the calling step resumes them inline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections, connections
from django.db.models import Max, Q
from django.utils import timezone

from . import blocks, counters, dispatch, firing, join, leases, results, resume, retention, store, timers, tracing
from .attempts import Attempt
from .conf import durable_settings
from .definition import Block, Step, Workflow, find_workflow, queue_for
from .leases import released_fields
from .logging import run_fields
from .models import GroupStatus, ParallelGroup, RunStatus, StepResult, StepStatus, WorkflowRun

logger = logging.getLogger("durable_django.recovery")
# The span, in the run's trace, of each thing recovery does to a run; ``durable.action`` says what.
RECOVER = "durable.recover"


@dataclass
class Report:
    """What one :func:`recover` pass did."""

    steps_taken_over: int = 0
    compensations_taken_over: int = 0
    branches_taken_over: int = 0
    joins_taken_over: int = 0
    runs_sent_again: int = 0
    branches_sent_again: int = 0
    joins_sent_again: int = 0
    retries_released: int = 0
    failed_worker_lost: int = 0
    waits_woken: int = 0
    delayed_runs_started: int = 0
    runs_timed_out: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        done = [f"{f.name.replace('_', ' ')}: {getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return ", ".join(done) or "nothing to recover"


def count(report: Report) -> None:
    """Add what a sweep did to the ``durable_recovery_redispatches`` counters (``DURABLE["METRICS"]``)."""
    try:
        counters.add_to_metrics(
            (counters.RECOVERY_METRIC, (f.name,), getattr(report, f.name))
            for f in fields(report)
            if getattr(report, f.name)
        )
    except dispatch.QUEUE_UNAVAILABLE:
        logger.warning("recovery metrics not counted: Redis does not answer")


def lost_streak(run_id: Any, step_name: str, group_id: int | None = None, item_index: int | None = None) -> int:
    """How many of the latest attempts of a step (or foreach item) ended with their worker lost, in a row."""
    limit = durable_settings.MAX_WORKER_LOST + 1
    latest = (
        StepResult.objects.filter(run_id=run_id, step=step_name, group_id=group_id, item_index=item_index)
        .exclude(status__in=(StepStatus.PENDING, StepStatus.RUNNING))
        .order_by("-id")
        .values_list("status", "error")[:limit]
    )
    streak = 0
    for status, error in latest:
        if status != StepStatus.FAILED or not isinstance(error, dict) or error.get("type") != "worker_lost":
            break
        streak += 1
    return streak


def _waiting_job(
    queue_name: str, job_id: str, job: dispatch.Job, now: datetime, postpone: Callable[[datetime], bool]
) -> str:
    """Send ``job`` again unless it is on its way; returns what was done.

    ``postpone(deadline)`` moves the waiting row's deadline with a conditional update that matches
    only while the row still waits as it did when the sweep read it: nothing is sent for a row
    that moved on meanwhile (its job ran), and of two sweepers only one sends.
    """
    state, due = dispatch.job_state(queue_name, job_id, now)
    if state == "queued":
        postpone(leases.expiry(now))
        return "waiting"
    if state == "scheduled" and due is not None:
        postpone(leases.expiry(max(due, now)))
        return "waiting"
    if not postpone(leases.expiry(now)):
        return "moved on"
    if state == "overdue":
        dispatch.release_scheduled(queue_name, job_id)
        return "released"
    dispatch.send([job])
    return "sent"


# -- the sweep ------------------------------------------------------------------------------------


def recover(now: datetime | None = None) -> Report:
    """One recovery pass over the database; see the module docstring. Safe to run anywhere, any time."""
    now = now or timezone.now()
    report = Report()
    top = Q(parent__isnull=True)
    for run in WorkflowRun.objects.filter(top, status=RunStatus.RUNNING, lease_expires_at__lt=now).exclude(
        lease_owner=""
    ):
        _take_over_run(run, now, report)
    # Few runs compensate at a time: they are looked at one by one, by status.
    for run in WorkflowRun.objects.filter(top, status=RunStatus.COMPENSATING, lease_expires_at__lt=now):
        if run.lease_owner:
            _take_over_compensation(run, now, report)
        else:
            _send_run_again(run, now, report)
    waiting = WorkflowRun.objects.filter(
        top, status__in=(RunStatus.PENDING, RunStatus.RUNNING), lease_owner="", lease_expires_at__lt=now
    ).order_by("lease_expires_at")
    queued = dispatch.QueuedJobs(now)
    for chunk in _chunks(waiting.iterator(chunk_size=SWEEP_CHUNK), SWEEP_CHUNK):
        # A backlog: every run whose job still waits in its queue is put off in one statement.
        jobs = {run.pk: _run_place(run) for run in chunk}
        on_queue = queued.among(list(jobs.values()))
        later = [run.pk for run in chunk if jobs[run.pk] in on_queue]
        if later:
            store.postpone_runs(later, now, leases.expiry(now))
        for run in chunk:
            if jobs[run.pk] not in on_queue:
                _send_run_again(run, now, report)

    branches = StepResult.objects.filter(
        run__parent__isnull=True, group__isnull=False, lease_expires_at__lt=now
    ).select_related("run", "group")
    for row in branches.filter(status=StepStatus.RUNNING).exclude(lease_owner=""):
        _take_over_branch(row, now, report)
    drains_seen: set[str] = set()
    for row in branches.filter(status=StepStatus.PENDING):
        if row.job_id.startswith(dispatch.DRAIN_PREFIX):
            # Many rows share one drain job: look at (and send) each such job once.
            if row.job_id not in drains_seen:
                drains_seen.add(row.job_id)
                _send_drain_again(row, now, report)
        else:
            _send_branch_again(row, now, report)

    groups = ParallelGroup.objects.filter(
        run__parent__isnull=True, run__status=RunStatus.RUNNING, status=GroupStatus.RUNNING
    ).select_related("run")
    taken_over: list[int] = []
    for group in groups.filter(lease_expires_at__lt=now).exclude(lease_owner=""):
        taken_over.append(group.pk)
        if store.release_join(group.pk, owner=group.lease_owner):
            logger.warning(
                "join of group %s (run %s) lost its worker; sending it again",
                group.pk,
                group.run_id,
                extra={"run_id": str(group.run_id)},
            )
            queue = queue_for(find_workflow(group.run.workflow))
            dispatch.send([dispatch.join_group_job(group.pk, group.run_id, queue)])
            tracing.emit(RECOVER, group.run, action="join_taken_over", block=group.name)
            report.joins_taken_over += 1
    settled = now - timedelta(seconds=durable_settings.LEASE_SECONDS)
    undecided = (
        groups.filter(lease_owner="").filter(Q(pending_count=0) | Q(failed_count__gt=0)).exclude(pk__in=taken_over)
    )
    for group in undecided.annotate(last=Max("branches__finished_at")).filter(last__lt=settled):
        _send_join_again(group, now, report)
    _wake_overdue(now, report)
    report.delayed_runs_started, report.runs_timed_out = timers.sweep(now)
    if report.total:
        logger.warning("recovery: %s", report)
        if durable_settings.METRICS:
            count(report)
    overdue = report.retries_released + report.waits_woken
    if overdue and dispatch.take_notice_turn(NO_SCHEDULER_NOTICE, NOTICE_EVERY):
        logger.warning(
            "%d scheduled job(s) (retries with a delay, wake-ups of sleeps and timeouts) were overdue and moved "
            "by recovery, late: no worker seems to run RQ's scheduler for their queue. Run at least one worker "
            "with it (manage.py durable_worker without --without-scheduler, or rqworker --with-scheduler). "
            "Said at most once every %d s.",
            overdue,
            NOTICE_EVERY,
        )
    retention.sweep(now)  # DURABLE["RETENTION"]: a few minutes apart, never in recovery's way
    return report


# Redis key and period of the sweeper's notice that no RQ scheduler is running: once a minute across
# every process that sweeps, however many overdue jobs each sweep finds.
NO_SCHEDULER_NOTICE = "durable_django:notice:no-scheduler"
NOTICE_EVERY = 60


def _wake_overdue(now: datetime, report: Report) -> None:
    """End sleeps and timeouts whose wake-up job did not run (lost, or no RQ scheduler running)."""
    grace = max(durable_settings.RECOVER_INTERVAL, 2.0)
    for wait in store.waits.overdue(now, grace):
        if resume.wake(wait.pk) in ("resolved", "timed_out"):
            logger.warning(
                "wait %s of run %s was overdue: its wake-up job never ran; ended it",
                wait.pk,
                wait.run_id,
                extra={"run_id": str(wait.run_id)},
            )
            report.waits_woken += 1


def _take_over_run(run: WorkflowRun, now: datetime, report: Report) -> None:
    wf = find_workflow(run.workflow)
    node = wf.node(run.current_step) if wf else None
    owner = run.lease_owner
    if not isinstance(node, Step):
        # A run lost at a block (its fan-out) or at a step its definition no longer has: send it again.
        if store.transition(run, released_fields(leases.expiry(now)), resume_on=queue_for(wf, node)):
            logger.warning(
                "run %s lost its worker %s at %r; sent again",
                run.pk,
                owner,
                run.current_step,
                extra=run_fields(run.pk, run.workflow),
            )
            tracing.emit(RECOVER, run, action="run_taken_over", step=run.current_step)
            report.steps_taken_over += 1
        return
    streak = lost_streak(run.pk, node.name) + 1
    reason = results.worker_lost(streak)
    lost = StepResult(
        run=run, step=node.name, attempt=run.current_attempt, status=StepStatus.FAILED, error=reason, finished_at=now
    )
    if run.current_attempt == 1 and wf is not None and wf.is_top_level(node.name):
        lost.context_before = run.context  # as the lost attempt would have recorded it (see durable_django.forks)
    if streak >= durable_settings.MAX_WORKER_LOST:
        if store.fail_run(run, node.name, reason, [lost]):
            logger.error(
                "run %s failed: its worker was lost %d times in a row at %r",
                run.pk,
                streak,
                node,
                extra=run_fields(run.pk, run.workflow),
            )
            tracing.emit(RECOVER, run, action="failed_worker_lost", step=node.name, status="failed", error=reason)
            report.failed_worker_lost += 1
        return
    fields_ = {"current_attempt": run.current_attempt + 1, **released_fields(leases.expiry(now))}
    if store.transition(run, fields_, [lost], resume_on=queue_for(wf, node)):
        logger.warning(
            "run %s lost its worker %s at %r; sent again",
            run.pk,
            owner,
            run.current_step,
            extra=run_fields(run.pk, run.workflow),
        )
        tracing.emit(RECOVER, run, action="run_taken_over", step=node.name, attempt=lost.attempt)
        report.steps_taken_over += 1


# Waiting runs are looked at this many at a time: one read of their jobs' states from Redis and
# one UPDATE for those still queued, however long the backlog.
SWEEP_CHUNK = 500


def _chunks(rows: Iterator[WorkflowRun], size: int) -> Iterator[list[WorkflowRun]]:
    chunk: list[WorkflowRun] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_place(run: WorkflowRun) -> tuple[str, str]:
    """The queue and the id of the job that run ``run`` waits for."""
    wf = find_workflow(run.workflow)
    if run.status == RunStatus.COMPENSATING:
        return queue_for(wf), dispatch.compensate_job_id(run.pk, run.version)
    return queue_for(wf, wf.node(run.current_step) if wf else None), dispatch.run_job_id(run.pk, run.version)


def _take_over_compensation(run: WorkflowRun, now: datetime, report: Report) -> None:
    owner = run.lease_owner
    if store.compensations.take_over_compensation(run, now, queue_for(find_workflow(run.workflow))):
        logger.warning(
            "run %s lost its worker %s while compensating; sent again",
            run.pk,
            owner,
            extra=run_fields(run.pk, run.workflow),
        )
        tracing.emit(RECOVER, run, action="compensation_taken_over")
        report.compensations_taken_over += 1


def _send_run_again(run: WorkflowRun, now: datetime, report: Report) -> None:
    queue, job_id = _run_place(run)
    job = (
        dispatch.compensate_job(run.pk, queue, run.version)
        if run.status == RunStatus.COMPENSATING
        else dispatch.run_workflow_job(run.pk, queue, run.version)
    )
    done = _waiting_job(queue, job_id, job, now, lambda until: store.postpone_run(run, until))
    if done == "sent":
        logger.warning(
            "run %s waited for job %s, which is not in Redis; sent it again",
            run.pk,
            job_id,
            extra=run_fields(run.pk, run.workflow),
        )
        tracing.emit(RECOVER, run, action="run_sent_again", step=run.current_step)
        report.runs_sent_again += 1
    elif done == "released":
        logger.warning(
            "run %s: scheduled job %s is overdue; moved it to queue %r",
            run.pk,
            job_id,
            queue,
            extra=run_fields(run.pk, run.workflow),
        )
        tracing.emit(RECOVER, run, action="retry_released", step=run.current_step)
        report.retries_released += 1


def _branch_place(row: StepResult) -> tuple[ParallelGroup, Workflow | None, Block | None]:
    """The group of branch ``row``, its run's workflow and the block (None when no longer defined)."""
    group = row.group
    assert group is not None
    wf = find_workflow(row.run.workflow)
    return group, wf, wf.block(group.name) if wf else None


def _take_over_branch(row: StepResult, now: datetime, report: Report) -> None:
    group, wf, block = _branch_place(row)
    step = block.branch(row.step) if block else None
    streak = lost_streak(row.run_id, row.step, row.group_id, row.item_index) + 1
    attempt = Attempt.failure(results.worker_lost(streak), row.started_at or now)
    live = row.run.status == RunStatus.RUNNING and group.status == GroupStatus.RUNNING
    if wf is not None and step is not None and live and streak < durable_settings.MAX_WORKER_LOST:
        if blocks.retry_lost_branch(row, wf, step, attempt):
            logger.warning(
                "branch %r of run %s lost its worker %s; sent again",
                row.step,
                row.run_id,
                row.lease_owner,
                extra={"run_id": str(row.run_id)},
            )
            tracing.emit(
                RECOVER, row.run, action="branch_taken_over", step=row.step, attempt=row.attempt, block=group.name
            )
            report.branches_taken_over += 1
        return
    # Final: the block goes on without this branch (or was decided already); counters stay right.
    if blocks.finish_branch(row, group, wf, block, attempt):
        tracing.emit(
            RECOVER,
            row.run,
            action="branch_failed_worker_lost",
            step=row.step,
            attempt=row.attempt,
            block=group.name,
            status="failed",
            error=attempt.reason,
        )
        report.failed_worker_lost += 1


def _send_branch_again(row: StepResult, now: datetime, report: Report) -> None:
    group, wf, block = _branch_place(row)
    queue = queue_for(wf, block.branch(row.step) if block else None)
    job = dispatch.run_branch_job(row.pk, row.run_id, row.job_id, queue)
    done = _waiting_job(queue, row.job_id, job, now, lambda until: store.postpone_branch(row, until))
    if done == "sent":
        logger.warning(
            "branch %r of run %s: job %s is not in Redis; sent it again",
            row.step,
            row.run_id,
            row.job_id,
            extra={"run_id": str(row.run_id)},
        )
        tracing.emit(RECOVER, row.run, action="branch_sent_again", step=row.step, attempt=row.attempt, block=group.name)
        report.branches_sent_again += 1
    elif done == "released":
        tracing.emit(RECOVER, row.run, action="retry_released", step=row.step, attempt=row.attempt, block=group.name)
        report.retries_released += 1


def _send_drain_again(row: StepResult, now: datetime, report: Report) -> None:
    group, wf, block = _branch_place(row)
    queue = queue_for(wf, block.branch(row.step) if block else None)
    job = dispatch.run_branches_job(group.pk, row.run_id, queue)
    busy = StepResult.objects.filter(
        Q(lease_expires_at__gte=now) | Q(started_at__gte=now - timedelta(seconds=durable_settings.LEASE_SECONDS)),
        group=group,
        status=StepStatus.RUNNING,
    )
    if busy.exists():
        # A drain job of this block is at work (its branches hold live leases): it takes these too.
        store.postpone_drain(group.pk, row.job_id, leases.expiry(now))
        return
    done = _waiting_job(
        queue, row.job_id, job, now, lambda until: store.postpone_drain(group.pk, row.job_id, until, overdue_at=now)
    )
    if done == "sent":
        logger.warning(
            "branches of group %s (run %s): job %s is not in Redis; sent it again", group.pk, row.run_id, row.job_id
        )
        tracing.emit(RECOVER, row.run, action="branches_sent_again", block=group.name)
        report.branches_sent_again += 1


def _send_join_again(group: ParallelGroup, now: datetime, report: Report) -> None:
    wf = find_workflow(group.run.workflow)
    if not join.decided(wf.block(group.name) if wf else None, group.pending_count, group.failed_count):
        return
    queue = queue_for(wf)
    state, _ = dispatch.job_state(queue, dispatch.join_job_id(group.pk), now)
    if state in ("queued", "scheduled"):
        return
    # Joined meanwhile (its job ran while this sweep looked)? Then there is nothing to send.
    if not ParallelGroup.objects.filter(pk=group.pk, status=GroupStatus.RUNNING, lease_owner="").exists():
        return
    logger.warning(
        "group %s of run %s is decided but its join never ran; sending it",
        group.pk,
        group.run_id,
        extra={"run_id": str(group.run_id)},
    )
    dispatch.send([dispatch.join_group_job(group.pk, group.run_id, queue)])
    tracing.emit(RECOVER, group.run, action="join_sent_again", block=group.name)
    report.joins_sent_again += 1


# -- the sweeper in worker processes --------------------------------------------------------------


class Sweeper:
    """Runs :func:`recover` every ``DURABLE["RECOVER_INTERVAL"]`` seconds in a daemon thread.

    Every rqworker process starts one (see :mod:`durable_django.apps`); a Redis key taken with
    ``SET NX PX`` (:func:`durable_django.dispatch.take_sweep_turn`) lets only one of them sweep per
    interval, so the work does not grow with the number of workers, and a dead worker's sweeps are
    simply done by the others.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_down = False

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="durable-recovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(durable_settings.RECOVER_INTERVAL):
                self.sweep_once()
        finally:
            connections.close_all()

    def sweep_once(self) -> Report | None:
        """Sweep if no other process swept during this interval; ``None`` when it did not sweep."""
        try:
            turn = dispatch.take_sweep_turn(leases.owner(), durable_settings.RECOVER_INTERVAL)
            if self._redis_down:
                self._redis_down = False
                logger.info("recovery sweeps again: Redis answers")
            if not turn:
                return None
            close_old_connections()
            report = recover()
            fire_schedules()
            return report
        except dispatch.QUEUE_UNAVAILABLE as error:
            # Redis is down: said once per outage rather than with a traceback every interval.
            if not self._redis_down:
                self._redis_down = True
                logger.warning(
                    "recovery sweeps wait for Redis, which does not answer (%s: %s)", type(error).__name__, error
                )
            return None
        except Exception:
            # A database or Redis outage must not end recovery: the next interval tries again.
            logger.exception("recovery sweep failed")
            connections.close_all()
            time.sleep(min(durable_settings.RECOVER_INTERVAL, 1))
            return None


def fire_schedules() -> None:
    """Fire the schedules whose fire job is late or lost (the safety net of their fire jobs). Never
    raises: a schedule that cannot fire must not keep the sweeps that follow from recovering runs."""
    try:
        firing.fire_due()
    except dispatch.QUEUE_UNAVAILABLE:
        raise
    except Exception:
        logger.exception("schedules could not be checked for due fires; the next sweep tries again")


sweeper = Sweeper()
