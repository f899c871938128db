"""The flow graph, the run page's summary and the timeline's fixes: pure functions of rows, no browser."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

from durable_django import ok, parallel, step
from durable_django.admin_run import error_summary, live_step, step_table, summary
from durable_django.conf import durable_settings
from durable_django.definition import Workflow, _validate, find_workflow
from durable_django.flowgraph import MAX_BRANCHES, build_flowgraph, describe_block, describe_retry
from durable_django.flowsvg import render_svg
from durable_django.models import WorkflowRun
from durable_django.timeline import build_timeline
from tests.admin.test_timeline import NOW, at, attempt, group


def definition(name: str, nodes: list[Any]) -> Workflow:
    """A validated definition that is not registered (the registry stays as it is)."""
    return Workflow(name, _validate(name, nodes, None))


def noop(ctx: dict[str, Any]) -> Any:
    return ok({})


def merge_totals(ctx: dict[str, Any], results: dict[str, Any]) -> Any:
    return ok({})


LINEAR = definition("linear", [step("a", noop), step("b", noop, retry={"max_attempts": 3, "base": 2}), step("c", noop)])


def run(status: str = "completed", current: str = "", **fields: Any) -> WorkflowRun:
    return WorkflowRun(
        id=uuid.uuid4(),
        workflow="linear",
        status=status,
        current_step=current,
        created_at=at(0),
        started_at=at(0),
        finished_at=at(10) if status in ("completed", "failed", "cancelled") else None,
        **fields,
    )


def overlap(boxes: list[tuple[float, float, float, float]]) -> bool:
    return any(
        a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
        for a, b in itertools.combinations(boxes, 2)
    )


# -- structure ------------------------------------------------------------------------------------


def test_a_linear_workflow_is_its_steps_in_order_joined_by_the_edges_the_run_took() -> None:
    rows = [attempt(1, "a", "completed", 0, 1), attempt(2, "b", "failed", 1, 2)]
    graph = build_flowgraph(run("failed", "b"), LINEAR, rows, [], NOW)
    assert [(node.key, node.status, node.current) for node in graph.nodes] == [
        ("a", "completed", False),
        ("b", "failed", True),
        ("c", "", False),
    ]
    assert [(edge.kind, edge.source, edge.target, edge.taken) for edge in graph.edges] == [
        ("next", "a", "b", True),
        ("next", "b", "c", False),
    ]
    assert graph.node("c").detail == "not reached"  # type: ignore[union-attr]
    xs = [node.x for node in graph.nodes]
    assert xs == sorted(xs)
    assert not overlap([(n.x, n.y, n.w, n.h) for n in graph.nodes])
    # The tooltip tells the retry policy.
    assert "up to 3 attempts, exponential backoff from 2 s, at most 30 s, with jitter" in graph.node("b").title  # type: ignore[union-attr]


def test_a_block_is_a_box_with_its_branches_forked_and_joined_and_more_than_eight_summed_up() -> None:
    names = [f"branch_{i}" for i in range(11)]
    wf = definition(
        "wide", [step("start", noop), parallel(*(step(n, noop) for n in names), name="fan"), step("end", noop)]
    )
    rows = [attempt(1, "start", "completed", 0, 1)]
    rows += [attempt(2 + i, n, "failed" if i == 10 else "completed", 1, 2, group=5) for i, n in enumerate(names)]
    graph = build_flowgraph(run(), wf, rows, [group(5, "fan", "completed", 1, 3)], NOW)
    (box,) = graph.boxes
    assert (box.key, box.status, box.note) == ("fan", "completed", "on error: fail fast")
    branches = [node for node in graph.nodes if node.key.startswith("fan/")]
    assert [node.key for node in branches] == [f"fan/{n}" for n in names[:MAX_BRANCHES]] + ["fan/+"]
    more = branches[-1]
    assert (more.label, more.detail) == ("+3 more", "2 completed, 1 failed")
    for node in branches:  # inside the box, one under the other
        assert box.x < node.x and node.x + node.w < box.x + box.w
        assert box.y < node.y and node.y + node.h < box.y + box.h
    assert not overlap([(n.x, n.y, n.w, n.h) for n in graph.nodes])
    kinds = [edge.kind for edge in graph.edges]
    assert kinds.count("fork") == kinds.count("join") == MAX_BRANCHES + 1
    assert [(e.source, e.target) for e in graph.edges if e.kind == "next"] == [("start", "fan"), ("fan", "end")]


def test_into_is_named_and_said_to_decide() -> None:
    block = parallel(step("x", noop), into=merge_totals, name="totals")
    assert describe_block(block) == "into: merge_totals (into decides)"
    wf = definition("into", [block])
    graph = build_flowgraph(run(), wf, [], [], NOW)
    assert graph.boxes[0].note == "into: merge_totals (into decides)"
    assert "fail fast" not in graph.boxes[0].title


def test_gotos_the_run_took_are_curved_edges_back_above_and_forward_below() -> None:
    wf = definition("loop", [step("draft", noop), step("review", noop), step("fix", noop), step("publish", noop)])
    rows = [
        attempt(1, "draft", "completed", 0, 1),
        attempt(2, "review", "completed", 1, 2),
        attempt(3, "draft", "completed", 2, 3),  # review jumped back
        attempt(4, "review", "completed", 3, 4),
        attempt(5, "draft", "completed", 4, 5),  # and once more
        attempt(6, "review", "completed", 5, 6),
        attempt(7, "publish", "completed", 6, 7),  # then skipped fix
    ]
    graph = build_flowgraph(run(), wf, rows, [], NOW)
    gotos = [(edge.source, edge.target, edge.label) for edge in graph.gotos]
    assert gotos == [("review", "draft", "goto \u00d72"), ("review", "publish", "goto")]
    back, forward = graph.gotos
    top = min(node.y for node in graph.nodes)
    bottom = max(node.y + node.h for node in graph.nodes)
    assert back.label_y < top and forward.label_y > bottom
    assert back.label_y > 0 and forward.label_y < graph.height
    assert graph.node("fix").status == ""  # type: ignore[union-attr]
    # Retries of a step are no goto.
    retried = [attempt(1, "draft", "failed", 0, 1), attempt(2, "draft", "completed", 1, 2, attempt=2)]
    assert build_flowgraph(run(), wf, retried, [], NOW).gotos == []


def test_without_its_definition_the_graph_shows_the_steps_of_the_history_and_says_so() -> None:
    rows = [
        attempt(1, "old_a", "completed", 0, 1),
        attempt(2, "x", "completed", 1, 2, group=3),
        attempt(3, "y", "failed", 1, 2, group=3),
        attempt(4, "old_b", "failed", 2, 3),
    ]
    graph = build_flowgraph(run("failed", "old_b"), None, rows, [group(3, "blk", "completed", 1, 2)], NOW)
    assert not graph.registered
    assert "not registered" in graph.notes[0]
    assert [node.key for node in graph.nodes] == ["old_a", "blk/x", "blk/y", "old_b"]
    assert [box.key for box in graph.boxes] == ["blk"]
    assert graph.node("old_b").current  # type: ignore[union-attr]
    assert graph.node("blk/y").status == "failed"  # type: ignore[union-attr]


def test_the_svg_escapes_every_name() -> None:
    wf = definition("evil", [step("<script>alert(1)</script>", noop), parallel(step('a"b&c', noop), name="<b>blk</b>")])
    svg = str(render_svg(build_flowgraph(run(), wf, [], [], NOW)))
    assert "<script>" not in svg and "<b>" not in svg and 'a"b' not in svg
    assert "&lt;script&gt;" in svg and "&lt;b&gt;blk" in svg and "a&quot;b&amp;c" in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_retry_policies_in_words() -> None:
    assert describe_retry(LINEAR.steps[0].retry) == "no retry (1 attempt)"  # type: ignore[union-attr]
    assert describe_retry(
        step("s", noop, retry={"max_attempts": 2, "backoff": "constant", "base": 0, "jitter": False}).retry
    ) == ("up to 2 attempts, constant backoff of 0 s")


# -- the step running now ------------------------------------------------------------------------


def test_a_running_sequential_step_is_drawn_from_the_run_since_it_last_moved() -> None:
    current = run("running", "b", lease_owner="host:1:abc", lease_expires_at=at(100))
    rows = [attempt(1, "a", "completed", 0, 4)]
    live = live_step(current, rows, [], [], LINEAR)
    assert live is not None
    # Not the run's first claim (started_at), nor the renewed lease: when the previous step ended.
    assert (live.since, live.owner, live.row.status, live.row.attempt) == (at(4), "host:1:abc", "running", 1)
    timeline = build_timeline(current, [*rows, live.row], [], at(9))
    bar = timeline.sections[0].rows[-1].bars[0]
    assert (bar.step, bar.state, bar.label) == ("b", "running", "running 5.00 s")
    assert bar.title.endswith("on host:1:abc")
    graph = build_flowgraph(current, LINEAR, [*rows, live.row], [], at(9))
    assert (graph.node("b").status, graph.node("b").detail, graph.node("b").current) == (
        "running",
        "running 5.00 s",
        True,
    )  # type: ignore[union-attr]
    lines = summary(current, live, rows, at(9))["lines"]
    assert lines[0].startswith("Running b (attempt 1) on host:1:abc for 5.00 s, since ")
    # Once its row is written, nothing is drawn in its stead.
    done = [*rows, attempt(2, "b", "completed", 4, 6)]
    assert live_step(current, done, [], [], LINEAR) is None


def test_a_step_waiting_for_its_retry_says_when_the_next_attempt_is_due() -> None:
    due = NOW + timedelta(seconds=3)
    current = run(
        "running", "b", current_attempt=2, lease_expires_at=due + timedelta(seconds=durable_settings.LEASE_SECONDS)
    )
    rows = [attempt(1, "a", "completed", 0, 1), attempt(2, "b", "failed", 1, 2)]
    live = live_step(current, rows, [], [], LINEAR)
    assert live is not None and live.due == due and live.row.status == "pending"
    table = {row["name"]: row for row in step_table(LINEAR, rows, [], live, NOW)}
    assert table["b"]["next"].startswith("attempt #2 of 3 at ") and table["b"]["next"].endswith("(in 3.00 s)")
    assert table["b"]["policy"].startswith("up to 3 attempts")
    assert summary(current, live, rows, NOW)["lines"][0].startswith("Attempt 2 of b is due at ")
    # A branch's retry is a pending row with its deadline.
    wf = definition("blk", [parallel(step("x", noop, retry={"max_attempts": 2}), name="p")])
    branch = attempt(3, "x", "pending", None, None, attempt=2, group=9)
    branch.lease_expires_at = due + timedelta(seconds=durable_settings.LEASE_SECONDS)
    rows = [attempt(1, "x", "failed", 0, 1, group=9), branch]
    (line,) = step_table(wf, rows, [group(9, "p", "running", 0, None)], None, NOW)
    assert line["next"].endswith("(in 3.00 s)") and line["block"] == "p"


def test_the_error_is_its_type_message_and_traceback() -> None:
    error = {
        "step": "sync",
        "reason": {
            "type": "child_failed",
            "reason": {"type": "RuntimeError", "message": "down", "traceback": "Traceback ..."},
        },
    }
    parts = error_summary(error)
    assert parts is not None
    assert (parts["step"], parts["type"], parts["message"], parts["traceback"]) == (
        "sync",
        "child_failed",
        "down",
        "Traceback ...",
    )
    data = error_summary({"step": "charge", "parallel": "pay", "reason": {"code": "declined", "amount": 5}})
    assert data is not None and data["block"] == "pay" and "&quot;declined&quot;" in data["extra"]


# -- timeline fixes -------------------------------------------------------------------------------


def test_labels_of_a_retried_run_never_overlap() -> None:
    """A manual retry an hour later squeezes the first attempts into the axis's first pixels."""
    rows = [attempt(i, "fetch", "failed", i * 0.01, i * 0.01 + 0.005, attempt=i) for i in range(1, 4)]
    rows.append(attempt(4, "fetch", "completed", 3600, 3600.013, attempt=4))
    current = run("completed")
    current.finished_at = at(3601)
    bars = build_timeline(current, rows, [], NOW).sections[0].rows[0].bars
    spans = []
    for bar in bars:
        if bar.label:
            width = len(bar.label) * 6.6 + 8
            start = {"inside": bar.offset * 6, "right": (bar.offset + bar.width) * 6, "left": bar.offset * 6 - width}[
                bar.label_position
            ]
            spans.append((start, start + width))
    assert all(a[1] <= b[0] or b[1] <= a[0] for a, b in itertools.combinations(spans, 2))
    assert [bar.label for bar in bars][-1] == "#4 13 ms"
    assert all(bar.title for bar in bars)  # what a hidden label said is in the tooltip


def test_an_attempt_lost_without_a_start_is_drawn_from_when_its_run_last_moved() -> None:
    lost = attempt(2, "b", "failed", None, 30)
    lost.created_at = at(30)  # recovery writes it when it finds the lease expired
    lost.error = {"type": "worker_lost", "message": "the worker executing this attempt went away"}
    rows = [attempt(1, "a", "completed", 0, 5), lost, attempt(3, "b", "completed", 31, 32, attempt=2)]
    current = run("completed")
    current.finished_at = at(32)
    bar = build_timeline(current, rows, [], NOW).sections[0].rows[1].bars[0]
    assert (bar.state, bar.label) == ("lost", "#1 worker lost")
    assert (round(bar.offset, 2), round(bar.width, 2)) == (round(5 / 32 * 100, 2), round(25 / 32 * 100, 2))
    assert "not recorded" in bar.title


def test_the_registry_is_left_alone() -> None:
    assert find_workflow("linear") is None
