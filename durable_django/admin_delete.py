"""Deleting runs in the admin: a finished run from its page, finished runs from the list.

Who may delete: a user with the delete permission on workflow runs. What may be deleted is
:mod:`durable_django.retention`'s rule: a finished run whose parent and child runs (at any
depth) have finished too; its step results, groups, waits, events and child runs go with it. A
run that may not be deleted is refused with a message that says why and what to do (cancel it
first), on its page or on the list; a selection on the list is deleted whole or not at all.
The deletion itself is :func:`durable_django.retention.delete_runs`, which reads the runs again
``FOR UPDATE``: a run retried between the confirmation page and the deletion is refused then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import retention
from .admin_display import change_url
from .exceptions import RunNotDeletable
from .models import Event, ParallelGroup, StepResult, Wait, WorkflowRun

if TYPE_CHECKING:
    _RunAdminBase = admin.ModelAdmin[WorkflowRun]
else:
    _RunAdminBase = object

#: The refused runs a refusal of a selection names, at most (it counts the others).
NAMED = 5


def run_name(run: WorkflowRun) -> str:
    return gettext("%(workflow)s run %(id)s") % {"workflow": run.workflow, "id": run.pk}


class RunDeletionAdmin(_RunAdminBase):
    """The delete view and the *Delete selected* action of the run admin, for finished runs only."""

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # A run's attempts, groups, waits and events go with it, although their own admins are read-only.
        parts = {str(model._meta.verbose_name) for model in (StepResult, ParallelGroup, Wait, Event)}
        return deleted, counts, {name for name in perms_needed if str(name) not in parts}, protected

    def delete_model(self, request: HttpRequest, obj: WorkflowRun) -> None:
        retention.delete_runs([obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        retention.delete_runs(list(queryset.values_list("pk", flat=True)))

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = self.get_object(request, unquote(object_id))
        if run is not None and self.has_delete_permission(request, run):
            reason = retention.deletion_refusals([run.pk]).get(run.pk)
            if reason:
                return self._refused(request, run, reason)
        try:
            return super().delete_view(request, object_id, extra_context)
        except RunNotDeletable as exc:
            # The run moved between the confirmation page and the deletion (a retry, say).
            assert run is not None
            return self._refused(request, run, exc.refusals.get(run.pk, str(exc)))

    def _refused(self, request: HttpRequest, run: WorkflowRun, reason: str) -> HttpResponse:
        self.message_user(
            request,
            gettext("Did not delete %(run)s: %(reason)s") % {"run": run_name(run), "reason": reason},
            messages.ERROR,
        )
        return HttpResponseRedirect(change_url(self.admin_site, WorkflowRun, run.pk))

    @admin.action(description=_("Delete selected finished runs"), permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> HttpResponse | None:
        """Django's *Delete selected*, for a selection of runs each of which may be deleted."""
        if self._refuse_selection(request, queryset):
            return None
        try:
            with transaction.atomic():
                return django_delete_selected(self, request, queryset)
        except RunNotDeletable:
            # A selected run moved since it was checked above: say which, as if it had not.
            self._refuse_selection(request, queryset)
            return None

    def _refuse_selection(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> bool:
        """Say why, and return ``True``, when some of the selected runs may not be deleted."""
        runs = {run.pk: run for run in queryset.only("id", "workflow")}
        refused = retention.deletion_refusals(list(runs))
        if not refused:
            return False
        # In the order of the list.
        named = [
            gettext("%(run)s: %(reason)s") % {"run": run_name(run), "reason": refused[run_id]}
            for run_id, run in runs.items()
            if run_id in refused
        ][:NAMED]
        if len(refused) > NAMED:
            named.append(gettext("and %(count)d more.") % {"count": len(refused) - NAMED})
        self.message_user(
            request,
            gettext(
                "Nothing was deleted: %(refused)d of the %(selected)d selected runs may not be deleted now. "
                "Leave them out of the selection, or cancel them first. %(reasons)s"
            )
            % {"refused": len(refused), "selected": len(runs), "reasons": " ".join(named)},
            messages.ERROR,
        )
        return True
