"""Leases on executing work: who holds one, until when, and the heartbeat that renews them.

A worker that executes a sequential step holds a lease on the run row; one that executes a branch
holds it on the branch's row: ``lease_owner`` names the process, ``lease_expires_at`` says until
when it counts. While a step runs, a heartbeat thread of the process renews every lease it holds
each third of ``DURABLE["LEASE_SECONDS"]``, so a short step never costs an extra write. A lease
that runs out means its worker is gone; :mod:`durable_django.recovery` takes the work over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Model
from django.utils import timezone

from .conf import durable_settings

logger = logging.getLogger("durable_django.leases")

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


def held_fields(now: datetime | None = None) -> dict[str, Any]:
    """Fields of a row whose work this process executes from ``now`` on."""
    return {"lease_owner": owner(), "lease_expires_at": expiry(now)}


def released_fields(deadline: datetime | None = None) -> dict[str, Any]:
    """Fields of a row nobody executes; ``deadline``: when a worker must have picked its next job up."""
    return {"lease_owner": "", "lease_expires_at": deadline}


# -- heartbeat --------------------------------------------------------------------------------------


class Heartbeat:
    """Renews the leases this process holds while their steps run, from a daemon thread."""

    def __init__(self) -> None:
        self._held: dict[tuple[type[Model], Any], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, model: type[Model], pk: Any) -> Iterator[None]:
        """Keep the lease of ``model`` row ``pk`` alive for the duration of the block."""
        key = (model, pk)
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(key, 0) <= 1:
                    self._held.pop(key, None)
                else:
                    self._held[key] -= 1

    @contextmanager
    def hold_many(self, model: type[Model], pks: list[Any]) -> Iterator[None]:
        """Keep the leases of several rows alive for the duration of the block (a batch of branches)."""
        with ExitStack() as stack:
            for pk in pks:
                stack.enter_context(self.hold(model, pk))
            yield

    def _ensure_thread(self) -> None:
        # After a fork (rq's work horse) the parent's thread does not exist in the child.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="durable-lease-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                self._wake.wait(max(durable_settings.LEASE_SECONDS / 3, 0.05))
                with self._lock:
                    held = list(self._held)
                if held:
                    self.renew(held)
                    # Renewals are rare (only steps longer than a third of a lease): hold no idle connection.
                    connections.close_all()
        finally:
            connections.close_all()

    def renew(self, held: list[tuple[type[Model], Any]]) -> None:
        me = owner()
        until = expiry()
        by_model: dict[type[Model], list[Any]] = {}
        for model, pk in held:
            by_model.setdefault(model, []).append(pk)
        for model, pks in by_model.items():
            try:
                renewed = model._default_manager.filter(pk__in=pks, lease_owner=me).update(lease_expires_at=until)
            except Exception:
                # A dropped connection must not kill the heartbeat: reconnect on the next beat.
                logger.exception("could not renew %d lease(s) of %s", len(pks), model.__name__)
                connections.close_all()
                continue
            if renewed < len(pks):
                # Rows released on purpose (a finished join) are fine; another owner means a takeover.
                taken = model._default_manager.filter(pk__in=pks).exclude(lease_owner__in=("", me)).count()
                if taken:
                    logger.warning(
                        "%d of %d lease(s) of %s were taken over while their step ran", taken, len(pks), model.__name__
                    )


heartbeat = Heartbeat()
