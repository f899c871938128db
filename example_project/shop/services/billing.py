"""Billing: every account gets a billing profile on the free plan."""

from __future__ import annotations

from ..models import Account, BillingAccount


def setup(user_id: int) -> BillingAccount:
    """The billing profile of account ``user_id``, created on first call."""
    billing, _ = BillingAccount.objects.get_or_create(account=Account.objects.get(pk=user_id))
    return billing
