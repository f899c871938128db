"""Expenses: employees' claims, the decision on them and the payout."""

from __future__ import annotations

from django.utils import timezone

from ..models import Account, ExpenseClaim
from . import mailer


def submit(employee_id: int, amount_cents: int, description: str) -> ExpenseClaim:
    """Record a claim of ``amount_cents`` by account ``employee_id``."""
    employee = Account.objects.get(pk=employee_id)
    return ExpenseClaim.objects.create(employee=employee, amount_cents=amount_cents, description=description)


def escalate(claim_id: int) -> ExpenseClaim:
    """Mark the claim as waiting for a director."""
    ExpenseClaim.objects.filter(pk=claim_id).update(status=ExpenseClaim.Status.ESCALATED)
    return ExpenseClaim.objects.get(pk=claim_id)


def decide(claim_id: int, *, approved: bool, by: str, note: str = "", amount_cents: int | None = None) -> ExpenseClaim:
    """Record the decision on a claim: approved (for ``amount_cents``, the claimed amount by default) or rejected.

    Deciding again overwrites the decision with the same values, so a step that calls it can run twice.
    """
    claim = ExpenseClaim.objects.get(pk=claim_id)
    claim.status = ExpenseClaim.Status.APPROVED if approved else ExpenseClaim.Status.REJECTED
    claim.approved_cents = (claim.amount_cents if amount_cents is None else amount_cents) if approved else None
    claim.decided_by = by
    claim.note = note
    claim.decided_at = timezone.now()
    claim.save(update_fields=["status", "approved_cents", "decided_by", "note", "decided_at"])
    return claim


def pay(claim_id: int) -> ExpenseClaim:
    """Pay an approved claim's approved amount out to the employee; paying twice pays once."""
    claim = ExpenseClaim.objects.get(pk=claim_id)
    if claim.status == ExpenseClaim.Status.APPROVED:
        claim.status = ExpenseClaim.Status.PAID
        claim.paid_at = timezone.now()
        claim.save(update_fields=["status", "paid_at"])
    return claim


def notify(claim_id: int) -> None:
    """Mail the employee the outcome of their claim."""
    claim = ExpenseClaim.objects.select_related("employee").get(pk=claim_id)
    if claim.status == ExpenseClaim.Status.PAID:
        subject = f"Expense claim {claim.pk} paid"
        body = f"{claim.approved_cents} cents for {claim.description!r} are on their way."
    else:
        subject = f"Expense claim {claim.pk} {claim.status}"
        body = f"Your claim for {claim.description!r} was {claim.status} by {claim.decided_by or 'nobody'}."
    if claim.note:
        body += f" Note: {claim.note}"
    mailer.deliver(claim.employee, subject, body)
