"""Control flow on a run's page in headless Chromium: a foreach block (and one of 10,000 items), a
branch block, a compensated run. Labels are measured as in ``test_browser_runpage``; each test saves
a screenshot of the page's top part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durable_django.admin_items import FAILED_ITEMS, FIRST_ITEMS
from durable_django.testing import EmbeddedQueue
from tests.admin.control_flow_support import branch_run, compensated_run, foreach_run, large_foreach_run
from tests.admin.support import change_url
from tests.admin.test_browser_runpage import assert_labels_apart, boxes, overlapping, shoot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_run(page: Any, run: Any) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(change_url(run))


def test_foreach_run(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = foreach_run(embedded, "browser-foreach")
    open_run(page, run)
    header = page.locator(".dt-group-header[data-kind=foreach]")
    assert header.get_attribute("data-status") == "completed"
    assert page.locator(".durable-timeline .dt-row[data-item]").count() == FIRST_ITEMS
    assert page.locator(".dt-more .dt-label").inner_text() == "2 more items"
    items = page.locator(".fg-node[data-node='squares/items']")
    assert items.locator(".fg-label").text_content() == "12 items"
    assert items.locator(".fg-stack").count() == 2
    # The stacked cards stay inside the block's box.
    box = page.locator(".fg-block[data-block=squares] .fg-block-box").bounding_box()
    for card in boxes(items, ".fg-stack"):
        assert box["x"] <= card["x"] and card["x"] + card["width"] <= box["x"] + box["width"]
    assert_labels_apart(page)
    shoot(page, tmp_path / "foreach.png")
    # The links of the group's section lead to the items.
    page.locator(".durable-items-failed").click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 5


def test_foreach_run_of_10000_items(page: Any, tmp_path: Path) -> None:
    run = large_foreach_run()
    open_run(page, run)
    assert page.locator(".durable-timeline .dt-row[data-item]").count() == FIRST_ITEMS + FAILED_ITEMS
    more = page.locator(".dt-more-bar")
    assert more.get_attribute("data-status") == "completed"
    assert more.locator("text").text_content() == "9,953 completed, 27 failed"
    assert page.locator("tr.durable-item").count() == FIRST_ITEMS + 2 * FAILED_ITEMS
    assert page.locator(".durable-history-entry").count() == 1
    assert_labels_apart(page)
    shoot(page, tmp_path / "foreach-large.png")


def test_branch_run(embedded: EmbeddedQueue, page: Any, tmp_path: Path) -> None:
    run = branch_run(embedded, "gold")
    open_run(page, run)
    assert page.locator(".fg-lane-taken").get_attribute("data-case") == "gold"
    assert page.locator(".fg-lane-skipped").count() == 2
    # Greyed out: the cases not taken and their steps.
    assert float(page.locator(".fg-node[data-node=send_email]").evaluate("n => getComputedStyle(n).opacity")) < 1
    assert float(page.locator(".fg-node[data-node=call_customer]").evaluate("n => getComputedStyle(n).opacity")) == 1
    # Every node and block of a lane is inside it, and lanes do not overlap.
    lanes = boxes(page, ".fg-lane-box")
    assert len(lanes) == 3 and overlapping(lanes) == []
    gold = page.locator(".fg-lane[data-case=gold] .fg-lane-box").bounding_box()
    for selector in (".fg-node[data-node=call_customer] .fg-box", ".fg-block[data-block=gifts] .fg-block-box"):
        inner = page.locator(selector).bounding_box()
        assert gold["y"] <= inner["y"] and inner["y"] + inner["height"] <= gold["y"] + gold["height"]
    # On the timeline, the case's steps are indented under the branch block.
    choice = page.locator(".dt-branch-header .dt-label").bounding_box()
    step = page.locator(".dt-in-case .dt-label").first.bounding_box()
    assert step["x"] > choice["x"]
    assert_labels_apart(page)
    shoot(page, tmp_path / "branch.png")


def test_compensated_run(page: Any, tmp_path: Path) -> None:
    run = compensated_run()
    open_run(page, run)
    assert page.locator(".durable-compensation-outcome").inner_text().strip() == "compensation completed"
    bars = page.locator(".dt-section-compensations .dt-bar")
    assert bars.count() == 3
    # After the failure: every compensation bar starts after the failed step's bar ends.
    failed = page.locator(".dt-bar[data-step=ship] rect").bounding_box()
    for box in boxes(page, ".dt-section-compensations .dt-bar rect"):
        assert box["x"] >= failed["x"] + failed["width"] - 0.5
    assert page.locator("tr.durable-compensation").count() == 3
    assert page.locator(".durable-child-detached .durable-detached").inner_text().strip() == "detached"
    assert_labels_apart(page)
    shoot(page, tmp_path / "compensated.png")
