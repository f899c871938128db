"""The only module that knows RQ and Redis: job kinds, sending after commit, what Redis holds.

The engine describes work as :class:`Job` values; :func:`submit` sends them once the
surrounding transaction commits, every immediate job of one commit in one Redis round trip.
Jobs carry ids only, never pickled callables: the database holds everything else. Recovery
asks this module where a job is (:func:`job_state`, :class:`QueuedJobs`) and never reads RQ's
structures itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.exceptions
from django.db import transaction
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from .conf import durable_settings

logger = logging.getLogger("durable_django.dispatch")


# The errors of a Redis server that is down, unreachable or too slow to answer.
QUEUE_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work for a worker: an entry point, its id arguments, a queue and an optional delay."""

    func: str
    args: tuple[Any, ...]
    queue: str
    run_id: Any
    delay: float = 0.0
    job_id: str = field(default_factory=new_job_id)


# -- job kinds ----------------------------------------------------------------------------------
#
# Each kind is named once, after its entry point in durable_django.jobs (which calls the decision
# function of the same name), with its id and its constructor here. Ids are derived from rows
# wherever recovery must tell whether a job is still in Redis.

RUN_WORKFLOW = "durable_django.jobs.run_workflow"
RUN_BRANCHES = "durable_django.jobs.run_branches"
RUN_BRANCH = "durable_django.jobs.run_branch"
JOIN_GROUP = "durable_django.jobs.join_group"
WAKE_WAIT = "durable_django.jobs.wake_wait"
COMPENSATE = "durable_django.jobs.compensate"

# The ids of run_branches jobs ("drain jobs"), which pending branch rows name as their job.
DRAIN_PREFIX = "durable-drain-"


def run_job_id(run_id: Any, version: int) -> str:
    """The id of the job that executes run ``run_id`` from ``version`` on."""
    return f"durable-run-{run_id}-{version}"


def run_workflow_job(run_id: Any, queue: str, version: int, delay: float = 0.0) -> Job:
    """Execute the sequential steps of a run that waits at ``version``, on ``queue``."""
    return Job(
        RUN_WORKFLOW, (str(run_id), queue, version), queue, run_id, delay=delay, job_id=run_job_id(run_id, version)
    )


def drain_job_id(group_id: int, queue: str, index: int) -> str:
    """The id of drain job ``index`` of a group on ``queue``."""
    return f"{DRAIN_PREFIX}{group_id}-{queue}-{index}"


def run_branches_job(group_id: int, run_id: Any, queue: str, index: int = 0, *, tag: str = "") -> Job:
    """Execute a group's pending first attempts on ``queue`` in batches (drain job ``index``).

    ``tag`` tells apart a drain job sent for branches a busy worker gave back from the block's own;
    the drain jobs that one sends keep its tag, so no two drain jobs of a block share an id (RQ
    would run one of them twice and lose the other's record).
    """
    job_id = drain_job_id(group_id, queue, index) + (f"-{tag}" if tag else "")
    args: tuple[Any, ...] = (group_id, queue, index, tag) if tag else (group_id, queue, index)
    return Job(RUN_BRANCHES, args, queue, run_id, job_id=job_id)


def run_branch_job(row_id: int, run_id: Any, job_id: str, queue: str, delay: float = 0.0) -> Job:
    """Execute the one attempt of a branch that row ``row_id`` is (a retry, or a branch sent again)."""
    return Job(RUN_BRANCH, (row_id,), queue, run_id, delay=delay, job_id=job_id)


def join_job_id(group_id: int) -> str:
    return f"durable-join-{group_id}"


def join_group_job(group_id: int, run_id: Any, queue: str) -> Job:
    """Join a decided group and continue its run on ``queue``."""
    return Job(JOIN_GROUP, (group_id, queue), queue, run_id, job_id=join_job_id(group_id))


WAKE_PREFIX = "durable-wake-"


def wake_job_id(wait_id: int) -> str:
    return f"{WAKE_PREFIX}{wait_id}"


def wake_wait_job(wait_id: int, run_id: Any, queue: str, delay: float) -> Job:
    """End wait ``wait_id`` when it is due (a sleep's end, a timeout): a job scheduled for then."""
    return Job(WAKE_WAIT, (wait_id,), queue, run_id, delay=max(delay, 0.0), job_id=wake_job_id(wait_id))


def compensate_job_id(run_id: Any, version: int) -> str:
    """The id of the job that executes the compensations of run ``run_id`` from ``version`` on."""
    return f"durable-compensate-{run_id}-{version}"


def compensate_job(run_id: Any, queue: str, version: int, delay: float = 0.0) -> Job:
    """Execute the compensations of a run that compensates at ``version``, on ``queue``."""
    return Job(
        COMPENSATE, (str(run_id), queue, version), queue, run_id, delay=delay, job_id=compensate_job_id(run_id, version)
    )


# -- connections --------------------------------------------------------------------------------

_connection_override: Any = None
_queues: dict[str, Queue] = {}


def clear_queue_cache(**kwargs: Any) -> None:
    """Forget cached queues when ``RQ_QUEUES`` changes (a ``setting_changed`` receiver; see apps.py)."""
    if kwargs.get("setting") in (None, "RQ_QUEUES", "RQ"):
        _queues.clear()


def use_connection(connection: Any) -> None:
    """Route every queue through ``connection`` (a Redis client) instead of ``RQ_QUEUES``'s.

    Used by :mod:`durable_django.testing` for the embedded, server-less queue; ``None`` restores
    the configured connections.
    """
    global _connection_override
    _connection_override = connection
    _queues.clear()


def get_queue(name: str) -> Queue:
    """The django-rq queue ``name``, cached so that one process keeps one Redis connection pool."""
    queue = _queues.get(name)
    if queue is None:
        import django_rq

        if _connection_override is not None:
            queue = django_rq.get_queue(name, connection=_connection_override)
        else:
            queue = django_rq.get_queue(name)
        _queues[name] = queue
    return queue


def current_job_id() -> str:
    """Id of the RQ job executing in this process, or ``""`` outside a worker."""
    from rq import get_current_job

    job = get_current_job()
    return job.id if job is not None else ""


# -- inline execution (child workflows) ----------------------------------------------------------


@dataclass
class InlineSink:
    """Collects the jobs of the runs in ``run_ids`` so that they execute in this process."""

    run_ids: set[Any]
    jobs: deque[Job] = field(default_factory=deque)


_inline: contextvars.ContextVar[InlineSink | None] = contextvars.ContextVar("durable_inline", default=None)


def executes_inline(run_id: Any) -> bool:
    """Whether the jobs of run ``run_id`` execute in this process (a child called by a step)."""
    sink = _inline.get()
    return sink is not None and run_id in sink.run_ids


@contextmanager
def inline(run_id: Any) -> Iterator[InlineSink]:
    """Execute the jobs of run ``run_id`` in this process instead of sending them to RQ."""
    sink = InlineSink({run_id})
    token = _inline.set(sink)
    try:
        yield sink
    finally:
        _inline.reset(token)


# -- sending ----------------------------------------------------------------------------------


def submit(*jobs: Job) -> None:
    """Send ``jobs`` once the current transaction commits (at once outside a transaction)."""
    if not jobs:
        return
    sink = _inline.get()
    if sink is not None:
        kept = [job for job in jobs if job.run_id in sink.run_ids]
        sink.jobs.extend(kept)
        jobs = tuple(job for job in jobs if job.run_id not in sink.run_ids)
        if not jobs:
            return
    transaction.on_commit(lambda: send_or_leave(jobs))


def send_or_leave(jobs: Iterable[Job]) -> None:
    """:func:`send` ``jobs``; if Redis fails, log a warning and leave them to recovery.

    Called after a commit: the caller's transaction is done and must not be reported as failed
    (nor its later ``on_commit`` hooks skipped). Every job describes rows that carry a deadline in
    ``lease_expires_at``; once it passes with no job in Redis, recovery sends the job again.
    """
    jobs = list(jobs)
    try:
        send(jobs)
    except Exception:
        logger.warning(
            "could not enqueue %d jobs after commit; recovery sends them again (runs %s, jobs %s)",
            len(jobs),
            ", ".join(sorted({str(job.run_id) for job in jobs})),
            ", ".join(job.job_id for job in jobs),
            exc_info=True,
        )


# Called with every batch of jobs just before it is enqueued (after its transaction committed).
# A seam for fault-injection tests, which stop a process exactly between commit and enqueue.
before_send: list[Callable[[list[Job]], None]] = []


def send(jobs: Iterable[Job]) -> None:
    """Enqueue ``jobs`` now: immediate ones in one pipeline, delayed ones in RQ's scheduled registry."""
    jobs = list(jobs)
    for hook in before_send:
        hook(jobs)
    immediate: dict[str, list[Job]] = {}
    delayed: list[Job] = []
    for job in jobs:
        (delayed if job.delay > 0 else immediate.setdefault(job.queue, [])).append(job)
    timeout = durable_settings.JOB_TIMEOUT
    result_ttl = durable_settings.RESULT_TTL
    failure_ttl = durable_settings.FAILURE_TTL
    for name, batch in immediate.items():
        # enqueue_many writes a whole batch in one pipeline: one round trip per queue.
        get_queue(name).enqueue_many(
            [
                Queue.prepare_data(
                    job.func,
                    args=job.args,
                    timeout=timeout,
                    result_ttl=result_ttl,
                    failure_ttl=failure_ttl,
                    job_id=job.job_id,
                    description=_describe(job),
                )
                for job in batch
            ]
        )
    for job in delayed:
        # RQ's scheduler keeps whole seconds and truncates; round up so a backoff is never shorter than
        # asked. A wait's wake-up is rounded down instead: it comes up to a second early and waits for
        # its due time itself (durable_django.resume.wake), so that it ends within a scheduler tick.
        at = time.time() + job.delay
        due = datetime.fromtimestamp(math.floor(at) if job.func == WAKE_WAIT else math.ceil(at), tz=UTC)
        get_queue(job.queue).enqueue_at(
            due,
            job.func,
            *job.args,
            job_timeout=timeout,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            job_id=job.job_id,
            description=_describe(job),
        )
    logger.debug("enqueued %d immediate and %d delayed jobs", sum(map(len, immediate.values())), len(delayed))


def withdraw(jobs: Iterable[tuple[str, str]]) -> None:
    """Delete scheduled jobs ``(queue, job id)`` that have nothing left to do (a wait resolved early).

    Only tidiness: a withdrawn job that ran anyway would find nothing to do.
    """
    for queue_name, job_id in jobs:
        queue = get_queue(queue_name)
        ScheduledJobRegistry(queue=queue).remove(job_id)
        queue.connection.delete(RQJob.key_for(job_id))


def withdraw_after_commit(jobs: list[tuple[str, str]]) -> None:
    """:func:`withdraw` once the current transaction commits; a Redis error only costs a no-op job later."""
    if not jobs:
        return

    def run() -> None:
        try:
            withdraw(jobs)
        except Exception:
            logger.warning("could not withdraw %d scheduled jobs", len(jobs), exc_info=True)

    transaction.on_commit(run)


def _describe(job: Job) -> str:
    return f"durable {job.func.rsplit('.', 1)[-1]}({', '.join(map(str, job.args))})"


# -- what Redis holds -----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def job_state(queue_name: str, job_id: str, now: datetime) -> tuple[str, datetime | None]:
    """Where job ``job_id`` is: ``queued``, ``scheduled`` (with its time), ``overdue`` or ``missing``.

    A job a worker took (``started``) more than a lease ago but whose row nobody claimed counts as
    missing: a live worker claims its row the moment it starts. So does a ``queued`` job that has
    sat in RQ's intermediate list for more than a lease (see :class:`HandOvers`): the worker that
    took it died before marking it started.
    """
    queue = get_queue(queue_name)
    status = queue.connection.hget(RQJob.key_for(job_id), "status")
    if status is None:
        return "missing", None
    status = _text(status)
    if status == "queued":
        # In the queue, or in rq's hand-over list between a worker taking it and marking it started,
        # and there for less than a lease (past that, the worker that took it died).
        if queue.get_job_position(job_id) is not None:
            return "queued", None
        hand_overs = HandOvers(queue_name, now)
        pipe = queue.connection.pipeline(transaction=False)
        pipe.lpos(queue.intermediate_queue_key, job_id)
        pipe.zscore(hand_overs.key, job_id)
        position, first_seen = pipe.execute()
        seen = {} if first_seen is None else {job_id: float(first_seen)}
        fresh = hand_overs.fresh([job_id] if position is not None else [], seen, looked_at=[job_id])
        return ("queued", None) if job_id in fresh else ("missing", None)
    if status == "started":
        # A worker took it: it claims its row at once, unless it died right after taking it.
        started = queue.connection.hget(RQJob.key_for(job_id), "started_at")
        try:
            when = datetime.fromisoformat(_text(started or "").replace("Z", "+00:00"))
        except ValueError:
            return "missing", None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        alive = when > now - timedelta(seconds=durable_settings.LEASE_SECONDS)
        return ("queued" if alive else "missing"), None
    if status == "scheduled":
        due = ScheduledJobRegistry(queue=queue).get_scheduled_time(job_id)
        grace = timedelta(seconds=durable_settings.RECOVER_INTERVAL * 2)
        return ("overdue" if due + grace < now else "scheduled"), due
    return "missing", None


def release_scheduled(queue_name: str, job_id: str) -> None:
    """Move an overdue scheduled job onto its queue (RQ's scheduler is not doing it)."""
    queue = get_queue(queue_name)
    job = queue.fetch_job(job_id)
    if job is None:
        return
    ScheduledJobRegistry(queue=queue).remove(job)
    queue.enqueue_job(job)


# RQ moves a job from its queue to the queue's intermediate list when a worker takes it, and out
# again when that worker marks it started; a worker killed in between leaves it there, still
# "queued", until RQ's own cleanup fails it many minutes later. RQ does not say since when a job is
# there, so sweeps remember it: a sorted set per queue, on that queue's Redis, maps the job ids seen
# in the intermediate list to the time they were first seen there. Sweepers add ids with ZADD NX (the
# earliest sighting stays, whichever process made it) and drop ids no longer in the list. A job seen
# there for longer than a lease is lost, whatever its hash says.
HAND_OVER_SEEN_PREFIX = "durable_django:intermediate_seen:"


def hand_over_seen_key(queue_name: str) -> str:
    """The sorted set of job ids seen in queue ``queue_name``'s intermediate list, by first sighting."""
    return f"{HAND_OVER_SEEN_PREFIX}{queue_name}"


class HandOvers:
    """Which jobs of one queue's intermediate list have been there for less than a lease, at ``now``."""

    def __init__(self, queue_name: str, now: datetime) -> None:
        self.key = hand_over_seen_key(queue_name)
        self.connection = get_queue(queue_name).connection
        self.now = now.timestamp()

    def fresh(self, listed: Iterable[str], seen: dict[str, float], looked_at: Iterable[str] | None = None) -> set[str]:
        """The ids among ``listed`` (in the list now) first seen there less than a lease ago.

        ``seen`` holds the recorded first sightings of (at least) the ids ``looked_at``, all of
        them when ``None``. Records the first sighting of listed ids not seen before and forgets
        looked-at ids no longer listed, in one round trip and only when there is something to write.
        """
        listed = set(listed)
        new = {job_id: self.now for job_id in listed if job_id not in seen}
        gone = [
            job_id for job_id in (seen if looked_at is None else looked_at) if job_id in seen and job_id not in listed
        ]
        if new or gone:
            pipe = self.connection.pipeline(transaction=False)
            if new:
                pipe.zadd(self.key, new, nx=True)
            if gone:
                pipe.zrem(self.key, *gone)
            pipe.execute()
        lease = durable_settings.LEASE_SECONDS
        return {job_id for job_id in listed if seen.get(job_id, self.now) > self.now - lease}


class QueuedJobs:
    """Which jobs wait in their queues, read from Redis a chunk at a time during one sweep.

    Only a job whose hash says ``queued`` and whose id is in its queue's list counts, or in the
    queue's intermediate list for less than a lease (see :class:`HandOvers`): anything else
    (started, scheduled, missing, handed to a worker that died) is for :func:`job_state` to look at
    one by one.
    """

    def __init__(self, now: datetime | None = None) -> None:
        self._lists: dict[str, set[str]] = {}
        self._now = now or datetime.now(UTC)

    def _ids(self, queue_name: str) -> set[str]:
        # Read once per sweep: a job that leaves the list later is being executed (its run moves
        # on); one that joins it later is looked at one by one, and found then.
        if queue_name not in self._lists:
            queue = get_queue(queue_name)
            pipe = queue.connection.pipeline(transaction=False)
            pipe.lrange(queue.key, 0, -1)
            pipe.lrange(queue.intermediate_queue_key, 0, -1)
            hand_overs = HandOvers(queue_name, self._now)
            pipe.zrange(hand_overs.key, 0, -1, withscores=True)
            waiting, handed_over, seen = pipe.execute()
            fresh = hand_overs.fresh(map(_text, handed_over), {_text(job_id): score for job_id, score in seen})
            self._lists[queue_name] = {_text(job_id) for job_id in waiting} | fresh
        return self._lists[queue_name]

    def among(self, jobs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The ``(queue, job id)`` pairs of ``jobs`` that wait in their queues."""
        by_queue: dict[str, list[str]] = {}
        for queue_name, job_id in jobs:
            by_queue.setdefault(queue_name, []).append(job_id)
        found = set()
        for queue_name, job_ids in by_queue.items():  # queues may live on different Redis servers
            pipe = get_queue(queue_name).connection.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hget(RQJob.key_for(job_id), "status")
            for job_id, status in zip(job_ids, pipe.execute(), strict=True):
                if status in (b"queued", "queued") and job_id in self._ids(queue_name):
                    found.add((queue_name, job_id))
        return found


SWEEP_LOCK_KEY = "durable_django:recover"


def take_sweep_turn(owner: str, interval: float) -> bool:
    """Whether this process may sweep now: a key taken with ``SET NX PX`` lets one process per interval."""
    connection = get_queue(durable_settings.QUEUE).connection
    return bool(connection.set(SWEEP_LOCK_KEY, owner, nx=True, px=max(int(interval * 1000), 100)))


def take_notice_turn(key: str, every: int) -> bool:
    """Whether this process may log the notice ``key`` now: at most once every ``every`` seconds, across processes."""
    connection = get_queue(durable_settings.QUEUE).connection
    return bool(connection.set(key, "1", nx=True, ex=every))


def take_turn(key: str, every: int) -> bool:
    """Whether this process may do the periodic chore ``key`` now: at most once every ``every`` seconds, across processes."""
    connection = get_queue(durable_settings.QUEUE).connection
    return bool(connection.set(key, "1", nx=True, ex=every))


# -- cancels: a run's flag, raised before the cancel commits for CANCEL_PENDING_TTL seconds (a cancel
# that rolls back costs no more), then for CANCEL_FLAG_TTL; read before every start (store.may_start)
CANCEL_FLAG_PREFIX, CANCEL_PENDING_TTL, CANCEL_FLAG_TTL = "durable_django:cancelled:", 60, 24 * 3600


def raise_cancel_flag(run_id: Any, ttl: int) -> bool:
    """Raise run ``run_id``'s cancel flag for ``ttl`` seconds; ``False`` (logged) when Redis does not answer."""
    try:
        get_queue(durable_settings.QUEUE).connection.set(f"{CANCEL_FLAG_PREFIX}{run_id}", "1", ex=ttl)
    except QUEUE_UNAVAILABLE:
        logger.warning("could not raise the cancel flag of run %s: Redis does not answer", run_id, exc_info=True)
        return False
    return True


def cancel_flag_raised(run_id: Any) -> bool | None:
    """Whether run ``run_id``'s cancel flag is up; ``None`` when Redis cannot say."""
    try:
        return bool(get_queue(durable_settings.QUEUE).connection.exists(f"{CANCEL_FLAG_PREFIX}{run_id}"))
    except QUEUE_UNAVAILABLE:
        return None


def stop_jobs(run_id: Any, group_ids: list[int], job_ids: list[str], queue_names: Iterable[str]) -> list[str]:
    """After its cancel committed, send rq's stop-job command to each job executing work of run
    ``run_id`` (its own jobs, its groups' drain and join jobs, ``job_ids``): a forking worker kills
    the work horse; an in-process one, which has none, lets the step finish. Errors are only logged."""
    prefixes = (f"durable-run-{run_id}-", *(f"{DRAIN_PREFIX}{group_id}-" for group_id in group_ids))
    ids = set(job_ids) | {join_job_id(group_id) for group_id in group_ids}
    stopped: list[str] = []
    try:
        for queue in map(get_queue, sorted(set(queue_names))):
            for job_id in StartedJobRegistry(queue=queue).get_job_ids():
                if job_id.startswith(prefixes) or job_id in ids:
                    with contextlib.suppress(InvalidJobOperation, NoSuchJobError):  # it finished meanwhile
                        send_stop_job_command(queue.connection, job_id)
                        stopped.append(job_id)
    except Exception:
        logger.warning("could not stop the jobs of cancelled run %s", run_id, exc_info=True)
    if stopped:
        logger.info("run %s cancelled: asked the workers to stop job(s) %s", run_id, ", ".join(stopped))
    return stopped
