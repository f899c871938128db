"""Users: create accounts."""

from __future__ import annotations

from typing import Any

from ..models import Account


def create(data: dict[str, Any]) -> Account:
    """The account for ``data["email"]``, created from ``data`` unless it exists.

    Idempotent, so a step that calls it can safely run again after a crash.
    """
    account, _ = Account.objects.get_or_create(
        email=data["email"], defaults={"name": data.get("name", ""), "phone": data.get("phone", "")}
    )
    return account


def get(user_id: int) -> Account | None:
    """The account ``user_id``, or ``None``."""
    return Account.objects.filter(pk=user_id).first()
