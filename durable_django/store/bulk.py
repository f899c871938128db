"""Writes of many runs at once: a chunk of failed runs locked, and those reopened in one statement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..models import RunStatus, WorkflowRun

#: The fields :func:`reopen_runs` writes.
REOPENED_FIELDS = (
    "status",
    "version",
    "error",
    "error_history",
    "finished_at",
    "current_attempt",
    "lease_owner",
    "lease_expires_at",
    "deadline_at",
)


def lock_failed(ids: Iterable[Any]) -> list[WorkflowRun]:
    """The failed runs among ``ids`` that can be retried (no compensation ran), locked in the caller's
    transaction, in id order (their contexts are not read); those another transaction holds locked are skipped: whoever holds
    them decides what becomes of them. One statement."""
    return list(
        WorkflowRun.objects.select_for_update(skip_locked=True)
        .filter(pk__in=list(ids), status=RunStatus.FAILED, compensation="")
        .only("workflow", "status", "current_step", "compensation", "parent", "detached", *REOPENED_FIELDS)
        .order_by("pk")
    )


def reopen_runs(runs: list[WorkflowRun]) -> int:
    """Write :data:`REOPENED_FIELDS` of ``runs`` (failed runs locked by :func:`lock_failed`, their
    new values set, the version bumped) back, on the condition that they are still failed: one
    ``UPDATE`` with a ``CASE`` per field for the whole chunk. How many rows it moved."""
    if not runs:
        return 0
    return WorkflowRun.objects.filter(status=RunStatus.FAILED).bulk_update(runs, REOPENED_FIELDS)
