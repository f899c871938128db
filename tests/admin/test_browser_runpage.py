"""The top of a run's page in headless Chromium: summary, flow graph, timeline labels, live refresh.

Label boxes are measured in the browser: no two labels of the graph, and no two labels of one
timeline row, overlap. Each test saves a screenshot of the page's top part.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from durable_django import start_workflow
from durable_django.models import StepResult, WorkflowRun
from durable_django.operations import retry_run
from durable_django.testing import EmbeddedQueue
from tests.admin.logs_support import logged_run
from tests.admin.run_page_support import running_run
from tests.admin.support import change_url, order
from tests.admin.waits_support import start_waiting

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def boxes(page: Any, selector: str) -> list[dict[str, float]]:
    found = page.locator(selector)
    return [box for box in (found.nth(i).bounding_box() for i in range(found.count())) if box]


def overlapping(found: list[dict[str, float]]) -> list[tuple[dict[str, float], dict[str, float]]]:
    return [
        (a, b)
        for a, b in itertools.combinations(found, 2)
        if a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    ]


def assert_labels_apart(page: Any) -> None:
    graph = boxes(page, ".durable-flowgraph text")
    assert graph, "the flow graph has labels"
    assert overlapping(graph) == []
    rows = page.locator(".durable-timeline .dt-row:not(.dt-axis)")
    for index in range(rows.count()):
        labels = boxes(rows.nth(index), ".dt-bar-label")
        assert overlapping(labels) == [], rows.nth(index).inner_text()
    # Every graph label stays inside its node.
    nodes = page.locator(".durable-flowgraph .fg-node")
    for index in range(nodes.count()):
        node = nodes.nth(index)
        outline = node.locator(".fg-box").bounding_box()
        for label in boxes(node, "text"):
            assert outline["x"] <= label["x"] and label["x"] + label["width"] <= outline["x"] + outline["width"] + 1


def shoot(page: Any, path: Path) -> None:
    page.locator("#durable-live-part").screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size > 1000


def test_completed_run_with_a_block(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = order(embedded, "browser-page-done", decline=False)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))
    assert page.locator(".durable-run-summary .durable-badge-large").inner_text().strip() == "Completed"
    block = page.locator(".fg-block")
    assert block.get_attribute("data-block") == "fulfil"
    assert block.get_attribute("data-status") == "completed"
    assert page.locator(".fg-node").count() == 5  # validate, three branches, ship
    assert page.locator(".fg-edge-next.fg-taken").count() == 2
    assert page.locator(".durable-live").count() == 0
    assert_labels_apart(page)
    shoot(page, tmp_path / "completed.png")


def test_failed_run_with_a_retry_history(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = start_workflow("it_admin_flaky", {"token": "browser-flaky"})
    embedded.run_until_idle(timeout=30)
    retry_run(run.pk)
    embedded.run_until_idle(timeout=30)
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))
    assert page.locator(".durable-error-type").inner_text() == "ConnectionError"
    assert "refused the connection" in page.locator(".durable-error-message").inner_text()
    traceback = page.locator(".durable-traceback-details pre")
    assert not traceback.is_visible()
    page.locator(".durable-traceback-details summary").click()
    assert traceback.is_visible() and traceback.inner_text().startswith("Traceback (most recent call last):")
    assert page.locator(".dt-bar").count() == 4  # prepare, and call_upstream twice, then once more
    node = page.locator(".fg-node[data-node=call_upstream]")
    assert node.get_attribute("data-status") == "failed" and "fg-current" in (node.get_attribute("class") or "")
    assert "3 attempts" in (node.text_content() or "")
    assert_labels_apart(page)
    shoot(page, tmp_path / "retried.png")


def test_running_run_is_drawn_live_and_refreshes_itself(page: Any, tmp_path: Path) -> None:
    run = running_run()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))
    bar = page.locator(".dt-bar.dt-running")
    assert bar.get_attribute("data-step") == "load_rows"
    assert bar.locator("rect").evaluate("r => getComputedStyle(r).animationName") == "dt-pulse"
    assert page.locator(".durable-live").is_visible()
    detail = page.locator(".fg-node[data-node=load_rows] .fg-detail")
    before = detail.text_content() or ""
    assert before.startswith("running ")
    page.evaluate("window.scrollTo(0, 300)")
    # The part is fetched again and replaced in place, the scroll position kept.
    page.wait_for_function(
        "before => document.querySelector('.fg-node[data-node=load_rows] .fg-detail').textContent !== before",
        arg=before,
        timeout=10_000,
    )
    assert page.evaluate("window.scrollY") == 300
    assert_labels_apart(page)
    shoot(page, tmp_path / "running.png")
    # Once the run has finished, the page loads once more and stops.
    WorkflowRun.objects.filter(pk=run.pk).update(status="cancelled", current_step="load_rows", lease_owner="")
    page.wait_for_selector(".durable-run-summary[data-status=cancelled]", timeout=10_000)
    assert page.locator(".durable-live").count() == 0


def test_waiting_run(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = start_waiting(embedded, "it_admin_notify", {"pause": 0})
    embedded.run_until_idle(timeout=30)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))
    current = page.locator(".durable-flowgraph .fg-current")
    assert current.get_attribute("data-status") == "waiting"
    assert page.locator(".durable-live").is_visible()
    assert page.locator(".dt-wait").count() >= 1
    assert_labels_apart(page)
    shoot(page, tmp_path / "waiting.png")


def test_what_a_step_logged_unfolds_under_its_timeline_line(
    embedded: EmbeddedQueue, define: Any, page: Any, tmp_path: Path
) -> None:
    run = logged_run(embedded, define)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))
    fold = page.locator(".durable-timeline .dt-logs-row[data-step='charge'] details.dt-logs")
    lines = fold.locator(".durable-log")
    assert not lines.first.is_visible()
    fold.locator("summary").click()
    assert [lines.nth(i).get_attribute("data-level") for i in range(lines.count())] == ["INFO", "WARNING"]
    assert lines.first.is_visible()
    # Escaped, on one line with its time, level and logger, inside the timeline's width.
    first = lines.first.inner_text()
    assert "INFO" in first and "shop.orders" in first and "charging 8900 for <script>alert(1)</script>" in first
    fold.scroll_into_view_if_needed()
    shot = tmp_path / "timeline_logs.png"
    page.locator(".durable-timeline-module").screenshot(path=str(shot), animations="disabled")
    assert shot.stat().st_size > 1000
    timeline = page.locator(".durable-timeline").bounding_box()
    for index in range(lines.count()):
        box = lines.nth(index).bounding_box()
        assert box["x"] >= timeline["x"] and box["x"] + box["width"] <= timeline["x"] + timeline["width"] + 1
        # The time, level and logger start the line the message starts on.
        tops = [lines.nth(index).locator(part).bounding_box()["y"] for part in ("time", ".durable-log-message")]
        assert abs(tops[0] - tops[1]) < 3, lines.nth(index).inner_text()
    shoot(page, tmp_path / "logs.png")
    # A step result's own page: ten records and a long one are folded until opened.
    chatty = StepResult.objects.get(run=run, step="chatty")
    page.goto(reverse("admin:durable_django_stepresult_change", args=[chatty.pk]))
    folded = page.locator(".field-logs_display details.durable-logs")
    assert folded.locator("summary").inner_text() == "10 records: 9 INFO, 1 ERROR"
    folded.locator("summary").click()
    assert folded.locator(".durable-log").nth(9).is_visible()
    page.locator("#content").screenshot(path=str(tmp_path / "step_logs.png"), animations="disabled")
