"""The layout of control flow in the flow graph and the timeline, from unsaved rows: no database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable_django import branch, foreach, step
from durable_django.admin_items import ItemSummary, summarise_rows
from durable_django.admin_run import summary
from durable_django.conf import durable_settings
from durable_django.flowgraph import build_flowgraph
from durable_django.models import StepResult
from durable_django.timeline import build_timeline
from tests.admin.test_flowgraph import definition, noop, overlap, run
from tests.admin.test_timeline import NOW, at, attempt, group

ROUTED = definition(
    "routed",
    [
        step("classify", noop),
        branch(
            "route",
            "tier",
            {"gold": [step("call", noop), foreach("gifts", "gifts", noop)], "silver": [step("email", noop)]},
            default=[],
        ),
        step("close", noop),
    ],
)


def choice(pk: int, case: str | None, value: Any, started: float) -> StepResult:
    row = attempt(pk, "route", "completed", started, started)
    row.kind = "branch"
    row.output = {"case": case, "default": case is None, "value": value}
    return row


def item(pk: int, index: int, status: str, started: float | None, finished: float | None, **fields: Any) -> StepResult:
    row = attempt(pk, "gifts", status, started, finished, group=5, **fields)
    row.item_index = index
    return row


def gold_rows() -> list[StepResult]:
    return [
        attempt(1, "classify", "completed", 0, 1),
        choice(2, "gold", "gold", 1),
        attempt(3, "call", "completed", 1, 2),
        item(4, 0, "completed", 2, 3),
        item(5, 1, "failed", 2, 3),
        item(6, 1, "completed", 3, 4, attempt=2),
        attempt(7, "close", "completed", 5, 6),
    ]


def gifts() -> Any:
    block = group(5, "gifts", "completed", 2, 5, branches=2)
    block.kind = "foreach"
    return block


def test_a_branch_block_is_a_lane_per_case_the_one_taken_marked_the_others_greyed_out() -> None:
    graph = build_flowgraph(run(), ROUTED, gold_rows(), [gifts()], NOW)
    assert [(lane.case, lane.label, lane.taken, lane.skipped) for lane in graph.lanes] == [
        ("gold", "✓ case gold", True, False),
        ("silver", "case silver", False, True),
        (None, "default", False, True),
    ]
    route = graph.box("route")
    assert route is not None and (route.kind, route.status, route.note) == (
        "branch",
        "completed",
        'on tier = "gold" → case gold',
    )
    assert {node.key: node.skipped for node in graph.nodes} == {
        "classify": False,
        "call": False,
        "gifts/items": False,
        "email": True,
        "close": False,
    }
    # Each case's steps are inside its lane; nothing overlaps.
    for lane in graph.lanes:
        inside = [n for n in graph.nodes if lane.y <= n.y and n.y + n.h <= lane.y + lane.h and n.key != "classify"]
        assert [n.key for n in inside] == {"gold": ["call", "gifts/items"], "silver": ["email"], None: []}[lane.case]
    assert not overlap([(n.x, n.y, n.w, n.h) for n in graph.nodes])
    gifts_box = graph.box("gifts")
    assert gifts_box is not None and route.x < gifts_box.x and gifts_box.x + gifts_box.w < route.x + route.w
    # Into the case and out of the block after it: no goto, and the edges the run took are drawn so.
    assert graph.gotos == []
    taken = [(edge.source, edge.target) for edge in graph.edges if edge.kind == "next" and edge.taken]
    assert taken == [("call", "gifts"), ("classify", "route"), ("route", "close")]
    items = graph.node("gifts/items")
    assert items is not None and (items.label, items.detail, items.status) == ("2 items", "2 completed", "completed")


def test_before_the_choice_no_lane_is_greyed_out_and_an_empty_default_is_a_line_through() -> None:
    graph = build_flowgraph(run("running", "route"), ROUTED, [attempt(1, "classify", "completed", 0, 1)], [], NOW)
    assert [(lane.taken, lane.skipped) for lane in graph.lanes] == [(False, False)] * 3
    route = graph.box("route")
    assert route is not None and route.current and route.note == "on tier"
    default = [edge for edge in graph.edges if edge.target == "route/default" and edge.kind == "fork"]
    assert len(default) == 1 and " L" in default[0].path  # straight on through the empty lane
    # A jump from a case's step back to the first step is a goto.
    rows = [*gold_rows()[:3], attempt(8, "classify", "completed", 3, 4)]
    assert [(e.source, e.target) for e in build_flowgraph(run(), ROUTED, rows, [], NOW).gotos] == [("call", "classify")]


def test_on_the_timeline_the_steps_of_the_case_taken_are_under_its_branch_block() -> None:
    timeline = build_timeline(run(), gold_rows(), [gifts()], NOW, definition=ROUTED)
    assert [(section.kind, section.depth, [row.label for row in section.rows]) for section in timeline.sections] == [
        ("steps", 0, ["classify"]),
        ("branch", 0, []),
        ("steps", 1, ["call"]),
        ("block", 1, ["item 0", "item 1"]),
        ("steps", 0, ["close"]),
    ]
    header = timeline.sections[1].branch
    assert header is not None and (header.label, header.value, header.case) == ("case gold", 'tier = "gold"', "gold")
    item_1 = timeline.sections[3].rows[1]
    assert (item_1.item, item_1.note, [bar.status for bar in item_1.bars]) == (1, "2 attempts", ["failed", "completed"])
    assert item_1.bars[0].title.startswith("gifts item 1, attempt 1: failed")
    # Without the definition, nothing says which steps are the case's.
    flat = build_timeline(run(), gold_rows(), [gifts()], NOW)
    assert [(section.kind, section.depth) for section in flat.sections] == [
        ("steps", 0),
        ("branch", 0),
        ("steps", 0),
        ("block", 0),
        ("steps", 0),
    ]


def test_a_foreach_block_draws_the_items_given_and_sums_up_the_others() -> None:
    rows = [item(10 + i, i, "completed", 1 + i, 2 + i) for i in range(2)]
    summary = ItemSummary(
        group_id=5,
        items=500,
        statuses={"completed": 480, "failed": 20},
        attempts=510,
        begin=at(1),
        end=at(9),
        drawn={0: "completed", 1: "completed"},
    )
    current = run()
    timeline = build_timeline(current, rows, [gifts()], NOW, items={5: summary})
    (section,) = timeline.sections
    assert section.group is not None
    assert section.group.note == "500 items: 480 completed, 20 failed, 510 attempts (10 retries)"
    assert [row.label for row in section.rows] == ["item 0", "item 1", "498 more items"]
    more = section.rows[-1].more
    assert more is not None
    assert (more.count, more.status, more.label) == (498, "completed", "478 completed, 20 failed")
    assert (round(more.offset, 2), round(more.width, 2)) == (10.0, 80.0)
    assert timeline.has_more


def test_items_are_counted_by_the_status_of_their_latest_attempt() -> None:
    (summary,) = summarise_rows(gold_rows()).values()
    assert (summary.items, summary.statuses, summary.attempts, summary.retries, summary.hidden) == (
        2,
        {"completed": 2},
        3,
        1,
        0,
    )
    assert (summary.begin, summary.end) == (at(2), at(4))


def test_an_item_waiting_for_its_retry_is_named_by_its_index_in_the_summary() -> None:
    retry = item(6, 1, "pending", None, None, attempt=2)
    retry.lease_expires_at = NOW + timedelta(seconds=3 + durable_settings.LEASE_SECONDS)
    lines = summary(run("running", "gifts"), None, [item(5, 1, "failed", 2, 3), retry], NOW)["lines"]
    assert len(lines) == 1 and lines[0].startswith("Item 1 of gifts: attempt 2 is due at ")
    assert lines[0].endswith("(in 3.00 s)")
