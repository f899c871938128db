"""A workflow that runs on a schedule: the stock report, declared in ``shop.workflows``.

Every Monday at 07:00 in Berlin a run lists the products that are running low (fewer units than
``threshold``), so that someone orders more. The demo fires it as a worker would (``shop.schedule_demo``).
"""

from __future__ import annotations

from typing import Any

from durable_django import ok, step, workflow

from .models import InventoryItem

Ctx = dict[str, Any]


def list_low_stock(ctx: Ctx) -> tuple[Any, ...]:
    threshold = ctx.get("threshold", 5)
    low = InventoryItem.objects.filter(quantity__lt=threshold).order_by("sku")
    return ok({"low_stock": [item.sku for item in low], "threshold": threshold})


def summarize(ctx: Ctx) -> tuple[Any, ...]:
    count = len(ctx["low_stock"])
    return ok({"summary": f"{count} product(s) below {ctx['threshold']} units" if count else "stock is fine"})


stock_report = workflow(
    "stock_report",
    [step("list_low_stock", list_low_stock), step("summarize", summarize)],
)
