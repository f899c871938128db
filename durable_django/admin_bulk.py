"""Retrying and cancelling the runs selected on the run list, all at once.

The list's actions call :func:`durable_django.bulk.retry_runs` and
:func:`~durable_django.bulk.cancel_runs` with the selection, and say how many of the selected
runs they changed and how many they left alone (those not in a state for it). They need the
change permission on workflow runs, as the buttons of a run's page do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from . import bulk
from .models import WorkflowRun

if TYPE_CHECKING:
    _RunAdminBase = admin.ModelAdmin[WorkflowRun]
else:
    _RunAdminBase = object

#: What a bulk action tells: how many of the selected runs it changed, and how many it left alone.
BULK_MESSAGES = {
    "retry": (
        _("Retried %(count)d of the %(selected)d selected runs."),
        _("Left %(count)d alone: only a failed run (whose compensations have not run) can be retried."),
    ),
    "cancel": (
        _("Cancelled %(count)d of the %(selected)d selected runs."),
        _("Left %(count)d alone: only a pending, running or waiting run can be cancelled."),
    ),
}


class RunBulkAdmin(_RunAdminBase):
    """The run list's actions that retry or cancel the selected runs."""

    @admin.action(description=_("Retry selected runs"), permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        """Retry the failed runs of the selection at once (:func:`durable_django.bulk.retry_runs`)."""
        selected = queryset.count()
        retried = bulk.retry_runs(queryset)
        self._tell_counts(request, retried, selected, BULK_MESSAGES["retry"])

    @admin.action(description=_("Cancel selected runs"), permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        """Cancel the unfinished runs of the selection at once (:func:`durable_django.bulk.cancel_runs`)."""
        selected = queryset.count()
        cancelled = bulk.cancel_runs(queryset)
        self._tell_counts(request, cancelled, selected, BULK_MESSAGES["cancel"])

    def _tell_counts(self, request: HttpRequest, changed: int, selected: int, texts: tuple[Any, Any]) -> None:
        done, left = texts
        self.message_user(
            request, done % {"count": changed, "selected": selected}, messages.SUCCESS if changed else messages.WARNING
        )
        if selected > changed:
            self.message_user(request, left % {"count": selected - changed}, messages.WARNING)
