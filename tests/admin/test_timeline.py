"""The timeline's layout, computed from unsaved rows: no database, no browser."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durable_django.models import ParallelGroup, StepResult, Wait, WorkflowRun
from durable_django.timeline import (
    STATUS_COLOURS,
    Timeline,
    build_timeline,
    format_duration,
    ticks_for,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float | None) -> datetime | None:
    return None if seconds is None else T0 + timedelta(seconds=seconds)


def run(status: str = "completed", started: float | None = 0, finished: float | None = 10) -> WorkflowRun:
    return WorkflowRun(
        id=uuid.uuid4(), workflow="wf", status=status, created_at=T0, started_at=at(started), finished_at=at(finished)
    )


def attempt(
    pk: int,
    step: str,
    status: str,
    started: float | None,
    finished: float | None,
    *,
    attempt: int = 1,
    group: int | None = None,
    created: float | None = None,
) -> StepResult:
    created_at = at(created if created is not None else (started if started is not None else 0))
    return StepResult(
        pk=pk,
        step=step,
        attempt=attempt,
        status=status,
        group_id=group,
        created_at=created_at,
        started_at=at(started),
        finished_at=at(finished),
    )


def group(pk: int, name: str, status: str, created: float, finished: float | None, **counts: int) -> ParallelGroup:
    return ParallelGroup(
        pk=pk,
        name=name,
        status=status,
        on_error="fail_fast",
        created_at=at(created),
        finished_at=at(finished),
        branch_count=counts.get("branches", 3),
        failed_count=counts.get("failed", 0),
        pending_count=counts.get("pending", 0),
    )


def layout(timeline: Timeline) -> list[tuple[str | None, list[tuple[str, list[tuple[Any, ...]]]]]]:
    """Each section's group and rows, each bar as (attempt, status, state, offset, width) rounded."""
    return [
        (
            section.group.name if section.group else None,
            [
                (
                    row.label,
                    [
                        (bar.attempt, bar.status, bar.state, round(bar.offset, 2), round(bar.width, 2))
                        for bar in row.bars
                    ],
                )
                for row in section.rows
            ],
        )
        for section in timeline.sections
    ]


# -- a finished run with a parallel group --------------------------------------------------------

NOW = at(3600)


def finished_run_with_group() -> Timeline:
    steps = [
        attempt(1, "validate", "completed", 0, 1),
        attempt(2, "reserve", "completed", 1, 3, group=7),
        attempt(3, "charge", "failed", 1, 2, group=7),
        attempt(4, "receipt", "completed", 1.5, 4, group=7),
        attempt(5, "charge", "completed", 2, 5, group=7, attempt=2),
        attempt(6, "ship", "completed", 6, 10),
    ]
    return build_timeline(run(), steps, [group(7, "fulfil", "completed", 1, 6, failed=0)], NOW)


def test_sections_follow_execution_order_with_branches_stacked_inside_their_group() -> None:
    assert layout(finished_run_with_group()) == [
        (None, [("validate", [(1, "completed", "done", 0.0, 10.0)])]),
        (
            "fulfil",
            [
                ("reserve", [(1, "completed", "done", 10.0, 20.0)]),
                ("charge", [(1, "failed", "done", 10.0, 10.0), (2, "completed", "done", 20.0, 30.0)]),
                ("receipt", [(1, "completed", "done", 15.0, 25.0)]),
            ],
        ),
        (None, [("ship", [(1, "completed", "done", 60.0, 40.0)])]),
    ]


def test_bars_carry_their_status_colour_labels_and_tooltips() -> None:
    timeline = finished_run_with_group()
    charge = timeline.sections[1].rows[1]
    assert charge.note == "2 attempts"
    assert [(bar.label, bar.colour, bar.label_position) for bar in charge.bars] == [
        ("#1", STATUS_COLOURS["failed"], "inside"),
        ("#2 3.00 s", STATUS_COLOURS["completed"], "inside"),
    ]
    assert charge.bars[0].title == "charge, attempt 1: failed, started at +1.00 s, ran 1.00 s"
    # SVG attributes: a dot decimal whatever the locale.
    assert (charge.bars[1].x, charge.bars[1].w, charge.bars[1].end) == ("20.000", "30.000", "50.000")


def test_group_header_spans_the_time_the_block_was_open() -> None:
    header = finished_run_with_group().sections[1].group
    assert header is not None
    assert (header.name, header.status, header.colour) == ("fulfil", "completed", STATUS_COLOURS["completed"])
    assert (round(header.offset, 2), round(header.width, 2), header.label, header.note) == (
        10.0,
        50.0,
        "5.00 s",
        "3 branches",
    )
    assert header.title == "parallel block fulfil: completed, open for 5.00 s (fail_fast)"


def test_axis_of_a_finished_run_runs_from_its_start_to_its_end() -> None:
    timeline = finished_run_with_group()
    assert (timeline.start, timeline.span, timeline.span_label, timeline.open_ended) == (T0, 10.0, "10.0 s", False)
    assert [(tick.x, tick.label, tick.anchor) for tick in timeline.ticks] == [
        ("0.000", "0", "start"),
        ("20.000", "2 s", "middle"),
        ("40.000", "4 s", "middle"),
        ("60.000", "6 s", "middle"),
        ("80.000", "8 s", "middle"),
        ("100.000", "10 s", "end"),
    ]
    assert timeline.legend == [("completed", STATUS_COLOURS["completed"]), ("failed", STATUS_COLOURS["failed"])]


def test_retries_of_a_sequential_step_share_its_row_and_a_later_visit_gets_a_new_one() -> None:
    steps = [
        attempt(1, "fetch", "failed", 0, 1),
        attempt(2, "fetch", "failed", 2, 3, attempt=2),
        attempt(3, "fetch", "completed", 4, 5, attempt=3),
        attempt(4, "check", "completed", 5, 6),
        # goto("fetch"): attempt numbers start again, so does the row.
        attempt(5, "fetch", "completed", 6, 10),
    ]
    timeline = build_timeline(run(), steps, [], NOW)
    assert [(row.label, [bar.label for bar in row.bars]) for row in timeline.sections[0].rows] == [
        ("fetch", ["#1", "#2", "#3 1.00 s"]),
        ("check", ["1.00 s"]),
        ("fetch", ["4.00 s"]),
    ]
    assert len(timeline.sections) == 1


# -- unfinished runs -----------------------------------------------------------------------------


def test_running_attempts_extend_to_now_and_pending_ones_wait_from_when_they_were_queued() -> None:
    steps = [
        attempt(1, "prepare", "completed", 0, 2),
        attempt(2, "slow", "running", 2, None, group=3),
        attempt(3, "queued", "pending", None, None, group=3, created=2),
    ]
    timeline = build_timeline(
        run("running", finished=None), steps, [group(3, "block", "running", 2, None, pending=2, branches=2)], at(8)
    )
    assert layout(timeline)[1] == (
        "block",
        [
            ("slow", [(1, "running", "running", 25.0, 75.0)]),
            ("queued", [(1, "pending", "waiting", 25.0, 75.0)]),
        ],
    )
    slow, queued = timeline.bars[1:]
    assert (slow.label, slow.duration) == ("running 6.00 s", 6.0)
    assert slow.title == "slow, attempt 1: running, started at +2.00 s, running for 6.00 s"
    assert (queued.label, queued.duration) == ("pending", None)
    assert queued.title == "queued, attempt 1: pending (queued at +2.00 s, not started)"
    header = timeline.sections[1].group
    assert header is not None
    assert (round(header.width, 2), header.note) == (75.0, "2 branches, 2 unfinished")
    assert (timeline.span, timeline.open_ended, timeline.span_label) == (8.0, True, "8.00 s")


def test_a_branch_still_running_in_a_finished_run_ends_at_the_axis_end() -> None:
    steps = [
        attempt(1, "boom", "failed", 0, 1, group=1),
        attempt(2, "slow", "running", 0, None, group=1),
        attempt(3, "never", "cancelled", None, 1, group=1, created=0),
    ]
    timeline = build_timeline(run("failed", finished=4), steps, [group(1, "race", "failed", 0, 1, failed=1)], at(3600))
    assert layout(timeline) == [
        (
            "race",
            [
                ("boom", [(1, "failed", "done", 0.0, 25.0)]),
                ("slow", [(1, "running", "running", 0.0, 100.0)]),
                ("never", [(1, "cancelled", "waiting", 0.0, 25.0)]),
            ],
        )
    ]
    assert (timeline.span, timeline.open_ended) == (4.0, False)


def test_a_run_that_has_not_started_has_an_empty_timeline() -> None:
    timeline = build_timeline(run("pending", started=None, finished=None), [], [], at(5))
    assert (timeline.is_empty, timeline.bars, timeline.span) == (True, [], 5.0)


def test_a_group_without_branch_rows_still_gets_its_section() -> None:
    timeline = build_timeline(run(), [], [group(4, "empty", "completed", 2, 3, branches=0)], NOW)
    assert layout(timeline) == [("empty", [])]


# -- sizes and labels ----------------------------------------------------------------------------


def test_an_instant_attempt_is_drawn_with_the_minimum_width_and_its_label_beside_it() -> None:
    steps = [
        attempt(1, "instant", "completed", 0, 0),
        attempt(2, "long", "completed", 0, 9.9),
        attempt(3, "late", "completed", 9.9, 10),
    ]
    first, second, last = build_timeline(run(), steps, [], NOW).bars
    assert (first.width, first.label, first.label_position, first.label_x, first.label_anchor) == (
        0.4,
        "0 ms",
        "right",
        "0.900",
        "start",
    )
    assert (second.label_position, second.label_x) == ("inside", "0.400")
    # At the very end there is no room on the right: the label goes to the left of the bar.
    assert (round(last.offset, 2), last.label, last.label_position, last.label_x, last.label_anchor) == (
        99.0,
        "100 ms",
        "left",
        "98.500",
        "end",
    )


def test_a_run_where_nothing_took_any_time_still_has_an_axis() -> None:
    timeline = build_timeline(run(finished=0), [attempt(1, "noop", "completed", 0, 0)], [], NOW)
    assert (timeline.span, [tick.label for tick in timeline.ticks]) == (0.001, ["0", "1 ms"])
    assert (timeline.bars[0].offset, timeline.bars[0].width) == (0.0, 0.4)


@pytest.mark.parametrize(
    ("span", "labels"),
    [
        (0.75, ["0", "100 ms", "200 ms", "300 ms", "400 ms", "500 ms", "600 ms", "700 ms"]),
        (3, ["0", "0.5 s", "1 s", "1.5 s", "2 s", "2.5 s", "3 s"]),
        (45, ["0", "10 s", "20 s", "30 s", "40 s"]),
        (200, ["0", "30 s", "1 min", "1 min 30 s", "2 min", "2 min 30 s", "3 min"]),
        (600, ["0", "2 min", "4 min", "6 min", "8 min", "10 min"]),
        (3 * 86400, ["0", "12 h", "1 d", "1 d 12 h", "2 d", "2 d 12 h", "3 d"]),
    ],
)
def test_ticks_fall_on_round_intervals(span: float, labels: list[str]) -> None:
    ticks = ticks_for(span)
    assert [tick.label for tick in ticks] == labels
    assert len(ticks) <= 8


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 ms"),
        (0.0002, "<1 ms"),
        (0.0123, "12 ms"),
        (1.254, "1.25 s"),
        (42.46, "42.5 s"),
        (60, "1 min"),
        (184.4, "3 min 4 s"),
        (7500, "2 h 5 min"),
        (7200, "2 h"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# -- waits -----------------------------------------------------------------------------------------


def wait(pk: int, row: int, kind: str, name: str, created: float, resolved: float | None, **fields: Any) -> Wait:
    status = fields.pop("status", "waiting" if resolved is None else "resolved")
    return Wait(
        pk=pk,
        step_result_id=row,
        kind=kind,
        name=name,
        status=status,
        created_at=at(created),
        resolved_at=at(resolved),
        **fields,
    )


def test_a_wait_gets_a_line_under_its_step_and_the_step_bar_ends_where_the_wait_begins() -> None:
    steps = [
        attempt(1, "prepare", "completed", 0, 1),
        # The engine may keep the attempt open while it waits: its bar still ends at the wait.
        attempt(2, "approve", "completed", 1, 9),
        attempt(3, "ship", "completed", 9, 10),
    ]
    waits = [wait(1, 2, "input", "approve", 2, 9, input_kind="approval")]
    timeline = build_timeline(run(), steps, [], NOW, waits=waits)
    rows = timeline.sections[0].rows
    assert [(row.label, row.is_waits) for row in rows] == [
        ("prepare", False),
        ("approve", False),
        ("approve", True),
        ("ship", False),
    ]
    approve = rows[1].bars[0]
    assert (round(approve.offset, 2), round(approve.width, 2), approve.state, approve.label) == (
        10.0,
        10.0,
        "done",
        "1.00 s",
    )
    (bar,) = rows[2].waits
    assert (round(bar.offset, 2), round(bar.width, 2), bar.state, bar.status) == (20.0, 70.0, "closed", "resolved")
    assert (bar.what, bar.label, bar.colour) == ("input approve", "input approve · after 7.00 s", "#0f766e")
    assert bar.title == "input approve: resolved, from +2.00 s, for 7.00 s"
    # The attempt bars are still the timeline's bars; waits are apart.
    assert len(timeline.bars) == 3 and timeline.waits == [bar]
    assert ("resolved", STATUS_COLOURS["resolved"]) in timeline.legend


def test_an_open_wait_runs_to_now_and_says_what_it_waits_for() -> None:
    steps = [attempt(1, "pay", "waiting", 0, None)]
    waits = [
        wait(
            1,
            1,
            "event",
            "paid|refused",
            1,
            None,
            events=["paid", "refused"],
            mode="any",
            due_at=at(61),
            timeout_seconds=60,
        )
    ]
    timeline = build_timeline(run("waiting", finished=None), steps, [], at(5), waits=waits)
    pay, waits_row = timeline.sections[0].rows
    assert (pay.bars[0].state, round(pay.bars[0].width, 2), pay.bars[0].colour) == ("done", 20.0, "#7e22ce")
    (bar,) = waits_row.waits
    assert (round(bar.offset, 2), round(bar.width, 2), bar.state) == (20.0, 80.0, "open")
    assert bar.label == "any of paid, refused · waiting 4.00 s"
    assert bar.title == "any of paid, refused: waiting, from +1.00 s, waiting for 4.00 s; times out at +1 min 1 s"


def test_waits_of_branches_are_drawn_inside_their_group_and_several_waits_share_a_line() -> None:
    steps = [
        attempt(1, "mail", "completed", 0, 1, group=5),
        attempt(2, "pause", "completed", 0, 10, group=5),
    ]
    waits = [
        wait(1, 1, "event", "sent", 0.5, 1, events=["sent"]),
        wait(2, 2, "sleep", "pause", 0, 4, due_at=at(4)),
        wait(3, 2, "sleep", "pause", 5, 10, status="timed_out", due_at=at(10)),
    ]
    timeline = build_timeline(run(), steps, [group(5, "notify", "completed", 0, 10, branches=2)], NOW, waits=waits)
    (section,) = timeline.sections
    assert section.group is not None
    assert [(row.label, row.is_waits, row.note) for row in section.rows] == [
        ("mail", False, ""),
        ("mail", True, ""),
        ("pause", False, ""),
        ("pause", True, "2 waits"),
    ]
    assert [bar.label for bar in section.rows[1].waits] == ["event sent · after 500 ms"]
    assert [bar.label for bar in section.rows[3].waits] == ["sleep 4.00 s", "sleep 5.00 s · timed out after 5.00 s"]
    # The pause branch's code ran no time before its first sleep.
    assert section.rows[2].bars[0].width == 0.4


def test_a_wait_resolved_after_the_last_step_stretches_the_axis_of_a_finished_run() -> None:
    steps = [attempt(1, "hold", "completed", 0, 1)]
    waits = [wait(1, 1, "input", "ok", 1, 20, input_kind="text")]
    timeline = build_timeline(run(finished=None, status="cancelled"), steps, [], NOW, waits=waits)
    assert timeline.span == 20.0
