"""Payment: card authorizations for orders and charges for plain amounts."""

from __future__ import annotations

from ..models import Charge, Order, PaymentAuthorization

# The card token the (imaginary) provider always declines, after the providers' own test tokens.
DECLINED_TOKEN = "tok_chargeDeclined"


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
