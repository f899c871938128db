"""What the flow graph is made of: its sizes, the words for policies, the definition's elements,
the run's visits, and the parts drawn (nodes, blocks, lanes, edges) with their paths.

:mod:`durable_django.flowgraph` measures and places them; :mod:`durable_django.flowsvg` draws them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .definition import Block, Branch, Foreach, Parallel, RetryPolicy, Step
from .models import ParallelGroup, StepResult
from .nodes import Node as DefinitionNode
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
LANE_LABEL_H = 18  # a case's name, above its steps
LANE_PAD = 6  # under a lane's steps
LANE_GAP = 8
EMPTY_LANE_W = 60  # a case without steps: a straight line through the block
STACK = 6  # the cards behind a foreach block's node

NodeKind = Literal["step", "branch", "more", "items"]


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
    """What decides a block's outcome: ``on error: fail fast``, or ``into: merge — into decides``.

    A foreach block also says what it runs over: ``for each of numbers, 2 at once · on error: ...``.
    """
    if block.into is not None:
        name = getattr(block.into, "__qualname__", None) or getattr(block.into, "__name__", None) or repr(block.into)
        decides = f"into: {name} (into decides)"
    else:
        decides = "on error: " + block.on_error.replace("_", " ")
    if not isinstance(block, Foreach):
        return decides
    source = block.items if isinstance(block.items, str) else f"{_name_of(block.items)}(ctx)"
    limit = f", {block.max_concurrency} at once" if block.max_concurrency else ""
    return f"for each of {source}{limit} \u00b7 {decides}"


def describe_on(branch: Branch) -> str:
    """What a branch block chooses its case by: ``on mode``, or ``on pick_route(ctx)``."""
    return f"on {branch.on}" if isinstance(branch.on, str) else f"on {_name_of(branch.on)}(ctx)"


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def cut(name: str, limit: int = MAX_LABEL) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def text_w(text: str) -> float:
    return len(text) * CHAR_W


def detail_w(text: str) -> float:
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
    skipped: bool = False  # in a case the run did not take


@dataclass(frozen=True)
class Box:
    """A block: a box around its branches (its items, its cases), its name and what decides it on top."""

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
    kind: str = "parallel"  # or "foreach", "branch"
    skipped: bool = False


@dataclass(frozen=True)
class Lane:
    """One case of a branch block (``case`` ``None``: its default): taken, skipped (another was), or neither yet."""

    block: str
    case: str | None
    label: str
    taken: bool
    skipped: bool
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
    lanes: tuple[Lane, ...] = ()

    @property
    def gotos(self) -> list[Edge]:
        return [edge for edge in self.edges if edge.kind == "goto"]

    def node(self, key: str) -> Node | None:
        return next((node for node in self.nodes if node.key == key), None)

    def box(self, key: str) -> Box | None:
        return next((box for box in self.boxes if box.key == key), None)


# -- what the run did -----------------------------------------------------------------------------


@dataclass
class Element:
    """A node of the definition (or of the history) to draw: a step, a block, or a branch block and its lanes."""

    name: str
    kind: Literal["step", "parallel", "foreach", "branch"]
    step: Step | None = None
    block: Block | None = None
    branch: Branch | None = None
    members: list[str] = field(default_factory=list)  # a parallel block's branches
    member_steps: dict[str, Step] = field(default_factory=dict)
    lanes: list[CaseLane] = field(default_factory=list)
    w: float = 0.0
    h: float = 0.0


@dataclass
class CaseLane:
    case: str | None
    elements: list[Element]
    w: float = 0.0
    h: float = 0.0


def elements_of(nodes: Sequence[DefinitionNode]) -> list[Element]:
    out = []
    for node in nodes:
        if isinstance(node, Branch):
            lanes = [CaseLane(case, elements_of(arm)) for case, arm in node.arms()]
            out.append(Element(node.name, "branch", branch=node, lanes=lanes))
        elif isinstance(node, Foreach):
            out.append(Element(node.name, "foreach", block=node, member_steps={node.name: node.member}))
        elif isinstance(node, Parallel):
            names = [member.name for member in node.steps]
            out.append(
                Element(node.name, "parallel", block=node, members=names, member_steps={m.name: m for m in node.steps})
            )
        else:
            out.append(Element(node.name, "step", step=node))
    return out


def history_elements(
    rows: Sequence[StepResult], groups: Sequence[ParallelGroup], group_names: dict[int, str], current: str
) -> list[Element]:
    """No definition: the steps and blocks the history shows, in the order they were first seen."""
    kinds = {group.pk: group.kind for group in groups}
    seen: dict[str, Element] = {}
    for row in rows:
        if row.kind == "compensation":
            continue
        if row.group_id is None:
            seen.setdefault(row.step, Element(row.step, "step"))
            continue
        name = group_names.get(row.group_id, f"group {row.group_id}")
        foreach = kinds.get(row.group_id) == "foreach"
        block = seen.setdefault(name, Element(name, "foreach" if foreach else "parallel"))
        if not foreach and row.step not in block.members:
            block.members.append(row.step)
    for group in groups:
        name = group_names.get(group.pk, group.name)
        seen.setdefault(name, Element(name, "foreach" if group.kind == "foreach" else "parallel"))
    if current and current not in seen:
        seen[current] = Element(current, "step")
    return list(seen.values())


def visits(rows: Sequence[StepResult], group_names: dict[int, str]) -> list[str]:
    """The steps and blocks the run went through, in order; a retry is no new visit, a compensation none."""
    out: list[str] = []
    last: tuple[Any, ...] = ()
    for row in rows:
        if row.kind == "compensation":
            continue
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


def collapse(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not out or out[-1] != name:
            out.append(name)
    return out


def follows(elements: list[Element], after: str | None, into: dict[str, set[str]]) -> None:
    """Fill ``into``: what may follow each element in the definition (a goto is anything else)."""
    for position, element in enumerate(elements):
        following = elements[position + 1].name if position + 1 < len(elements) else after
        allowed = into.setdefault(element.name, set())
        if element.kind == "branch":
            for lane in element.lanes:
                if lane.elements:
                    allowed.add(lane.elements[0].name)
                    follows(lane.elements, following, into)
                elif following is not None:
                    allowed.add(following)
        elif following is not None:
            allowed.add(following)


def exits(element: Element) -> set[str]:
    """The names the run may leave ``element`` from: itself, or the last step of one of its cases."""
    out = {element.name}
    for lane in element.lanes:
        if lane.elements:
            out |= exits(lane.elements[-1])
    return out


def order_of(elements: list[Element]) -> list[str]:
    """Every element's name in definition order, a branch block's cases after it."""
    out = []
    for element in elements:
        out.append(element.name)
        for lane in element.lanes:
            out += order_of(lane.elements)
    return out


def fork_join(
    x: float,
    width: float,
    mid: float,
    bx: float,
    bw: float,
    by: float,
    taken: bool,
    block: str,
    name: str,
    mid_lane: bool = False,
) -> list[Edge]:
    fork = f"M{x:.1f},{mid:.1f} C{x + FORK_W * 0.7:.1f},{mid:.1f} {bx - FORK_W * 0.7:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    if mid_lane:  # an empty case: straight through its lane
        fork += f" L{bx + bw:.1f},{by:.1f}"
    end = x + width
    join = f"M{bx + bw:.1f},{by:.1f}"
    if bx + bw < end - FORK_W:  # a lane shorter than its block: straight on, then into the join
        join += f" L{end - FORK_W:.1f},{by:.1f}"
    join += f" C{end - FORK_W * 0.3:.1f},{by:.1f} {end - FORK_W * 0.7:.1f},{mid:.1f} {end:.1f},{mid:.1f}"
    key = f"{block}/{name}"
    return [Edge("fork", fork, taken, block, key), Edge("join", join, taken, key, block)]


def arc(
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
