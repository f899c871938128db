"""The example shop's data: what the services in ``shop.services`` read and write.

Each model is the smallest thing that lets a workflow step do real work against the database,
so the examples show real rows (accounts, mails, orders, shipments) rather than printed messages.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Account(models.Model):
    """A customer. No phone number means no SMS; an address under ``.invalid`` never accepts mail."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=100)
    phone = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.email


class SentMessage(models.Model):
    """The outbox: one row per e-mail or SMS handed to the (imaginary) provider."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        SMS = "sms"

    account = models.ForeignKey(Account, models.CASCADE, related_name="messages")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.subject}"


class Workspace(models.Model):
    """Where an onboarded account works; one per account."""

    owner = models.OneToOneField(Account, models.CASCADE, related_name="workspace")
    name = models.CharField(max_length=120)

    def __str__(self) -> str:
        return self.name


class BillingAccount(models.Model):
    """An account's billing profile; every account starts on the free plan."""

    account = models.OneToOneField(Account, models.CASCADE, related_name="billing")
    plan = models.CharField(max_length=32, default="free")

    def __str__(self) -> str:
        return f"{self.account} ({self.plan})"


class Notification(models.Model):
    """An in-app notification, shown on the dashboard until read."""

    account = models.ForeignKey(Account, models.CASCADE, related_name="notifications")
    message = models.CharField(max_length=200)
    read = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.message


class InventoryItem(models.Model):
    """A product and how many units the warehouse holds."""

    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.sku} ({self.quantity} in stock)"


class Order(models.Model):
    """One order of ``quantity`` units of ``sku``, paid with a card token.

    ``sku`` is a plain string rather than a foreign key: an order for a product the warehouse
    does not know is exactly the "not found" case the examples need.
    """

    reference = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(Account, models.CASCADE, related_name="orders")
    sku = models.CharField(max_length=32)
    quantity = models.PositiveIntegerField(default=1)
    total_cents = models.PositiveIntegerField()
    # Test card tokens in the style of payment providers: "tok_visa" is authorized,
    # "tok_chargeDeclined" is declined (see services.payment).
    card_token = models.CharField(max_length=64, default="tok_visa")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return self.reference


class PaymentAuthorization(models.Model):
    """A card authorization for an order (at most one per order)."""

    order = models.OneToOneField(Order, models.CASCADE, related_name="authorization")
    code = models.CharField(max_length=16, unique=True)
    amount_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.code


class Charge(models.Model):
    """An amount captured by the payment child workflow."""

    amount_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=16, default="captured")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"charge {self.pk}: {self.amount_cents} ({self.status})"


class Shipment(models.Model):
    """A scheduled delivery of an order (at most one per order)."""

    order = models.OneToOneField(Order, models.CASCADE, related_name="shipment")
    carrier = models.CharField(max_length=32, default="postal")
    tracking_number = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, default="scheduled")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.tracking_number


class ExternalEndpoint(models.Model):
    """Bookkeeping of the flaky external API: it fails its first ``fail_first`` calls per key.

    The counter lives in the database so that every attempt, whichever worker process runs it,
    sees the calls made before it.
    """

    key = models.CharField(max_length=64, unique=True)
    fail_first = models.PositiveIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.calls} call(s), fails the first {self.fail_first}"


class ExpenseClaim(models.Model):
    """An employee's expense claim: a manager approves it, or a director once the manager is too slow.

    Employees have accounts in the shop like customers, so the outcome is mailed to them the
    same way. ``approved_cents`` can be less than the claimed amount (a director's decision).
    """

    class Status(models.TextChoices):
        SUBMITTED = "submitted"
        ESCALATED = "escalated"
        APPROVED = "approved"
        PAID = "paid"
        REJECTED = "rejected"

    employee = models.ForeignKey(Account, models.CASCADE, related_name="expense_claims")
    amount_cents = models.PositiveIntegerField()
    description = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    decided_by = models.CharField(max_length=150, blank=True, help_text="Username of who approved or rejected it.")
    approved_cents = models.PositiveIntegerField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True, help_text="The decider's comment.")
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        # Who may answer the workflow's approval inputs (see shop.waiting.expense_approval).
        permissions = [("approve_expenses", "Can approve expense claims")]

    def __str__(self) -> str:
        return f"claim {self.pk}: {self.amount_cents} for {self.description} ({self.status})"


class PaymentIntent(models.Model):
    """A payment the (imaginary) provider settles later, telling the shop by webhook.

    ``provider_ref`` is the provider's id of the intent, which its webhooks carry; ``run`` is the
    workflow run that waits for them, so the webhook view knows where to send the event.
    """

    class Status(models.TextChoices):
        CREATED = "created"
        PROCESSING = "processing"
        SETTLED = "settled"
        FAILED = "failed"
        EXPIRED = "expired"

    order = models.ForeignKey(Order, models.CASCADE, related_name="payment_intents")
    amount_cents = models.PositiveIntegerField()
    provider_ref = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    failure_reason = models.CharField(max_length=100, blank=True)
    run = models.OneToOneField(
        "durable_django.WorkflowRun", models.SET_NULL, null=True, blank=True, related_name="payment_intent"
    )
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.provider_ref} ({self.status})"


class AuditEntry(models.Model):
    """What the audit trail recorded about an order, written by a child run the order's run does not wait for."""

    order = models.ForeignKey(Order, models.CASCADE, related_name="audit_entries")
    event = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("created_at", "id")
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.order_id}: {self.event}"
