"""Waits in the admin: how a wait is described, and the Waits section of a run's page.

Nothing here writes run state: events go through :func:`durable_django.resume.send_event`. The
inbox, where inputs are answered, and the admins of waits and events are in
:mod:`durable_django.admin_inbox`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from . import resume
from .admin_display import change_url, moment, preview, short_id, status_badge
from .exceptions import InvalidInput, RunStateError
from .models import StepResult, Wait, WaitKind, WaitStatus, WorkflowRun
from .timeline import format_duration, wait_subject
from .waits import can_answer

if TYPE_CHECKING:
    from django.contrib.admin import AdminSite

    _RunAdminBase = admin.ModelAdmin[WorkflowRun]
else:
    _RunAdminBase = object


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


def answer_summary(wait: Wait) -> list[tuple[str, str]]:
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
        outcome = resume.send_event(run.pk, name, payload)
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


class RunWaitsAdmin(_RunAdminBase):
    """The waits part of the run admin: its Waits section and its send-event URL."""

    def waits_urls(self) -> list[tuple[str, Any]]:
        """(operation, view) of the run's buttons that concern waits."""
        return [("send_event", self.send_event_view)]

    def add_waits(self, request: HttpRequest, context: dict[str, Any], run: WorkflowRun, can_send: bool) -> list[Wait]:
        """Put the Waits section of ``run``'s page into ``context``; returns the waits (for the timeline)."""
        waits = run_waits(run)
        context["waits_section"] = waits_context(request, self.admin_site, run, waits, can_send)
        return waits

    def changeable_run(self, request: HttpRequest, object_id: str) -> WorkflowRun:
        """The run of a button's URL, for a user who may change it (403, or 404 for no such run)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(gettext("No workflow run has the id %(id)s.") % {"id": object_id})
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        return run

    def send_event_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The send-event form of a run's page (POST only): hands the event to the engine."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self.changeable_run(request, object_id)
        name, text, level = send_event_from_form(request, run)
        if level == messages.SUCCESS:
            self.log_change(request, run, gettext("Sent event %(event)s.") % {"event": name})
        self.message_user(request, text, level)
        return HttpResponseRedirect(change_url(self.admin_site, WorkflowRun, run.pk) + "#waits")
