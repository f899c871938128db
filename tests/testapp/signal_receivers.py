"""Receivers of every durable_django signal for the integration tests' worker processes.

Connected by the app config when ``DURABLE_IT_SIGNALS`` is set (the workers of a test that asks
for it): each signal a worker process sends adds one to a counter in Redis, named by the signal,
the row it is about and that row's status, and the process's pid joins a set. A test then reads
exactly how many times each signal was sent, and by which processes.
"""

from __future__ import annotations

import os
from typing import Any

from durable_django.signals import NAMES

from .workflows import redis

COUNTS = "durable_it:signals"
PIDS = "durable_it:signal_pids"


def record(signal: Any, sender: str, run: Any, **named: Any) -> None:
    about = named.get("step_result") or named.get("group") or named.get("wait") or run
    conn = redis()
    conn.hincrby(COUNTS, f"{NAMES[signal]}:{sender}:{about.pk}:{about.status}", 1)
    conn.sadd(PIDS, os.getpid())


def connect() -> None:
    for signal in NAMES:
        signal.connect(record, dispatch_uid=f"tests.testapp.signal_receivers:{NAMES[signal]}")


def counts() -> dict[str, int]:
    """What the workers' receivers counted: ``{"signal:workflow:pk:status": times}``."""
    return {name.decode(): int(times) for name, times in redis().hgetall(COUNTS).items()}


def pids() -> set[int]:
    return {int(pid) for pid in redis().smembers(PIDS)}
