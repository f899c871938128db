"""Analytics: today's numbers, computed from the orders and accounts tables."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from ..models import Account, Order


def daily_metrics() -> dict[str, Any]:
    """Orders, revenue and new accounts of the current day."""
    today = timezone.localdate()
    orders = Order.objects.filter(created_at__date=today).aggregate(count=Count("id"), revenue=Sum("total_cents"))
    return {
        "date": today.isoformat(),
        "orders": orders["count"],
        "revenue_cents": orders["revenue"] or 0,
        "new_accounts": Account.objects.filter(created_at__date=today).count(),
    }
