"""The inbox of waits for input, where they are answered, and the read-only admins of waits and events.

Nothing here writes run state: answers go through :func:`durable_django.resume.provide_input`
(with the user who answered). Who may answer an input: :func:`durable_django.waits.can_answer`
with the wait's own permission (``durable_django.provide_input`` when it names none).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import resume
from .admin_display import ADMIN_CSS, change_url, moment, pretty_json, preview, run_link, short_id, status_badge
from .admin_lists import RunRowsSearchAdmin
from .admin_waits import (
    ANSWERED_SHOWN,
    DEFAULT_PERMISSION,
    answer_summary,
    answer_url,
    inbox_url,
    may_answer,
    may_see_waits,
    resolution_text,
    until_text,
    wait_line,
)
from .answer_forms import APPROVE, DECISION, REJECT, AnswerForm, answer_form
from .exceptions import InvalidInput, RunStateError
from .models import Event, StepResult, Wait, WaitKind, WaitStatus, WorkflowRun
from .timeline import wait_subject
from .waits import can_answer

# -- waits and events on their own pages ---------------------------------------------------------


class _ReadOnlyAdmin(RunRowsSearchAdmin, admin.ModelAdmin):
    show_full_result_count = False

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("run"), ordering="run")
    def run_link(self, obj: Wait | Event) -> SafeString:
        return run_link(self.admin_site, obj.run_id)

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, obj: Wait | Event) -> str:
        return moment(obj.created_at)

    def _json(self, value: Any) -> SafeString | str:
        return pretty_json(value) if value is not None else self.get_empty_value_display()


@admin.register(Wait)
class WaitAdmin(_ReadOnlyAdmin):
    """Every wait, read-only; waits for input are answered on their page in the inbox."""

    list_display = ("id", "run_link", "subject", "step_name", "status_badge", "created", "due", "resolved")
    list_filter = ("kind", "status", "input_kind")
    list_select_related = ("step_result",)
    search_fields = ("name",)
    search_help_text = _("An event's or input's name, or a run's whole id.")
    ordering = ("-created_at", "-id")
    fields = (
        "run_link",
        "step_link",
        "kind",
        "subject",
        "status_badge",
        "created",
        "due",
        "resolved",
        "resolved_by",
        "resolution",
        "input_kind",
        "prompt",
        "permission",
        "spec_json",
        "payload_json",
        "answer_link",
    )
    readonly_fields = fields

    @admin.display(description=_("waits for"))
    def subject(self, obj: Wait) -> str:
        return wait_subject(obj)

    @admin.display(description=_("step"), ordering="step_result__step")
    def step_name(self, obj: Wait) -> str:
        return obj.step_result.step

    @admin.display(description=_("step"))
    def step_link(self, obj: Wait) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>', change_url(self.admin_site, StepResult, obj.step_result_id), obj.step_result.step
        )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Wait) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("until"), ordering="due_at")
    def due(self, obj: Wait) -> str:
        return until_text(obj) or self.get_empty_value_display()

    @admin.display(description=_("resolved at"), ordering="resolved_at")
    def resolved(self, obj: Wait) -> str:
        return moment(obj.resolved_at) or self.get_empty_value_display()

    @admin.display(description=_("resolved by"))
    def resolution(self, obj: Wait) -> str:
        return resolution_text(obj) or self.get_empty_value_display()

    @admin.display(description=_("spec"))
    def spec_json(self, obj: Wait) -> SafeString | str:
        return self._json(obj.spec or None)

    @admin.display(description=_("payload or answer"))
    def payload_json(self, obj: Wait) -> SafeString | str:
        return self._json(obj.payload)

    @admin.display(description=_("answer"))
    def answer_link(self, obj: Wait) -> SafeString | str:
        if obj.kind != WaitKind.INPUT:
            return self.get_empty_value_display()
        return format_html('<a href="{}">{}</a>', answer_url(self.admin_site, obj.pk), gettext("Open in the inbox"))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"inbox_url": inbox_url(self.admin_site), **(extra_context or {})}
        return super().changelist_view(request, extra)

    # -- the inbox -------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        own = [
            path("inbox/", self.admin_site.admin_view(self.inbox_view), name="{}_{}_inbox".format(*info)),
            path(
                "inbox/<path:object_id>/",
                self.admin_site.admin_view(self.answer_view),
                name="{}_{}_answer".format(*info),
            ),
        ]
        # Before the default patterns: their catch-all "<object_id>/" would swallow these.
        return own + super().get_urls()

    def inbox_queryset(self, request: HttpRequest) -> QuerySet[Wait]:
        """The waits for input ``request.user`` sees: every one, or those it may answer."""
        queryset = Wait.objects.inputs().select_related("run", "step_result", "resolved_by")
        if not may_see_waits(request.user):
            permissions = set(queryset.values_list("permission", flat=True).distinct())
            queryset = queryset.filter(
                permission__in=[permission for permission in permissions if can_answer(request.user, permission)]
            )
        return queryset

    def inbox_view(self, request: HttpRequest) -> HttpResponse:
        """Waits for input: the pending ones first (oldest first), then the last answered ones."""
        queryset = self.inbox_queryset(request)
        run_id = request.GET.get("run")
        run = None
        if run_id:
            try:
                run = WorkflowRun.objects.only("id", "workflow", "status").get(pk=uuid.UUID(run_id))
            except (ValueError, WorkflowRun.DoesNotExist):
                raise Http404(gettext("No workflow run has the id %(id)s.") % {"id": run_id}) from None
            queryset = queryset.filter(run=run)
        pending = list(queryset.filter(status=WaitStatus.WAITING).order_by("created_at", "id"))
        answered = list(queryset.exclude(status=WaitStatus.WAITING).order_by("-resolved_at", "-id")[:ANSWERED_SHOWN])
        user = request.user
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Inbox"),
            "subtitle": gettext("run %(run)s") % {"run": short_id(run.pk)} if run else None,
            "opts": self.opts,
            "run": run,
            "run_link": run_link(self.admin_site, run.pk) if run else "",
            "all_url": inbox_url(self.admin_site),
            "pending": [self._item(wait, user) for wait in pending],
            "answered": [self._item(wait, user) for wait in answered],
            "answered_limit": ANSWERED_SHOWN,
            "waits_url": reverse(f"{self.admin_site.name}:durable_django_wait_changelist"),
            "may_see_waits": self.has_view_permission(request),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/durable_django/wait/inbox.html", context)

    def _item(self, wait: Wait, user: Any) -> dict[str, Any]:
        line = wait_line(wait, self.admin_site, user)
        return {
            "line": line,
            "run_link": run_link(self.admin_site, wait.run_id),
            "workflow": wait.run.workflow,
            "answer": answer_summary(wait),
        }

    def answer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One wait for input: what it asks, and its form for whoever may answer it."""
        if request.method not in ("GET", "HEAD", "POST"):
            return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
        wait = self._input_wait(request, object_id)
        answerable = may_answer(request.user, wait)
        form: AnswerForm | None = answer_form(wait) if answerable else None
        if request.method == "POST":
            if not can_answer(request.user, wait.permission):
                raise PermissionDenied
            if not answerable:
                self.message_user(request, self._not_answerable(wait), messages.WARNING)
                return HttpResponseRedirect(answer_url(self.admin_site, wait.pk))
            form = answer_form(wait, request.POST)
            if form.is_valid():
                response = self._provide(request, wait, form)
                if response is not None:
                    return response
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Answer %(name)s") % {"name": wait.name},
            "subtitle": None,
            "opts": self.opts,
            "wait": wait,
            "line": wait_line(wait, self.admin_site, request.user),
            "run_link": run_link(self.admin_site, wait.run_id),
            "run": wait.run,
            "form": form,
            "decision_name": f"{form.prefix}-{DECISION}" if form is not None else "",
            "approve": APPROVE,
            "reject": REJECT,
            "not_answerable": "" if answerable else self._not_answerable(wait, request.user),
            "answer": answer_summary(wait),
            "inbox_url": inbox_url(self.admin_site),
            "wait_url": change_url(self.admin_site, Wait, wait.pk) if self.has_view_permission(request) else "",
            "media": self.media + form.media if form is not None else self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/durable_django/wait/answer.html", context)

    def _input_wait(self, request: HttpRequest, object_id: str) -> Wait:
        try:
            wait = (
                Wait.objects.inputs()
                .select_related("run", "step_result", "resolved_by")
                .get(pk=int(unquote(object_id)))
            )
        except (ValueError, Wait.DoesNotExist):
            raise Http404(gettext("No wait for input has the id %(id)s.") % {"id": object_id}) from None
        if not (may_see_waits(request.user) or can_answer(request.user, wait.permission)):
            raise PermissionDenied
        return wait

    def _not_answerable(self, wait: Wait, user: Any = None) -> str:
        if wait.status != WaitStatus.WAITING:
            return gettext("This input is no longer waiting (%(status)s).") % {"status": wait.get_status_display()}
        if wait.run.is_finished:
            return gettext("The run has finished (%(status)s).") % {"status": wait.run.get_status_display()}
        if user is not None and not can_answer(user, wait.permission):
            return gettext("You may not answer this input: it needs the permission %(permission)s.") % {
                "permission": wait.permission or DEFAULT_PERMISSION
            }
        return ""

    def _provide(self, request: HttpRequest, wait: Wait, form: AnswerForm) -> HttpResponse | None:
        """Hand the answer to the engine; ``None`` when it refused the answer (errors are on ``form``)."""
        try:
            resume.provide_input(wait.run_id, wait.name, form.answer(), user=request.user)
        except InvalidInput as exc:
            form.add_answer_error(exc.field, str(exc))
            return None
        except (RunStateError, WorkflowRun.DoesNotExist) as exc:
            reason = str(exc) if isinstance(exc, RunStateError) else gettext("the run no longer exists.")
            self.message_user(
                request, gettext("Your answer was not taken: %(reason)s") % {"reason": reason}, messages.WARNING
            )
            return HttpResponseRedirect(answer_url(self.admin_site, wait.pk))
        self.log_change(request, wait, gettext("Answered."))
        self.message_user(
            request,
            gettext("Answered %(name)s of %(workflow)s run %(run)s.")
            % {"name": wait.name, "workflow": wait.run.workflow, "run": short_id(wait.run_id)},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(inbox_url(self.admin_site))


class EventStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("buffered", _("Buffered")), ("taken", _("Taken"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("buffered", "taken"):
            return queryset.filter(consumed_at__isnull=self.value() == "buffered")
        return queryset


@admin.register(Event)
class EventAdmin(_ReadOnlyAdmin):
    """Events sent to runs: buffered until a wait takes them."""

    list_display = ("id", "run_link", "name", "payload_preview", "created", "state", "consumed_by_link")
    # Not by name: listing every distinct name would scan the whole table on each page load.
    list_filter = (EventStateFilter,)
    search_fields = ("name",)
    search_help_text = _("An event's name, or a run's whole id.")
    ordering = ("-created_at", "-id")
    fields = ("run_link", "name", "created", "state", "consumed", "consumed_by_link", "payload_json")
    readonly_fields = fields

    @admin.display(description=_("payload"))
    def payload_preview(self, obj: Event) -> SafeString:
        return format_html("<code>{}</code>", preview(obj.payload))

    @admin.display(description=_("payload"))
    def payload_json(self, obj: Event) -> SafeString | str:
        return self._json(obj.payload)

    @admin.display(description=_("state"), ordering="consumed_at")
    def state(self, obj: Event) -> SafeString:
        if obj.consumed_at is None:
            return status_badge("waiting", gettext("Buffered"))
        return status_badge("resolved", gettext("Taken"))

    @admin.display(description=_("taken at"))
    def consumed(self, obj: Event) -> str:
        return moment(obj.consumed_at) or self.get_empty_value_display()

    @admin.display(description=_("taken by"))
    def consumed_by_link(self, obj: Event) -> SafeString | str:
        if obj.consumed_by_id is None:
            return self.get_empty_value_display()
        return format_html(
            '<a href="{}">{} {}</a>',
            change_url(self.admin_site, Wait, obj.consumed_by_id),
            gettext("wait"),
            obj.consumed_by_id,
        )
