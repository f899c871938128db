"""Data the examples run against: the warehouse's stock, and helpers to create customers and orders.

Everything here is idempotent or uses caller-chosen unique keys, so the demo command can seed
the same database again and again.
"""

from __future__ import annotations

from .models import Account, InventoryItem, Notification, Order

# (sku, name, units in stock). The mug is sold out; "GHOST-01", ordered by some examples,
# is deliberately missing from the warehouse.
STOCK = [
    ("KB-01", "Mechanical keyboard", 25),
    ("MUG-01", "Shop mug", 0),
]
UNKNOWN_SKU = "GHOST-01"
# The hotel's double rooms, which the booking saga reserves (kept out of the shop's STOCK).
ROOM_SKU = "ROOM-DBL"
ROOMS = 10


def seed_stock() -> None:
    """Put the warehouse back to its known stock levels."""
    for sku, name, quantity in STOCK:
        InventoryItem.objects.update_or_create(sku=sku, defaults={"name": name, "quantity": quantity})


def seed_rooms() -> None:
    """Put the hotel's rooms back to ROOMS free ones."""
    InventoryItem.objects.update_or_create(sku=ROOM_SKU, defaults={"name": "Double room", "quantity": ROOMS})


def customer(email: str, name: str, phone: str = "", *, unread: list[str] | None = None) -> Account:
    """The account for ``email`` (created if needed), with ``unread`` notifications added."""
    account, _ = Account.objects.get_or_create(email=email, defaults={"name": name, "phone": phone})
    for message in unread or ():
        Notification.objects.create(account=account, message=message)
    return account


def order(
    reference: str,
    account: Account,
    *,
    sku: str = "KB-01",
    quantity: int = 1,
    total_cents: int = 8900,
    card: str = "tok_visa",
) -> Order:
    """The order ``reference`` (created if needed)."""
    created, _ = Order.objects.get_or_create(
        reference=reference,
        defaults={"account": account, "sku": sku, "quantity": quantity, "total_cents": total_cents, "card_token": card},
    )
    return created
