"""SMS: text messages, written to the outbox (``SentMessage``)."""

from __future__ import annotations

from ..models import Account, SentMessage


def send(user_id: int) -> tuple[str, SentMessage] | tuple[str, str]:
    """Text account ``user_id``: ``("ok", message)``, or ``("error", "no_phone_number")`` without a number."""
    account = Account.objects.filter(pk=user_id).first()
    if account is None:
        return ("error", "account_not_found")
    if not account.phone:
        return ("error", "no_phone_number")
    message = SentMessage.objects.create(
        account=account,
        channel=SentMessage.Channel.SMS,
        recipient=account.phone,
        subject="Order update",
        body=f"Hi {account.name}, your order was updated.",
    )
    return ("ok", message)
