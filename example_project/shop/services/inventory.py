"""Inventory: is there enough stock for an order?"""

from __future__ import annotations

from django.db.models import Sum

from ..models import InventoryItem, Order


def check(order_id: int) -> tuple[str, InventoryItem] | tuple[str, str]:
    """``("ok", item)`` when the warehouse holds enough units of the order's product,
    ``("error", "out_of_stock")`` when it holds too few, ``("error", "not_found")`` when the
    order or its product does not exist."""
    order = Order.objects.filter(pk=order_id).first()
    item = InventoryItem.objects.filter(sku=order.sku).first() if order else None
    if item is None:
        return ("error", "not_found")
    if item.quantity < order.quantity:
        return ("error", "out_of_stock")
    return ("ok", item)


def total_units() -> int:
    """All units in the warehouse (a cheap local query)."""
    return InventoryItem.objects.aggregate(total=Sum("quantity"))["total"] or 0
