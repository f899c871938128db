"""Columns and permissions shared by the admins of runs, step results and parallel groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.options import BaseModelAdmin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .admin_display import group_history, moment, pretty_json, status_badge, stored_traceback, without_tracebacks
from .models import ParallelGroup, StepResult, WorkflowRun
from .timeline import format_duration

if TYPE_CHECKING:
    _AdminBase = BaseModelAdmin[Any]
else:
    _AdminBase = BaseModelAdmin


class DisplayColumns(_AdminBase):
    """Columns shared by the run, step and group admins."""

    def _or_empty(self, html: SafeString | str) -> SafeString | str:
        return html or self.get_empty_value_display()

    def _json(self, value: Any) -> SafeString | str:
        return pretty_json(value) if value is not None else self.get_empty_value_display()

    def _error(self, error: Any) -> SafeString | str:
        return self._json(without_tracebacks(error))

    def _traceback(self, error: Any) -> SafeString | str:
        text = stored_traceback(error)
        return format_html('<pre class="durable-traceback">{}</pre>', text) if text else self.get_empty_value_display()

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: WorkflowRun | StepResult | ParallelGroup) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("duration"))
    def duration_display(self, obj: WorkflowRun | StepResult | ParallelGroup) -> str:
        if isinstance(obj, ParallelGroup):
            return format_duration(((obj.finished_at or timezone.now()) - obj.created_at).total_seconds())
        return self._or_empty(format_duration(obj.duration) if obj.duration is not None else "")

    @admin.display(description=_("earlier outcomes"))
    def history_table(self, obj: ParallelGroup) -> SafeString | str:
        return group_history(obj.history) if obj.history else self.get_empty_value_display()

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, obj: WorkflowRun | StepResult | ParallelGroup) -> str:
        return moment(obj.created_at)

    @admin.display(description=_("started at"))
    def started(self, obj: WorkflowRun | StepResult) -> str:
        return self._or_empty(moment(obj.started_at))

    @admin.display(description=_("finished at"))
    def finished(self, obj: WorkflowRun | StepResult | ParallelGroup) -> str:
        return self._or_empty(moment(obj.finished_at))


class ReadOnlyAdmin(_AdminBase):
    """No adding, changing or deleting: these rows are written by the engine only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
