"""The admin of schedules: the list with each next fire time, enable, disable, "fire now", their runs.

Every change goes through :mod:`durable_django.firing`, as the API's does: saving a form computes
the next fire time again when the cron expression, the timezone or ``enabled`` changed; the
actions switch a schedule or start a run at once. The form refuses a cron expression, a timezone,
a workflow or an input that a fire could not use, naming the field. A schedule declared in code
(``schedule()`` in a workflows module) is synced from there: its form shows it read-only, apart
from ``enabled``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import firing
from .admin_display import ADMIN_CSS, moment, run_link, status_badge
from .admin_lists import GuardedListAdmin
from .definition import find_workflow
from .exceptions import InvalidInput
from .models import Schedule, WorkflowRun
from .schedules import cron_problem, input_problem, timezone_problem, zone

# How many of a schedule's latest runs its page lists (the rest: the link to the filtered run list).
RECENT_RUNS = 10


def in_its_zone(row: Schedule, value: Any) -> str:
    """``value`` as the schedule's own timezone reads it (its cron is in that zone), to the minute
    or second: "Mon 2026-12-07 07:00 Europe/Berlin"."""
    if not value:
        return "—"
    try:
        local = value.astimezone(zone(row.timezone))
    except (ValueError, LookupError):
        return moment(value)
    shape = "%a %Y-%m-%d %H:%M" if not local.second else "%a %Y-%m-%d %H:%M:%S"
    return f"{local.strftime(shape)} {row.timezone}"


RUN_PERMISSION = "durable_django.change_workflowrun"


class ScheduleForm(forms.ModelForm):
    """Refuses what a fire could not use, with the reason under the field."""

    class Meta:
        model = Schedule
        fields = ("name", "workflow", "cron", "timezone", "input", "enabled", "catch_up")

    def clean_cron(self) -> str:
        cron = self.cleaned_data["cron"].strip()
        problem = cron_problem(cron)
        if problem:
            raise forms.ValidationError(problem[0].upper() + problem[1:] + ".", code="invalid_cron")
        return str(cron)

    def clean_timezone(self) -> str:
        name = self.cleaned_data["timezone"]
        problem = timezone_problem(name)
        if problem:
            raise forms.ValidationError(problem[0].upper() + problem[1:] + ".", code="invalid_timezone")
        return str(name)

    def clean_workflow(self) -> str:
        name = self.cleaned_data["workflow"]
        if find_workflow(name) is None:
            raise forms.ValidationError(
                gettext("No workflow named %(name)r is registered.") % {"name": name}, code="unknown_workflow"
            )
        return str(name)

    def clean_input(self) -> Any:
        value = self.cleaned_data["input"]
        problem = input_problem({} if value is None else value)
        if problem:
            raise forms.ValidationError(problem[0].upper() + problem[1:] + ".", code="invalid_input")
        return {} if value is None else value


@admin.register(Schedule)
class ScheduleAdmin(GuardedListAdmin, admin.ModelAdmin):
    form = ScheduleForm
    list_display = (
        "name",
        "workflow",
        "cron",
        "timezone",
        "enabled",
        "next_fire",
        "last_fired",
        "declared_in_code",
        "runs_link",
    )
    list_filter = ("enabled", "declared_in_code", "workflow")

    class Media:
        css = ADMIN_CSS

    search_fields = ("name", "workflow")
    actions = ("enable_schedules", "disable_schedules", "fire_now")
    declared_readonly = ("name", "workflow", "cron", "timezone", "input", "catch_up")
    readonly_fields = ("next_fire", "last_fired", "declared_in_code", "recent_runs")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Schedule]:
        # A count per listed row (a subquery on the runs' schedule index), not a GROUP BY over every run.
        runs = WorkflowRun.objects.filter(schedule=OuterRef("pk")).order_by().values("schedule")
        return (
            super()
            .get_queryset(request)
            .annotate(run_count=Coalesce(Subquery(runs.annotate(n=Count("pk")).values("n")), 0))
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> tuple[str, ...]:
        if obj is not None and obj.declared_in_code:
            return (*self.declared_readonly, *self.readonly_fields)
        return tuple(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Schedule, form: forms.ModelForm, change: bool) -> None:
        firing.save_schedule(obj, list(form.changed_data))

    # -- columns ------------------------------------------------------------------------------

    @admin.display(description=_("next fire"), ordering="next_fire_at")
    def next_fire(self, obj: Schedule) -> str:
        return in_its_zone(obj, obj.next_fire_at)

    @admin.display(description=_("last fired"), ordering="last_fired_at")
    def last_fired(self, obj: Schedule) -> str:
        return in_its_zone(obj, obj.last_fired_at)

    def runs_url(self, obj: Schedule) -> str:
        opts = WorkflowRun._meta
        url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")
        return f"{url}?schedule__id__exact={obj.pk}"

    @admin.display(description=_("runs"))
    def runs_link(self, obj: Schedule) -> SafeString:
        count = getattr(obj, "run_count", None)
        if count is None:
            count = obj.runs.count()
        label = ngettext("%(count)d run", "%(count)d runs", count) % {"count": count}
        return format_html('<a href="{}">{}</a>', self.runs_url(obj), label)

    @admin.display(description=_("latest runs"))
    def recent_runs(self, obj: Schedule) -> SafeString:
        if obj.pk is None:
            return SafeString("—")
        runs = obj.runs.order_by("-created_at")[:RECENT_RUNS]
        rows = format_html_join(
            "",
            "<li>{} {} {}</li>",
            (
                (
                    run_link(self.admin_site, run.pk),
                    status_badge(run.status, run.get_status_display()),
                    moment(run.created_at),
                )
                for run in runs
            ),
        )
        return format_html('<ul class="durable-schedule-runs">{}</ul>{}', rows, self.runs_link(obj))

    # -- actions ------------------------------------------------------------------------------

    @admin.action(description=_("Enable the selected schedules"), permissions=["change"])
    def enable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._switch(request, queryset, True)

    @admin.action(description=_("Disable the selected schedules"), permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._switch(request, queryset, False)

    def _switch(self, request: HttpRequest, queryset: QuerySet[Schedule], enabled: bool) -> None:
        done = [row.name for row in queryset if firing.set_enabled(row, enabled)]
        verb = gettext("Enabled") if enabled else gettext("Disabled")
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
        else:
            self.message_user(request, gettext("Nothing to change: every selected schedule already was."))

    @admin.action(description=_("Fire the selected schedules now"), permissions=["fire"])
    def fire_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for row in queryset:
            try:
                run = firing.fire_now(row)
            except InvalidInput as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request,
                format_html(gettext("Started run {} of schedule {}."), run_link(self.admin_site, run.pk), row.name),
                messages.SUCCESS,
            )

    def has_fire_permission(self, request: HttpRequest) -> bool:
        """Firing starts a run: it needs the change permissions of schedules and of runs."""
        return self.has_change_permission(request) and request.user.has_perm(RUN_PERMISSION)
