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
- rq's warm shutdown on SIGTERM or SIGINT (the job in progress finishes), cold on a second signal.

Run it with ``manage.py durable_worker`` (which also starts rq's scheduler and the recovery
sweeper), or as ``manage.py rqworker --worker-class durable_django.worker.DurableWorker``.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from typing import Any

from django.db import connections
from redis.client import Pipeline
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue

from .apps import is_rq_worker_process
from .conf import durable_settings

logger = logging.getLogger("durable_django.worker")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Seconds between two of the worker's own heartbeats in Redis (rq's worker key lives for minutes).
HEARTBEAT_EVERY = 1.0


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
    """rq's in-process worker with healthy connections, bounded memory and recycling (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_done = 0
        self.recycle_requested = ""
        self._beaten_at = -HEARTBEAT_EVERY
        # Only a worker started by a command re-executes it; one built by code (tests, burst
        # runs) just stops.
        self.exec_on_recycle = is_rq_worker_process()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """rq's worker heartbeat, in one round trip, and at most once a second between jobs.

        rq sends it several times around every job, three commands each; its key lives for minutes,
        so one renewal a second keeps it exactly as alive at a fraction of the cost.
        """
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        beat_at = time.monotonic()
        if timeout is None and beat_at - self._beaten_at < HEARTBEAT_EVERY:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()
        self._beaten_at = beat_at

    def execute_job(self, job: Job, queue: Queue) -> None:
        tidy_connections()
        try:
            super().execute_job(job, queue)
        finally:
            tidy_connections()
            self.jobs_done += 1
            self.check_limits()

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
