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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, Wait, WorkflowRun

#: Colour of each run, step and group status: timeline bars and the admin's status badges.
#: Dark enough for white text on top in both light and dark admin themes.
STATUS_COLOURS: dict[str, str] = {
    "pending": "#6b7280",
    "running": "#1d4ed8",
    "waiting": "#7e22ce",
    "completed": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#b45309",
    # Statuses of waits.
    "resolved": "#0f766e",
    "timed_out": "#a16207",
}
UNKNOWN_COLOUR = "#6b7280"

# Label placement assumes a track about this wide; a narrower screen only clips some labels.
TRACK_PX = 900
CHAR_PX = 6.6
# A bar that lasted no time at all still gets this much width (percent), so it can be seen.
MIN_WIDTH = 0.4
# The shortest axis: below this every tick would read "0 ms".
MIN_SPAN = 0.001

# Tick spacings (seconds) the axis picks from: the smallest one that gives at most MAX_TICKS ticks.
MAX_TICKS = 8
_NICE_STEPS: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)

BarState = Literal["done", "running", "waiting"]
WaitState = Literal["open", "closed"]
LabelPosition = Literal["inside", "right", "left"]


def status_colour(status: str) -> str:
    """The colour of a run, step or group status."""
    return STATUS_COLOURS.get(status, UNKNOWN_COLOUR)


def format_duration(seconds: float | None) -> str:
    """``"12 ms"``, ``"1.25 s"``, ``"42.5 s"``, ``"3 min 4 s"``, ``"2 h 5 min"``, ``"3 d 4 h"``; ``"—"`` for ``None``."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return "<1 ms" if 0 < seconds < 0.0005 else f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        minutes = rest // 60
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, rest = divmod(whole, 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if hours else f"{days} d"


def _format_tick(seconds: float, step: float, span: float) -> str:
    """One unit along an axis: milliseconds on a sub-second axis, then seconds, then minutes and up."""
    if not seconds:
        return "0"
    if span < 1:
        return f"{seconds * 1000:.0f} ms"
    if step < 60:
        return f"{seconds:g} s" if seconds < 60 else format_duration(seconds)
    return format_duration(seconds)


def _pct(value: float) -> str:
    # SVG attributes need a dot decimal whatever the active locale; templates would localise a float.
    return f"{value:.3f}"


@dataclass(frozen=True)
class Tick:
    """A labelled mark of the time axis, ``offset`` percent from its start."""

    offset: float
    label: str

    @property
    def x(self) -> str:
        return _pct(self.offset)

    @property
    def anchor(self) -> str:
        """SVG ``text-anchor`` that keeps the label inside the axis."""
        if self.offset <= 2:
            return "start"
        return "end" if self.offset >= 95 else "middle"


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
        return _pct(self.offset)

    @property
    def w(self) -> str:
        return _pct(self.width)


class _Labelled(_Span):
    """A bar with a label inside it or just past either end."""

    label_position: LabelPosition

    @property
    def label_x(self) -> str:
        """Where the label's anchor goes: inside the bar's start, or just past either end."""
        if self.label_position == "inside":
            return _pct(self.offset + 0.4)
        if self.label_position == "right":
            return _pct(self.offset + self.width + 0.5)
        return _pct(self.offset - 0.5)

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

    @property
    def end(self) -> str:
        return _pct(self.offset + self.width)


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
    def has_waiting(self) -> bool:
        return any(bar.state == "waiting" for bar in self.bars)

    @property
    def legend(self) -> list[tuple[str, str]]:
        """``(status, colour)`` of each status drawn, in :data:`STATUS_COLOURS` order."""
        seen = {bar.status for bar in self.bars} | {s.group.status for s in self.sections if s.group is not None}
        seen |= {wait.status for wait in self.waits}
        return [(status, colour) for status, colour in STATUS_COLOURS.items() if status in seen]


def ticks_for(span: float) -> tuple[Tick, ...]:
    """Evenly spaced ticks at a round interval, at most :data:`MAX_TICKS`, starting at 0."""
    span = max(span, MIN_SPAN)
    step = next((s for s in _NICE_STEPS if span / s <= MAX_TICKS), None)
    if step is None:
        step = _NICE_STEPS[-1] * math.ceil(span / (_NICE_STEPS[-1] * MAX_TICKS))
    count = int(span / step + 1e-9)
    return tuple(Tick(offset=i * step / span * 100, label=_format_tick(i * step, step, span)) for i in range(count + 1))


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


def _label_position(offset: float, width: float, label: str) -> LabelPosition:
    needed = (len(label) * CHAR_PX + 8) / TRACK_PX * 100
    if width >= needed:
        return "inside"
    if offset + width + needed <= 100:
        return "right"
    return "left" if offset >= needed else "inside"


def _bar(row: StepResult, axis: _Axis, open_end: datetime, numbered: bool, waited: datetime | None = None) -> Bar:
    """``waited``: when the attempt's first wait began; its code ran until then, the wait bars go on."""
    begin = row.started_at or row.created_at
    finished_at = row.finished_at
    if waited is not None and row.started_at is not None and (finished_at is None or finished_at > waited):
        finished_at = max(waited, begin)
    if row.started_at is None:
        state: BarState = "waiting"
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
    elif state == "running":
        label = f"{prefix}running {format_duration(duration)}"
    else:
        label = f"{prefix}{row.status}"
    title = f"{row.step}, attempt {row.attempt}: {row.status}"
    if state == "waiting":
        title += f" (queued at +{axis.relative(begin)}, not started)"
    else:
        verb = "ran" if state == "done" else "running for"
        title += f", started at +{axis.relative(begin)}, {verb} {format_duration(duration)}"
    return Bar(
        step=row.step,
        attempt=row.attempt,
        status=row.status,
        state=state,
        offset=offset,
        width=width,
        label=label,
        title=title,
        label_position=_label_position(offset, width, label),
        duration=duration,
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
        label_position=_label_position(offset, width, label),
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
    rows = sorted(steps, key=lambda row: row.pk or 0)
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

    def line_rows(line: list[StepResult]) -> list[Row]:
        bars = []
        for row in line:
            row_waits = waits_of.get(row.pk or 0)
            waited = row_waits[0].created_at if row_waits else None
            bars.append(_bar(row, axis, open_end, numbered=len(line) > 1 or row.attempt > 1, waited=waited))
        out = [Row(label=line[0].step, bars=tuple(bars))]
        line_waits = [_wait_bar(wait, axis, open_end) for row in line for wait in waits_of.get(row.pk or 0, [])]
        if line_waits:
            out.append(Row(label=line[0].step, bars=(), waits=tuple(line_waits)))
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
