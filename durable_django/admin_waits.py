"""The admin of waits: the Waits of a run's page, sending events, the Inbox and its answers.

Nothing here writes run state: events go through :func:`durable_django.resume.send_event`,
answers through :func:`durable_django.resume.provide_input` (with the user who answered). Who may
answer an input: :func:`durable_django.waits.can_answer` with the wait's own permission
(``durable_django.provide_input`` when it names none). Waits and events are read-only here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .admin_display import change_url, moment, pretty_json, preview, run_link, short_id, status_badge
from .answer_forms import APPROVE, DECISION, REJECT, AnswerForm, answer_form
from .exceptions import InvalidInput, RunStateError
from .models import Event, StepResult, Wait, WaitKind, WaitStatus, WorkflowRun
from .timeline import format_duration, wait_subject
from .waits import can_answer

if TYPE_CHECKING:
    from django.contrib.admin import AdminSite

CSS = {"all": ("durable_django/admin.css",)}

#: The buffered events a run's page lists at most (the newest are left off past that).
EVENTS_SHOWN = 50
#: The answered inputs the inbox lists under the pending ones, newest first.
ANSWERED_SHOWN = 50

DEFAULT_PERMISSION = "durable_django.provide_input"


def inbox_url(site: AdminSite, run_id: Any = None) -> str:
    url = reverse(f"{site.name}:durable_django_wait_inbox")
    return f"{url}?run={run_id}" if run_id is not None else url


def answer_url(site: AdminSite, wait_id: Any) -> str:
    return reverse(f"{site.name}:durable_django_wait_answer", args=[quote(wait_id)])


def may_see_waits(user: Any) -> bool:
    """Whether ``user`` sees every wait (and not only those it may answer)."""
    return any(
        user.has_perm(f"durable_django.{codename}")
        for codename in ("view_wait", "view_workflowrun", "change_workflowrun")
    )


def wait_events(wait: Wait) -> list[str]:
    """The events a wait for events waits for (one event's wait may name it only as its ``name``)."""
    if wait.kind != WaitKind.EVENT:
        return []
    return list(wait.events or []) or [wait.name]


def is_answerable(wait: Wait) -> bool:
    """A wait for input that still waits, of a run that has not finished."""
    return wait.kind == WaitKind.INPUT and wait.status == WaitStatus.WAITING and not wait.run.is_finished


def may_answer(user: Any, wait: Wait) -> bool:
    return is_answerable(wait) and can_answer(user, wait.permission)


# -- how a wait is described ---------------------------------------------------------------------


def until_text(wait: Wait) -> str:
    """When a wait ends by itself, and what happens then; "" when it does not."""
    if wait.due_at is None:
        return ""
    when = moment(wait.due_at)
    if wait.kind == WaitKind.SLEEP:
        return gettext("until %(when)s") % {"when": when}
    after = format_duration(wait.timeout_seconds) if wait.timeout_seconds is not None else ""
    if wait.has_timeout_value:
        then = gettext("then goes on with %(value)s") % {"value": preview(wait.timeout_value) or "null"}
    else:
        then = gettext("then the run fails")
    if after:
        return gettext("times out at %(when)s (after %(after)s), %(then)s") % {
            "when": when,
            "after": after,
            "then": then,
        }
    return gettext("times out at %(when)s, %(then)s") % {"when": when, "then": then}


def resolution_text(wait: Wait) -> str:
    """What ended a wait: who answered, which events came, the time being up."""
    if wait.status == WaitStatus.WAITING:
        return ""
    if wait.status == WaitStatus.CANCELLED:
        return gettext("cancelled")
    if wait.status == WaitStatus.TIMED_OUT:
        return gettext("timed out")
    if wait.kind == WaitKind.SLEEP:
        return gettext("time was up")
    if wait.kind == WaitKind.INPUT:
        who = wait.resolved_by.get_username() if wait.resolved_by is not None else ""
        if isinstance(wait.payload, dict) and not who:
            who = str(wait.payload.get("by") or "")
        return gettext("answered by %(user)s") % {"user": who} if who else gettext("answered")
    if wait.mode == "any" and isinstance(wait.payload, dict) and wait.payload.get("event"):
        return gettext("event %(event)s") % {"event": wait.payload["event"]}
    if wait.mode == "all":
        return gettext("all its events")
    return gettext("event %(event)s") % {"event": wait.name}


@dataclass(frozen=True)
class WaitLine:
    """One wait as the run page and the inbox show it."""

    wait: Wait
    subject: str
    step_url: str
    badge: SafeString
    since: str
    until: str
    resolved_at: str
    resolution: str
    payload: str
    answer_url: str
    answerable: bool


def wait_line(wait: Wait, site: AdminSite, user: Any) -> WaitLine:
    answerable = may_answer(user, wait)
    show_answer = wait.kind == WaitKind.INPUT and (
        answerable or may_see_waits(user) or can_answer(user, wait.permission)
    )
    return WaitLine(
        wait=wait,
        subject=wait_subject(wait),
        step_url=change_url(site, StepResult, wait.step_result_id),
        badge=status_badge(wait.status, wait.get_status_display()),
        since=moment(wait.created_at),
        until=until_text(wait),
        resolved_at=moment(wait.resolved_at),
        resolution=resolution_text(wait),
        payload=preview(wait.payload),
        answer_url=answer_url(site, wait.pk) if show_answer else "",
        answerable=answerable,
    )


# -- a run's page --------------------------------------------------------------------------------


def run_waits(run: WorkflowRun) -> list[Wait]:
    """Every wait of ``run`` in the order they began (one query)."""
    waits = list(
        run.waits.select_related("step_result", "step_result__group", "resolved_by").order_by("created_at", "id")
    )
    for wait in waits:
        wait.run = run  # no query per wait for is_answerable()
    return waits


def waits_context(
    request: HttpRequest, site: AdminSite, run: WorkflowRun, waits: list[Wait], can_send: bool
) -> dict[str, Any]:
    """The Waits section of a run's page: its waits, buffered events and the send-event form."""
    events = list(run.events.filter(consumed_at__isnull=True).order_by("-created_at", "-id")[: EVENTS_SHOWN + 1])
    lines = [wait_line(wait, site, request.user) for wait in waits]
    waited_for = sorted({event for wait in waits if wait.status == WaitStatus.WAITING for event in wait_events(wait)})
    can_send = can_send and not run.is_finished
    return {
        "waits": lines,
        "events": [
            {"name": event.name, "payload": preview(event.payload), "sent": moment(event.created_at)}
            for event in events[:EVENTS_SHOWN]
        ],
        "more_events": len(events) > EVENTS_SHOWN,
        "can_send": can_send,
        "send_url": reverse(f"{site.name}:durable_django_workflowrun_send_event", args=[quote(run.pk)]),
        "waited_for": waited_for,
        "inbox_url": inbox_url(site, run.pk),
        "has_inputs": any(wait.kind == WaitKind.INPUT for wait in waits),
        "show": bool(lines or events or can_send),
    }


def send_event_from_form(request: HttpRequest, run: WorkflowRun) -> tuple[str, str, int]:
    """Send the event of the run page's form; returns (event name, what to tell, message level)."""
    from .resume import send_event

    name = (request.POST.get("event") or "").strip()
    raw = (request.POST.get("payload") or "").strip()
    if not name:
        return "", gettext("Name the event to send."), messages.ERROR
    refused = gettext("Did not send event %(event)s: %(reason)s")
    payload: Any = None
    if raw:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            reason = gettext("the payload is not JSON (%(error)s).") % {"error": exc}
            return name, refused % {"event": name, "reason": reason}, messages.ERROR
    try:
        outcome = send_event(run.pk, name, payload)
    except WorkflowRun.DoesNotExist:
        reason = gettext("the run no longer exists.")
        return name, refused % {"event": name, "reason": reason}, messages.ERROR
    except (RunStateError, InvalidInput) as exc:
        return name, refused % {"event": name, "reason": exc}, messages.WARNING
    if outcome == "delivered":
        text = gettext("Sent event %(event)s to run %(run)s: a wait took it.")
    else:
        text = gettext("Sent event %(event)s to run %(run)s: no wait takes it yet, so it is kept until one does.")
    return name, text % {"event": name, "run": short_id(run.pk)}, messages.SUCCESS


# -- waits and events on their own pages ---------------------------------------------------------


class _ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    class Media:
        css = CSS

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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(run_id=run_id), False


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
            "answer": _answer_summary(wait),
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
            "answer": _answer_summary(wait),
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
        from .resume import provide_input

        try:
            provide_input(wait.run_id, wait.name, form.answer(), user=request.user)
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


def _answer_summary(wait: Wait) -> list[tuple[str, str]]:
    """An answered input's answer as (label, value) pairs, ``by`` left out (it is shown apart)."""
    if wait.kind != WaitKind.INPUT or not isinstance(wait.payload, dict) or wait.status != WaitStatus.RESOLVED:
        return []
    payload = {key: value for key, value in wait.payload.items() if key != "by"}
    if wait.input_kind == "approval":
        decision = gettext("Approved") if payload.get("approved") else gettext("Rejected")
        pairs = [(gettext("Decision"), decision)]
        if payload.get("comment"):
            pairs.append((gettext("Comment"), str(payload["comment"])))
        return pairs
    labels = {name: spec.get("label") or name for name, spec in (wait.spec or {}).get("fields", {}).items()}
    return [
        (str(labels.get(key, key)).capitalize(), value if isinstance(value, str) else preview(value))
        for key, value in payload.items()
    ]


@admin.register(Event)
class EventAdmin(_ReadOnlyAdmin):
    """Events sent to runs: buffered until a wait takes them."""

    list_display = ("id", "run_link", "name", "payload_preview", "created", "state", "consumed_by_link")
    # Not by name: listing every distinct name would scan the whole table on each page load.
    list_filter = (("consumed_at", admin.EmptyFieldListFilter),)
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
