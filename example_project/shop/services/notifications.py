"""Notifications: in-app messages."""

from __future__ import annotations

from typing import Any

from ..models import Notification


def unread(user_id: int) -> list[dict[str, Any]]:
    """Account ``user_id``'s unread notifications, oldest first, as plain data."""
    return [
        {"id": n.pk, "message": n.message}
        for n in Notification.objects.filter(account_id=user_id, read=False).order_by("id")
    ]
