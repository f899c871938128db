"""Shipping: schedule the delivery of an order."""

from __future__ import annotations

from ..models import Order, Shipment
from . import inventory


def schedule(order_id: int) -> tuple[str, Shipment] | tuple[str, str]:
    """``("ok", shipment)`` once the order's units are in stock, else the inventory's
    ``("error", "out_of_stock" | "not_found")``. Scheduling twice returns the first shipment."""
    match inventory.check(order_id):
        case ("ok", _):
            order = Order.objects.get(pk=order_id)
            shipment, _ = Shipment.objects.get_or_create(
                order=order, defaults={"tracking_number": f"TRK{order.pk:08d}"}
            )
            return ("ok", shipment)
        case failure:
            return failure
