"""The example shop's rows in the admin, next to the workflow runs that created them."""

from __future__ import annotations

from django.contrib import admin

from . import models


@admin.register(models.Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("email", "name", "phone", "created_at")
    search_fields = ("email", "name")


@admin.register(models.SentMessage)
class SentMessageAdmin(admin.ModelAdmin):
    list_display = ("sent_at", "channel", "recipient", "subject")
    list_filter = ("channel",)


@admin.register(models.Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("reference", "account", "sku", "quantity", "total_cents", "card_token", "created_at")
    search_fields = ("reference", "account__email")


@admin.register(models.InventoryItem)
class InventoryItemAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "quantity")


@admin.register(models.ExternalEndpoint)
class ExternalEndpointAdmin(admin.ModelAdmin):
    list_display = ("key", "fail_first", "calls")


admin.site.register(
    [
        models.Workspace,
        models.BillingAccount,
        models.Notification,
        models.PaymentAuthorization,
        models.Charge,
        models.Shipment,
    ]
)
