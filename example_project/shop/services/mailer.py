"""Mailer: e-mail, written to the outbox (``SentMessage``) instead of an SMTP server."""

from __future__ import annotations

from ..models import Account, SentMessage


class MailerError(Exception):
    """The provider refused the message."""


def deliver(account: Account, subject: str, body: str) -> SentMessage:
    """Send one e-mail to ``account``; raises :class:`MailerError` for undeliverable addresses."""
    # ".invalid" is reserved (RFC 2606) and can never receive mail: a deterministic bounce.
    if account.email.endswith(".invalid"):
        raise MailerError(f"undeliverable address {account.email}")
    return SentMessage.objects.create(
        account=account, channel=SentMessage.Channel.EMAIL, recipient=account.email, subject=subject, body=body
    )


def send_welcome(user_id: int) -> SentMessage:
    """Send the welcome mail to account ``user_id``."""
    account = Account.objects.get(pk=user_id)
    return deliver(account, "Welcome to the shop", f"Hello {account.name}, your account is ready.")


def send(user_id: int) -> tuple[str, SentMessage] | tuple[str, str]:
    """Send a notification e-mail: ``("ok", message)`` or ``("error", reason)``."""
    account = Account.objects.filter(pk=user_id).first()
    if account is None:
        return ("error", "account_not_found")
    try:
        return ("ok", deliver(account, "Your order was updated", f"Hello {account.name}, there is news."))
    except MailerError:
        return ("error", "undeliverable_address")


def send_follow_up(user_id: int) -> SentMessage:
    """Send the follow-up mail that comes a while after the welcome mail."""
    account = Account.objects.get(pk=user_id)
    return deliver(account, "How are you getting on?", f"Hello {account.name}, anything we can help with?")
