"""Payment: card authorizations for orders, charges for plain amounts, and payment intents."""

from __future__ import annotations

import secrets

from django.utils import timezone

from ..models import Charge, Order, PaymentAuthorization, PaymentIntent

# The card token the (imaginary) provider always declines, after the providers' own test tokens.
DECLINED_TOKEN = "tok_chargeDeclined"
# A card the provider charges but refuses to refund (a closed account, say).
REFUND_BLOCKED_TOKEN = "tok_refundBlocked"


def authorize(order_id: int) -> tuple[str, PaymentAuthorization] | tuple[str, str]:
    """``("ok", authorization)`` for the order's total, or ``("error", reason)``:
    ``"card_declined"`` for the declined test token, ``"not_found"`` for an unknown order.

    Authorizing an order twice returns its first authorization, so a retried step charges once.
    """
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return ("error", "not_found")
    if order.card_token == DECLINED_TOKEN:
        return ("error", "card_declined")
    auth, _ = PaymentAuthorization.objects.get_or_create(
        order=order, defaults={"code": f"AUTH-{order.pk:06d}", "amount_cents": order.total_cents}
    )
    return ("ok", auth)


def charge(amount_cents: int) -> tuple[str, Charge] | tuple[str, str]:
    """Capture ``amount_cents``: ``("ok", charge)``, or ``("error", "invalid_amount")`` unless positive."""
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        return ("error", "invalid_amount")
    return ("ok", Charge.objects.create(amount_cents=amount_cents))


class RefundRefused(Exception):
    """The provider would not refund a charge."""


def refund(charge_id: int, card_token: str) -> Charge:
    """Give a captured charge back to the card it came from; refunding it twice refunds it once.

    Raises :class:`RefundRefused` for a card the provider refuses to refund.
    """
    if card_token == REFUND_BLOCKED_TOKEN:
        raise RefundRefused(f"the provider refuses refunds to card {card_token}")
    Charge.objects.filter(pk=charge_id, status="captured").update(status="refunded")
    return Charge.objects.get(pk=charge_id)


# -- payment intents: settled later by the provider, which calls the shop's webhook ---------------


def create_intent(order_id: int) -> PaymentIntent:
    """A new intent for the order's total, registered with the provider (which assigns its reference)."""
    order = Order.objects.get(pk=order_id)
    return PaymentIntent.objects.create(
        order=order, amount_cents=order.total_cents, provider_ref=f"pi_{secrets.token_hex(8)}"
    )


def confirm_intent(intent_id: int) -> PaymentIntent:
    """Ask the provider to charge the intent; it answers later, with a webhook."""
    PaymentIntent.objects.filter(pk=intent_id, status=PaymentIntent.Status.CREATED).update(
        status=PaymentIntent.Status.PROCESSING
    )
    return PaymentIntent.objects.get(pk=intent_id)


def close_intent(intent_id: int, status: str, failure_reason: str = "") -> PaymentIntent:
    """Record how the intent ended: settled, failed (with the provider's reason) or expired."""
    intent = PaymentIntent.objects.get(pk=intent_id)
    intent.status = status
    intent.failure_reason = failure_reason
    intent.settled_at = timezone.now() if status == PaymentIntent.Status.SETTLED else None
    intent.save(update_fields=["status", "failure_reason", "settled_at"])
    return intent
