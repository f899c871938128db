"""The worker to run durable_django's jobs: rq's in-process worker, made safe for a long life.

rq's default ``Worker`` forks a child process for every job, which then opens its own database
connection: isolation a workflow engine pays for on every step of every run. :class:`DurableWorker`
executes jobs in its own process, like rq's ``SimpleWorker``, and adds what a long-lived process
needs:

- database connections kept from one job to the next and checked after every job: one that broke
  (or a job left in a non-default autocommit state) is discarded, so the next job reconnects;
  ``CONN_MAX_AGE``, when positive, still bounds a connection's life (``0``, Django's default, means
  "per request", and a worker has no requests: it is not taken to mean "per job");
- step time limits and RQ's job timeout, both enforced with ``SIGALRM`` in the main thread;
- memory kept bounded: after ``DURABLE["WORKER_MAX_JOBS"]`` jobs or once its resident memory
  exceeds ``DURABLE["WORKER_MAX_MEMORY"]`` MiB, the worker finishes its job, leaves RQ's registry
  and starts afresh in the same process (``exec`` of its own command line), so a supervisor sees
  the same pid and nothing needs restarting;
- rq's warm shutdown on SIGTERM or SIGINT (the job in progress finishes), cold on a second signal;
- a Redis outage waited out rather than fatal: wherever rq's work loop meets a lost connection
  (taking a job, its heartbeat, recording a job's start or end, maintenance, the pubsub thread),
  the worker tries again, pausing ``RECONNECT_FIRST`` seconds at first and twice as long after each
  failed attempt up to ``RECONNECT_CAP``, for as long as it takes, with one WARNING when the outage
  starts and one INFO when it ends. Once Redis
  answers, it registers itself again if Redis lost its data, and starts rq's scheduler again if its
  process stopped; :class:`DurableScheduler`, the scheduler it runs, outlives outages the same way.
  A job whose end could not be recorded in Redis is not executed again: its state changes are in
  the database, and recovery sends whatever job it could not send.

Run it with ``manage.py durable_worker`` (which also starts rq's scheduler and the recovery
sweeper), or as ``manage.py rqworker --worker-class durable_django.worker.DurableWorker``.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

from django.db import connections
from redis import Redis
from redis.client import Pipeline, PubSub, PubSubWorkerThread
from rq import SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.logutils import blue, green
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus

from .apps import is_rq_worker_process
from .conf import durable_settings
from .dispatch import QUEUE_UNAVAILABLE

logger = logging.getLogger("durable_django.worker")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Seconds between two of the worker's own heartbeats in Redis (rq's worker key lives for minutes).
HEARTBEAT_EVERY = 1.0

# Seconds before the first attempt to reach Redis again, doubled after each failed one up to the cap.
RECONNECT_FIRST = 0.5
RECONNECT_CAP = 5.0


def reconnect_delays() -> Iterator[float]:
    """The pauses between attempts to reach Redis again: 0.5, 1, 2, 4, 5, 5, ... seconds, without end."""
    delay = RECONNECT_FIRST
    while True:
        yield delay
        delay = min(delay * 2, RECONNECT_CAP)


def wait_until_answering(connection: Redis, what: str) -> None:
    """Return once ``connection``'s Redis answers a PING, trying with :func:`reconnect_delays`.

    A worker started while Redis is down (at boot, or starting afresh during an outage) waits for
    it rather than exiting.
    """
    lost_at: float | None = None
    for delay in reconnect_delays():
        try:
            connection.ping()
        except QUEUE_UNAVAILABLE as error:
            if lost_at is None:
                lost_at = time.monotonic()
                logger.warning(
                    "%s: Redis does not answer (%s: %s); trying again until it does", what, type(error).__name__, error
                )
            time.sleep(delay)
            continue
        if lost_at is not None:
            logger.info("%s: Redis answers after %.1f s", what, time.monotonic() - lost_at)
        return


def resident_mib() -> float:
    """This process's resident memory in MiB (its peak where the current figure cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def tidy_connections() -> None:
    """Discard database connections a job left unusable; keep the healthy ones for the next job."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        if connection.settings_dict.get("CONN_MAX_AGE"):
            # A positive maximum age (or None, for ever) is the user's: Django's own rule applies.
            connection.close_if_unusable_or_obsolete()
            continue
        if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
            connection.close()
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


class DurableWorker(SimpleWorker):
    """rq's in-process worker with healthy connections, bounded memory, recycling and Redis outages
    waited out (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_done = 0
        self.recycle_requested = ""
        self._beaten_at = -HEARTBEAT_EVERY
        # When the current Redis outage started (monotonic), None while Redis answers.
        self._redis_lost_at: float | None = None
        # Only a worker started by a command re-executes it; one built by code (tests, burst
        # runs) just stops.
        self.exec_on_recycle = is_rq_worker_process()

    # -- Redis outages ----------------------------------------------------------------------------

    def wait_for_redis(self, error: Exception, doing: str) -> None:
        """Wait until Redis answers again, then put back what it lost; returns early on a stop request.

        Called wherever a command failed with one of :data:`~durable_django.dispatch.QUEUE_UNAVAILABLE`
        (a server still loading its data raises ``BusyLoadingError``, one of them); ``doing`` says
        what the worker was doing. Tries for as long as it takes, with :func:`reconnect_delays` between
        attempts; one WARNING when the outage starts, one INFO when it ends.
        """
        if self._redis_lost_at is None:
            self._redis_lost_at = time.monotonic()
            logger.warning(
                "worker %s lost Redis while %s (%s: %s); reconnecting until it answers, pausing %g s between "
                "attempts at first, then up to %g s",
                self.name,
                doing,
                type(error).__name__,
                error,
                RECONNECT_FIRST,
                RECONNECT_CAP,
            )
        for delay in reconnect_delays():
            if self._stop_requested:
                # Leaving anyway (a warm shutdown during the outage): teardown copes with Redis down.
                return
            time.sleep(delay)
            try:
                self.connection.ping()
                lost = not self.connection.exists(self.key)
                if lost:
                    self.register_again()
                else:
                    super().set_state(self.get_state())
                self.revive_scheduler()
            except QUEUE_UNAVAILABLE:
                continue
            logger.info(
                "worker %s: Redis answers again after %.1f s%s",
                self.name,
                time.monotonic() - self._redis_lost_at,
                "; it had lost this worker's registration (restarted without its data): registered again"
                if lost
                else "",
            )
            self._redis_lost_at = None
            return

    def register_again(self) -> None:
        """Write this worker's registration in rq's registry again, and its state (Redis lost them)."""
        # What is left under the worker's key is a remnant (a heartbeat's field), which rq refuses to
        # register over.
        self.connection.delete(self.key)
        self.register_birth()
        super().set_state(self.get_state())

    def revive_scheduler(self) -> None:
        """Start rq's scheduler again if this worker ran it and its process stopped.

        :class:`DurableScheduler` survives Redis outages; this covers a scheduler process killed
        for another reason. If another worker's scheduler took the queues meanwhile, rq's
        maintenance tries again later, as for a worker that started without the scheduler's locks.
        """
        scheduler = self.scheduler
        process = scheduler._process if scheduler is not None else None  # rq keeps it there, as its own worker reads it
        if scheduler is None or process is None or process.is_alive():
            return
        logger.warning(
            "worker %s: RQ's scheduler process %s had stopped (exit code %s); starting it again",
            self.name,
            process.pid,
            process.exitcode,
        )
        scheduler._process = None
        scheduler.acquire_locks(auto_start=True)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """rq's worker heartbeat, in one round trip, and at most once a second between jobs.

        rq sends it several times around every job, three commands each; its key lives for minutes,
        so one renewal a second keeps it exactly as alive at a fraction of the cost. A worker key
        found missing means Redis lost its data without this process seeing an error (a restart
        shorter than redis-py's own retries): the worker registers again.
        """
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        beat_at = time.monotonic()
        if timeout is None and beat_at - self._beaten_at < HEARTBEAT_EVERY:
            return
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.exists(self.key)
                super().heartbeat(timeout, pipe)
                registered = pipe.execute()[0]
            if not registered:
                logger.warning(
                    "worker %s was missing from Redis (restarted without its data?); registered it again", self.name
                )
                self.register_again()
        except QUEUE_UNAVAILABLE as error:
            self.wait_for_redis(error, "sending its heartbeat")
            return
        self._beaten_at = beat_at

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        try:
            super().set_state(state)
        except QUEUE_UNAVAILABLE as error:
            # The state is kept in the worker (rq sets it first): wait_for_redis writes it once Redis is back.
            self.wait_for_redis(error, f"setting its state to {state!r}")

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except QUEUE_UNAVAILABLE as error:
            self.wait_for_redis(error, "checking whether workers are suspended")

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except QUEUE_UNAVAILABLE as error:
            # last_cleaned_at is unchanged: the maintenance runs again at the next turn of the loop.
            self.wait_for_redis(error, "cleaning rq's registries")

    def set_shutdown_requested_date(self) -> None:
        # Called from the signal handler of a warm shutdown: with Redis down it would raise into the
        # job being executed. The date is only shown by rq's monitoring.
        try:
            super().set_shutdown_requested_date()
        except QUEUE_UNAVAILABLE:
            logger.debug("worker %s could not record its shutdown request: Redis does not answer", self.name)

    def _pubsub_exception_handler(self, exc: Exception, pubsub: PubSub, pubsub_thread: PubSubWorkerThread) -> None:
        # rq's logs an error every two seconds of an outage. The main loop reports the outage once;
        # redis-py subscribes again once it reconnects.
        if isinstance(exc, QUEUE_UNAVAILABLE):
            time.sleep(1.0)
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for the next job: rq's loop, with a lost Redis waited out by :meth:`wait_for_redis`.

        rq's own retries a lost connection with an error logged at every attempt and up to a minute
        between them; this one logs the outage once and takes jobs again within seconds of Redis
        answering.
        """
        qnames = ",".join(self.queue_names())
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + qnames)
        idle_since = time.monotonic()
        while True:
            wait = timeout
            if timeout is not None and max_idle_time is not None:
                left = math.ceil(max_idle_time - (time.monotonic() - idle_since))
                if left <= 0:
                    self.heartbeat()
                    return None
                wait = min(timeout, left)
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self.revive_scheduler()
                version = self.get_redis_server_version()
                result = self.queue_class.dequeue_any(
                    self._ordered_queues,
                    wait,
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
            except DequeueTimeout:
                continue
            except QUEUE_UNAVAILABLE as error:
                self.wait_for_redis(error, "waiting for a job")
                if self._stop_requested:
                    raise StopRequested() from error
                continue
            break
        if result is not None:
            job, queue = result
            job.redis_server_version = version
            self.reorder_queues(reference_queue=queue)
            description = job.description if self.log_job_description else job.id
            self.log.info("Worker %s: %s: %s (%s)", self.name, green(queue.name), blue(description), job.id)
        self.heartbeat()
        return result

    def execute_job(self, job: Job, queue: Queue) -> None:
        tidy_connections()
        try:
            super().execute_job(job, queue)
        except QUEUE_UNAVAILABLE as error:
            # rq could not record the job's start or its end. What the job did is in the database (each
            # state change commits on its own), and recovery sends again a job that never started, or
            # one that this job could not send: nothing is lost, and nothing executes twice.
            self.executions.clear()
            self.wait_for_redis(error, f"recording the execution of job {job.id}")
        finally:
            tidy_connections()
            self.jobs_done += 1
            self.check_limits()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        except QUEUE_UNAVAILABLE as error:
            # Only the job's last heartbeat failed: once Redis answers, its outcome is recorded as
            # usual (rq would record a job that succeeded as failed, with this error).
            self.wait_for_redis(error, f"recording the end of job {job.id}")

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        try:
            super().handle_job_success(job, queue, started_job_registry, execution)
        except QUEUE_UNAVAILABLE as error:
            # The job succeeded, only rq's record of it is missing: not a failure to report.
            self.wait_for_redis(error, f"recording that job {job.id} succeeded")

    def teardown(self) -> None:
        try:
            super().teardown()
        except QUEUE_UNAVAILABLE as error:
            logger.warning(
                "worker %s stops without leaving rq's registry: Redis does not answer (%s); its entry expires by itself",
                self.name,
                error,
            )
            if self.pubsub_thread is not None:
                self.pubsub_thread.stop()

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # rq's, with the scheduler that outlives Redis outages.
        self.scheduler = DurableScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            return
        if not burst:
            self.scheduler.start()
            return
        try:
            self.scheduler.register_birth()
            self.scheduler.enqueue_scheduled_jobs()
        finally:
            self.scheduler.release_locks()
            self.scheduler.register_death()

    # -- jobs and limits --------------------------------------------------------------------------

    def check_limits(self) -> None:
        """Ask for a recycle once the job or memory limit is reached (after the job that reached it)."""
        max_jobs = durable_settings.WORKER_MAX_JOBS
        max_memory = durable_settings.WORKER_MAX_MEMORY
        if max_jobs and self.jobs_done >= max_jobs:
            self.recycle_requested = f"it executed {self.jobs_done} jobs (DURABLE['WORKER_MAX_JOBS'] is {max_jobs})"
        elif max_memory and (used := resident_mib()) > max_memory:
            self.recycle_requested = (
                f"it uses {used:.0f} MiB of memory (DURABLE['WORKER_MAX_MEMORY'] is {max_memory} MiB)"
            )
        if self.recycle_requested:
            # Checked at the top of rq's work loop: no further job is taken.
            self._stop_requested = True

    def work(self, *args: Any, **kwargs: Any) -> bool:
        worked = super().work(*args, **kwargs)
        if self.recycle_requested:
            logger.info("worker %s starts afresh: %s", self.name, self.recycle_requested)
            if self.exec_on_recycle:
                self.recycle()
        return worked

    def recycle(self) -> None:
        """Replace this process by a fresh run of the same command (same pid, fresh memory)."""
        connections.close_all()
        logging.shutdown()
        # A short pause lets rq's registry and the scheduler lock settle before the new process registers.
        time.sleep(0.1)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


class DurableScheduler(RQScheduler):
    """RQ's scheduler (the process that moves due retries and wake-ups onto their queues), made to
    outlive Redis outages: rq's process exits at the first lost connection, and its worker starts
    it again only at its next maintenance, ten minutes later.

    Its loop waits a lost Redis out with :func:`reconnect_delays` (one WARNING, one INFO), and
    writes its registration again whenever Redis has lost it; its locks, which it renews every
    second, it takes again by itself (rq's heartbeat re-acquires an expired lock).
    """

    def work(self) -> None:
        self._install_signal_handlers()
        lost_at: float | None = None
        delays = reconnect_delays()
        while not self._stop_requested:
            try:
                if self.should_reacquire_locks:
                    self.acquire_locks()
                self.heartbeat()
                if not self.connection.hexists(self.key, "pid"):
                    # Not yet written, or lost with Redis's data (the heartbeat wrote only its own field).
                    self.register_birth()
                self.enqueue_scheduled_jobs()
            except QUEUE_UNAVAILABLE as error:
                self._status = self.Status.STARTED
                if lost_at is None:
                    lost_at = time.monotonic()
                    logger.warning(
                        "RQ's scheduler (process %s) lost Redis (%s: %s); reconnecting until it answers",
                        os.getpid(),
                        type(error).__name__,
                        error,
                    )
                self._pause(next(delays))
                continue
            if lost_at is not None:
                logger.info(
                    "RQ's scheduler (process %s): Redis answers again after %.1f s",
                    os.getpid(),
                    time.monotonic() - lost_at,
                )
                lost_at = None
                delays = reconnect_delays()
            self._pause(self.interval)
        try:
            self.stop()
        except QUEUE_UNAVAILABLE as error:
            logger.warning(
                "RQ's scheduler (process %s) stops without releasing its locks: Redis does not answer (%s); "
                "they expire within %d s",
                os.getpid(),
                error,
                self.interval + 60,
            )

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a stop is requested meanwhile."""
        until = time.monotonic() + seconds
        while not self._stop_requested and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
