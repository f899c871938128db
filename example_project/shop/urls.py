"""The example shop's own views: the payment provider's webhook."""

from django.urls import path

from . import webhooks

app_name = "shop"

urlpatterns = [
    path("webhooks/payments/", webhooks.payment_webhook, name="payment-webhook"),
]
