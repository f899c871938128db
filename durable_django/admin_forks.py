"""Forks in the admin: "Rerun from here" on each top-level step of a finished run, and the fork links.

A completed or failed run's page lists its top-level steps and blocks, each with a "Rerun from
here" link to a small form: the context the fork starts with, as JSON, prefilled with the one
the run had right before that step (editable; checked as a run's input is). Submitting it
creates the fork through :func:`durable_django.forks.fork_run` and opens the fork's page. Both
pages link to each other: "Forked from <run> at <step>" and "Forks". Forking needs the change
permission on workflow runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import forks
from .admin_display import change_url, run_link, status_badge
from .definition import find_workflow
from .exceptions import ContextNotRecorded, InvalidInput, RunStateError, UnknownStep, WorkflowNotFound
from .models import WorkflowRun

if TYPE_CHECKING:
    _RunAdminBase = admin.ModelAdmin[WorkflowRun]
else:
    _RunAdminBase = object


class ForkForm(forms.Form):
    """Where a fork starts and the context it starts with."""

    # Chosen by the link followed ("Rerun from here" on a step): shown, not edited.
    from_step = forms.ChoiceField(label=_("Rerun from"), widget=forms.HiddenInput)
    context = forms.CharField(
        label=_("Context"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80, "class": "durable-fork-context", "spellcheck": "false"}),
        help_text=_("A JSON object: the context the new run starts with at that step."),
    )

    def __init__(self, *args: Any, steps: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from_step"].choices = [(name, name) for name in steps]  # type: ignore[attr-defined]

    def clean_context(self) -> dict[str, Any] | None:
        text = (self.cleaned_data.get("context") or "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(gettext("Not JSON: %(error)s.") % {"error": exc}) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                gettext("Must be a JSON object, got %(type)s.") % {"type": type(value).__name__}
            )
        return value


def fork_url(site: admin.AdminSite, run_id: Any, step: str = "") -> str:
    url = reverse(f"{site.name}:durable_django_workflowrun_fork", args=[quote(run_id)])
    return f"{url}?{urlencode({'step': step})}" if step else url


def as_text(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)


class RunForksAdmin(_RunAdminBase):
    """The fork part of the run admin: its section and links on the run's page, and the fork form."""

    def fork_urls(self) -> list[tuple[str, Any]]:
        """(operation, view) of the run's pages that concern forks."""
        return [("fork", self.fork_view)]

    def add_forks(self, context: dict[str, Any], run: WorkflowRun, can_operate: bool) -> None:
        """Put the "Rerun from a step" section of ``run``'s page into ``context`` (when it may be forked)."""
        wf = find_workflow(run.workflow)
        if not can_operate or wf is None or run.status not in forks.FORKABLE:
            return
        context["fork_section"] = [
            {"name": name, "url": fork_url(self.admin_site, run.pk, name)} for name in forks.top_level_names(wf)
        ]

    @admin.display(description=_("forked from"))
    def forked_from_link(self, obj: WorkflowRun) -> SafeString | str:
        if obj.forked_from_id is None:
            return self.get_empty_value_display()
        return format_html(
            "{} {}",
            run_link(self.admin_site, obj.forked_from_id),
            gettext("at %(step)s") % {"step": obj.forked_from_step},
        )

    @admin.display(description=_("forks"))
    def forks_links(self, obj: WorkflowRun) -> SafeString | str:
        found = list(obj.forks.order_by("created_at").only("id", "status", "forked_from_step"))
        if not found:
            return self.get_empty_value_display()
        return format_html(
            '<ul class="durable-forks">{}</ul>',
            format_html_join(
                "",
                '<li class="durable-fork">{} {} <small>{}</small></li>',
                (
                    (
                        run_link(self.admin_site, fork.pk),
                        status_badge(fork.status, fork.get_status_display()),
                        gettext("from %(step)s") % {"step": fork.forked_from_step},
                    )
                    for fork in found
                ),
            ),
        )

    def fork_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The "Rerun from here" form of a run (GET shows it, POST creates the fork and opens its page)."""
        run = self.changeable_run(request, object_id)  # type: ignore[attr-defined]
        wf = find_workflow(run.workflow)
        steps = forks.top_level_names(wf) if wf is not None else []
        run_url = change_url(self.admin_site, WorkflowRun, run.pk)
        if wf is None or run.status not in forks.FORKABLE:
            reason = (
                gettext("its workflow %(workflow)s is not registered.") % {"workflow": run.workflow}
                if wf is None
                else gettext("it is %(status)s; only a completed or failed run can be forked.")
                % {"status": run.get_status_display().lower()}
            )
            self.message_user(
                request, gettext("Cannot rerun this run: %(reason)s") % {"reason": reason}, messages.WARNING
            )
            return HttpResponseRedirect(run_url)
        if request.method == "POST":
            form = ForkForm(request.POST, steps=steps)
            fork = self._fork(run, form) if form.is_valid() else None
            if fork is not None:
                self.log_change(request, run, gettext("Forked from %(step)s.") % {"step": fork.forked_from_step})
                self.message_user(
                    request,
                    gettext("Started run %(fork)s from step %(step)s of run %(run)s.")
                    % {"fork": fork.pk, "step": fork.forked_from_step, "run": run.pk},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url(self.admin_site, WorkflowRun, fork.pk))
        else:
            step = request.GET.get("step", "")
            step = step if step in steps else steps[0]
            form = ForkForm(
                initial={"from_step": step, "context": as_text(forks.known_context(run, step))}, steps=steps
            )
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Rerun %(workflow)s run from a step") % {"workflow": run.workflow},
            "opts": self.opts,
            "run": run,
            "run_url": run_url,
            "run_link": run_link(self.admin_site, run.pk),
            "form": form,
            "step": form["from_step"].value(),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/durable_django/workflowrun/fork.html", context)

    def _fork(self, run: WorkflowRun, form: ForkForm) -> WorkflowRun | None:
        """The fork the valid ``form`` asks for, or ``None`` with the reason added to the form."""
        step, given = form.cleaned_data["from_step"], form.cleaned_data["context"]
        try:
            return forks.fork_run(run.pk, from_step=step, context=given)
        except UnknownStep as exc:
            form.add_error("from_step", str(exc))
        except (InvalidInput, ContextNotRecorded) as exc:
            form.add_error("context", str(exc))
        except (RunStateError, WorkflowNotFound) as exc:
            form.add_error(None, str(exc))
        return None
