"""The top of a run's page: its status and error, the step running right now, retries, the graph.

Pure functions of the run and its rows (no query of their own), read-only: nothing here writes.

A sequential step's row is written only once its attempt ends, so the step running right now is
drawn from the run's own row: ``current_step`` and ``current_attempt``, on ``lease_owner``. Its
start is not stored either. ``lease_expires_at`` is no help: the heartbeat renews it while the
step runs, so it tells when the lease was last renewed; ``started_at`` is the run's first claim.
The step began when the run last moved (the end of the previous attempt, block or wait, or an
operator's retry), and for an automatic retry no earlier than that attempt's end plus the
shortest backoff its policy allows. A step that waits for its retry is ``current_attempt`` with
no owner and a deadline: ``lease_expires_at`` is then the retry's due time plus one lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.admin.options import BaseModelAdmin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .admin_display import moment, pretty_json, stored_traceback
from .conf import durable_settings
from .definition import Branch, Foreach, Parallel, Step, Workflow, find_workflow
from .flowgraph import build_flowgraph, describe_block, describe_step
from .flowsvg import render_svg
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, Wait, WorkflowRun
from .timeaxis import format_duration, status_colour
from .timeline import build_timeline

if TYPE_CHECKING:
    _AdminBase = BaseModelAdmin[WorkflowRun]
else:
    _AdminBase = BaseModelAdmin

#: Statuses of a run whose page refreshes itself.
LIVE_STATUSES = ("pending", "running", "waiting")


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_datetime(value) if isinstance(value, str) else None


def last_moved(
    run: WorkflowRun, rows: Sequence[StepResult], groups: Sequence[ParallelGroup], waits: Sequence[Wait]
) -> datetime:
    """When the run last moved on: its start, an attempt's or block's end, a wait's end, a retry."""
    moments = [run.started_at or run.created_at]
    moments += [row.finished_at for row in rows if row.finished_at is not None]
    moments += [group.finished_at for group in groups if group.finished_at is not None]
    moments += [wait.resolved_at for wait in waits if wait.resolved_at is not None]
    if run.error_history:
        retried = _as_datetime(
            run.error_history[-1].get("retried_at") if isinstance(run.error_history[-1], dict) else None
        )
        if retried is not None:
            moments.append(retried)
    return max(moments)


def retry_due(row: WorkflowRun | StepResult) -> datetime | None:
    """When a step waiting for its retry is due: its deadline (``lease_expires_at``) less one lease."""
    if row.lease_expires_at is None:
        return None
    return row.lease_expires_at - timedelta(seconds=durable_settings.LEASE_SECONDS)


def _sequential(definition: Workflow | None, run: WorkflowRun, groups: Sequence[ParallelGroup]) -> Step | bool:
    """The current step's definition, ``True`` for a sequential step no longer defined, ``False`` for a block."""
    if definition is not None:
        node = definition.node(run.current_step)
        if isinstance(node, Parallel | Foreach):
            return False
        if isinstance(node, Branch):
            return True
        return node if node is not None else True
    return not any(group.name == run.current_step for group in groups)


@dataclass(frozen=True)
class Live:
    """What the run does right now at a sequential step, drawn though no row is written yet."""

    row: StepResult  # unsaved
    since: datetime
    owner: str
    due: datetime | None  # a retry waiting for its time


def live_step(
    run: WorkflowRun,
    rows: Sequence[StepResult],
    groups: Sequence[ParallelGroup],
    waits: Sequence[Wait],
    definition: Workflow | None,
) -> Live | None:
    """The attempt of the current sequential step that runs (or waits to run) now; ``None`` if there is none."""
    if run.status not in ("pending", "running") or not run.current_step:
        return None
    step = _sequential(definition, run, groups)
    if step is False:
        return None
    if any(
        row.group_id is None and row.step == run.current_step and row.attempt == run.current_attempt for row in rows
    ):
        return None
    since = last_moved(run, rows, groups, waits)
    previous = next((row for row in reversed(rows) if row.group_id is None), None)
    if (
        isinstance(step, Step)
        and previous is not None
        and previous.step == run.current_step
        and previous.attempt == run.current_attempt - 1
        and previous.finished_at is not None
        and previous.finished_at >= since
    ):
        # An automatic retry: not before its backoff (RQ's scheduler rounds up to the second).
        shortest = step.retry.delay(previous.attempt, rand=lambda: 0.0)
        since = max(since, previous.finished_at + timedelta(seconds=shortest))
    owner = run.lease_owner
    due = None if owner else retry_due(run) if run.current_attempt > 1 else None
    row = StepResult(
        run_id=run.pk,
        step=run.current_step,
        attempt=run.current_attempt,
        status="running" if owner else "pending",
        created_at=since,
        started_at=since if owner else None,
        lease_owner=owner,
        lease_expires_at=run.lease_expires_at,
    )
    return Live(row, since, owner, due)


def error_summary(error: Any) -> dict[str, Any] | None:
    """A run's stored error as its parts: where (step, block), type, message, other fields, traceback.

    A run's error is ``{"step": ..., "parallel": ..., "reason": ...}``; a reason may hold the reason
    of a child run or a branch in turn. The type and message are the first found going inwards.
    """
    if error is None:
        return None
    where = {key: error[key] for key in ("step", "parallel") if isinstance(error, dict) and error.get(key)}
    reason = error.get("reason", error) if isinstance(error, dict) and "reason" in error else error
    kind = message = ""
    extra: Any = None
    layer = reason
    while isinstance(layer, dict):
        kind = kind or str(layer.get("type") or "")
        message = message or (str(layer["message"]) if layer.get("message") is not None else "")
        rest = {key: value for key, value in layer.items() if key not in ("type", "message", "traceback", "reason")}
        if extra is None and rest:
            extra = rest
        layer = layer.get("reason")
    if not isinstance(reason, dict):
        message = str(reason)
    return {
        "step": where.get("step", ""),
        "block": where.get("parallel", ""),
        "type": kind,
        "message": message,
        "extra": pretty_json(extra) if extra is not None else "",
        "traceback": stored_traceback(error),
    }


def _relative(when: datetime, now: datetime) -> str:
    seconds = (when - now).total_seconds()
    if seconds <= 0.5:
        return "due now, waiting for a worker"
    return f"in {format_duration(seconds)}"


def step_table(
    definition: Workflow | None,
    rows: Sequence[StepResult],
    groups: Sequence[ParallelGroup],
    live: Live | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """One line per step of the definition: where it is, its retry policy, its latest attempt, its next one."""
    if definition is None:
        return []
    names = {group.pk: group.name for group in groups}
    latest: dict[tuple[str, str], StepResult] = {}
    counts: dict[tuple[str, str], int] = {}
    for row in [*rows, *([live.row] if live else [])]:
        key = (names.get(row.group_id, "") if row.group_id is not None else "", row.step)
        latest[key] = row
        counts[key] = counts.get(key, 0) + 1
    out = []
    for node in definition.flat:
        if isinstance(node, Branch):
            continue
        members = [("", node)] if isinstance(node, Step) else [(node.name, member) for member in node.steps]
        for block, step in members:
            found = latest.get((block, step.name))
            nxt = ""
            if found is not None and found.status == "pending" and found.attempt > 1:
                due = live.due if live is not None and found is live.row else retry_due(found)
                if due is not None:
                    nxt = f"attempt #{found.attempt} of {step.retry.max_attempts} at {moment(due)} ({_relative(due, now)})"
            out.append(
                {
                    "name": step.name,
                    "block": block,
                    "block_note": describe_block(node) if isinstance(node, Parallel) else "",
                    "policy": describe_step(step),
                    "status": found.status if found is not None else "",
                    "colour": status_colour(found.status) if found is not None else "",
                    "attempts": counts.get((block, step.name), 0),
                    "next": nxt,
                }
            )
    return out


def summary(run: WorkflowRun, live: Live | None, rows: Sequence[StepResult], now: datetime) -> dict[str, Any]:
    """The headline of the page: what the run does now, since when, on which worker, what comes next."""
    lines = []
    if live is not None and live.owner:
        lines.append(
            f"Running {run.current_step} (attempt {run.current_attempt}) on {live.owner} "
            f"for {format_duration((now - live.since).total_seconds())}, since {moment(live.since)}"
        )
    elif live is not None and live.due is not None:
        lines.append(
            f"Attempt {run.current_attempt} of {run.current_step} is due at {moment(live.due)} "
            f"({_relative(live.due, now)})"
        )
    elif live is not None:
        lines.append(f"{run.current_step} (attempt {run.current_attempt}) is queued for a worker")
    if run.finished_at is not None and run.status in FINISHED_RUN_STATUSES:
        took = f" after {format_duration(run.duration)}" if run.duration is not None else ""
        lines.append(f"{run.get_status_display()} at {moment(run.finished_at)}{took}")
    for row in rows:
        if row.group_id is not None and row.status == "pending" and row.attempt > 1:
            due = retry_due(row)
            if due is not None:
                lines.append(
                    f"Branch {row.step}: attempt {row.attempt} is due at {moment(due)} ({_relative(due, now)})"
                )
    return {
        "lines": lines,
        "live": run.status in LIVE_STATUSES,
        "finished": run.status in FINISHED_RUN_STATUSES,
        "error": error_summary(run.error),
        "earlier_errors": len(run.error_history or []),
    }


class RunPageAdmin(_AdminBase):
    """The top of a run's page (for :class:`durable_django.admin.WorkflowRunAdmin`)."""

    def _groups(self, obj: WorkflowRun) -> list[ParallelGroup]:
        """The run's groups, read once per page (the inlines ask too)."""
        if not hasattr(obj, "_page_groups"):
            obj._page_groups = list(obj.groups.all())  # type: ignore[attr-defined]
        return obj._page_groups  # type: ignore[attr-defined]

    def get_inlines(self, request: HttpRequest, obj: WorkflowRun | None) -> list[Any]:
        # No empty "Parallel groups" section on a run without blocks.
        inlines = list(super().get_inlines(request, obj))
        if obj is not None and not self._groups(obj):
            inlines = [inline for inline in inlines if inline.model is not ParallelGroup]
        return inlines

    def add_pictures(self, context: dict[str, Any], obj: WorkflowRun, waits: list[Wait]) -> None:
        """The run's summary, flow graph, timeline and steps table (the step running now included)."""
        now = timezone.now()
        rows = list(obj.steps.order_by("id"))
        groups = self._groups(obj)
        definition = find_workflow(obj.workflow)
        live = live_step(obj, rows, groups, waits, definition)
        drawn = [*rows, live.row] if live is not None else rows
        graph = build_flowgraph(obj, definition, drawn, groups, now)
        context.update(
            run_summary=summary(obj, live, rows, now),
            run_colour=status_colour(obj.status),
            flowgraph=graph,
            flowgraph_svg=render_svg(graph),
            step_table=step_table(definition, rows, groups, live, now),
            timeline=build_timeline(obj, drawn, groups, now, waits),
        )
