"""The flow graph of a run's page: its workflow's definition, drawn left to right, and the run's path.

:func:`build_flowgraph` is a pure function of the definition (``None`` when it is no longer
registered: then the steps seen in the run's history stand in) and of the run's rows; it lays
out nodes, parallel blocks and edges in pixels. ``flowsvg.render_svg`` draws that as inline SVG with
every text escaped (:mod:`durable_django.flowsvg`). Sequential steps are nodes in order; a parallel block is a box with its
branches stacked inside, forked from the step before and joined into the step after. Jumps the
run took (``goto``: two consecutive visits whose steps are not neighbours in the definition) are
curved edges, backwards above the nodes and forwards below. Each node is coloured by the status
of the step's latest attempt, like the timeline; the node where the run is now is ringed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .definition import Block, Branch, Foreach, Parallel, RetryPolicy, Step, Workflow
from .models import FINISHED_RUN_STATUSES, ParallelGroup, StepResult, WorkflowRun
from .timeaxis import format_duration

#: Branches drawn per block; the rest are summed up in one "+N more" node.
MAX_BRANCHES = 8
#: Longer names are cut (the whole name is in the node's tooltip).
MAX_LABEL = 24
MAX_DETAIL = 34
CHAR_W = 7.2  # an average character of the 12 px labels, a little generous
PAD = 16
GAP = 44  # between two nodes: room for an arrow
NODE_H = 44
BRANCH_H = 38
BRANCH_GAP = 8
FORK_W = 34  # inside a block, between its edge and its branches
HEADER_H = 36
ARC_STEP = 20  # vertical distance between stacked goto arcs

NodeKind = Literal["step", "branch", "more"]


def _seconds(value: float) -> str:
    return f"{value:g} s" if value < 60 else format_duration(value)


def describe_retry(policy: RetryPolicy) -> str:
    """``"no retry"``, or ``"up to 3 attempts, exponential backoff from 1 s, at most 30 s, with jitter"``."""
    if policy.max_attempts <= 1:
        return "no retry (1 attempt)"
    text = f"up to {policy.max_attempts} attempts, {policy.backoff} backoff"
    if policy.backoff == "constant":
        text += f" of {_seconds(policy.base)}"
    else:
        text += f" from {_seconds(policy.base)}, at most {_seconds(policy.max_backoff)}"
    return text + (", with jitter" if policy.jitter else "")


def describe_step(step: Step) -> str:
    """The retry policy, time limit and queue of a step, in one line."""
    parts = [describe_retry(step.retry)]
    if step.timeout:
        parts.append(f"timeout {_seconds(step.timeout)}")
    if step.queue:
        parts.append(f"queue {step.queue}")
    return "; ".join(parts)


def describe_block(block: Block) -> str:
    """What decides a block's outcome: ``on error: fail fast``, or ``into: merge — into decides``."""
    if block.into is not None:
        name = getattr(block.into, "__qualname__", None) or getattr(block.into, "__name__", None) or repr(block.into)
        return f"into: {name} (into decides)"
    return "on error: " + block.on_error.replace("_", " ")


def cut(name: str, limit: int = MAX_LABEL) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _text_w(text: str) -> float:
    return len(text) * CHAR_W


def _detail_w(text: str) -> float:
    """The second line of a node, in a smaller type (and cut like a name, a little later)."""
    return min(len(text), MAX_DETAIL) * 6.4


@dataclass(frozen=True)
class Node:
    """A step or a branch (or the "+N more" of a big block), placed at ``x``, ``y`` (its top left)."""

    key: str
    label: str
    kind: NodeKind
    status: str  # of the latest attempt; "" when not reached
    detail: str
    title: str
    current: bool
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Box:
    """A parallel block: a box around its branches, with its name and what decides it on top."""

    key: str
    label: str
    note: str
    status: str
    title: str
    current: bool
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Edge:
    """A path between two nodes: ``next`` (the definition's order), ``fork``/``join`` or ``goto``."""

    kind: str
    path: str
    taken: bool
    source: str
    target: str
    label: str = ""
    label_x: float = 0.0
    label_y: float = 0.0


@dataclass(frozen=True)
class FlowGraph:
    width: float
    height: float
    nodes: tuple[Node, ...]
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    registered: bool
    notes: tuple[str, ...] = ()

    @property
    def gotos(self) -> list[Edge]:
        return [edge for edge in self.edges if edge.kind == "goto"]

    def node(self, key: str) -> Node | None:
        return next((node for node in self.nodes if node.key == key), None)


# -- what the run did -----------------------------------------------------------------------------


@dataclass
class _Item:
    """A top-level item of the definition: a step (``branches`` is None) or a block."""

    name: str
    step: Step | None = None
    block: Block | None = None
    branches: list[str] | None = None
    branch_steps: dict[str, Step] = field(default_factory=dict)


def _items(
    definition: Workflow | None, rows: Sequence[StepResult], group_names: dict[int, str], current: str
) -> list[_Item]:
    if definition is not None:
        items = []
        for node in definition.flat:
            if isinstance(node, Branch):
                items.append(_Item(node.name))
            elif isinstance(node, Parallel | Foreach):
                branches = [member.name for member in node.steps]
                items.append(
                    _Item(node.name, block=node, branches=branches, branch_steps={m.name: m for m in node.steps})
                )
            else:
                items.append(_Item(node.name, step=node))
        return items
    # No definition: the steps and blocks the history shows, in the order they were first seen.
    seen: dict[str, _Item] = {}
    for row in rows:
        if row.group_id is None:
            seen.setdefault(row.step, _Item(row.step))
            continue
        block = seen.setdefault(group_names.get(row.group_id, f"group {row.group_id}"), _Item("", branches=[]))
        if not block.name:
            block.name = group_names.get(row.group_id, f"group {row.group_id}")
        assert block.branches is not None
        if row.step not in block.branches:
            block.branches.append(row.step)
    for name in group_names.values():
        seen.setdefault(name, _Item(name, branches=[]))
    if current and current not in seen:
        seen[current] = _Item(current)
    return list(seen.values())


def visits(rows: Sequence[StepResult], group_names: dict[int, str]) -> list[str]:
    """The top-level steps and blocks the run went through, in order; a retry is no new visit."""
    out: list[str] = []
    last: tuple[Any, ...] = ()
    for row in rows:
        if row.group_id is not None:
            token: tuple[Any, ...] = ("group", row.group_id)
            if token == last:
                continue
            out.append(group_names.get(row.group_id, f"group {row.group_id}"))
        else:
            token = ("step", row.step, row.attempt)
            if last[:2] == ("step", row.step) and row.attempt == last[2] + 1:
                last = token
                continue
            out.append(row.step)
        last = token
    return out


def _collapse(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not out or out[-1] != name:
            out.append(name)
    return out


# -- layout ---------------------------------------------------------------------------------------


def build_flowgraph(
    run: WorkflowRun,
    definition: Workflow | None,
    steps: Iterable[StepResult],
    groups: Iterable[ParallelGroup],
    now: datetime,
) -> FlowGraph:
    """Lay out ``definition`` (or the steps of the history) with the path ``run`` took through it.

    ``steps`` are the run's rows (an unsaved one stands for a step running right now).
    """
    rows = sorted(steps, key=lambda row: (row.pk is None, row.pk or 0))
    group_list = sorted(groups, key=lambda group: (group.created_at, group.pk or 0))
    group_names = {group.pk: group.name for group in group_list if group.pk is not None}
    latest_group = {group.name: group for group in group_list}
    finished = run.status in FINISHED_RUN_STATUSES
    current = run.current_step if run.status != "completed" else ""
    items = _items(definition, rows, group_names, current)

    latest: dict[tuple[str, str], StepResult] = {}
    attempts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (group_names.get(row.group_id, "") if row.group_id is not None else "", row.step)
        latest[key] = row
        attempts[key] = attempts.get(key, 0) + 1

    path = _collapse(visits(rows, group_names))
    # Two visits in a row are an edge the run took.
    pairs: dict[tuple[str, str], int] = {}
    for source, target in itertools.pairwise(path):
        pairs[source, target] = pairs.get((source, target), 0) + 1
    # A goto to the step itself restarts its attempt numbers: a visit of its own.
    for row_a, row_b in itertools.pairwise(rows):
        if row_a.group_id is None and row_b.group_id is None and row_a.step == row_b.step and row_b.attempt == 1:
            pairs[row_a.step, row_a.step] = pairs.get((row_a.step, row_a.step), 0) + 1
    position = {item.name: index for index, item in enumerate(items)}

    def node_state(block: str, name: str, is_current: bool) -> tuple[str, str]:
        row = latest.get((block, name))
        if row is None:
            return ("", "not reached") if not is_current else (run.status, run.status)
        count = attempts[(block, name)]
        status = row.status
        if row.started_at is not None and row.finished_at is None and status == "running":
            detail = f"running {format_duration((now - row.started_at).total_seconds())}"
        elif status == "pending" and row.attempt > 1:
            detail = f"retry #{row.attempt} pending"
        else:
            detail = status
        if count > 1:
            detail += f" · {count} attempts"
        if is_current and not finished and status == "completed":
            status = run.status  # the step is done; the run waits at it
            detail = f"{run.status} · " + detail
        return status, detail

    # Sizes first: every top-level item is a column.
    columns: list[tuple[float, float]] = []  # (width, height)
    for item in items:
        if item.branches is None:
            detail = node_state("", item.name, bool(current) and item.name == current)[1]
            columns.append((min(max(_text_w(cut(item.name)) + 30, _detail_w(detail) + 26, 104), 250), NODE_H))
            continue
        shown = min(len(item.branches), MAX_BRANCHES + 1)
        branch_w = max(
            [_text_w(cut(name)) + 26 for name in item.branches[:MAX_BRANCHES]]
            + [min(_detail_w(node_state(item.name, name, False)[1]) + 26, 250) for name in item.branches[:MAX_BRANCHES]]
            + [150]
        )
        note = describe_block(item.block) if item.block is not None else ""
        header_w = max(_text_w(cut(item.name)) + 24, _text_w(note) * 0.92 + 24)
        block_w = max(branch_w + 2 * FORK_W, header_w)
        block_h = HEADER_H + max(shown, 1) * (BRANCH_H + BRANCH_GAP) + BRANCH_GAP
        columns.append((block_w, block_h))
    tallest = max([column[1] for column in columns] + [NODE_H])

    goto_pairs = [
        (source, target, count)
        for (source, target), count in pairs.items()
        if source in position and target in position and (position[target] != position[source] + 1 or source == target)
    ]
    back = sorted(
        (p for p in goto_pairs if position[p[1]] <= position[p[0]]), key=lambda p: position[p[0]] - position[p[1]]
    )
    forward = sorted(
        (p for p in goto_pairs if position[p[1]] > position[p[0]]), key=lambda p: position[p[1]] - position[p[0]]
    )
    top = PAD + (len(back) * ARC_STEP + 14 if back else 0)
    mid = top + tallest / 2
    bottom = mid + tallest / 2 + (len(forward) * ARC_STEP + 14 if forward else 0) + PAD

    nodes: list[Node] = []
    boxes: list[Box] = []
    edges: list[Edge] = []
    anchors: dict[str, tuple[float, float, float, float]] = {}  # name: left, right, top, bottom
    x: float = PAD
    for item, (width, height) in zip(items, columns, strict=True):
        is_current = item.name == current and bool(current)
        y = mid - height / 2
        anchors[item.name] = (x, x + width, y, y + height)
        if item.branches is None:
            status, detail = node_state("", item.name, is_current)
            title = f"step {item.name}: {detail}"
            if item.step is not None:
                title += f"\n{describe_step(item.step)}"
            nodes.append(
                Node(item.name, cut(item.name), "step", status, detail, title, is_current, x, y, width, height)
            )
        else:
            group = latest_group.get(item.name)
            status = group.status if group is not None else ""
            if is_current and not finished:
                status = run.status
            note = describe_block(item.block) if item.block is not None else ""
            title = f"parallel block {item.name}: {status or 'not reached'}"
            title += f" ({len(item.branches)} branches)" + (f"\n{note}" if note else "")
            boxes.append(Box(item.name, cut(item.name), note, status, title, is_current, x, y, width, height))
            branch_x = x + FORK_W
            branch_w = width - 2 * FORK_W
            shown_names = item.branches[:MAX_BRANCHES]
            for index, name in enumerate(shown_names):
                by = y + HEADER_H + BRANCH_GAP / 2 + index * (BRANCH_H + BRANCH_GAP)
                b_status, detail = node_state(item.name, name, False)
                title = f"branch {name} of {item.name}: {detail}"
                member = item.branch_steps.get(name)
                if member is not None:
                    title += f"\n{describe_step(member)}"
                nodes.append(
                    Node(
                        f"{item.name}/{name}",
                        cut(name),
                        "branch",
                        b_status,
                        detail,
                        title,
                        False,
                        branch_x,
                        by,
                        branch_w,
                        BRANCH_H,
                    )
                )
                edges += _fork_join(
                    x, width, mid, branch_x, branch_w, by + BRANCH_H / 2, b_status != "", item.name, name
                )
            rest = item.branches[MAX_BRANCHES:]
            if rest:
                by = y + HEADER_H + BRANCH_GAP / 2 + len(shown_names) * (BRANCH_H + BRANCH_GAP)
                counts: dict[str, int] = {}
                for name in rest:
                    st = node_state(item.name, name, False)[0] or "not reached"
                    counts[st] = counts.get(st, 0) + 1
                detail = ", ".join(f"{n} {st}" for st, n in counts.items())
                title = f"{len(rest)} more branches: {', '.join(rest[:30])}" + (" …" if len(rest) > 30 else "")
                nodes.append(
                    Node(
                        f"{item.name}/+",
                        f"+{len(rest)} more",
                        "more",
                        "",
                        detail,
                        title,
                        False,
                        branch_x,
                        by,
                        branch_w,
                        BRANCH_H,
                    )
                )
                edges += _fork_join(x, width, mid, branch_x, branch_w, by + BRANCH_H / 2, False, item.name, "+")
        x += width + GAP
    width_total = x - GAP + PAD

    # The definition's order: an arrow from each item to the next.
    for item, following in itertools.pairwise(items):
        left = anchors[item.name][1]
        right = anchors[following.name][0]
        taken = (item.name, following.name) in pairs
        edges.append(
            Edge("next", f"M{left:.1f},{mid:.1f} L{right - 2:.1f},{mid:.1f}", taken, item.name, following.name)
        )

    # Jumps the run took: back above, forward below, the shorter ones inside.
    for level, (source, target, count) in enumerate(back):
        edges.append(_arc(anchors, source, target, count, mid - tallest / 2 - 12 - level * ARC_STEP, above=True))
    for level, (source, target, count) in enumerate(forward):
        edges.append(_arc(anchors, source, target, count, mid + tallest / 2 + 12 + level * ARC_STEP, above=False))

    notes = []
    if definition is None:
        notes.append(
            f"The workflow {run.workflow} is not registered in this process: the graph shows the steps "
            "and blocks this run went through, in the order it first reached them."
        )
    return FlowGraph(
        width_total, bottom, tuple(nodes), tuple(boxes), tuple(edges), definition is not None, tuple(notes)
    )


def _fork_join(
    x: float, width: float, mid: float, bx: float, bw: float, by: float, taken: bool, block: str, name: str
) -> list[Edge]:
    fork = f"M{x:.1f},{mid:.1f} C{x + FORK_W * 0.7:.1f},{mid:.1f} {bx - FORK_W * 0.7:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    end = x + width
    join = f"M{bx + bw:.1f},{by:.1f} C{end - FORK_W * 0.3:.1f},{by:.1f} {end - FORK_W * 0.7:.1f},{mid:.1f} {end:.1f},{mid:.1f}"
    key = f"{block}/{name}"
    return [Edge("fork", fork, taken, block, key), Edge("join", join, taken, key, block)]


def _arc(
    anchors: dict[str, tuple[float, float, float, float]],
    source: str,
    target: str,
    count: int,
    peak: float,
    above: bool,
) -> Edge:
    s_left, s_right, s_top, s_bottom = anchors[source]
    t_left, t_right, t_top, t_bottom = anchors[target]
    sx = (s_left + s_right) / 2 + (8 if source != target else 14)
    tx = (t_left + t_right) / 2 - (8 if source != target else 14)
    sy, ty = (s_top, t_top) if above else (s_bottom, t_bottom)
    # A cubic whose two control points share a height peaks three quarters of the way to it.
    control = (peak - max(sy, ty) * 0.25) / 0.75 if above else (peak - min(sy, ty) * 0.25) / 0.75
    path = f"M{sx:.1f},{sy:.1f} C{sx:.1f},{control:.1f} {tx:.1f},{control:.1f} {tx:.1f},{ty + (-3 if above else 3):.1f}"
    label = "goto" + (f" \u00d7{count}" if count > 1 else "")
    label_y = peak - 4 if above else peak + 12
    return Edge("goto", path, True, source, target, label, (sx + tx) / 2, label_y)
