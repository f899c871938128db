"""What an attempt logged, in the admin: its step result's page and list, the run page's attempts and timeline."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from durable_django.models import StepResult
from durable_django.testing import EmbeddedQueue
from tests.admin.logs_support import logged_run
from tests.admin.support import change_url, elements, texts
from tests.engine_support import Definer

pytestmark = pytest.mark.django_db(transaction=True)


def summaries(content: bytes, within: str) -> list[str]:
    return [" ".join(found["text"].split()) for found in elements(content, tag="summary", within=within)]


def row_url(row: StepResult) -> str:
    return reverse("admin:durable_django_stepresult_change", args=[row.pk])


def test_a_step_results_page_shows_its_records_escaped_with_time_level_and_logger(
    embedded: EmbeddedQueue, define: Definer, admin_client: Client
) -> None:
    run = logged_run(embedded, define)
    row = StepResult.objects.get(run=run, step="charge")
    content = admin_client.get(row_url(row)).content
    lines = elements(content, "durable-log")
    assert [line["data-level"] for line in lines] == ["INFO", "WARNING"]
    assert texts(content, "durable-log-logger") == ["shop.orders", "shop.orders"]
    assert texts(content, "durable-log-message") == [
        "charging 8900 for <script>alert(1)</script>",
        "gateway answered in 900 ms",
    ]
    page = content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    times = elements(content, tag="time", within="durable-log-lines")
    assert [time["datetime"] for time in times] == [record["at"] for record in row.logs]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", time["text"]) for time in times)
    # Two records are shown open.
    assert elements(content, "durable-logs")[0]["tag"] == "div"


def test_a_long_list_of_records_is_folded_under_a_note_of_its_levels(
    embedded: EmbeddedQueue, define: Definer, admin_client: Client
) -> None:
    run = logged_run(embedded, define)
    content = admin_client.get(row_url(StepResult.objects.get(run=run, step="chatty"))).content
    (fold,) = elements(content, "durable-logs")
    assert fold["tag"] == "details"
    assert summaries(content, "durable-logs") == ["10 records: 9 INFO, 1 ERROR"]
    assert len(elements(content, "durable-log", within="durable-logs")) == 10
    # An attempt that logged nothing says so.
    silent = admin_client.get(row_url(StepResult.objects.get(run=run, step="silent"))).content
    assert elements(silent, "durable-logs") == []
    assert texts(silent, "field-logs_display") == ["Logs: -"]


def test_the_list_of_step_results_counts_the_records_of_each(
    embedded: EmbeddedQueue, define: Definer, admin_client: Client
) -> None:
    run = logged_run(embedded, define)
    content = admin_client.get(reverse("admin:durable_django_stepresult_changelist"), {"q": str(run.pk)}).content
    steps = texts(content, "field-step")
    counts = texts(content, "field-log_count")
    assert dict(zip(steps, counts, strict=True)) == {"charge": "2", "chatty": "10", "silent": "-"}


def test_the_run_page_shows_each_attempts_records_in_its_step_list_and_under_its_timeline_line(
    embedded: EmbeddedQueue, define: Definer, admin_client: Client
) -> None:
    run = logged_run(embedded, define)
    content = admin_client.get(change_url(run)).content
    # Under the timeline: one fold per line that logged, named by its step.
    folds = elements(content, "dt-logs-row")
    assert [fold["data-step"] for fold in folds] == ["charge", "chatty"]
    assert summaries(content, "dt-logs") == [
        "logged 2 records: 1 INFO, 1 WARNING",
        "logged 10 records: 9 INFO, 1 ERROR",
    ]
    assert texts(content, "durable-log-message", within="durable-timeline")[:2] == [
        "charging 8900 for <script>alert(1)</script>",
        "gateway answered in 900 ms",
    ]
    # In the list of the run's attempts: folded, in a column of their own.
    assert texts(content, "field-logs_folded")[2] == ""
    assert summaries(content, "field-logs_folded") == ["2 records: 1 INFO, 1 WARNING", "10 records: 9 INFO, 1 ERROR"]
