"""The top of a run's page: its status and error, the step running right now, retries, the graph.

Pure functions of the run and its rows (no query of their own), read-only: nothing here writes.
The rows are read once per page by :class:`RunPageAdmin`, all but the items of big foreach blocks
(:mod:`durable_django.admin_items`): the inlines below show the same rows.

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

from django.contrib import admin
from django.contrib.admin.options import BaseModelAdmin, InlineModelAdmin
from django.db.models import Prefetch, Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .admin_display import (
    change_url,
    folded_json,
    moment,
    outcome,
    pretty_json,
    run_link,
    status_badge,
    stored_traceback,
    without_tracebacks,
)
from .admin_items import DRAWN, ItemSummary, drawn_rows, extra_ids, summarise
from .conf import durable_settings
from .definition import Branch, Foreach, Parallel, Step, Workflow, find_workflow
from .flowgraph import build_flowgraph, describe_block, describe_step
from .flowsvg import render_svg
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, Wait, WorkflowRun
from .nodes import walk
from .timeaxis import format_duration, status_colour
from .timeline import build_timeline

if TYPE_CHECKING:
    _AdminBase = BaseModelAdmin[WorkflowRun]
else:
    _AdminBase = BaseModelAdmin

#: Statuses of a run whose page refreshes itself.
LIVE_STATUSES = ("pending", "running", "waiting", "compensating")


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
    previous = next((row for row in reversed(rows) if row.group_id is None and row.kind != "compensation"), None)
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


def _cases(definition: Workflow) -> dict[str, str]:
    """The branch block and case of each step or block inside a case: ``{"one": "route: case single"}``."""
    out: dict[str, str] = {}
    for node in definition.flat:
        if isinstance(node, Branch):
            for case, arm in node.arms():
                for member in walk(arm):
                    out[member.name] = f"{node.name}: {'default' if case is None else f'case {case}'}"
    return out


def step_table(
    definition: Workflow | None,
    rows: Sequence[StepResult],
    groups: Sequence[ParallelGroup],
    live: Live | None,
    now: datetime,
    items: dict[int, ItemSummary] | None = None,
) -> list[dict[str, Any]]:
    """One line per step of the definition: where it is, its retry policy, its latest attempt, its next one.

    A foreach block is one line for all its items: the status of the block, the attempts of all items.
    """
    if definition is None:
        return []
    names = {group.pk: group.name for group in groups}
    latest_group = {group.name: group for group in groups}
    latest: dict[tuple[str, str], StepResult] = {}
    counts: dict[tuple[str, str], int] = {}
    for row in [*rows, *([live.row] if live else [])]:
        if row.kind == "compensation":
            continue
        key = (names.get(row.group_id, "") if row.group_id is not None else "", row.step)
        latest[key] = row
        counts[key] = counts.get(key, 0) + 1
    cases = _cases(definition)
    out = []
    for node in definition.flat:
        if isinstance(node, Branch):
            continue
        members = [("", node)] if isinstance(node, Step) else [(node.name, member) for member in node.steps]
        for block, step in members:
            found = latest.get((block, step.name))
            status = found.status if found is not None else ""
            attempts = counts.get((block, step.name), 0)
            if isinstance(node, Foreach):
                group = latest_group.get(node.name)
                summary = (items or {}).get(group.pk) if group is not None and group.pk is not None else None
                status = group.status if group is not None else ""
                attempts = summary.attempts if summary is not None else attempts
            nxt = ""
            if found is not None and found.status == "pending" and found.attempt > 1:
                due = live.due if live is not None and found is live.row else retry_due(found)
                if due is not None:
                    nxt = f"attempt #{found.attempt} of {step.retry.max_attempts} at {moment(due)} ({_relative(due, now)})"
            out.append(
                {
                    "name": step.name,
                    "block": block,
                    "block_note": describe_block(node) if isinstance(node, Parallel | Foreach) else "",
                    "case": cases.get(node.name, ""),
                    "policy": describe_step(step),
                    "status": status,
                    "colour": status_colour(status) if status else "",
                    "attempts": attempts,
                    "next": nxt,
                }
            )
    return out


def compensations(rows: Sequence[StepResult], site: admin.AdminSite) -> list[dict[str, Any]]:
    """Every compensation attempt: the step it undoes (a link to that step's row), status, timing, outcome."""
    undone = {row.pk: row for row in rows if row.kind != "compensation"}
    out = []
    for row in rows:
        if row.kind != "compensation":
            continue
        target = undone.get(row.compensates_id) if row.compensates_id is not None else None
        out.append(
            {
                "pk": row.pk,
                "step": row.step,
                "undoes_url": change_url(site, StepResult, row.compensates_id) if row.compensates_id else "",
                "block": target.group.name
                if target is not None and target.group_id is not None and target.group
                else "",
                "url": change_url(site, StepResult, row.pk) if row.pk else "",
                "attempt": row.attempt,
                "status": row.status,
                "badge": status_badge(row.status, row.get_status_display()),
                "started": moment(row.started_at),
                "duration": format_duration(row.duration) if row.duration is not None else "",
                "outcome": outcome(row),
            }
        )
    return out


def compensation_line(run: WorkflowRun, rows: Sequence[StepResult]) -> str:
    """How the run's compensations go or went, in one line; ``""`` for a run without any."""
    latest: dict[Any, StepResult] = {}
    for row in rows:
        if row.kind == "compensation":
            latest[row.compensates_id or row.step] = row
    if not latest and not run.compensation and run.status != "compensating":
        return ""
    done = [row.step for row in latest.values() if row.status == "completed"]
    failed = [row.step for row in latest.values() if row.status == "failed"]
    running = [row.step for row in latest.values() if row.status in ("running", "pending")]
    undone = f"{len(done)} {'step' if len(done) == 1 else 'steps'} undone"
    if run.status == "compensating":
        line = f"Compensating: {undone} so far"
        return line + (f", undoing {', '.join(running)}" if running else "")
    if run.compensation == "failed" or failed:
        return f"Compensation failed: {undone}, {len(failed)} could not be undone ({', '.join(failed)})"
    return f"Compensation completed: {undone}" + (f" ({', '.join(done)})" if done else "")


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
    undoing = compensation_line(run, rows)
    if undoing:
        lines.append(undoing)
    for row in rows:
        if row.group_id is not None and row.status == "pending" and row.attempt > 1:
            due = retry_due(row)
            if due is not None:
                what = f"Item {row.item_index} of {row.step}" if row.item_index is not None else f"Branch {row.step}"
                lines.append(f"{what}: attempt {row.attempt} is due at {moment(due)} ({_relative(due, now)})")
    return {
        "lines": lines,
        "live": run.status in LIVE_STATUSES,
        "finished": run.status in FINISHED_RUN_STATUSES,
        "error": error_summary(run.error),
        "earlier_errors": len(run.error_history or []),
        "compensation": run.compensation,
        "compensation_colour": status_colour(run.compensation) if run.compensation else "",
    }


@dataclass(frozen=True)
class Page:
    """The rows a run's page draws (all but most items of big foreach blocks) and each foreach group in short."""

    rows: list[StepResult]
    items: dict[int, ItemSummary]
    extra: list[int]  # ids of the failed items drawn past the first ones

    @property
    def shown(self) -> Q:
        """The rows of :attr:`rows`, as a filter (for the inlines)."""
        return DRAWN | Q(pk__in=self.extra) if self.extra else DRAWN


class RunPageAdmin(_AdminBase):
    """The top of a run's page, its family and data fields, and what its inlines show (for
    :class:`durable_django.admin.WorkflowRunAdmin`)."""

    def _groups(self, obj: WorkflowRun) -> list[ParallelGroup]:
        """The run's groups, read once per page (the inlines ask too)."""
        if not hasattr(obj, "_page_groups"):
            obj._page_groups = list(obj.groups.all())  # type: ignore[attr-defined]
        return obj._page_groups  # type: ignore[attr-defined]

    def _page(self, obj: WorkflowRun) -> Page:
        """The run's rows, read once per page; a foreach block's items beyond the first are summed up."""
        if not hasattr(obj, "_page_rows"):
            has_items = any(group.kind == "foreach" for group in self._groups(obj))
            rows = drawn_rows(obj.steps.select_related("group"), has_items)
            items = summarise(obj.steps.all(), rows) if has_items else {}
            obj._page_rows = Page(rows, items, extra_ids(rows))  # type: ignore[attr-defined]
        return obj._page_rows  # type: ignore[attr-defined]

    def get_inlines(self, request: HttpRequest, obj: WorkflowRun | None) -> list[Any]:
        # No empty "Parallel groups" section on a run without blocks.
        inlines = list(super().get_inlines(request, obj))
        if obj is not None and not self._groups(obj):
            inlines = [inline for inline in inlines if inline.model is not ParallelGroup]
        return inlines

    # -- the run's fields: its parent and children, its data ------------------------------------

    @admin.display(description=_("parent run"))
    def parent_link(self, obj: WorkflowRun) -> SafeString | str:
        return run_link(self.admin_site, obj.parent_id) if obj.parent_id else self.get_empty_value_display()

    @admin.display(description=_("child runs"))
    def children_links(self, obj: WorkflowRun) -> SafeString | str:
        children = [
            {
                "link": run_link(self.admin_site, child.pk),
                "workflow": child.workflow,
                "badge": status_badge(child.status, child.get_status_display()),
                "called_by": child.parent_step,
                "ref": child.ref,
                "detached": child.detached,
            }
            for child in obj.children.order_by("created_at").only(
                "id", "workflow", "status", "parent_step", "ref", "detached"
            )
        ]
        if not children:
            return self.get_empty_value_display()
        return render_to_string("admin/durable_django/children.html", {"children": children})

    @admin.display(description=_("input"))
    def input_json(self, obj: WorkflowRun) -> SafeString | str:
        return folded_json(obj.input)

    @admin.display(description=_("context"))
    def context_json(self, obj: WorkflowRun) -> SafeString | str:
        return folded_json(obj.context)

    @admin.display(description=_("error"))
    def error_json(self, obj: WorkflowRun) -> SafeString | str:
        return pretty_json(without_tracebacks(obj.error)) if obj.error is not None else self.get_empty_value_display()

    @admin.display(description=_("earlier errors"))
    def error_history_json(self, obj: WorkflowRun) -> SafeString | str:
        return folded_json(obj.error_history) if obj.error_history else self.get_empty_value_display()

    def get_formset_kwargs(
        self, request: HttpRequest, obj: WorkflowRun, inline: InlineModelAdmin[Any, Any], prefix: str
    ) -> dict[str, Any]:
        """The inlines show the rows the pictures draw: never every item of a big foreach block."""
        kwargs: dict[str, Any] = super().get_formset_kwargs(request, obj, inline, prefix)  # type: ignore[misc]
        if obj is None or obj.pk is None or "queryset" not in kwargs:
            return kwargs
        page = self._page(obj)
        hidden = sum(summary.hidden for summary in page.items.values())
        if inline.model is StepResult:
            kwargs["queryset"] = kwargs["queryset"].filter(page.shown)
            if hidden:
                inline.verbose_name_plural = ngettext(
                    "step attempts, in execution order (%(count)s item of a foreach block left off: see its group)",
                    "step attempts, in execution order (%(count)s items of foreach blocks left off: see their groups)",
                    hidden,
                ) % {"count": f"{hidden:,}"}
        elif inline.model is ParallelGroup:
            branches = Prefetch("branches", queryset=StepResult.objects.filter(page.shown).order_by("id"))
            kwargs["queryset"] = kwargs["queryset"].prefetch_related(None).prefetch_related(branches)
            inline.item_summaries = page.items  # type: ignore[attr-defined]
        return kwargs

    def add_pictures(self, context: dict[str, Any], obj: WorkflowRun, waits: list[Wait]) -> None:
        """The run's summary, flow graph, timeline, steps table and compensations (the step running now included)."""
        now = timezone.now()
        page = self._page(obj)
        rows = page.rows
        groups = self._groups(obj)
        definition = find_workflow(obj.workflow)
        live = live_step(obj, rows, groups, waits, definition)
        drawn = [*rows, live.row] if live is not None else rows
        graph = build_flowgraph(obj, definition, drawn, groups, now, items=page.items)
        context.update(
            run_summary=summary(obj, live, rows, now),
            run_colour=status_colour(obj.status),
            flowgraph=graph,
            flowgraph_svg=render_svg(graph),
            step_table=step_table(definition, rows, groups, live, now, page.items),
            timeline=build_timeline(obj, drawn, groups, now, waits, definition=definition, items=page.items),
            compensations=compensations(rows, self.admin_site),
        )
