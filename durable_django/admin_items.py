"""Foreach blocks on the admin's pages: counts per status, the first items and the failed ones, never all.

A foreach block may have thousands of items, each a row (and one more row per retry). A page
draws the first :data:`FIRST_ITEMS` items of each block and the failed items after them
(:data:`FAILED_ITEMS` at most, each with all its attempts), and sums the block up in one
aggregate query: items per status of their latest attempt, attempts, and when they ran. Links
(:func:`item_links`) lead to every item: the step results' change list filtered by group (and
status), and the API's steps of the run.

Read-only, and a fixed number of queries whatever the size of the blocks.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import Coalesce
from django.urls import NoReverseMatch, reverse

from .models import StepResult, StepStatus

#: Items drawn from the start of each foreach block.
FIRST_ITEMS = 10
#: Failed items drawn after those, across the page.
FAILED_ITEMS = 10

#: The order statuses are counted in: outcomes first, then what is still going on.
STATUS_ORDER = ("completed", "failed", "cancelled", "running", "waiting", "pending")

#: Rows every page draws: all but the items of a foreach block from :data:`FIRST_ITEMS` on.
DRAWN = Q(item_index__isnull=True) | Q(item_index__lt=FIRST_ITEMS)


@dataclass(frozen=True)
class ItemSummary:
    """A foreach block's items in short: ``statuses`` counts items by the status of their latest attempt."""

    group_id: int
    items: int
    statuses: dict[str, int]
    attempts: int
    begin: datetime | None  # the first attempt's start (its creation, if none started)
    end: datetime | None  # the last attempt's finish
    drawn: dict[int, str] = field(default_factory=dict)  # index: latest status, of the items drawn

    @property
    def items_text(self) -> str:
        return f"{self.items:,}"

    @property
    def failed_text(self) -> str:
        return f"{self.failed:,}"

    @property
    def retries(self) -> int:
        return self.attempts - self.items

    @property
    def failed(self) -> int:
        return self.statuses.get(StepStatus.FAILED, 0)

    @property
    def hidden(self) -> int:
        """Items left off the page."""
        return self.items - len(self.drawn)

    @property
    def hidden_statuses(self) -> dict[str, int]:
        left = dict(self.statuses)
        for status in self.drawn.values():
            left[status] = left.get(status, 0) - 1
        return {status: count for status, count in ordered(left) if count > 0}

    @property
    def hidden_failed(self) -> int:
        return self.hidden_statuses.get(StepStatus.FAILED, 0)

    @property
    def counts_label(self) -> str:
        """``10,000 items: 9,963 completed, 37 failed``."""
        noun = "item" if self.items == 1 else "items"
        return f"{self.items:,} {noun}: {counts_text(self.statuses)}" if self.items else "no items"

    @property
    def attempts_label(self) -> str:
        """``10,012 attempts (12 retries)``, or ``""`` without retries."""
        if not self.retries:
            return ""
        return f"{self.attempts:,} attempts ({self.retries:,} {'retry' if self.retries == 1 else 'retries'})"


def ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """``counts`` in :data:`STATUS_ORDER`, unknown statuses last."""
    rank = {status: index for index, status in enumerate(STATUS_ORDER)}
    return sorted(counts.items(), key=lambda pair: (rank.get(pair[0], len(rank)), pair[0]))


def counts_text(counts: Mapping[str, int]) -> str:
    """``9,963 completed, 37 failed``."""
    return ", ".join(f"{count:,} {status}" for status, count in ordered(counts) if count)


def _latest(rows: QuerySet[StepResult]) -> QuerySet[Any]:
    """The id of each item's latest attempt (its highest id: attempts are written in order)."""
    items = rows.filter(item_index__isnull=False).order_by()
    return items.values("group_id", "item_index").annotate(last=Max("id")).values("last")


def drawn_rows(rows: QuerySet[StepResult], has_items: bool) -> list[StepResult]:
    """The rows of ``rows`` a page draws, in id order: :data:`DRAWN`, and the failed items after them.

    ``has_items``: whether ``rows`` may hold foreach items past the first ones (two more queries).
    """
    drawn = list(rows.filter(DRAWN).order_by("id"))
    return sorted([*drawn, *failed_items(rows)], key=lambda row: row.pk) if has_items else drawn


def failed_items(rows: QuerySet[StepResult]) -> list[StepResult]:
    """Every attempt of the first :data:`FAILED_ITEMS` items from :data:`FIRST_ITEMS` on whose latest attempt failed."""
    failed = rows.filter(item_index__gte=FIRST_ITEMS, status=StepStatus.FAILED, pk__in=_latest(rows))
    keys = list(failed.order_by("group_id", "item_index").values_list("group_id", "item_index")[:FAILED_ITEMS])
    if not keys:
        return []
    which = functools.reduce(operator.or_, (Q(group_id=group, item_index=index) for group, index in keys))
    return list(rows.filter(which).order_by("id"))


def extra_ids(drawn: Iterable[StepResult]) -> list[int]:
    """The drawn rows :data:`DRAWN` does not select: the failed items past the first ones."""
    return [row.pk for row in drawn if row.item_index is not None and row.item_index >= FIRST_ITEMS]


def summarise(rows: QuerySet[StepResult], drawn: Iterable[StepResult]) -> dict[int, ItemSummary]:
    """Each foreach group of ``rows`` (by its id) in short, one query; ``drawn`` are the rows the page draws."""
    counts: dict[int, dict[str, Any]] = {}
    aggregate = (
        rows.filter(item_index__isnull=False)
        .order_by()
        .values("group_id", "status")
        .annotate(
            attempts=Count("id"),
            items=Count("id", filter=Q(pk__in=_latest(rows))),
            begin=Min(Coalesce("started_at", "created_at")),
            end=Max("finished_at"),
        )
    )
    for line in aggregate:
        group = counts.setdefault(line["group_id"], {"statuses": {}, "attempts": 0, "begin": [], "end": []})
        if line["items"]:
            group["statuses"][line["status"]] = line["items"]
        group["attempts"] += line["attempts"]
        group["begin"] += [line["begin"]] if line["begin"] is not None else []
        group["end"] += [line["end"]] if line["end"] is not None else []
    return _summaries(counts, drawn)


def summarise_rows(rows: Iterable[StepResult]) -> dict[int, ItemSummary]:
    """:func:`summarise` of rows already read (all of them: nothing is left off)."""
    listed = sorted((row for row in rows if row.item_index is not None and row.group_id is not None), key=_pk)
    latest: dict[tuple[int, int], StepResult] = {}
    counts: dict[int, dict[str, Any]] = {}
    for row in listed:
        assert row.group_id is not None and row.item_index is not None
        latest[row.group_id, row.item_index] = row
        group = counts.setdefault(row.group_id, {"statuses": {}, "attempts": 0, "begin": [], "end": []})
        group["attempts"] += 1
        group["begin"].append(row.started_at or row.created_at)
        group["end"] += [row.finished_at] if row.finished_at is not None else []
    for (group_id, _), row in latest.items():
        statuses = counts[group_id]["statuses"]
        statuses[row.status] = statuses.get(row.status, 0) + 1
    return _summaries(counts, listed)


def _pk(row: StepResult) -> tuple[bool, int]:
    return (row.pk is None, row.pk or 0)


def _summaries(counts: dict[int, dict[str, Any]], drawn: Iterable[StepResult]) -> dict[int, ItemSummary]:
    shown: dict[int, dict[int, str]] = {}
    for row in sorted(drawn, key=_pk):
        if row.item_index is not None and row.group_id in counts:
            shown.setdefault(row.group_id, {})[row.item_index] = row.status
    return {
        group_id: ItemSummary(
            group_id=group_id,
            items=sum(found["statuses"].values()),
            statuses=dict(ordered(found["statuses"])),
            attempts=found["attempts"],
            begin=min(found["begin"], default=None),
            end=max(found["end"], default=None),
            drawn=dict(sorted(shown.get(group_id, {}).items())),
        )
        for group_id, found in counts.items()
    }


@dataclass(frozen=True)
class ItemLinks:
    """Where every item of a block is: the admin's step results filtered by group (and failed), the API."""

    all: str
    failed: str
    api_failed: str


def item_links(site_name: str, run_id: Any, group_id: int) -> ItemLinks:
    """The links of a foreach group's items; ``api_failed`` is ``""`` when the API is not installed."""
    changelist = reverse(f"{site_name}:durable_django_stepresult_changelist")
    everything = f"{changelist}?group__id__exact={group_id}"
    try:
        api = reverse("durable_api:run-steps", args=[run_id]) + f"?group={group_id}&status=failed"
    except NoReverseMatch:
        api = ""
    return ItemLinks(everything, f"{everything}&status__exact=failed", api)


def group_rows(group: Any) -> tuple[list[StepResult], ItemSummary | None]:
    """The rows a group's own page draws (every branch; a foreach block's first and failed items) and its summary."""
    rows = group.branches.all()
    if group.kind != "foreach":
        return list(rows.order_by("id")), None
    drawn = drawn_rows(rows, True)
    return drawn, summarise(rows, drawn).get(group.pk)
