"""The flow graph of a run's page: its workflow's definition, drawn left to right, and the run's path.

:func:`build_flowgraph` is a pure function of the definition (``None`` when it is no longer
registered: then the steps seen in the run's history stand in) and of the run's rows; it lays
out nodes, parallel blocks and edges in pixels. ``flowsvg.render_svg`` draws that as inline SVG with
every text escaped (:mod:`durable_django.flowsvg`). Sequential steps are nodes in order; a parallel block is a box with its
branches stacked inside, forked from the step before and joined into the step after. A foreach
block is a box around one node for all its items, with their counts per status. A branch block is
a box with one lane per case (its default last), each lane its steps and blocks left to right;
once the run has chosen, the lane it took is marked and the others are greyed out. Jumps the run
took (``goto``: two consecutive visits that do not follow each other in the definition) are
curved edges, backwards above the nodes and forwards below. Each node is coloured by the status
of the step's latest attempt, like the timeline; the node where the run is now is ringed. A step
that a compensation undid says so.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from .admin_items import ItemSummary, counts_text, summarise_rows
from .definition import Workflow
from .flowparts import (
    ARC_STEP,
    BRANCH_GAP,
    BRANCH_H,
    EMPTY_LANE_W,
    FORK_W,
    GAP,
    HEADER_H,
    LANE_GAP,
    LANE_LABEL_H,
    LANE_PAD,
    MAX_BRANCHES,
    MAX_DETAIL,
    MAX_LABEL,
    NODE_H,
    PAD,
    STACK,
    Box,
    CaseLane,
    Edge,
    Element,
    FlowGraph,
    Lane,
    Node,
    arc,
    collapse,
    cut,
    describe_block,
    describe_on,
    describe_retry,
    describe_step,
    detail_w,
    elements_of,
    exits,
    follows,
    fork_join,
    history_elements,
    order_of,
    text_w,
    visits,
)
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, WorkflowRun
from .timeaxis import format_duration

__all__ = [
    "MAX_BRANCHES",
    "MAX_DETAIL",
    "MAX_LABEL",
    "STACK",
    "Box",
    "Edge",
    "FlowGraph",
    "Lane",
    "Node",
    "build_flowgraph",
    "cut",
    "describe_block",
    "describe_on",
    "describe_retry",
    "describe_step",
    "visits",
]

# -- layout ---------------------------------------------------------------------------------------


class _Layout:
    """Sizes first (every element, bottom up), then places (top down), collecting nodes, boxes and edges."""

    def __init__(
        self,
        run: WorkflowRun,
        rows: Sequence[StepResult],
        groups: Sequence[ParallelGroup],
        items: Mapping[int, ItemSummary],
        now: datetime,
    ) -> None:
        self.run, self.now = run, now
        self.finished = run.status in FINISHED_RUN_STATUSES
        self.current = run.current_step if run.status != "completed" else ""
        self.group_names = {group.pk: group.name for group in groups if group.pk is not None}
        self.latest_group = {group.name: group for group in groups}
        self.items = items
        self.latest: dict[tuple[str, str], StepResult] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.choice: dict[str, StepResult] = {}  # each branch block's latest choice
        self.undone: dict[tuple[str, str], str] = {}  # the latest compensation's status of each step
        by_id = {row.pk: row for row in rows if row.pk is not None}
        for row in rows:
            if row.kind == "compensation":
                undone = by_id.get(row.compensates_id) if row.compensates_id is not None else None
                block = self._block_of(undone) if undone is not None else ""
                self.undone[(block, row.step)] = row.status
                continue
            if row.kind == "branch":
                self.choice[row.step] = row
            key = (self._block_of(row), row.step)
            self.latest[key] = row
            self.attempts[key] = self.attempts.get(key, 0) + 1
        self.nodes: list[Node] = []
        self.boxes: list[Box] = []
        self.lanes: list[Lane] = []
        self.edges: list[Edge] = []
        self.anchors: dict[str, tuple[float, float, float, float]] = {}  # name: left, right, top, bottom
        self.pairs: dict[tuple[str, str], int] = {}

    def _block_of(self, row: StepResult) -> str:
        return self.group_names.get(row.group_id, "") if row.group_id is not None else ""

    # -- states --------------------------------------------------------------------------------

    def node_state(self, block: str, name: str, is_current: bool) -> tuple[str, str]:
        row = self.latest.get((block, name))
        undone = self.undone.get((block, name))
        if row is None:
            return ("", "not reached") if not is_current else (self.run.status, self.run.status)
        count = self.attempts[(block, name)]
        status = row.status
        if row.started_at is not None and row.finished_at is None and status == "running":
            detail = f"running {format_duration((self.now - row.started_at).total_seconds())}"
        elif status == "pending" and row.attempt > 1:
            detail = f"retry #{row.attempt} pending"
        else:
            detail = status
        if count > 1:
            detail += f" · {count} attempts"
        if undone is not None:
            detail += {"completed": " · undone", "failed": " · undo failed"}.get(undone, " · undoing")
        if is_current and not self.finished and status == "completed":
            status = self.run.status  # the step is done; the run waits at it
            detail = f"{self.run.status} · " + detail
        return status, detail

    def items_state(self, element: Element) -> tuple[str, str, str]:
        """A foreach block's node: its status, label and detail."""
        group = self.latest_group.get(element.name)
        summary = self.items.get(group.pk) if group is not None and group.pk is not None else None
        if group is None or summary is None:
            return (group.status if group is not None else ""), "each item", "not reached" if group is None else ""
        label = f"{summary.items:,} item" + ("" if summary.items == 1 else "s")
        detail = counts_text(summary.statuses).replace(", ", " · ")
        return group.status, label, detail

    def case_taken(self, element: Element) -> tuple[str | None, bool] | None:
        """The case the latest choice of branch block ``element`` took (``None``: its default), or ``None``."""
        row = self.choice.get(element.name)
        if row is None or row.status != "completed" or not isinstance(row.output, dict):
            return None
        if row.output.get("default"):
            return (None, True)
        case = row.output.get("case")
        return (str(case) if case is not None else None, False)

    def branch_note(self, element: Element) -> str:
        on = describe_on(element.branch) if element.branch is not None else ""
        row = self.choice.get(element.name)
        if row is None:
            return on
        output = row.output if isinstance(row.output, dict) else {}
        error = row.error if isinstance(row.error, dict) else {}
        source = output if "value" in output else error
        value = json.dumps(source.get("value"), ensure_ascii=False, default=str) if "value" in source else ""
        value = cut(value, 20)
        if row.status != "completed":
            return f"{on} = {value}: no case matched" if error.get("type") == "no_branch_matched" else f"{on}: failed"
        taken = "default" if output.get("default") else f"case {output.get('case')}"
        return f"{on} = {value} \u2192 {taken}" if value else f"{on} \u2192 {taken}"

    # -- sizes ---------------------------------------------------------------------------------

    def measure(self, element: Element) -> None:
        if element.kind == "step":
            detail = self.node_state("", element.name, self.is_current(element.name))[1]
            element.w = min(max(text_w(cut(element.name)) + 30, detail_w(detail) + 26, 104), 250)
            element.h = NODE_H
            return
        if element.kind == "branch":
            note = self.branch_note(element)
            for lane in element.lanes:
                for child in lane.elements:
                    self.measure(child)
                widths = [child.w for child in lane.elements]
                lane.w = sum(widths) + GAP * (len(widths) - 1) if widths else EMPTY_LANE_W
                lane.w = max(lane.w, text_w(self.lane_label(element, lane)) * 0.85)
                lane.h = LANE_LABEL_H + max([child.h for child in lane.elements] + [BRANCH_H]) + LANE_PAD
            header_w = max(text_w(cut(element.name)) + 24, text_w(note) * 0.92 + 24)
            element.w = max(max(lane.w for lane in element.lanes) + 2 * FORK_W, header_w)
            element.h = HEADER_H + sum(lane.h + LANE_GAP for lane in element.lanes) + LANE_GAP
            return
        note = describe_block(element.block) if element.block is not None else ""
        header_w = max(text_w(cut(element.name)) + 24, text_w(note) * 0.92 + 24)
        if element.kind == "foreach":
            _, label, detail = self.items_state(element)
            inner = min(max(text_w(label) + 26, detail_w(detail) + 26, 150), 250)
            element.w = max(inner + 2 * FORK_W, header_w)
            element.h = HEADER_H + BRANCH_H + 2 * BRANCH_GAP + STACK
            return
        members = element.members
        shown = min(len(members), MAX_BRANCHES + 1)
        branch_w = max(
            [text_w(cut(name)) + 26 for name in members[:MAX_BRANCHES]]
            + [
                min(detail_w(self.node_state(element.name, name, False)[1]) + 26, 250)
                for name in members[:MAX_BRANCHES]
            ]
            + [150]
        )
        element.w = max(branch_w + 2 * FORK_W, header_w)
        element.h = HEADER_H + max(shown, 1) * (BRANCH_H + BRANCH_GAP) + BRANCH_GAP

    def lane_label(self, element: Element, lane: CaseLane) -> str:
        name = "default" if lane.case is None else f"case {lane.case}"
        taken = self.case_taken(element)
        return f"\u2713 {name}" if taken is not None and taken[0] == lane.case else name

    def is_current(self, name: str) -> bool:
        return bool(self.current) and name == self.current

    # -- places --------------------------------------------------------------------------------

    def place_sequence(self, elements: list[Element], x: float, mid: float, skipped: bool) -> None:
        for element in elements:
            self.place(element, x, mid, skipped)
            x += element.w + GAP
        for left, right in itertools.pairwise(elements):
            start, end = self.anchors[left.name][1], self.anchors[right.name][0]
            taken = any((exit, right.name) in self.pairs for exit in exits(left))
            path = f"M{start:.1f},{mid:.1f} L{end - 2:.1f},{mid:.1f}"
            self.edges.append(Edge("next", path, taken and not skipped, left.name, right.name))

    def place(self, element: Element, x: float, mid: float, skipped: bool) -> None:
        y = mid - element.h / 2
        self.anchors[element.name] = (x, x + element.w, y, y + element.h)
        current = self.is_current(element.name)
        if element.kind == "step":
            status, detail = self.node_state("", element.name, current)
            title = f"step {element.name}: {detail}"
            if element.step is not None:
                title += f"\n{describe_step(element.step)}"
            self.nodes.append(
                Node(
                    element.name,
                    cut(element.name),
                    "step",
                    status,
                    detail,
                    title,
                    current,
                    x,
                    y,
                    element.w,
                    element.h,
                    skipped,
                )
            )
        elif element.kind == "branch":
            self.place_branch(element, x, y, mid, current, skipped)
        else:
            self.place_block(element, x, y, mid, current, skipped)

    def block_status(self, name: str, current: bool) -> str:
        group = self.latest_group.get(name)
        status = group.status if group is not None else ""
        return self.run.status if current and not self.finished else status

    def add_box(
        self, element: Element, note: str, status: str, title: str, current: bool, x: float, y: float, skipped: bool
    ) -> None:
        """The frame of a block or branch block (``element.kind`` says which), at ``x``, ``y``."""
        box = Box(
            element.name,
            cut(element.name),
            note,
            status,
            title,
            current,
            x,
            y,
            element.w,
            element.h,
            element.kind,
            skipped,
        )
        self.boxes.append(box)

    def place_block(self, element: Element, x: float, y: float, mid: float, current: bool, skipped: bool) -> None:
        status = self.block_status(element.name, current)
        note = describe_block(element.block) if element.block is not None else ""
        what = "foreach block" if element.kind == "foreach" else "parallel block"
        title = f"{what} {element.name}: {status or 'not reached'}"
        if element.kind == "parallel":
            title += f" ({len(element.members)} branches)"
        title += f"\n{note}" if note else ""
        self.add_box(element, note, status, title, current, x, y, skipped)
        inner_x, inner_w = x + FORK_W, element.w - 2 * FORK_W
        if element.kind == "foreach":
            by = y + HEADER_H + BRANCH_GAP
            item_status, label, detail = self.items_state(element)
            member = element.member_steps.get(element.name)
            node_title = f"the items of {element.name}: {detail or label}"
            group = self.latest_group.get(element.name)
            summary = self.items.get(group.pk) if group is not None and group.pk is not None else None
            if summary is not None and summary.attempts_label:
                node_title += f" ({summary.attempts_label})"
            if member is not None:
                node_title += f"\n{describe_step(member)}"
            self.nodes.append(
                Node(
                    f"{element.name}/items",
                    label,
                    "items",
                    item_status,
                    detail,
                    node_title,
                    False,
                    inner_x,
                    by,
                    inner_w,
                    BRANCH_H,
                    skipped,
                )
            )
            self.edges += fork_join(
                x, element.w, mid, inner_x, inner_w, by + BRANCH_H / 2, item_status != "", element.name, "items"
            )
            return
        shown_names = element.members[:MAX_BRANCHES]
        for index, name in enumerate(shown_names):
            by = y + HEADER_H + BRANCH_GAP / 2 + index * (BRANCH_H + BRANCH_GAP)
            b_status, detail = self.node_state(element.name, name, False)
            node_title = f"branch {name} of {element.name}: {detail}"
            member = element.member_steps.get(name)
            if member is not None:
                node_title += f"\n{describe_step(member)}"
            self.nodes.append(
                Node(
                    f"{element.name}/{name}",
                    cut(name),
                    "branch",
                    b_status,
                    detail,
                    node_title,
                    False,
                    inner_x,
                    by,
                    inner_w,
                    BRANCH_H,
                    skipped,
                )
            )
            self.edges += fork_join(
                x,
                element.w,
                mid,
                inner_x,
                inner_w,
                by + BRANCH_H / 2,
                b_status != "" and not skipped,
                element.name,
                name,
            )
        rest = element.members[MAX_BRANCHES:]
        if rest:
            by = y + HEADER_H + BRANCH_GAP / 2 + len(shown_names) * (BRANCH_H + BRANCH_GAP)
            counts: dict[str, int] = {}
            for name in rest:
                st = self.node_state(element.name, name, False)[0] or "not reached"
                counts[st] = counts.get(st, 0) + 1
            detail = ", ".join(f"{n} {st}" for st, n in counts.items())
            node_title = f"{len(rest)} more branches: {', '.join(rest[:30])}" + (" …" if len(rest) > 30 else "")
            self.nodes.append(
                Node(
                    f"{element.name}/+",
                    f"+{len(rest)} more",
                    "more",
                    "",
                    detail,
                    node_title,
                    False,
                    inner_x,
                    by,
                    inner_w,
                    BRANCH_H,
                    skipped,
                )
            )
            self.edges += fork_join(x, element.w, mid, inner_x, inner_w, by + BRANCH_H / 2, False, element.name, "+")

    def place_branch(self, element: Element, x: float, y: float, mid: float, current: bool, skipped: bool) -> None:
        row = self.choice.get(element.name)
        status = row.status if row is not None else ""
        if current and not self.finished:
            status = self.run.status
        note = self.branch_note(element)
        cases = ", ".join("default" if lane.case is None else lane.case for lane in element.lanes)
        title = f"branch block {element.name}: {note or 'not reached'}\ncases: {cases}"
        self.add_box(element, note, status, title, current, x, y, skipped)
        taken = self.case_taken(element)
        lane_y = y + HEADER_H + LANE_GAP / 2
        inner_x = x + FORK_W
        for lane in element.lanes:
            is_taken = taken is not None and taken[0] == lane.case and not skipped
            lane_skipped = skipped or (taken is not None and not is_taken)
            self.lanes.append(
                Lane(
                    element.name,
                    lane.case,
                    self.lane_label(element, lane),
                    is_taken,
                    lane_skipped,
                    inner_x - 10,
                    lane_y,
                    element.w - 2 * FORK_W + 20,
                    lane.h,
                )
            )
            lane_mid = lane_y + LANE_LABEL_H + (lane.h - LANE_LABEL_H - LANE_PAD) / 2
            key = "default" if lane.case is None else f"case {lane.case}"
            self.edges += fork_join(
                x, element.w, mid, inner_x, lane.w, lane_mid, is_taken, element.name, key, mid_lane=not lane.elements
            )
            self.place_sequence(lane.elements, inner_x, lane_mid, lane_skipped)
            lane_y += lane.h + LANE_GAP


def build_flowgraph(
    run: WorkflowRun,
    definition: Workflow | None,
    steps: Iterable[StepResult],
    groups: Iterable[ParallelGroup],
    now: datetime,
    *,
    items: Mapping[int, ItemSummary] | None = None,
) -> FlowGraph:
    """Lay out ``definition`` (or the steps of the history) with the path ``run`` took through it.

    ``steps`` are the run's rows (an unsaved one stands for a step running right now); ``items``
    each foreach group's summary by group id (without it, counted from ``steps``).
    """
    rows = sorted(steps, key=lambda row: (row.pk is None, row.pk or 0))
    group_list = sorted(groups, key=lambda group: (group.created_at, group.pk or 0))
    layout = _Layout(run, rows, group_list, dict(items) if items is not None else summarise_rows(rows), now)
    if definition is not None:
        elements = elements_of(definition.steps)
    else:
        elements = history_elements(rows, group_list, layout.group_names, layout.current)

    path = collapse(visits(rows, layout.group_names))
    # Two visits in a row are an edge the run took.
    for source, target in itertools.pairwise(path):
        layout.pairs[source, target] = layout.pairs.get((source, target), 0) + 1
    # A goto to the step itself restarts its attempt numbers: a visit of its own.
    sequential = [row for row in rows if row.kind != "compensation"]
    for row_a, row_b in itertools.pairwise(sequential):
        if row_a.group_id is None and row_b.group_id is None and row_a.step == row_b.step and row_b.attempt == 1:
            layout.pairs[row_a.step, row_a.step] = layout.pairs.get((row_a.step, row_a.step), 0) + 1

    for element in elements:
        layout.measure(element)
    tallest = max([element.h for element in elements] + [NODE_H])
    allowed: dict[str, set[str]] = {}
    follows(elements, None, allowed)
    goto_pairs = [
        (source, target, count)
        for (source, target), count in layout.pairs.items()
        if source in allowed and target in allowed and (source == target or target not in allowed[source])
    ]
    order = {name: index for index, name in enumerate(order_of(elements))}
    back = sorted((p for p in goto_pairs if order[p[1]] <= order[p[0]]), key=lambda p: order[p[0]] - order[p[1]])
    forward = sorted((p for p in goto_pairs if order[p[1]] > order[p[0]]), key=lambda p: order[p[1]] - order[p[0]])
    top = PAD + (len(back) * ARC_STEP + 14 if back else 0)
    mid = top + tallest / 2
    bottom = mid + tallest / 2 + (len(forward) * ARC_STEP + 14 if forward else 0) + PAD
    layout.place_sequence(elements, PAD, mid, False)
    width_total = PAD + sum(element.w for element in elements) + GAP * max(len(elements) - 1, 0) + PAD

    # Jumps the run took: back above, forward below, the shorter ones inside.
    for level, (source, target, count) in enumerate(back):
        layout.edges.append(arc(layout.anchors, source, target, count, top - 12 - level * ARC_STEP, above=True))
    for level, (source, target, count) in enumerate(forward):
        layout.edges.append(
            arc(layout.anchors, source, target, count, mid + tallest / 2 + 12 + level * ARC_STEP, above=False)
        )

    notes = []
    if definition is None:
        notes.append(
            f"The workflow {run.workflow} is not registered in this process: the graph shows the steps "
            "and blocks this run went through, in the order it first reached them."
        )
    return FlowGraph(
        width_total,
        bottom,
        tuple(layout.nodes),
        tuple(layout.boxes),
        tuple(layout.edges),
        definition is not None,
        tuple(notes),
        tuple(layout.lanes),
    )
