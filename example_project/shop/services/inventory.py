"""Inventory: is there enough stock for an order?"""

from __future__ import annotations

from django.db.models import F, Sum

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


def reserve(sku: str, quantity: int) -> tuple[str, InventoryItem] | tuple[str, str]:
    """Take ``quantity`` units of ``sku`` off the shelf: ``("ok", item)``, or ``("error", "unavailable")``
    when fewer are left (``"not_found"`` for an unknown product). One conditional update: two
    reservations of the last unit cannot both succeed."""
    taken = InventoryItem.objects.filter(sku=sku, quantity__gte=quantity).update(quantity=F("quantity") - quantity)
    if not taken:
        return ("error", "unavailable" if InventoryItem.objects.filter(sku=sku).exists() else "not_found")
    return ("ok", InventoryItem.objects.get(sku=sku))


def release(sku: str, quantity: int) -> InventoryItem:
    """Put ``quantity`` reserved units of ``sku`` back on the shelf."""
    InventoryItem.objects.filter(sku=sku).update(quantity=F("quantity") + quantity)
    return InventoryItem.objects.get(sku=sku)
