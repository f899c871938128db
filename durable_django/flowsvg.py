"""The flow graph as inline SVG: every name, status and tooltip escaped by ``format_html``.

Colours of statuses are the timeline's; everything else (text, outlines, the unreached steps)
follows the admin's theme variables through ``admin.css``, so it reads in light and dark themes.
"""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .flowgraph import MAX_DETAIL, STACK, Box, Edge, FlowGraph, Lane, Node, cut
from .timeaxis import status_colour

GOTO_COLOUR = "#be185d"


def _n(value: float) -> str:
    return f"{value:.1f}"


def _node_svg(node: Node) -> SafeString:
    colour = status_colour(node.status) if node.status else ""
    reached = "reached" if node.status else "unreached"
    classes = f"fg-node fg-{node.kind} fg-{reached}" + (" fg-current" if node.current else "")
    if node.status == "running":
        classes += " fg-running"
    if node.skipped:
        classes += " fg-skipped"
    halo = (
        format_html(
            '<rect class="fg-halo" x="{}" y="{}" width="{}" height="{}" rx="10" style="stroke: {}"/>',
            _n(node.x - 4),
            _n(node.y - 4),
            _n(node.w + 8),
            _n(node.h + 8),
            colour or "currentColor",
        )
        if node.current
        else ""
    )
    stripe = (
        format_html(
            '<rect class="fg-stripe" x="{}" y="{}" width="5" height="{}" rx="2" fill="{}"/>',
            _n(node.x),
            _n(node.y),
            _n(node.h),
            colour,
        )
        if colour
        else ""
    )
    # A foreach block's node stands for many items: cards stacked behind it.
    stack = (
        format_html_join(
            "",
            '<rect class="fg-stack" x="{}" y="{}" width="{}" height="{}" rx="6"{}/>',
            (
                (_n(node.x + shift), _n(node.y + shift), _n(node.w), _n(node.h), _stroke(colour))
                for shift in (STACK, STACK / 2)
            ),
        )
        if node.kind == "items"
        else ""
    )
    return format_html(
        '<g class="{}" data-node="{}" data-status="{}"><title>{}</title>{}{}'
        '<rect class="fg-box" x="{}" y="{}" width="{}" height="{}" rx="6"{}/>{}'
        '<text class="fg-label" x="{}" y="{}">{}</text>'
        '<text class="fg-detail" x="{}" y="{}">{}</text></g>',
        classes,
        node.key,
        node.status or "unreached",
        node.title,
        halo,
        stack,
        _n(node.x),
        _n(node.y),
        _n(node.w),
        _n(node.h),
        format_html(' style="fill: {}; stroke: {}"', colour, colour) if colour else "",
        stripe,
        _n(node.x + 12),
        _n(node.y + node.h / 2 - 3),
        node.label,
        _n(node.x + 12),
        _n(node.y + node.h / 2 + 11),
        cut(node.detail, MAX_DETAIL) if node.kind != "more" else node.detail,
    )


def _stroke(colour: str) -> SafeString | str:
    return format_html(' style="stroke: {}"', colour) if colour else ""


def _box_svg(box: Box) -> SafeString:
    colour = status_colour(box.status) if box.status else ""
    classes = f"fg-block fg-block-{box.kind}" + (" fg-current" if box.current else "")
    classes += ("" if box.status else " fg-unreached") + (" fg-skipped" if box.skipped else "")
    return format_html(
        '<g class="{}" data-block="{}" data-kind="{}" data-status="{}"><title>{}</title>'
        '<rect class="fg-block-box" x="{}" y="{}" width="{}" height="{}" rx="10"{}/>'
        '<text class="fg-block-label" x="{}" y="{}">{}</text>'
        '<text class="fg-block-note" x="{}" y="{}">{}</text></g>',
        classes,
        box.key,
        box.kind,
        box.status or "unreached",
        box.title,
        _n(box.x),
        _n(box.y),
        _n(box.w),
        _n(box.h),
        format_html(' style="stroke: {}"', colour) if colour else "",
        _n(box.x + 10),
        _n(box.y + 15),
        box.label,
        _n(box.x + 10),
        _n(box.y + 28),
        box.note,
    )


def _lane_svg(lane: Lane) -> SafeString:
    state = "taken" if lane.taken else "skipped" if lane.skipped else "open"
    return format_html(
        '<g class="fg-lane fg-lane-{}" data-block="{}" data-case="{}">'
        '<rect class="fg-lane-box" x="{}" y="{}" width="{}" height="{}" rx="6"/>'
        '<text class="fg-lane-label" x="{}" y="{}">{}</text></g>',
        state,
        lane.block,
        "" if lane.case is None else lane.case,
        _n(lane.x),
        _n(lane.y),
        _n(lane.w),
        _n(lane.h),
        _n(lane.x + 8),
        _n(lane.y + 13),
        cut(lane.label, 30),
    )


def _backdrop_svg(part: Box | Lane) -> SafeString:
    return _box_svg(part) if isinstance(part, Box) else _lane_svg(part)


def _edge_svg(edge: Edge) -> SafeString:
    marker = {"next": "fg-arrow", "goto": "fg-arrow-goto"}.get(edge.kind)
    classes = f"fg-edge fg-edge-{edge.kind} " + ("fg-taken" if edge.taken else "fg-not-taken")
    label = (
        format_html(
            '<text class="fg-goto-label" x="{}" y="{}" text-anchor="middle">{}</text>',
            _n(edge.label_x),
            _n(edge.label_y),
            edge.label,
        )
        if edge.label
        else ""
    )
    return format_html(
        '<g class="{}" data-source="{}" data-target="{}"><path d="{}"{}/>{}</g>',
        classes,
        edge.source,
        edge.target,
        edge.path,
        format_html(' marker-end="url(#{})"', marker) if marker else "",
        label,
    )


def render_svg(graph: FlowGraph) -> SafeString:
    """The graph as an inline ``<svg>`` (its own pixel size; wider ones scroll sideways)."""
    defs = mark_safe(
        "<defs>"
        '<marker id="fg-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path class="fg-arrowhead" d="M0,0 L10,5 L0,10 z"/></marker>'
        '<marker id="fg-arrow-goto" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{GOTO_COLOUR}"/></marker>'
        "</defs>"
    )
    edges = [edge for edge in graph.edges if edge.kind != "goto"]
    # What contains something else is larger, so drawn first: a branch block, its lanes, a block in a lane.
    backdrops: list[Box | Lane] = sorted([*graph.boxes, *graph.lanes], key=lambda part: -part.w * part.h)
    return format_html(
        '<svg class="durable-flowgraph" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "{}{}{}{}{}</svg>",
        _n(graph.width),
        _n(graph.height),
        _n(graph.width),
        _n(graph.height),
        "flow graph of the workflow",
        defs,
        format_html_join("", "{}", ((_backdrop_svg(part),) for part in backdrops)),
        format_html_join("", "{}", ((_edge_svg(edge),) for edge in edges)),
        format_html_join("", "{}", ((_node_svg(node),) for node in graph.nodes)),
        format_html_join("", "{}", ((_edge_svg(edge),) for edge in graph.gotos)),
    )
