"""The payment provider's webhook: a signed POST telling the shop how a payment intent ended.

The body is JSON, ``{"type": "payment.settled", "data": {"provider_ref": "pi_...", ...}}`` (or
``payment.failed``, with a ``reason`` in ``data``). The ``X-Shop-Signature`` header holds
``sha256=`` and the hex HMAC-SHA256 of the raw body under the ``SHOP_WEBHOOK_SECRET`` setting.
The view finds the run waiting for the intent and sends it the event; ``data`` is its payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from durable_django import RunStateError, send_event

from .models import PaymentIntent
from .waiting import SETTLEMENT_EVENTS

SIGNATURE_HEADER = "X-Shop-Signature"


def sign(body: bytes, secret: str | None = None) -> str:
    """The signature header's value for ``body`` (under ``SHOP_WEBHOOK_SECRET`` by default)."""
    key = settings.SHOP_WEBHOOK_SECRET if secret is None else secret
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _refused(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # the provider holds no CSRF token: the signature authenticates the request
@require_POST
def payment_webhook(request: HttpRequest) -> JsonResponse:
    """200 ``{"result": "delivered" | "buffered"}``; 403 bad signature, 400 bad body, 404 unknown intent."""
    # An empty secret would let anyone compute a valid signature.
    if not getattr(settings, "SHOP_WEBHOOK_SECRET", ""):
        return _refused(403, "SHOP_WEBHOOK_SECRET is not set: webhooks are refused")
    # Checked before the body is parsed: nothing unauthenticated is read.
    if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, "").encode(), sign(request.body).encode()):
        return _refused(403, f"the {SIGNATURE_HEADER} header does not match the body")
    try:
        body = json.loads(request.body)
    except ValueError:
        return _refused(400, "the body is not JSON")
    event = body.get("type") if isinstance(body, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    if event not in SETTLEMENT_EVENTS:
        return _refused(400, f"type must be one of {', '.join(SETTLEMENT_EVENTS)}, got {event!r}")
    if not isinstance(data, dict) or not isinstance(data.get("provider_ref"), str):
        return _refused(400, "data must be an object with the intent's provider_ref")
    run_id = PaymentIntent.objects.filter(provider_ref=data["provider_ref"]).values_list("run_id", flat=True).first()
    if run_id is None:
        return _refused(404, f"no payment intent {data['provider_ref']!r}")
    try:
        # "buffered" when the run does not wait for the event yet: its wait takes it later.
        result = send_event(run_id, event, data)
    except RunStateError as exc:
        return _refused(409, str(exc))
    return JsonResponse({"result": result})
