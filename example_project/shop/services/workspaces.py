"""Workspaces: one per account."""

from __future__ import annotations

from ..models import Account, Workspace


def create(user_id: int) -> Workspace:
    """The workspace of account ``user_id``, created on first call."""
    account = Account.objects.get(pk=user_id)
    workspace, _ = Workspace.objects.get_or_create(owner=account, defaults={"name": f"{account.name}'s workspace"})
    return workspace
