"""What the run page's pictures share: status colours, durations and a time axis's ticks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, TypeVar

#: Colour of each run, step and group status: timeline bars and the admin's status badges.
#: Dark enough for white text on top in both light and dark admin themes.
STATUS_COLOURS: dict[str, str] = {
    "pending": "#6b7280",
    "running": "#1d4ed8",
    "waiting": "#7e22ce",
    # A failed run undoing its completed steps.
    "compensating": "#c2410c",
    "completed": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#b45309",
    # Statuses of waits.
    "resolved": "#0f766e",
    "timed_out": "#a16207",
}
UNKNOWN_COLOUR = "#6b7280"

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


def pct(value: float) -> str:
    # SVG attributes need a dot decimal whatever the active locale; templates would localise a float.
    return f"{value:.3f}"


@dataclass(frozen=True)
class Tick:
    """A labelled mark of the time axis, ``offset`` percent from its start."""

    offset: float
    label: str

    @property
    def x(self) -> str:
        return pct(self.offset)

    @property
    def anchor(self) -> str:
        """SVG ``text-anchor`` that keeps the label inside the axis."""
        if self.offset <= 2:
            return "start"
        return "end" if self.offset >= 95 else "middle"


def ticks_for(span: float) -> tuple[Tick, ...]:
    """Evenly spaced ticks at a round interval, at most :data:`MAX_TICKS`, starting at 0."""
    span = max(span, MIN_SPAN)
    step = next((s for s in _NICE_STEPS if span / s <= MAX_TICKS), None)
    if step is None:
        step = _NICE_STEPS[-1] * math.ceil(span / (_NICE_STEPS[-1] * MAX_TICKS))
    count = int(span / step + 1e-9)
    return tuple(Tick(offset=i * step / span * 100, label=_format_tick(i * step, step, span)) for i in range(count + 1))


# Labels are placed for a track at least this wide (a run page at 1280 pixels): on a wider
# screen they only get more room. A label that would overlap another, or a bar it does not
# belong to, is shortened or left out; the bar's tooltip says it all anyway.
TRACK_PX = 600
CHAR_PX = 6.6
LABEL_GAP_PX = 4

LabelPosition = Literal["inside", "right", "left", "hidden"]


def label_position(offset: float, width: float, label: str) -> LabelPosition:
    needed = (len(label) * CHAR_PX + 8) / TRACK_PX * 100
    if width >= needed:
        return "inside"
    if offset + width + needed <= 100:
        return "right"
    return "left" if offset >= needed else "inside"


class Placed(Protocol):
    """A bar whose label :func:`fit_labels` places: offset and width in percent of the track."""

    @property
    def offset(self) -> float: ...
    @property
    def width(self) -> float: ...
    @property
    def label(self) -> str: ...
    @property
    def short_label(self) -> str: ...


Fitted = TypeVar("Fitted", bound=Placed)


def fit_labels(bars: Sequence[Fitted]) -> tuple[Fitted, ...]:
    """The bars of one line with labels that overlap neither each other nor another bar.

    Left to right, each bar gets its label inside it, right of it or left of it, whichever fits
    first; else its short label (``#2``), else none (its tooltip still says everything).
    """
    spans = [(bar.offset * TRACK_PX / 100, (bar.offset + bar.width) * TRACK_PX / 100) for bar in bars]
    taken: list[tuple[float, float]] = []

    def free(index: int, left: float, right: float) -> bool:
        if left < 0 or right > TRACK_PX:
            return False
        if any(left < end and start < right for start, end in taken):
            return False
        return not any(left < end and start < right for i, (start, end) in enumerate(spans) if i != index)

    fitted = []
    for index, bar in enumerate(bars):
        start, end = spans[index]
        choice: tuple[str, LabelPosition, tuple[float, float]] | None = None
        for text in dict.fromkeys(t for t in (bar.label, bar.short_label) if t):
            needed = len(text) * CHAR_PX + 8
            inside = (start, start + needed)
            right = (end + LABEL_GAP_PX, end + LABEL_GAP_PX + needed)
            left = (start - LABEL_GAP_PX - needed, start - LABEL_GAP_PX)
            if end - start >= needed and not any(inside[0] < e and s < inside[1] for s, e in taken):
                choice = (text, "inside", inside)
            elif free(index, *right):
                choice = (text, "right", right)
            elif free(index, *left):
                choice = (text, "left", left)
            if choice is not None:
                break
        if choice is None:
            fitted.append(replace(bar, label="", label_position="hidden"))  # type: ignore[type-var]
            continue
        text, position, interval = choice
        taken.append(interval)
        fitted.append(replace(bar, label=text, label_position=position))  # type: ignore[type-var]
    return tuple(fitted)
