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


@admin.register(models.ExpenseClaim)
class ExpenseClaimAdmin(admin.ModelAdmin):
    list_display = ("id", "employee", "amount_cents", "description", "status", "decided_by", "approved_cents")
    list_filter = ("status",)
    search_fields = ("employee__email", "description", "decided_by")


@admin.register(models.PaymentIntent)
class PaymentIntentAdmin(admin.ModelAdmin):
    list_display = ("provider_ref", "order", "amount_cents", "status", "failure_reason", "run", "created_at")
    list_filter = ("status",)
    search_fields = ("provider_ref", "order__reference")
    raw_id_fields = ("order", "run")


admin.site.register(
    [
        models.Workspace,
        models.BillingAccount,
        models.Notification,
        models.PaymentAuthorization,
        models.Charge,
        models.Shipment,
        models.AuditEntry,
    ]
)
