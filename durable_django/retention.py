"""Deleting finished runs: from the admin, by age in bulk (``manage.py durable_cleanup``), and by the sweeper.

A run is deleted with its rows (step results, groups, waits, events) and with its child runs:
every foreign key to a run cascades. So a run may be deleted only when nothing still needs it or
anything below it: it has finished (its status is none of ``UNFINISHED_RUN_STATUSES``), no run
below it (its child runs, theirs, ...) is unfinished, and no run above it (its parent, the
parent's parent, ...) is unfinished, since a parent's step reads its children's results. A
deletion reads those runs ``FOR UPDATE`` in the transaction that deletes them, so an operator's
retry racing it either comes first (and the run is kept) or finds the run gone.

:func:`delete_finished_runs` deletes the runs that finished before a given age in batches, each
batch its own transaction, and skips (and counts) those tied to an unfinished run. With
``DURABLE["RETENTION"]`` set, :func:`sweep` does that from the recovery sweep, at most once every
:data:`SWEEP_EVERY` seconds across every process that sweeps, and at most :data:`SWEEP_BATCHES`
batches at a time, so that a backlog never holds recovery up for long.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import dispatch
from .conf import RETENTION_BATCH_SIZE, durable_settings, parse_age
from .exceptions import RunNotDeletable
from .models import UNFINISHED_RUN_STATUSES, RunStatus, WorkflowRun

logger = logging.getLogger("durable_django.retention")

#: Seconds between two cleanups of ``DURABLE["RETENTION"]`` by the recovery sweeper.
SWEEP_EVERY = 300
#: The most batches one such cleanup deletes; the rest waits for the next one.
SWEEP_BATCHES = 10
#: The Redis key that lets one process at a time take that turn.
SWEEP_TURN_KEY = "durable_django:retention"


def finished_statuses() -> tuple[str, ...]:
    """Every run status that is not unfinished: the statuses of runs that may be deleted."""
    return tuple(status for status in RunStatus.values if status not in UNFINISHED_RUN_STATUSES)


def checked_statuses(statuses: Iterable[str]) -> tuple[str, ...]:
    """``statuses`` if each is a finished status; ``ValueError`` naming the first that is not."""
    chosen = tuple(statuses)
    finished = ", ".join(finished_statuses())
    if not chosen:
        raise ValueError(f"name at least one status: {finished}.")
    for status in chosen:
        if status in UNFINISHED_RUN_STATUSES:
            *others, last = UNFINISHED_RUN_STATUSES
            raise ValueError(
                f"{status!r} is not a finished status: a {', '.join(others)} or {last} run is never deleted. "
                f"Give some of {finished}."
            )
        if status not in RunStatus.values:
            raise ValueError(f"{status!r} is not a run status. Give some of {finished}.")
    return chosen


# -- which runs may be deleted ------------------------------------------------------------------


@dataclass(frozen=True)
class Kin:
    """A run tied to one being deleted: the first unfinished one found above or below it."""

    run_id: uuid.UUID
    status: str
    above: bool  # a parent (or higher); else a child (or lower)
    depth: int  # 1: parent or child


@dataclass(frozen=True)
class Below:
    """A finished run below one being deleted, which goes with it."""

    run_id: uuid.UUID
    workflow: str
    status: str
    finished_at: datetime | None


@dataclass
class Family:
    """What deleting some runs would take down with them, and what stops it."""

    #: The status of each run asked about.
    status: dict[uuid.UUID, str]
    #: The runs asked about that are tied to an unfinished run, and to which.
    tied: dict[uuid.UUID, Kin] = field(default_factory=dict)
    #: The finished runs below each run asked about (that is not tied).
    below: dict[uuid.UUID, list[Below]] = field(default_factory=dict)

    def refused(self, run_id: uuid.UUID) -> bool:
        return self.status[run_id] in UNFINISHED_RUN_STATUSES or run_id in self.tied

    def reason(self, run_id: uuid.UUID) -> str:
        """Why ``run_id`` may not be deleted, and what to do about it ("" when it may)."""
        status = self.status[run_id]
        if status in UNFINISHED_RUN_STATUSES:
            return f"it is {status}. Cancel it first; a run can be deleted once it has finished."
        kin = self.tied.get(run_id)
        if kin is None:
            return ""
        if kin.above:
            who = "its parent run" if kin.depth == 1 else "run"
            where = "" if kin.depth == 1 else " above it (its parent's parent, or higher)"
            return (
                f"{who} {kin.run_id}{where} is {kin.status} and may still need it. "
                "Cancel that run first, or wait until it has finished."
            )
        who = "its child run" if kin.depth == 1 else "run"
        where = "" if kin.depth == 1 else " below it (a child run of one of its child runs)"
        return (
            f"{who} {kin.run_id}{where} is {kin.status}, and deleting a run deletes its child runs. "
            "Cancel that run first."
        )


def _read(queryset: QuerySet[WorkflowRun], lock: bool) -> QuerySet[WorkflowRun]:
    return queryset.select_for_update() if lock else queryset


def family(runs: Collection[tuple[uuid.UUID, uuid.UUID | None, str]], *, lock: bool = False) -> Family:
    """The runs above and below ``runs`` (``(id, parent id, status)`` each), read ``FOR UPDATE`` with ``lock``.

    One query per generation below them and per generation above them: usually one or two.
    """
    found = Family({run_id: status for run_id, _, status in runs})
    parents = {run_id: parent_id for run_id, parent_id, _ in runs}
    # Below: every descendant, a generation per query.
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    rows: dict[uuid.UUID, Below] = {}
    seen = set(found.status)
    frontier = set(found.status)
    while frontier:
        generation = _read(WorkflowRun.objects.filter(parent_id__in=frontier), lock).values_list(
            "id", "parent_id", "workflow", "status", "finished_at"
        )
        frontier = set()
        for run_id, parent_id, workflow, status, finished_at in generation:
            children.setdefault(parent_id, []).append(run_id)
            rows[run_id] = Below(run_id, workflow, status, finished_at)
            if run_id not in seen:
                seen.add(run_id)
                frontier.add(run_id)
    for run_id in found.status:
        below: list[Below] = []
        stack = [(child, 1) for child in children.get(run_id, [])]
        while stack and run_id not in found.tied:
            child, depth = stack.pop()
            row = rows[child]
            if row.status in UNFINISHED_RUN_STATUSES:
                found.tied[run_id] = Kin(child, row.status, above=False, depth=depth)
            else:
                below.append(row)
                stack.extend((grandchild, depth + 1) for grandchild in children.get(child, []))
        found.below[run_id] = below
    # Above: every ancestor, a generation per query.
    ancestors: dict[uuid.UUID, tuple[uuid.UUID | None, str]] = {}
    wanted = {parent for parent in parents.values() if parent is not None}
    while wanted:
        parents_read = _read(WorkflowRun.objects.filter(pk__in=wanted), lock).values_list("id", "parent_id", "status")
        ancestors.update((run_id, (parent_id, status)) for run_id, parent_id, status in parents_read)
        wanted = {parent for parent, _ in ancestors.values() if parent is not None and parent not in ancestors}
    for run_id, first in parents.items():
        above, depth = first, 1
        while above is not None and above in ancestors and run_id not in found.tied:
            higher, status = ancestors[above]
            if status in UNFINISHED_RUN_STATUSES:
                found.tied[run_id] = Kin(above, status, above=True, depth=depth)
            above, depth = higher, depth + 1
    return found


def deletion_refusals(run_ids: Collection[uuid.UUID], *, lock: bool = False) -> dict[uuid.UUID, str]:
    """Why each of these runs may not be deleted now, by run id; ``{}`` when each may (see the module docstring)."""
    runs = list(_read(WorkflowRun.objects.filter(pk__in=run_ids), lock).values_list("id", "parent_id", "status"))
    found = family(runs, lock=lock)
    return {run_id: found.reason(run_id) for run_id in found.status if found.refused(run_id)}


def delete_runs(run_ids: Collection[uuid.UUID]) -> int:
    """Delete these runs, their rows and their child runs, all in one transaction, or none of them.

    Returns how many runs were deleted (child runs included). Raises :class:`RunNotDeletable`,
    which says why for each, when any of them may not be deleted.
    """
    with transaction.atomic():
        refused = deletion_refusals(run_ids, lock=True)
        if refused:
            raise RunNotDeletable(refused)
        _, counts = WorkflowRun.objects.filter(pk__in=run_ids).delete()
    return counts.get(WorkflowRun._meta.label, 0)


# -- by age, in batches ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleanup:
    """What :func:`delete_finished_runs` did (or, for a dry run, would do)."""

    #: Runs deleted, child runs that went with their parent included.
    deleted: int
    #: Finished runs it left because a run above or below them has not finished.
    skipped: int
    #: Transactions that deleted runs (or, for a dry run, batches read).
    batches: int
    dry_run: bool
    cutoff: datetime


def delete_finished_runs(
    older_than: timedelta | str | int,
    statuses: Iterable[str] | None = None,
    workflow: str | None = None,
    batch_size: int = RETENTION_BATCH_SIZE,
    dry_run: bool = False,
    *,
    now: datetime | None = None,
    max_batches: int | None = None,
) -> Cleanup:
    """Delete the runs that finished more than ``older_than`` ago, with their rows and child runs.

    ``statuses``: the finished statuses to delete (default: every finished status; an unfinished
    one is a ``ValueError``); ``workflow``: only runs of that workflow. The runs are deleted
    ``batch_size`` at a time, each batch in its own transaction, in the order of their ids; a run
    tied to an unfinished run (see the module docstring) is skipped and counted. ``dry_run``
    deletes nothing and counts what would be deleted. ``max_batches`` stops after that many batches.
    """
    age = parse_age(older_than)
    chosen = checked_statuses(finished_statuses() if statuses is None else statuses)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"the batch size must be a positive number of runs, not {batch_size!r}.")
    cutoff = (now or timezone.now()) - age
    matching = WorkflowRun.objects.filter(status__in=chosen, finished_at__lt=cutoff)
    if workflow is not None:
        matching = matching.filter(workflow=workflow)

    def matches(row: Below) -> bool:
        """Whether a run below another one is one of the runs asked for (and so counted as such)."""
        return (
            row.status in chosen
            and row.finished_at is not None
            and row.finished_at < cutoff
            and (workflow is None or row.workflow == workflow)
        )

    deleted = skipped = batches = 0
    after: uuid.UUID | None = None
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            page = matching if after is None else matching.filter(pk__gt=after)
            runs = list(_read(page.order_by("pk"), not dry_run).values_list("id", "parent_id", "status")[:batch_size])
            if not runs:
                break
            after = runs[-1][0]
            found = family(runs, lock=not dry_run)
            free = [run_id for run_id, _, _ in runs if not found.refused(run_id)]
            skipped += len(runs) - len(free)
            if dry_run:
                # A run below that is one of those asked for is counted in its own batch.
                deleted += len(free) + sum(not matches(row) for run_id in free for row in found.below[run_id])
            elif free:
                _, counts = WorkflowRun.objects.filter(pk__in=free).delete()
                deleted += counts.get(WorkflowRun._meta.label, 0)
        batches += 1
        if len(runs) < batch_size:
            break
    return Cleanup(deleted, skipped, batches, dry_run, cutoff)


def sweep(now: datetime | None = None) -> Cleanup | None:
    """The cleanup ``DURABLE["RETENTION"]`` asks for, from the recovery sweep; ``None`` when it is
    off or not this process's turn. A failure is logged, never raised: it must not stop recovery.
    """
    policy = durable_settings.RETENTION
    if policy is None:
        return None
    try:
        if not dispatch.take_turn(SWEEP_TURN_KEY, SWEEP_EVERY):
            return None
        done = delete_finished_runs(
            policy.older_than, policy.statuses, batch_size=policy.batch_size, now=now, max_batches=SWEEP_BATCHES
        )
    except Exception:
        logger.exception("retention: deleting finished runs failed; the next turn, in %d s, tries again", SWEEP_EVERY)
        return None
    if done.deleted or done.skipped:
        logger.info(
            "retention: deleted %d run(s) finished before %s; skipped %d tied to an unfinished run",
            done.deleted,
            done.cutoff.isoformat(),
            done.skipped,
        )
    return done
