"""The admin: runs, their step attempts and parallel groups, read-only, with a timeline per run.

Nothing here writes run state. Retrying and cancelling (the buttons of a run's page) go through
:mod:`durable_django.operations`, those of the list's selection through :mod:`durable_django.bulk`
(:mod:`durable_django.admin_bulk`), and "Rerun from here" through :mod:`durable_django.forks`
(:mod:`durable_django.admin_forks`), like the API and the management commands; each needs the
change permission on workflow runs; so does sending an event to a run
(:mod:`durable_django.admin_waits`; the inbox and the admins of waits and events are in
:mod:`durable_django.admin_inbox`). Every field is read-only; a run may be deleted (with the
delete permission) only once it, its parent and its children are finished
(:mod:`durable_django.admin_delete`). A filter a list cannot apply is answered with a message
(:mod:`durable_django.admin_lists`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.options import BaseModelAdmin
from django.contrib.admin.utils import flatten, flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import (
    admin_inbox,  # noqa: F401 - registers the inbox and the admins of waits and events
    admin_schedules,  # noqa: F401 - registers the admin of schedules
    operations,
)
from .admin_bulk import RunBulkAdmin
from .admin_columns import DisplayColumns, ReadOnlyAdmin
from .admin_delete import RunDeletionAdmin
from .admin_display import (
    ADMIN_CSS,
    bounded_results,
    change_url,
    group_outcomes,
    moment,
    outcome,
    run_link,
    short_id,
)
from .admin_forks import RunForksAdmin
from .admin_items import group_rows
from .admin_lists import GuardedListAdmin, RunRowsSearchAdmin
from .admin_logs import LogCount, LogsCountedChangeList, step_logs
from .admin_run import RunPageAdmin
from .admin_waits import RunWaitsAdmin
from .exceptions import RunStateError
from .models import ParallelGroup, RunStatus, StepResult, Wait, WorkflowRun
from .timeline import wait_subject

if TYPE_CHECKING:
    _AdminBase = BaseModelAdmin[Any]
else:
    _AdminBase = BaseModelAdmin


# What each operator action calls in durable_django.operations, what it reports per run and what
# it records in the run's admin history.
OPERATIONS = {
    "retry": (
        "retry_run",
        _("Retried %(run)s: it is running again."),
        _("Did not retry %(run)s: %(reason)s"),
        _("Retried."),
    ),
    "cancel": ("cancel_run", _("Cancelled %(run)s."), _("Did not cancel %(run)s: %(reason)s"), _("Cancelled.")),
}


# -- inlines of a run's page ---------------------------------------------------------------------


class _RunPartInline(ReadOnlyAdmin, DisplayColumns):
    """An inline of a run's page, shown to whoever may see the run."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return user.has_perm("durable_django.view_workflowrun") or user.has_perm("durable_django.change_workflowrun")


class StepResultInline(_RunPartInline, admin.TabularInline):
    model = StepResult
    verbose_name = _("step attempt")
    verbose_name_plural = _("step attempts, in execution order")
    fields = (
        "step_link",
        "kind",
        "group_name",
        "item_index",
        "attempt",
        "status_badge",
        "started",
        "finished",
        "duration_display",
        "result",
        "logs_folded",
    )
    readonly_fields = fields

    @admin.display(description=_("logs"))
    def logs_folded(self, obj: StepResult) -> SafeString | str:
        return step_logs(obj.logs, folded=True)

    def get_queryset(self, request: HttpRequest) -> QuerySet[StepResult]:
        waiting = Prefetch("waits", queryset=Wait.objects.waiting().order_by("created_at"), to_attr="open_waits")
        return super().get_queryset(request).select_related("group").prefetch_related(waiting).order_by("id")

    @admin.display(description=_("step"))
    def step_link(self, obj: StepResult) -> SafeString:
        return format_html('<a href="{}">{}</a>', change_url(self.admin_site, StepResult, obj.pk), obj.step)

    @admin.display(description=_("parallel group"))
    def group_name(self, obj: StepResult) -> str:
        return obj.group.name if obj.group else ""

    @admin.display(description=_("output or error"))
    def result(self, obj: StepResult) -> SafeString:
        waits = getattr(obj, "open_waits", None)
        if waits:  # the attempt's code is done; the step goes on when its wait ends
            subjects = ", ".join(wait_subject(wait) for wait in waits)
            return format_html('<span class="durable-step-waits">{} {}</span>', gettext("waits for"), subjects)
        return format_html("<code>{}</code>", outcome(obj))


class ParallelGroupInline(_RunPartInline, admin.StackedInline):
    model = ParallelGroup
    show_change_link = True
    verbose_name_plural = _("parallel and foreach blocks")
    fields = (
        "status_badge",
        "kind",
        "on_error",
        "counts",
        "created",
        "finished",
        "duration_display",
        "branch_list",
        "error_json",
        "history_table",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ParallelGroup]:
        branches = Prefetch("branches", queryset=StepResult.objects.order_by("id"))
        return super().get_queryset(request).prefetch_related(branches)

    @admin.display(description=_("branches"))
    def counts(self, obj: ParallelGroup) -> str:
        return gettext("%(all)d in all, %(failed)d failed, %(pending)d without a final result") % {
            "all": obj.branch_count,
            "failed": obj.failed_count,
            "pending": obj.pending_count,
        }

    @admin.display(description=_("outcome of each branch or item"))
    def branch_list(self, obj: ParallelGroup) -> str:
        summaries = getattr(self, "item_summaries", {})  # set by RunPageAdmin.get_formset_kwargs
        return group_outcomes(obj, obj.branches.all(), summaries.get(obj.pk), self.admin_site)

    @admin.display(description=_("error"))
    def error_json(self, obj: ParallelGroup) -> SafeString | str:
        return self._json(obj.error)


# -- runs ----------------------------------------------------------------------------------------


@admin.register(WorkflowRun)
class WorkflowRunAdmin(
    GuardedListAdmin,
    RunBulkAdmin,
    RunDeletionAdmin,
    RunForksAdmin,
    RunPageAdmin,
    RunWaitsAdmin,
    DisplayColumns,
    admin.ModelAdmin,
):
    list_display = (
        "short_id",
        "workflow_display",
        "status_badge",
        "current_step_display",
        "created_when",
        "duration_display",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "workflow")
    search_fields = ("^id", "idempotency_key")
    search_help_text = _("A run's id (whole, or its first characters) or its idempotency key.")
    date_hierarchy = "created_at"
    # Counting every run on each page load is a full scan of a big table.
    show_full_result_count = False
    actions = ("retry_selected", "cancel_selected", "delete_selected")
    inlines = (ParallelGroupInline, StepResultInline)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "workflow",
                    "status_badge",
                    ("current_step", "current_attempt"),
                    "idempotency_key",
                    "parent_link",
                    ("parent_step", "ref"),
                    "children_links",
                    "forked_from_link",
                    "forks_links",
                )
            },
        ),
        (_("Timing"), {"fields": ("created", "run_at_when", "started", "deadline", "finished", "duration_display")}),
        (_("Data"), {"fields": ("input_json", "context_json", "error_json", "error_history_json")}),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = ADMIN_CSS
        js = ("durable_django/live.js",)

    @admin.display(description=_("run"), ordering="id")
    def short_id(self, obj: WorkflowRun) -> SafeString:
        return format_html('<code class="durable-run-id" title="{}">{}</code>', obj.pk, short_id(obj.pk))

    @admin.display(description=_("workflow"), ordering="workflow")
    def workflow_display(self, obj: WorkflowRun) -> SafeString | str:
        if obj.parent_id is None:
            return obj.workflow
        # parent_id only: no query per row of the list.
        return format_html(
            '{} <small class="durable-parent">{} {}</small>',
            obj.workflow,
            gettext("child of"),
            run_link(self.admin_site, obj.parent_id),
        )

    @admin.display(description=_("run at"))
    def run_at_when(self, obj: WorkflowRun) -> str:
        return self._or_empty(moment(obj.run_at))

    @admin.display(description=_("deadline"))
    def deadline(self, obj: WorkflowRun) -> str:
        return self._or_empty(moment(obj.deadline_at))

    @admin.display(description=_("created at"), ordering="created_at")
    def created_when(self, obj: WorkflowRun) -> str:
        return format_date(timezone.localtime(obj.created_at), "Y-m-d H:i:s")

    @admin.display(description=_("current step"), ordering="current_step")
    def current_step_display(self, obj: WorkflowRun) -> str:
        if obj.current_attempt > 1:
            return gettext("%(step)s (attempt %(attempt)d)") % {
                "step": obj.current_step,
                "attempt": obj.current_attempt,
            }
        return obj.current_step

    # -- permissions: read-only; deleting is admin_delete's ----------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # -- search: a whole id is an index lookup ---------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowRun], search_term: str
    ) -> tuple[QuerySet[WorkflowRun], bool]:
        term = search_term.strip()
        try:
            run_id = uuid.UUID(term)
        except ValueError:
            # The first characters of an id, or part of an idempotency key.
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(Q(pk=run_id) | Q(idempotency_key=term)), False

    # -- the run's page --------------------------------------------------------------------------

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            # Saving the form would write a stale copy of every field over what the engine stored.
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return super().changeform_view(request, object_id, form_url, extra_context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: WorkflowRun | None = None,
    ) -> HttpResponse:
        context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        if obj is not None:
            can_operate = self.has_change_permission(request, obj)
            context["can_retry"] = can_operate and obj.status == RunStatus.FAILED and not obj.compensation
            context["can_cancel"] = can_operate and not obj.is_finished and obj.status != RunStatus.COMPENSATING
            waits = self.add_waits(request, context, obj, can_operate)
            self.add_forks(context, obj, can_operate)
            self.add_pictures(context, obj, waits)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- retry and cancel (of the selection: admin_bulk) --------------------------------------------

    def _operate(self, request: HttpRequest, run: WorkflowRun, operation: str) -> None:
        """Retry or cancel ``run`` through :mod:`durable_django.operations`; say what happened."""
        function, done, refused, logged = OPERATIONS[operation]
        name = gettext("%(workflow)s run %(id)s") % {"workflow": run.workflow, "id": run.pk}
        try:
            getattr(operations, function)(run)
        except RunStateError as exc:
            self.message_user(request, refused % {"run": name, "reason": exc}, messages.WARNING)
        except WorkflowRun.DoesNotExist:
            reason = gettext("it no longer exists.")
            self.message_user(request, refused % {"run": name, "reason": reason}, messages.WARNING)
        else:
            self.log_change(request, run, str(logged))
            self.message_user(request, done % {"run": name}, messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        buttons = [
            path(
                f"<path:object_id>/{operation}/",
                self.admin_site.admin_view(view),
                name="{}_{}_{}".format(*info, operation),
            )
            for operation, view in (
                ("retry", self.retry_view),
                ("cancel", self.cancel_view),
                *self.waits_urls(),
                *self.fork_urls(),
            )
        ]
        # Before the default patterns: their catch-all "<object_id>/" would swallow these.
        return buttons + super().get_urls()

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Retry button of a run's page (POST only)."""
        return self._button(request, object_id, "retry")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Cancel button of a run's page (POST only)."""
        return self._button(request, object_id, "cancel")

    def _button(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self.changeable_run(request, object_id)
        self._operate(request, run, operation)
        return HttpResponseRedirect(change_url(self.admin_site, WorkflowRun, run.pk))


# -- attempts and groups on their own pages ------------------------------------------------------


class _RunRowsAdmin(RunRowsSearchAdmin, ReadOnlyAdmin, DisplayColumns, admin.ModelAdmin):
    """Rows that belong to a run: searchable by the run's whole id as well."""

    show_full_result_count = False

    class Media:
        css = ADMIN_CSS

    @admin.display(description=_("run"), ordering="run")
    def run_link(self, obj: StepResult | ParallelGroup) -> SafeString:
        return run_link(self.admin_site, obj.run_id)


@admin.register(StepResult)
class StepResultAdmin(_RunRowsAdmin):
    list_display = (
        "id",
        "run_link",
        "step",
        "kind",
        "group",
        "item_index",
        "attempt",
        "status_badge",
        "created_at",
        "duration_display",
        "log_count",
    )
    list_filter = ("status", "kind")
    list_select_related = ("group",)
    search_fields = ("step",)
    search_help_text = _("A step name, or a run's whole id.")
    fields = (
        "run_link",
        "step",
        "kind",
        "group",
        "item_index",
        "compensates",
        "attempt",
        "status_badge",
        "created",
        "started",
        "finished",
        "duration_display",
        "job_id",
        "output_json",
        "error_json",
        "traceback",
        "logs_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[StepResult]:
        return super().get_queryset(request).annotate(log_count=LogCount("logs"))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LogsCountedChangeList

    @admin.display(description=_("logs"), ordering="log_count")
    def log_count(self, obj: StepResult) -> int | str:
        return getattr(obj, "log_count", None) or ""

    @admin.display(description=_("logs"))
    def logs_display(self, obj: StepResult) -> SafeString | str:
        return step_logs(obj.logs) or self.get_empty_value_display()

    @admin.display(description=_("output"))
    def output_json(self, obj: StepResult) -> SafeString | str:
        return self._json(obj.output)

    @admin.display(description=_("error"))
    def error_json(self, obj: StepResult) -> SafeString | str:
        return self._error(obj.error)

    @admin.display(description=_("traceback"))
    def traceback(self, obj: StepResult) -> SafeString | str:
        return self._traceback(obj.error)


@admin.register(ParallelGroup)
class ParallelGroupAdmin(_RunRowsAdmin):
    list_display = (
        "id",
        "run_link",
        "name",
        "kind",
        "status_badge",
        "on_error",
        "branch_count",
        "failed_count",
        "created_at",
    )
    list_filter = ("status", "kind", "on_error")
    search_fields = ("name",)
    search_help_text = _("A parallel block's name, or a run's whole id.")
    fields = (
        "run_link",
        "name",
        "kind",
        "status_badge",
        "on_error",
        ("branch_count", "failed_count", "pending_count"),
        "created",
        "finished",
        "duration_display",
        "branch_list",
        "results_json",
        "error_json",
        "history_table",
    )
    readonly_fields = flatten(fields)

    @admin.display(description=_("outcome of each branch or item"))
    def branch_list(self, obj: ParallelGroup) -> str:
        return group_outcomes(obj, *group_rows(obj), self.admin_site)

    @admin.display(description=_("results"))
    def results_json(self, obj: ParallelGroup) -> SafeString | str:
        return self._json(bounded_results(obj.results))

    @admin.display(description=_("error"))
    def error_json(self, obj: ParallelGroup) -> SafeString | str:
        return self._json(obj.error)
