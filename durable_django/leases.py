"""Leases on executing work: who holds one, until when, the heartbeat that renews them, and the
watchdog that gives claimed work back when a batch overruns its budget.

A worker that executes a sequential step holds a lease on the run row; one that executes a branch
holds it on the branch's row: ``lease_owner`` names the process, ``lease_expires_at`` says until
when it counts. While a step runs, a heartbeat thread of the process renews every lease it holds
each third of ``DURABLE["LEASE_SECONDS"]``, so a short step never costs an extra write. A lease
that runs out means its worker is gone; :mod:`durable_django.recovery` takes the work over.
The renewal's statement is :func:`durable_django.store.renew_leases`, like every other write.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Model
from django.utils import timezone

from .conf import durable_settings

logger = logging.getLogger("durable_django")

_identity: tuple[int, str] | None = None


def owner() -> str:
    """This process's name in ``lease_owner``: host, pid and a token that differs after a fork."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()[:60]}:{pid}:{uuid.uuid4().hex[:8]}")
    return _identity[1]


def expiry(now: datetime | None = None) -> datetime:
    """When a lease taken (or a deadline set) ``now`` runs out."""
    return (now or timezone.now()) + timedelta(seconds=durable_settings.LEASE_SECONDS)


def retry_deadline(delay: float) -> datetime:
    """By when a worker must have picked up a job sent now with ``delay`` seconds (RQ keeps whole seconds)."""
    return expiry(timezone.now() + timedelta(seconds=math.ceil(delay)))


def held_fields(now: datetime | None = None) -> dict[str, Any]:
    """Fields of a row whose work this process executes from ``now`` on."""
    return {"lease_owner": owner(), "lease_expires_at": expiry(now)}


def released_fields(deadline: datetime | None = None) -> dict[str, Any]:
    """Fields of a row nobody executes; ``deadline``: when a worker must have picked its next job up."""
    return {"lease_owner": "", "lease_expires_at": deadline}


# -- heartbeat --------------------------------------------------------------------------------------

# A lease is renewed this many times per LEASE_SECONDS while its step runs: a beat can be late by
# two thirds of a lease (a loaded machine, a slow database) before the lease runs out.
RENEWALS_PER_LEASE = 3


def renew_every() -> float:
    """Seconds between two renewals of the leases a process holds (only while a step runs that long)."""
    return max(durable_settings.LEASE_SECONDS / RENEWALS_PER_LEASE, 0.05)


# Renews the leases of ``{model: [pk, ...]}`` held by this process (see store.renew_leases).
Renew = Callable[[dict[type[Model], list[Any]]], None]


class Heartbeat:
    """Renews the leases this process holds while their steps run, from a daemon thread."""

    def __init__(self, renew: Renew) -> None:
        self._renew = renew
        self._held: dict[tuple[type[Model], Any], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, model: type[Model], pk: Any) -> Iterator[None]:
        """Keep the lease of ``model`` row ``pk`` alive for the duration of the block."""
        with self.hold_many(model, [pk]):
            yield

    @contextmanager
    def hold_many(self, model: type[Model], pks: list[Any]) -> Iterator[Callable[[list[Any]], None]]:
        """Keep the leases of several rows alive for the duration of the block (a batch of branches).

        Yields a function that lets go of some of them before the block ends (their results are
        recorded, or they were given back), so that renewals touch only the rows still executing.
        """
        held = set(pks)
        with self._lock:
            for pk in held:
                self._held[(model, pk)] = self._held.get((model, pk), 0) + 1
            self._ensure_thread()

        def let_go(done: list[Any]) -> None:
            with self._lock:
                for pk in done:
                    if pk in held:
                        held.discard(pk)
                        self._release((model, pk))

        try:
            yield let_go
        finally:
            let_go(list(held))

    def _release(self, key: tuple[type[Model], Any]) -> None:
        if self._held.get(key, 0) <= 1:
            self._held.pop(key, None)
        else:
            self._held[key] -= 1

    def _ensure_thread(self) -> None:
        # After a fork (rq's work horse) the parent's thread does not exist in the child.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="durable-lease-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                self._wake.wait(renew_every())
                with self._lock:
                    held = list(self._held)
                if held:
                    by_model: dict[type[Model], list[Any]] = {}
                    for model, pk in held:
                        by_model.setdefault(model, []).append(pk)
                    self._renew(by_model)
                    # Renewals are rare (only steps longer than a third of a lease): hold no idle connection.
                    connections.close_all()
        finally:
            connections.close_all()


# -- overrun watchdog -----------------------------------------------------------------------------


class Watchdog:
    """Calls a function once its deadline has passed, unless disarmed first, from one daemon thread.

    A job that executes a batch of branches one after another arms it with the batch's time budget:
    when a branch overruns, the branches not started yet are given back to other workers instead of
    waiting behind it. Arming and disarming cost a lock and a notify; the thread sleeps meanwhile.
    """

    def __init__(self) -> None:
        self._alarms: dict[int, tuple[float, Callable[[], None]]] = {}
        self._next = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def arm(self, seconds: float, fn: Callable[[], None]) -> int:
        """Call ``fn()`` in ``seconds`` unless :meth:`disarm` is called with the returned token first."""
        with self._cond:
            self._next += 1
            self._alarms[self._next] = (time.monotonic() + seconds, fn)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="durable-overrun", daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._next

    def disarm(self, token: int) -> None:
        with self._cond:
            self._alarms.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._alarms:
                        self._cond.wait()
                        continue
                    token, (due, fn) = min(self._alarms.items(), key=lambda item: item[1][0])
                    wait = due - time.monotonic()
                    if wait <= 0:
                        del self._alarms[token]
                        break
                    self._cond.wait(wait)
            try:
                fn()
            except Exception:
                logger.exception("overrun handler failed")
            finally:
                # Overruns are rare (only branches slower than a batch's budget): hold no idle connection.
                connections.close_all()


watchdog = Watchdog()
