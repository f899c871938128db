"""Orders: listing recent orders."""

from __future__ import annotations

from typing import Any

from ..models import Order

MAX_LIMIT = 100


def as_data(order: Order) -> dict[str, Any]:
    """An order as plain, JSON-ready data."""
    return {
        "id": order.pk,
        "reference": order.reference,
        "sku": order.sku,
        "quantity": order.quantity,
        "total_cents": order.total_cents,
    }


def recent(limit: int = 10, *, user_id: int | None = None) -> tuple[str, Any]:
    """The newest ``limit`` orders (of one account if ``user_id`` is given).

    ``("ok", [order, ...])``, or ``("error", reason)`` when ``limit`` is outside 1..100, the
    way a real API rejects an oversized page.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        return ("error", f"limit must be an integer between 1 and {MAX_LIMIT}, got {limit!r}")
    orders = Order.objects.all() if user_id is None else Order.objects.filter(account_id=user_id)
    return ("ok", [as_data(order) for order in orders[:limit]])
