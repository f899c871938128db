"""The parts of the run timeline: bars, rows, section headers, and the axis they are placed on.

Frozen dataclasses the template draws (offsets and widths in percent of the axis), and the
functions that build a section's header: a parallel or foreach group, a branch block's choice,
a run's compensations. :mod:`durable_django.timeline` lays them out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .admin_items import ItemSummary, counts_text
from .admin_logs import LogLine, levels_note, log_lines
from .models import ParallelGroup, StepResult, WorkflowRun
from .timeaxis import STATUS_COLOURS, LabelPosition, Tick, format_duration, label_position, pct, status_colour

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
class MoreBar(_Labelled):
    """The items of a foreach block left off: one pale bar from the first item's start to the last's end."""

    count: int
    status: str  # the most frequent status of the items left off
    offset: float
    width: float
    label: str
    title: str
    label_position: LabelPosition
    short_label: str = ""


@dataclass(frozen=True)
class AttemptLogs:
    """What one attempt of a timeline line logged."""

    attempt: int
    lines: tuple[LogLine, ...]


def attempt_logs(rows: Sequence[StepResult]) -> tuple[AttemptLogs, ...]:
    """The logs of the attempts ``rows`` of one line, those that logged anything."""
    return tuple(AttemptLogs(row.attempt, tuple(log_lines(row.logs))) for row in rows if row.logs)


@dataclass(frozen=True)
class Row:
    """One line of the timeline: a sequential step, a branch or an item, with one bar per attempt.

    The line of a step's waits has no attempt bars but its ``waits`` (``is_waits``); the line of
    a foreach block's items left off has its ``more`` bar. ``item``: a foreach item's index;
    ``compensates``: a compensation's line (its label is the undone step's name).
    """

    label: str
    bars: tuple[Bar, ...]
    waits: tuple[WaitBar, ...] = ()
    item: int | None = None
    more: MoreBar | None = None
    compensates: bool = False
    logs: tuple[AttemptLogs, ...] = ()

    @property
    def logs_note(self) -> str:
        """``"3 records: 3 INFO"`` (of every attempt of the line)."""
        return levels_note([line for attempt in self.logs for line in attempt.lines])

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
    """The header row of a parallel or foreach group: its name, outcome and the span it was open."""

    name: str
    status: str
    on_error: str
    note: str
    offset: float
    width: float
    label: str
    title: str
    pk: int | None = None
    kind: str = "parallel"
    retried: int = 0  # earlier outcomes kept in its history

    @property
    def kind_label(self) -> str:
        return "for each" if self.kind == "foreach" else ""


@dataclass(frozen=True)
class BranchHeader(_Span):
    """The header row of a branch block: the case it took, on which value, when."""

    name: str
    status: str
    case: str | None
    default: bool
    value: str  # the value, as one line of JSON
    offset: float
    width: float
    label: str  # "case fan", "default", "no case matched"
    title: str


@dataclass(frozen=True)
class CompensationHeader(_Span):
    """The header row of a run's compensations: how they went, and the span they ran."""

    status: str  # compensating while they run, then the run's compensation: completed or failed
    note: str
    offset: float
    width: float
    title: str


@dataclass(frozen=True)
class Section:
    """Consecutive sequential steps (no header), one group and its branches or items, a branch block's
    choice, or the run's compensations. ``depth``: how many branch blocks' cases it is inside."""

    group: GroupHeader | None
    rows: tuple[Row, ...]
    branch: BranchHeader | None = None
    compensation: CompensationHeader | None = None
    depth: int = 0

    @property
    def kind(self) -> str:
        if self.group is not None:
            return "block"
        if self.branch is not None:
            return "branch"
        return "compensations" if self.compensation is not None else "steps"


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
    def has_more(self) -> bool:
        return any(row.more is not None for section in self.sections for row in section.rows)

    @property
    def has_waiting(self) -> bool:
        return any(bar.state == "waiting" for bar in self.bars)

    @property
    def legend(self) -> list[tuple[str, str]]:
        """``(status, colour)`` of each status drawn, in :data:`STATUS_COLOURS` order."""
        seen = {bar.status for bar in self.bars} | {s.group.status for s in self.sections if s.group is not None}
        seen |= {wait.status for wait in self.waits}
        seen |= {s.branch.status for s in self.sections if s.branch is not None}
        seen |= {s.compensation.status for s in self.sections if s.compensation is not None}
        seen |= {row.more.status for s in self.sections for row in s.rows if row.more is not None}
        return [(status, colour) for status, colour in STATUS_COLOURS.items() if status in seen]


@dataclass
class Axis:
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


def group_header(group: ParallelGroup, axis: Axis, open_end: datetime, items: ItemSummary | None = None) -> GroupHeader:
    end = group.finished_at or open_end
    offset, width = axis.place(group.created_at, max(end, group.created_at))
    duration = format_duration((end - group.created_at).total_seconds())
    foreach = group.kind == "foreach"
    if foreach and items is not None:
        parts = [items.counts_label] + ([items.attempts_label] if items.attempts_label else [])
    else:
        parts = [f"{group.branch_count} {'items' if foreach else 'branches'}"]
        if group.failed_count:
            parts.append(f"{group.failed_count} failed")
        if group.pending_count and group.finished_at is None:
            parts.append(f"{group.pending_count} unfinished")
    retried = len(group.history or [])
    if retried:
        parts.append(f"retried {retried}\u00d7" if retried > 1 else "retried")
    what = "foreach block" if foreach else "parallel block"
    return GroupHeader(
        name=group.name,
        status=group.status,
        on_error=group.on_error,
        note=", ".join(parts),
        offset=offset,
        width=width,
        label=duration,
        title=f"{what} {group.name}: {group.status}, open for {duration} ({group.on_error})",
        pk=group.pk,
        kind=group.kind or "parallel",
        retried=retried,
    )


def more_bar(items: ItemSummary, axis: Axis, open_end: datetime) -> MoreBar:
    """The items of ``items`` left off, as one bar over the time the block's items ran."""
    begin = items.begin or axis.start
    end = max(items.end or open_end, begin)
    offset, width = axis.place(begin, end)
    left = items.hidden_statuses
    status = max(left.items(), key=lambda pair: pair[1])[0] if left else "completed"
    label = counts_text(left)
    title = (
        f"{items.hidden:,} more items, not drawn: {label}; the block's items ran from "
        f"+{axis.relative(begin)} to +{axis.relative(end)}"
    )
    return MoreBar(
        count=items.hidden,
        status=status,
        offset=offset,
        width=width,
        label=label,
        title=title,
        label_position=label_position(offset, width, label),
    )


def branch_header(row: StepResult, axis: Axis, open_end: datetime, on: str) -> BranchHeader:
    begin = row.started_at or row.created_at
    offset, width = axis.place(begin, max(row.finished_at or open_end, begin))
    output = row.output if isinstance(row.output, dict) else {}
    case = output.get("case")
    default = bool(output.get("default"))
    value = json.dumps(output.get("value"), ensure_ascii=False, default=str) if "value" in output else ""
    if len(value) > 60:
        value = value[:59] + "\u2026"
    if row.status == "failed":
        error = row.error if isinstance(row.error, dict) else {}
        label = "no case matched" if error.get("type") == "no_branch_matched" else "failed"
        if "value" in error and not value:
            value = json.dumps(error["value"], ensure_ascii=False, default=str)[:60]
    else:
        label = "default" if default else f"case {case}"
    where = f"{on} = {value}" if on and value else (f"value {value}" if value else "")
    title = f"branch block {row.step}: {label}" + (f" ({where})" if where else "") + f", at +{axis.relative(begin)}"
    return BranchHeader(
        name=row.step,
        status=row.status,
        case=case if isinstance(case, str) else None,
        default=default,
        value=where,
        offset=offset,
        width=width,
        label=label,
        title=title,
    )


def compensation_header(
    run: WorkflowRun, rows: Sequence[StepResult], axis: Axis, open_end: datetime
) -> CompensationHeader:
    begin = min(row.started_at or row.created_at for row in rows)
    end = max([row.finished_at or open_end for row in rows] + [begin])
    offset, width = axis.place(begin, end)
    latest: dict[Any, StepResult] = {}
    for row in rows:
        latest[row.compensates_id or row.step] = row
    outcomes: dict[str, int] = {}
    for row in latest.values():
        outcomes[row.status] = outcomes.get(row.status, 0) + 1
    undone = outcomes.pop("completed", 0)
    parts = [f"{undone} {'step' if undone == 1 else 'steps'} undone"] + [
        f"{count} {status}" for status, count in outcomes.items()
    ]
    # While they run, the run's own status says so; then how they went.
    status = "compensating" if run.status == "compensating" or not run.compensation else run.compensation
    return CompensationHeader(
        status=status,
        note=", ".join(parts),
        offset=offset,
        width=width,
        title=f"compensations: {status}, from +{axis.relative(begin)} for "
        f"{format_duration((end - begin).total_seconds())}",
    )
