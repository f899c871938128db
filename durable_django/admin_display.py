"""HTML fragments of the admin's pages: status badges, JSON, one-line previews, links, branch tables,
a foreach block's items and a block's earlier outcomes.

Pure functions of stored values (no query of their own), shared by the model admins in
:mod:`durable_django.admin`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .admin_items import FIRST_ITEMS, ItemSummary, item_links
from .models import ParallelGroup, StepResult, StepStatus, WorkflowRun
from .timeaxis import format_duration, status_colour

# The stylesheet every durable_django admin page adds to Django's.
ADMIN_CSS = {"all": ("durable_django/admin.css",)}

# One-line previews of outputs and errors in tables; the full value is on the row's own page.
PREVIEW_CHARS = 120

# Stands in for a traceback inside an error's JSON; the traceback itself is shown as text.
TRACEBACK_NOTE = "(see Traceback)"


def status_badge(status: str, label: str | None = None) -> SafeString:
    """A coloured pill naming a run, step or group status."""
    return format_html(
        '<span class="durable-badge durable-status-{}" style="background-color: {}">{}</span>',
        status,
        status_colour(status),
        label or status,
    )


def pretty_json(value: Any) -> SafeString:
    """``value`` as indented JSON in a ``<pre>``, HTML-escaped."""
    return format_html(
        '<pre class="durable-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder)
    )


def folded_json(value: Any, lines: int = 12) -> SafeString:
    """:func:`pretty_json`, folded in a ``<details>`` (open by a click) when it is longer than ``lines``."""
    block = pretty_json(value)
    count = block.count("\n") + 1
    if count <= lines:
        return block
    return format_html('<details class="durable-fold"><summary>{} lines</summary>{}</details>', count, block)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``value`` as one line of JSON, cut to ``limit`` characters."""
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, cls=DjangoJSONEncoder)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def moment(value: datetime | None) -> str:
    """A timestamp in the current time zone, to the millisecond: attempts often last less than a second."""
    return format_date(timezone.localtime(value), "Y-m-d H:i:s.u")[:-3] if value else ""


def short_id(run_id: Any) -> str:
    return str(run_id)[:8]


def change_url(site: admin.AdminSite, model: type[Model], pk: Any) -> str:
    opts = model._meta
    return reverse(f"{site.name}:{opts.app_label}_{opts.model_name}_change", args=[quote(pk)])


def run_link(site: admin.AdminSite, run_id: Any) -> SafeString:
    """A link to a run's page, labelled with its short id (the full id on hover)."""
    return format_html(
        '<a href="{}" title="{}"><code>{}</code></a>', change_url(site, WorkflowRun, run_id), run_id, short_id(run_id)
    )


def outcome(row: StepResult) -> str:
    """A one-line preview of an attempt's output (completed) or error (failed)."""
    if row.status == StepStatus.COMPLETED:
        return preview(row.output)
    if row.status != StepStatus.FAILED:
        return ""
    reason = row.error
    if isinstance(reason, dict) and isinstance(reason.get("message"), str):
        # A raised exception: its type and message say more in one line than the start of a traceback.
        text = f"{reason['type']}: {reason['message']}" if reason.get("type") else reason["message"]
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return preview(reason)


def stored_traceback(error: Any) -> str:
    """The first traceback stored in an error (a raised exception's ``{"traceback": ...}``, maybe nested)."""
    if isinstance(error, dict):
        if isinstance(error.get("traceback"), str):
            return str(error["traceback"])
        for value in error.values():
            found = stored_traceback(value)
            if found:
                return found
    return ""


def without_tracebacks(error: Any) -> Any:
    """``error`` with every stored traceback replaced by a pointer to the traceback field.

    A traceback is one long string: in JSON its line breaks turn into ``\\n`` and it buries the rest.
    """
    if not isinstance(error, dict):
        return error
    return {
        key: TRACEBACK_NOTE if key == "traceback" and isinstance(value, str) else without_tracebacks(value)
        for key, value in error.items()
    }


def branch_table(branches: Iterable[StepResult], site: admin.AdminSite) -> str:
    """Every attempt of every branch of a group: step, attempt, status, timing and its result in short."""
    rows = [
        {
            "url": change_url(site, StepResult, row.pk),
            "step": row.step,
            "attempt": row.attempt,
            "badge": status_badge(row.status, row.get_status_display()),
            "started": moment(row.started_at),
            "duration": format_duration(row.duration) if row.duration is not None else "",
            "outcome": outcome(row),
        }
        for row in branches
    ]
    return render_to_string("admin/durable_django/branch_table.html", {"rows": rows})


def group_outcomes(
    group: ParallelGroup, rows: Iterable[StepResult], summary: ItemSummary | None, site: admin.AdminSite
) -> str:
    """A parallel group's :func:`branch_table`, or a foreach group's :func:`items_table`."""
    if group.kind == "foreach":
        return items_table(group, rows, summary, site)
    return branch_table(rows, site)


def items_table(
    group: ParallelGroup, rows: Iterable[StepResult], summary: ItemSummary | None, site: admin.AdminSite
) -> str:
    """A foreach group's items in short, links to all of them, and a table of the ``rows`` drawn.

    ``rows`` are the first items and the failed ones (every attempt of each), ``summary`` counts all.
    """
    summary = summary or ItemSummary(group.pk, 0, {}, 0, None, None)
    values = group.items if isinstance(group.items, list) else []
    listed = sorted(rows, key=lambda row: (row.item_index is None, row.item_index or 0, row.attempt, row.pk or 0))
    lines = [
        {
            "url": change_url(site, StepResult, row.pk),
            "item": row.item_index,
            "value": preview(values[row.item_index], 60)
            if row.item_index is not None and 0 <= row.item_index < len(values)
            else "",
            "attempt": row.attempt,
            "status": row.status,
            "badge": status_badge(row.status, row.get_status_display()),
            "started": moment(row.started_at),
            "duration": format_duration(row.duration) if row.duration is not None else "",
            "outcome": outcome(row),
        }
        for row in listed
    ]
    drawn_failed = sum(1 for index, status in summary.drawn.items() if index >= FIRST_ITEMS and status == "failed")
    first = min(FIRST_ITEMS, summary.items)
    note = ""
    if summary.hidden > 0:
        note = f"Showing {len(summary.drawn):,} of {summary.items:,} items: the first {first:,}"
        note += f" and {drawn_failed:,} failed after them." if drawn_failed else "."
        if summary.hidden_failed:
            note += f" {summary.hidden_failed:,} more failed items are in the list of the failed ones."
    links = item_links(site.name, group.run_id, group.pk)
    return render_to_string(
        "admin/durable_django/items_table.html",
        {"summary": summary, "lines": lines, "links": links, "note": note, "group": group},
    )


def group_history(history: Any) -> str:
    """A retried block's earlier outcomes (its ``history``), oldest first: status, counts, when, error."""
    entries = [entry for entry in history or [] if isinstance(entry, dict)]
    lines = [
        {
            "number": number,
            "badge": status_badge(str(entry.get("status") or ""), str(entry.get("status") or "")),
            "branches": entry.get("branches", ""),
            "failed": entry.get("failed", ""),
            "finished": _stored_moment(entry.get("finished_at")),
            "retried": _stored_moment(entry.get("retried_at")),
            "error": preview(without_tracebacks(entry.get("error"))),
        }
        for number, entry in enumerate(entries, start=1)
    ]
    return render_to_string("admin/durable_django/group_history.html", {"lines": lines})


def _stored_moment(value: Any) -> str:
    when = parse_datetime(value) if isinstance(value, str) else None
    return moment(when) if when is not None else ""


def bounded_results(value: Any, limit: int = FIRST_ITEMS) -> Any:
    """A block's results to show: a foreach block's list cut to its first ``limit`` entries, and how many more."""
    if isinstance(value, list) and len(value) > limit:
        return {"first": value[:limit], "more": len(value) - limit}
    return value
