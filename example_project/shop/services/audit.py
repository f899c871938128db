"""Audit: an append-only trail of what happened to an order."""

from __future__ import annotations

from typing import Any

from ..models import AuditEntry, Order


def record(order_id: int, event: str, detail: dict[str, Any]) -> AuditEntry:
    """Append ``event`` to the order's trail; recording the same event twice keeps the first entry."""
    entry, _ = AuditEntry.objects.get_or_create(
        order=Order.objects.get(pk=order_id), event=event, defaults={"detail": detail}
    )
    return entry
