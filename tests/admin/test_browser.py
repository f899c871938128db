"""The admin in a real headless Chromium (Debian's package) driven by Playwright, on a live server.

Skipped when Chromium or Playwright is missing, and failing instead under ``CI=true`` (see
``conftest.py``). Runs are created and driven in the test's thread on the embedded queue; the
browser talks to pytest-django's live server, which shares the test database.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.admin.conftest import CHROMIUM
from tests.admin.support import CHANGELIST, change_url, fix, order
from tests.admin.waits_support import start_waiting

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def shown_statuses(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("#result_list .field-status_badge").all_inner_texts()]


def test_run_list_shows_runs_with_their_status_and_filters_by_status(embedded: EmbeddedQueue, page: Any) -> None:
    failed = order(embedded, "browser-list-1", decline=True)
    completed = order(embedded, "browser-list-2")
    page.click("text=Workflow runs")
    page.wait_for_url(f"**{CHANGELIST}")
    assert page.locator("#result_list .durable-run-id").evaluate_all("codes => codes.map(c => c.title)") == [
        str(completed.pk),
        str(failed.pk),
    ]
    assert shown_statuses(page) == ["Completed", "Failed"]
    badge = page.locator("#result_list .durable-badge").first
    assert badge.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(21, 128, 61)"

    page.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True).click()
    page.wait_for_url("**status__exact=failed**")
    assert shown_statuses(page) == ["Failed"]
    assert page.locator("#result_list .durable-run-id").get_attribute("title") == str(failed.pk)


def test_run_page_draws_the_timeline_of_a_parallel_group(embedded: EmbeddedQueue, page: Any) -> None:
    run = order(embedded, "browser-timeline", decline=True)
    page.goto(change_url(run))
    timeline = page.locator(".durable-timeline")
    timeline.scroll_into_view_if_needed()
    bars = page.locator(".dt-bar rect")
    assert bars.count() == 5
    track = page.locator(".dt-row:not(.dt-axis) .dt-track").first.bounding_box()
    boxes = [bars.nth(i).bounding_box() for i in range(bars.count())]
    # Every bar is drawn, inside the track's horizontal extent.
    for box in boxes:
        assert box["width"] >= 1 and box["height"] >= 10
        assert track["x"] - 1 <= box["x"] <= track["x"] + track["width"]
    # Branches stacked inside their group: reserve_stock, charge_card (two attempts, one row), send_receipt.
    rows = sorted({round(box["y"]) for box in boxes})
    assert len(rows) == 4
    group = page.locator(".dt-group-header")
    assert group.get_attribute("data-group") == "fulfil"
    assert "3 branches, 1 failed" in group.inner_text()
    labels = page.locator(".dt-group .dt-row:not(.dt-group-header) .dt-label").all_inner_texts()
    assert [label.strip() for label in labels] == ["reserve_stock", "charge_card 2 attempts", "send_receipt"]
    fills = bars.evaluate_all("rects => rects.map(r => r.getAttribute('fill'))")
    assert fills == ["#15803d", "#15803d", "#b91c1c", "#b91c1c", "#15803d"]


def test_retry_button_retries_a_failed_run(embedded: EmbeddedQueue, page: Any) -> None:
    run = order(embedded, "browser-retry", decline=True)
    fix("browser-retry")
    page.goto(change_url(run))
    page.get_by_role("button", name="Retry").click()
    page.wait_for_selector(".messagelist .success")
    assert page.locator(".messagelist .success").inner_text().strip() == (
        f"Retried it_admin_order run {run.pk}: it is running again."
    )
    assert page.url.endswith(change_url(run))
    assert page.get_by_role("button", name="Retry").count() == 0
    assert WorkflowRun.objects.get(pk=run.pk).status == "running"

    embedded.run_until_idle(timeout=30)
    page.reload()
    assert page.locator(".field-status_badge .durable-badge").first.inner_text().strip().lower() == "completed"
    assert page.locator(".dt-bar").count() == 7


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG file's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_screenshot_script_writes_the_list_run_and_inbox_pages(tmp_path: Path) -> None:
    # The script sets up its own settings and database: nothing of the test run's may leak in.
    env = {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "admin_screenshots.py"), str(tmp_path), "--chromium", str(CHROMIUM)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    names = [
        "run-list.png",
        "run-detail.png",
        "run-timeline.png",
        "run-top.png",
        "run-failed.png",
        "run-failed-top.png",
        "run-waiting.png",
        "waits-timeline.png",
        "run-waiting-top.png",
        "inbox.png",
        "answer-approval.png",
        "run-retried.png",
        "run-retried-top.png",
        "run-goto.png",
        "run-goto-top.png",
        "run-running.png",
        "run-running-top.png",
        "run-foreach.png",
        "run-foreach-top.png",
        "run-foreach-large.png",
        "run-foreach-large-top.png",
        "run-branch.png",
        "run-branch-top.png",
        "run-compensated.png",
        "run-compensated-top.png",
        "run-detail-dark.png",
        "run-running-dark.png",
    ]
    assert result.stdout.split() == [str(tmp_path / name) for name in names]
    for name in names:
        width, height = png_size(tmp_path / name)
        assert width >= 800 and height >= 150, (name, width, height)


# -- waits -----------------------------------------------------------------------------------------


def test_run_page_of_a_waiting_run_shows_its_waits_on_the_timeline_and_sends_an_event(
    embedded: EmbeddedQueue, page: Any, tmp_path: Path
) -> None:
    run = start_waiting(embedded, "it_admin_notify", {"pause": 0})
    embedded.run_until_idle(timeout=30)
    assert WorkflowRun.objects.get(pk=run.pk).status == "waiting"
    page.goto(change_url(run))
    assert page.locator(".field-status_badge .durable-badge").first.inner_text().strip() == "Waiting"
    kinds = page.locator("tr.durable-wait").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert "event" in kinds
    assert page.locator("tr.durable-wait-waiting .wait-subject strong").first.inner_text() == "event mail_sent"
    # The waits' bars are drawn inside the track, inside the block's section for the branches.
    waits = page.locator(".dt-wait rect")
    assert waits.count() == len(kinds)
    track = page.locator(".dt-waits .dt-track").first.bounding_box()
    for index in range(waits.count()):
        box = waits.nth(index).bounding_box()
        assert box["width"] >= 1 and box["height"] >= 8
        assert track["x"] - 1 <= box["x"] <= track["x"] + track["width"]
    assert page.locator(".dt-group .dt-wait").count() >= 1
    page.locator(".durable-waits-module").screenshot(path=str(tmp_path / "waits.png"))

    # The one event the run waits for is filled in; send it with a payload.
    assert page.input_value("#durable-event-name") == "mail_sent"
    page.fill("#durable-event-payload", '{"to": "ada@example.com"}')
    page.get_by_role("button", name="Send event").click()
    page.wait_for_selector(".messagelist .success")
    assert page.locator(".messagelist .success").inner_text().strip() == (
        f"Sent event mail_sent to run {str(run.pk)[:8]}: a wait took it."
    )
    # A JSON error is said, and nothing is sent.
    page.fill("#durable-event-name", "paid")
    page.fill("#durable-event-payload", "{not json")
    page.get_by_role("button", name="Send event").click()
    page.wait_for_selector(".messagelist .error")
    assert "the payload is not JSON" in page.locator(".messagelist .error").inner_text()

    embedded.run_until_idle(timeout=30)
    page.reload()
    mail = page.locator("tr.durable-wait[data-kind=event]").first
    assert mail.locator(".wait-status").inner_text().strip() == "Resolved"
    assert '"to": "ada@example.com"' in mail.locator(".wait-payload").inner_text()
    page.screenshot(path=str(tmp_path / "run-waiting.png"), full_page=True, animations="disabled")
    assert png_size(tmp_path / "run-waiting.png")[0] >= 800


def test_an_approval_is_answered_in_the_inbox(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = start_waiting(embedded, "it_admin_refund", {"amount": 250, "customer": "Ada <Lovelace>"})
    assert run.status == "waiting"
    page.goto("/admin/durable_django/")
    page.locator(".durable-inbox-module").get_by_role("link", name="Inputs waiting for an answer").click()
    page.wait_for_url("**/wait/inbox/")
    item = page.locator(".durable-inbox-pending .durable-inbox-item")
    assert item.count() == 1
    assert "Refund 250 EUR to Ada <Lovelace>?" in item.inner_text()
    page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
    item.get_by_role("link", name="Answer").click()
    page.wait_for_selector(".durable-answer-form")
    page.fill("#id_answer-comment", "Loyal customer")
    page.screenshot(path=str(tmp_path / "answer.png"), full_page=True)
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector(".messagelist .success")
    assert page.locator(".messagelist .success").inner_text().strip() == (
        f"Answered refund_ok of it_admin_refund run {str(run.pk)[:8]}."
    )
    assert page.locator(".durable-inbox-pending").count() == 0
    answered = page.locator(".durable-inbox-answered .durable-inbox-item")
    assert answered.count() == 1
    assert "answered by operator" in answered.inner_text()
    assert "Decision: Approved" in answered.inner_text() and "Comment: Loyal customer" in answered.inner_text()

    embedded.run_until_idle(timeout=30)
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.context["refund_ok"]["approved"] is True and run.context["refund_ok"]["by"] == "operator"
    for name in ("inbox.png", "answer.png"):
        assert png_size(tmp_path / name)[0] >= 800
