"""Foreach blocks: the list a block runs over, each item's context, and the results as a list.

A foreach block is a group like a parallel block's, whose branch rows are its items: each named
like the block, told apart by ``item_index``. The list is evaluated once, when the run enters the
block, and stored on the group, so every worker (and every retry) sees the same items.
"""

from __future__ import annotations

import copy
from typing import Any

from . import results
from .context import StepScope, Unserializable, roundtrip, step_scope
from .definition import INDEX_KEY, Foreach


def evaluate(block: Foreach, run_id: Any, ctx: dict[str, Any]) -> tuple[list[Any], None] | tuple[None, dict[str, Any]]:
    """The items of ``block`` for a run whose context is ``ctx``: ``(items, None)``, or ``(None,
    reason)`` when they are not a JSON list (``{"type": "invalid_items", ...}``)."""
    where = f"items of foreach block {block.name!r}"
    try:
        if isinstance(block.items, str):
            value = ctx.get(block.items)
            where = f"context key {block.items!r} ({where})"
        else:
            with step_scope(StepScope(run_id, block.name, ctx)):
                value = block.items(ctx)
    except Exception as exc:
        return None, results.exception_reason(exc, "invalid_items")
    if not isinstance(value, list | tuple):
        return None, results.invalid_items(f"{where} must be a list, got {type(value).__name__}")
    try:
        return roundtrip(list(value)), None
    except Unserializable as exc:
        return None, results.invalid_items(f"{where} cannot be stored as JSON: {exc}")


def item_context(ctx: dict[str, Any], block: Foreach, items: list[Any], index: int) -> dict[str, Any]:
    """The context item ``index`` executes with: a copy of ``ctx`` with the item and its index."""
    own = copy.deepcopy(ctx)
    own[block.item_key] = copy.deepcopy(items[index])
    own[INDEX_KEY] = index
    return own


def as_list(latest: dict[tuple[str, int | None], tuple[Any, ...]], count: int) -> list[list[Any]]:
    """The results of a foreach block's items in item order, ``["ok", output]`` / ``["error", error]``.

    ``latest``: each item's final attempt (see :func:`durable_django.join.final_attempts`); an
    item without one (a fail_fast block decided before it ran) is ``["error", {"type": "not_run"}]``.
    """
    by_index = {item: branch for (_, item), branch in latest.items()}
    out: list[list[Any]] = []
    for index in range(count):
        found = by_index.get(index)
        if found is None:
            out.append(["error", results.not_run()])
        else:
            _, _, status, output, error, _, _ = found
            out.append(["ok", output] if status == "completed" else ["error", error])
    return out
