"""The run timeline of the admin: every step attempt and branch as a bar on one time axis.

:func:`build_timeline` is a pure function of a run and its rows (it runs no query), so the layout
is unit-tested without a browser and the template only draws what it computed: offsets and widths
in percent of the axis, rows, colours and labels.

Sequential steps are rows of their own; a step's retries share its row, one bar per attempt. A
parallel group is a section with a header row (the group's own span) and one row per branch
stacked under it, so branches that ran at the same time appear side by side. A step or branch
that waited (a sleep, events, a person's input) gets a row of its waits right under its own: one
bar per wait, from when it began to when it was resolved (or to now while it waits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from .conf import durable_settings
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, Wait, WorkflowRun
from .timeaxis import (
    MIN_SPAN,
    STATUS_COLOURS,
    LabelPosition,
    Tick,
    fit_labels,
    format_duration,
    label_position,
    pct,
    status_colour,
    ticks_for,
)

__all__ = [
    "STATUS_COLOURS",
    "Timeline",
    "build_timeline",
    "format_duration",
    "status_colour",
    "ticks_for",
    "wait_subject",
]

# A bar that lasted no time at all still gets this much width (percent), so it can be seen.
MIN_WIDTH = 0.4

BarState = Literal["done", "running", "waiting", "lost"]
WaitState = Literal["open", "closed"]


class _Span:
    """Drawing helpers of anything placed on the axis: a bar or a group's span."""

    status: str
    offset: float
    width: float

    @property
    def colour(self) -> str:
        return status_colour(self.status)

    @property
    def x(self) -> str:
        return pct(self.offset)

    @property
    def w(self) -> str:
        return pct(self.width)


class _Labelled(_Span):
    """A bar with a label inside it or just past either end."""

    label_position: LabelPosition

    @property
    def label_x(self) -> str:
        """Where the label's anchor goes: inside the bar's start, or just past either end."""
        if self.label_position == "inside":
            return pct(self.offset + 0.4)
        if self.label_position == "right":
            return pct(self.offset + self.width + 0.5)
        return pct(self.offset - 0.5)

    @property
    def label_anchor(self) -> str:
        return "end" if self.label_position == "left" else "start"


@dataclass(frozen=True)
class Bar(_Labelled):
    """One step attempt: ``offset`` and ``width`` are percent of the axis."""

    step: str
    attempt: int
    status: str
    state: BarState
    offset: float
    width: float
    label: str
    title: str
    label_position: LabelPosition
    duration: float | None
    short_label: str = ""

    @property
    def end(self) -> str:
        return pct(self.offset + self.width)


@dataclass(frozen=True)
class WaitBar(_Labelled):
    """One wait of a step or branch: from when it began to when it ended (or to now)."""

    pk: int | None
    kind: str
    what: str
    status: str
    state: WaitState
    offset: float
    width: float
    label: str
    title: str
    label_position: LabelPosition
    short_label: str = ""


@dataclass(frozen=True)
class Row:
    """One line of the timeline: a sequential step or a branch, with one bar per attempt.

    The line of a step's waits has no attempt bars but its ``waits`` (``is_waits``).
    """

    label: str
    bars: tuple[Bar, ...]
    waits: tuple[WaitBar, ...] = ()

    @property
    def is_waits(self) -> bool:
        return bool(self.waits) and not self.bars

    @property
    def note(self) -> str:
        if self.is_waits:
            return f"{len(self.waits)} waits" if len(self.waits) > 1 else ""
        return f"{len(self.bars)} attempts" if len(self.bars) > 1 else ""


@dataclass(frozen=True)
class GroupHeader(_Span):
    """The header row of a parallel group: its name, outcome and the span it was open."""

    name: str
    status: str
    on_error: str
    note: str
    offset: float
    width: float
    label: str
    title: str


@dataclass(frozen=True)
class Section:
    """Consecutive sequential steps (``group`` is ``None``), or one parallel group and its branches."""

    group: GroupHeader | None
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Timeline:
    """Everything the template draws. ``span`` is the length of the axis in seconds."""

    start: datetime
    span: float
    ticks: tuple[Tick, ...]
    sections: tuple[Section, ...]
    open_ended: bool = False

    @property
    def bars(self) -> list[Bar]:
        return [bar for section in self.sections for row in section.rows for bar in row.bars]

    @property
    def waits(self) -> list[WaitBar]:
        return [wait for section in self.sections for row in section.rows for wait in row.waits]

    @property
    def is_empty(self) -> bool:
        return not self.sections

    @property
    def span_label(self) -> str:
        return format_duration(self.span)

    @property
    def has_lost(self) -> bool:
        return any(bar.state == "lost" for bar in self.bars)

    @property
    def has_waiting(self) -> bool:
        return any(bar.state == "waiting" for bar in self.bars)

    @property
    def legend(self) -> list[tuple[str, str]]:
        """``(status, colour)`` of each status drawn, in :data:`STATUS_COLOURS` order."""
        seen = {bar.status for bar in self.bars} | {s.group.status for s in self.sections if s.group is not None}
        seen |= {wait.status for wait in self.waits}
        return [(status, colour) for status, colour in STATUS_COLOURS.items() if status in seen]


@dataclass
class _Axis:
    start: datetime
    span: float

    def offset(self, moment: datetime) -> float:
        return (moment - self.start).total_seconds() / self.span * 100

    def place(self, begin: datetime, end: datetime) -> tuple[float, float]:
        """Offset and width (percent) of ``begin``..``end``, at least :data:`MIN_WIDTH` wide and inside 0..100."""
        left = min(max(self.offset(begin), 0.0), 100.0)
        width = max(self.offset(end) - left, MIN_WIDTH)
        return min(left, 100.0 - width), width

    def relative(self, moment: datetime) -> str:
        return format_duration((moment - self.start).total_seconds())


def is_lost(row: StepResult) -> bool:
    """Whether ``row`` is an attempt whose worker went away (recorded by recovery, maybe without a start)."""
    error = row.error
    return row.status == "failed" and isinstance(error, dict) and error.get("type") == "worker_lost"


def _bar(
    row: StepResult,
    axis: _Axis,
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
    title = f"{row.step}, attempt {row.attempt}: {row.status}"
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


def _wait_bar(wait: Wait, axis: _Axis, open_end: datetime) -> WaitBar:
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


def _group_header(group: ParallelGroup, axis: _Axis, open_end: datetime) -> GroupHeader:
    end = group.finished_at or open_end
    offset, width = axis.place(group.created_at, max(end, group.created_at))
    duration = format_duration((end - group.created_at).total_seconds())
    parts = [f"{group.branch_count} branches"]
    if group.failed_count:
        parts.append(f"{group.failed_count} failed")
    if group.pending_count and group.finished_at is None:
        parts.append(f"{group.pending_count} unfinished")
    return GroupHeader(
        name=group.name,
        status=group.status,
        on_error=group.on_error,
        note=", ".join(parts),
        offset=offset,
        width=width,
        label=duration,
        title=f"parallel block {group.name}: {group.status}, open for {duration} ({group.on_error})",
    )


def _bounds(
    run: WorkflowRun,
    steps: Sequence[StepResult],
    groups: Iterable[ParallelGroup],
    waits: Sequence[Wait],
    now: datetime,
) -> _Axis:
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
    return _Axis(start, max((end - start).total_seconds(), MIN_SPAN))


def build_timeline(
    run: WorkflowRun,
    steps: Iterable[StepResult],
    groups: Iterable[ParallelGroup],
    now: datetime,
    waits: Iterable[Wait] = (),
) -> Timeline:
    """Lay out ``run``'s step attempts (``steps``), parallel ``groups`` and ``waits`` on a time axis.

    Rows come in execution order (the rows' ids). Attempts still running end at ``now`` while the
    run is unfinished; in a finished run they end where the axis does and stay marked running.
    Attempts that never started (pending, or cancelled before they ran) are drawn as waiting from
    the moment they were queued. An attempt that waited ends where its first wait begins; its
    waits are a line of their own under its line.
    """
    rows = sorted(steps, key=lambda row: (row.pk is None, row.pk or 0))  # unsaved rows: drawn last
    group_list = sorted(groups, key=lambda group: (group.created_at, group.pk or 0))
    wait_list = sorted(waits, key=lambda wait: (wait.created_at, wait.pk or 0))
    waits_of: dict[int, list[Wait]] = {}
    for wait in wait_list:
        waits_of.setdefault(wait.step_result_id, []).append(wait)
    axis = _bounds(run, rows, group_list, wait_list, now)
    finished = run.status in FINISHED_RUN_STATUSES
    open_end = axis.start + timedelta(seconds=axis.span) if finished else now

    # Each section: its group (None for sequential steps) and its lines, each the attempts of one step.
    layout: list[tuple[ParallelGroup | None, list[list[StepResult]]]] = []
    group_lines: dict[int, list[list[StepResult]]] = {}
    branch_line: dict[tuple[int, str], list[StepResult]] = {}
    groups_by_id = {group.pk: group for group in group_list}
    for row in rows:
        if row.group_id is None:
            if not layout or layout[-1][0] is not None:
                layout.append((None, []))
            lines = layout[-1][1]
            previous = lines[-1][-1] if lines else None
            if previous is not None and previous.step == row.step and row.attempt == previous.attempt + 1:
                lines[-1].append(row)  # a retry of the same step shares its line
            else:
                lines.append([row])
            continue
        if row.group_id not in group_lines:
            group = groups_by_id.get(row.group_id) or ParallelGroup(
                pk=row.group_id, name=f"group {row.group_id}", created_at=row.created_at
            )
            group_lines[row.group_id] = []
            layout.append((group, group_lines[row.group_id]))
        line = branch_line.get((row.group_id, row.step))
        if line is None:
            line = branch_line[row.group_id, row.step] = []
            group_lines[row.group_id].append(line)
        line.append(row)
    # A group without branch rows still shows its span.
    layout += [(group, []) for group in group_list if group.pk not in group_lines]

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
        out = [Row(label=line[0].step, bars=fit_labels(bars))]
        line_waits = [_wait_bar(wait, axis, open_end) for row in line for wait in waits_of.get(row.pk or 0, [])]
        if line_waits:
            out.append(Row(label=line[0].step, bars=(), waits=fit_labels(line_waits)))
        return out

    sections = tuple(
        Section(
            group=_group_header(group, axis, open_end) if group is not None else None,
            rows=tuple(row for line in lines for row in line_rows(line)),
        )
        for group, lines in layout
    )
    return Timeline(
        start=axis.start, span=axis.span, ticks=ticks_for(axis.span), sections=sections, open_ended=not finished
    )
