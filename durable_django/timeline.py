"""The run timeline of the admin: every step attempt and branch as a bar on one time axis.

:func:`build_timeline` is a pure function of a run and its rows (it runs no query), so the layout
is unit-tested without a browser and the template only draws what it computed: offsets and widths
in percent of the axis, rows, colours and labels.

Sequential steps are rows of their own; a step's retries share its row, one bar per attempt. A
parallel group is a section with a header row (the group's own span) and one row per branch
stacked under it, so branches that ran at the same time appear side by side. A foreach group has
one row per item drawn (the rows given: the caller leaves most of a big block's items off) and a
last row that sums up the others (:class:`durable_django.admin_items.ItemSummary`). A step or
branch that waited (a sleep, events, a person's input) gets a row of its waits right under its
own: one bar per wait, from when it began to when it was resolved (or to now while it waits).

A branch block is a section whose header says which case it took (and on what value); with the
definition at hand, the steps and blocks of that case are the sections under it, indented
(``depth``). Compensations come last, in a section of their own: one row per undone step. The
parts (bars, rows, headers) are in :mod:`durable_django.timeparts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .admin_items import ItemSummary, summarise_rows
from .conf import durable_settings
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, Wait, WorkflowRun
from .nodes import Branch, walk
from .timeaxis import MIN_SPAN, STATUS_COLOURS, fit_labels, format_duration, label_position, status_colour, ticks_for
from .timeparts import (
    Axis,
    Bar,
    BarState,
    Row,
    Section,
    Timeline,
    WaitBar,
    attempt_logs,
    branch_header,
    compensation_header,
    group_header,
    more_bar,
)

if TYPE_CHECKING:
    from .definition import Workflow

__all__ = [
    "STATUS_COLOURS",
    "Timeline",
    "build_timeline",
    "format_duration",
    "status_colour",
    "ticks_for",
    "wait_subject",
]


def is_lost(row: StepResult) -> bool:
    """Whether ``row`` is an attempt whose worker went away (recorded by recovery, maybe without a start)."""
    error = row.error
    return row.status == "failed" and isinstance(error, dict) and error.get("type") == "worker_lost"


def _bar(
    row: StepResult,
    axis: Axis,
    open_end: datetime,
    numbered: bool,
    waited: datetime | None = None,
    since: datetime | None = None,
) -> Bar:
    """``waited``: when the attempt's first wait began; its code ran until then, the wait bars go on.

    ``since``: when the run last moved before this attempt, the start of a lost attempt whose
    start was not recorded (recovery records it when it finds the lease expired).
    """
    lost = is_lost(row)
    begin = row.started_at or row.created_at
    if lost and row.started_at is None and row.finished_at is not None:
        begin = min(since or row.created_at, row.created_at, row.finished_at)
    finished_at = row.finished_at
    if waited is not None and row.started_at is not None and (finished_at is None or finished_at > waited):
        finished_at = max(waited, begin)
    state: BarState
    if lost:
        state = "lost"
    elif row.started_at is None:
        state = "waiting"
    elif finished_at is None:
        state = "running"
    else:
        state = "done"
    end = max(finished_at or open_end, begin)
    offset, width = axis.place(begin, end)
    duration = (end - begin).total_seconds() if state != "waiting" else None
    prefix = f"#{row.attempt} " if numbered else ""
    if state == "done":
        label = prefix + format_duration(duration)
    elif state == "lost":
        label = f"{prefix}lost after {format_duration(duration)}" if row.started_at else f"{prefix}worker lost"
    elif state == "running":
        label = f"{prefix}running {format_duration(duration)}"
    else:
        label = f"{prefix}{row.status}"
    title = f"{subject(row)}, attempt {row.attempt}: {row.status}"
    if state == "waiting":
        title += f" (queued at +{axis.relative(begin)}, not started)"
        if row.attempt > 1 and row.status == "pending" and row.lease_expires_at is not None:
            due = row.lease_expires_at - timedelta(seconds=durable_settings.LEASE_SECONDS)
            title += f"; due at +{axis.relative(max(due, begin))}"
    elif state == "lost":
        start = f"at +{axis.relative(begin)}" if row.started_at else f"after +{axis.relative(begin)} (not recorded)"
        title += f", its worker was lost: started {start}, found lost at +{axis.relative(end)}"
    else:
        verb = "ran" if state == "done" else "running for"
        title += f", started at +{axis.relative(begin)}, {verb} {format_duration(duration)}"
        if state == "running" and row.lease_owner:
            title += f" on {row.lease_owner}"
    return Bar(
        step=row.step,
        attempt=row.attempt,
        status=row.status,
        state=state,
        offset=offset,
        width=width,
        label=label,
        title=title,
        label_position=label_position(offset, width, label),
        duration=duration,
        short_label=f"#{row.attempt}" if numbered else "",
    )


def subject(row: StepResult) -> str:
    """What a row is an attempt of: ``charge``, ``squares item 3``, ``compensation of charge``."""
    if row.kind == "compensation":
        return f"compensation of {row.step}"
    if row.item_index is not None:
        return f"{row.step} item {row.item_index}"
    return row.step


def wait_subject(wait: Wait) -> str:
    """What a wait waits for, in a few words: ``event paid``, ``any of a, b``, ``input approve``, ``sleep 5 min``."""
    if wait.kind == "sleep":
        if wait.due_at is not None:
            return f"sleep {format_duration((wait.due_at - wait.created_at).total_seconds())}"
        return "sleep"
    if wait.kind == "event":
        events = list(wait.events or []) or [wait.name]
        if wait.mode == "any":
            return f"any of {', '.join(events)}"
        if wait.mode == "all":
            return f"all of {', '.join(events)}"
        return f"event {events[0]}"
    if wait.kind == "input":
        return f"input {wait.name}"
    return f"{wait.kind} {wait.name}"


def _wait_bar(wait: Wait, axis: Axis, open_end: datetime) -> WaitBar:
    begin = wait.created_at
    is_open = wait.status == "waiting"
    end = max(wait.resolved_at or open_end, begin)
    offset, width = axis.place(begin, end)
    what = wait_subject(wait)
    lasted = format_duration((end - begin).total_seconds())
    if is_open:
        outcome = f"waiting {lasted}"
    elif wait.status == "timed_out":
        outcome = f"timed out after {lasted}"
    elif wait.status == "cancelled":
        outcome = f"cancelled after {lasted}"
    elif wait.kind == "sleep":
        outcome = ""  # it lasted what it says
    else:
        outcome = f"after {lasted}"
    label = f"{what} · {outcome}" if outcome else what
    title = f"{what}: {wait.status}, from +{axis.relative(begin)}, {'waiting for' if is_open else 'for'} {lasted}"
    if is_open and wait.due_at is not None:
        title += f"; {'ends' if wait.kind == 'sleep' else 'times out'} at +{axis.relative(wait.due_at)}"
    return WaitBar(
        pk=wait.pk,
        kind=wait.kind,
        what=what,
        status=wait.status,
        state="open" if is_open else "closed",
        offset=offset,
        width=width,
        label=label,
        title=title,
        label_position=label_position(offset, width, label),
        short_label=what if outcome else "",
    )


def _bounds(
    run: WorkflowRun,
    steps: Sequence[StepResult],
    groups: Iterable[ParallelGroup],
    waits: Sequence[Wait],
    now: datetime,
) -> Axis:
    starts = [run.started_at or run.created_at]
    starts += [row.started_at or row.created_at for row in steps]
    starts += [group.created_at for group in groups]
    start = min(starts)
    if run.status in FINISHED_RUN_STATUSES:
        ends = [run.finished_at or start]
        ends += [moment for row in steps for moment in (row.started_at, row.finished_at) if moment is not None]
        ends += [group.finished_at for group in groups if group.finished_at is not None]
        ends += [moment for wait in waits for moment in (wait.created_at, wait.resolved_at) if moment is not None]
        end = max(ends)
    else:
        end = max(now, start)
    return Axis(start, max((end - start).total_seconds(), MIN_SPAN))


@dataclass
class _Part:
    """A section being laid out: its lines, each the attempts of one step, branch, item or compensation."""

    depth: int
    group: ParallelGroup | None = None
    branch: StepResult | None = None
    compensations: bool = False
    lines: list[list[StepResult]] | None = None

    def __post_init__(self) -> None:
        self.lines = [] if self.lines is None else self.lines


def _case_names(definition: Workflow | None, row: StepResult) -> set[str]:
    """The names of the steps and blocks of the case branch row ``row`` took (none without the definition)."""
    node = definition.node(row.step) if definition is not None else None
    output = row.output if isinstance(row.output, dict) else {}
    if not isinstance(node, Branch) or row.status != "completed":
        return set()
    arm = node.default if output.get("default") else node.case(str(output.get("case")))
    return {member.name for member in walk(arm or ())}


def _on(definition: Workflow | None, name: str) -> str:
    """What a branch block's case is chosen on: a context key's name, or its function's."""
    node = definition.node(name) if definition is not None else None
    if not isinstance(node, Branch):
        return ""
    if isinstance(node.on, str):
        return node.on
    return f"{getattr(node.on, '__name__', 'on')}(ctx)"


def build_timeline(
    run: WorkflowRun,
    steps: Iterable[StepResult],
    groups: Iterable[ParallelGroup],
    now: datetime,
    waits: Iterable[Wait] = (),
    *,
    definition: Workflow | None = None,
    items: Mapping[int, ItemSummary] | None = None,
) -> Timeline:
    """Lay out ``run``'s step attempts (``steps``), parallel ``groups`` and ``waits`` on a time axis.

    Rows come in execution order (the rows' ids). Attempts still running end at ``now`` while the
    run is unfinished; in a finished run they end where the axis does and stay marked running.
    Attempts that never started (pending, or cancelled before they ran) are drawn as waiting from
    the moment they were queued. An attempt that waited ends where its first wait begins; its
    waits are a line of their own under its line.

    ``definition`` (the run's workflow) puts the steps of a branch block's case under it.
    ``items``: each foreach group's summary by group id, for the items not among ``steps``
    (without it, the items are counted from ``steps``).
    """
    rows = sorted(steps, key=lambda row: (row.pk is None, row.pk or 0))  # unsaved rows: drawn last
    group_list = sorted(groups, key=lambda group: (group.created_at, group.pk or 0))
    wait_list = sorted(waits, key=lambda wait: (wait.created_at, wait.pk or 0))
    summaries = dict(items) if items is not None else summarise_rows(rows)
    waits_of: dict[int, list[Wait]] = {}
    for wait in wait_list:
        waits_of.setdefault(wait.step_result_id, []).append(wait)
    axis = _bounds(run, rows, group_list, wait_list, now)
    finished = run.status in FINISHED_RUN_STATUSES
    open_end = axis.start + timedelta(seconds=axis.span) if finished else now

    parts: list[_Part] = []
    group_parts: dict[int, _Part] = {}
    block_line: dict[tuple[int, str, int | None], list[StepResult]] = {}
    groups_by_id = {group.pk: group for group in group_list}
    cases: list[set[str]] = []  # the cases the run is inside, innermost last
    compensations = _Part(0, compensations=True)
    compensation_line: dict[Any, list[StepResult]] = {}
    for row in rows:
        if row.kind == "compensation":
            key = row.compensates_id or row.step
            if key not in compensation_line:
                compensation_line[key] = []
                assert compensations.lines is not None
                compensations.lines.append(compensation_line[key])
            compensation_line[key].append(row)
            continue
        group = groups_by_id.get(row.group_id) if row.group_id is not None else None
        name = group.name if group is not None else row.step
        if row.group_id is None or row.group_id not in group_parts:
            while cases and name not in cases[-1]:
                cases.pop()  # the run has left that case
        depth = len(cases)
        if row.kind == "branch":
            parts.append(_Part(depth, branch=row))
            names = _case_names(definition, row)
            if names:
                cases.append(names)
            continue
        if row.group_id is None:
            if not parts or parts[-1].group is not None or parts[-1].branch is not None or parts[-1].depth != depth:
                parts.append(_Part(depth))
            lines = parts[-1].lines
            assert lines is not None
            previous = lines[-1][-1] if lines else None
            if previous is not None and previous.step == row.step and row.attempt == previous.attempt + 1:
                lines[-1].append(row)  # a retry of the same step shares its line
            else:
                lines.append([row])
            continue
        if row.group_id not in group_parts:
            group_parts[row.group_id] = _Part(
                depth,
                group=group or ParallelGroup(pk=row.group_id, name=f"group {row.group_id}", created_at=row.created_at),
            )
            parts.append(group_parts[row.group_id])
        line = block_line.get((row.group_id, row.step, row.item_index))
        if line is None:
            line = block_line[row.group_id, row.step, row.item_index] = []
            part_lines = group_parts[row.group_id].lines
            assert part_lines is not None
            part_lines.append(line)
        line.append(row)
    # A group without branch rows still shows its span.
    parts += [_Part(0, group=group) for group in group_list if group.pk not in group_parts]
    if compensations.lines:
        parts.append(compensations)

    # When the run last moved before each row: where an attempt lost without a recorded start began.
    since: dict[int, datetime] = {}
    moved = run.started_at or run.created_at
    for row in rows:
        since[id(row)] = moved
        moved = max(moved, row.finished_at or row.started_at or moved)

    def line_rows(line: list[StepResult]) -> list[Row]:
        bars = []
        for row in line:
            row_waits = waits_of.get(row.pk or 0)
            waited = row_waits[0].created_at if row_waits else None
            numbered = len(line) > 1 or row.attempt > 1
            bars.append(_bar(row, axis, open_end, numbered, waited=waited, since=since[id(row)]))
        first = line[0]
        label = f"item {first.item_index}" if first.item_index is not None else first.step
        out = [
            Row(
                label=label,
                bars=fit_labels(bars),
                item=first.item_index,
                compensates=first.kind == "compensation",
                logs=attempt_logs(line),
            )
        ]
        line_waits = [_wait_bar(wait, axis, open_end) for row in line for wait in waits_of.get(row.pk or 0, [])]
        if line_waits:
            out.append(Row(label=label, bars=(), waits=fit_labels(line_waits)))
        return out

    def section(part: _Part) -> Section:
        lines = part.lines or []
        if part.branch is not None:
            choice = branch_header(part.branch, axis, open_end, _on(definition, part.branch.step))
            return Section(group=None, rows=(), branch=choice, depth=part.depth)
        if part.compensations:
            flat = [row for line in lines for row in line]
            header = compensation_header(run, flat, axis, open_end)
            return Section(
                group=None,
                rows=tuple(row for line in lines for row in line_rows(line)),
                compensation=header,
                depth=0,
            )
        if part.group is None:
            return Section(group=None, rows=tuple(row for line in lines for row in line_rows(line)), depth=part.depth)
        summary = summaries.get(part.group.pk) if part.group.kind == "foreach" else None
        if part.group.kind == "foreach":
            lines = sorted(lines, key=lambda line: (line[0].item_index is None, line[0].item_index or 0))
        drawn = [row for line in lines for row in line_rows(line)]
        if summary is not None and summary.hidden > 0:
            more = more_bar(summary, axis, open_end)
            drawn.append(Row(label=f"{summary.hidden:,} more items", bars=(), more=fit_labels([more])[0]))
        return Section(
            group=group_header(part.group, axis, open_end, summary),
            rows=tuple(drawn),
            depth=part.depth,
        )

    return Timeline(
        start=axis.start,
        span=axis.span,
        ticks=ticks_for(axis.span),
        sections=tuple(section(part) for part in parts),
        open_ended=not finished,
    )
