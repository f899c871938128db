"""Faults the fault-injection tests inject into worker processes.

``DURABLE_IT_CRASH_BEFORE_SEND=<run|drain|branch|join|wake>`` in a worker's environment installs
:func:`crash_before_send`: the first process about to enqueue a job of that kind for a run dies
right after the database commit and before the job reaches Redis, once per run.
``DURABLE_IT_CRASH_BEFORE_CLAIM=1`` installs :func:`crash_before_claim`: the first process about to
claim a run for its run job dies after rq marked the job started and before the claim, once per run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import django_rq

from durable_django import dispatch, store

KINDS = {
    "run": dispatch.RUN_WORKFLOW,
    "drain": dispatch.RUN_BRANCHES,
    "branch": dispatch.RUN_BRANCH,
    "join": dispatch.JOIN_GROUP,
    "wake": dispatch.WAKE_WAIT,
}


def crash_key(run_id: object) -> str:
    """The Redis key that records the crash of run ``run_id``: when, in which process, which jobs were lost."""
    return f"durable_it:crashed_before_send:{run_id}"


def crash_before_send(kind: str) -> Callable[[list[dispatch.Job]], None]:
    """A ``dispatch.before_send`` hook that kills the process before it enqueues a ``kind`` job, once per run."""
    func = KINDS[kind]

    def hook(jobs: list[dispatch.Job]) -> None:
        for job in jobs:
            if job.func != func:
                continue
            record = {"at": time.time(), "pid": os.getpid(), "jobs": [lost.job_id for lost in jobs]}
            if django_rq.get_connection("default").set(crash_key(job.run_id), json.dumps(record), nx=True):
                # Like a power cut: no exception handler, no atexit, no rq bookkeeping runs.
                os._exit(1)

    return hook


def claim_crash_key(run_id: object) -> str:
    """The Redis key that records the crash before the claim of run ``run_id``: when, in which process."""
    return f"durable_it:crashed_before_claim:{run_id}"


def crash_before_claim() -> None:
    """Replace :func:`durable_django.store.claim_run` (which the engine calls through the module) by
    one that kills the process before the claim of each run's first job."""
    claim = store.claim_run

    def crashing(run_id: object, version: int) -> object:
        record = {"at": time.time(), "pid": os.getpid()}
        if django_rq.get_connection("default").set(claim_crash_key(run_id), json.dumps(record), nx=True):
            os._exit(1)
        return claim(run_id, version)

    store.claim_run = crashing  # type: ignore[assignment]
