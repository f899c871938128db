"""Control flow on a run's page: foreach items (a big block summed up), branch cases, compensations,
detached children, a retried block's history, and the kind columns of the step and group lists."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from durable_django.admin_items import FAILED_ITEMS, FIRST_ITEMS
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from durable_django.timeaxis import STATUS_COLOURS
from tests.admin.control_flow_support import (
    LARGE_FAILED,
    branch_run,
    compensated_run,
    foreach_run,
    large_foreach_run,
)
from tests.admin.support import CHANGELIST, change_url, elements, texts

pytestmark = pytest.mark.django_db

STEPS = reverse("admin:durable_django_stepresult_changelist")
GROUPS = reverse("admin:durable_django_parallelgroup_changelist")


def timeline_items(content: bytes) -> list[int]:
    return [
        int(row["data-item"]) for row in elements(content, "dt-row", within="durable-timeline") if "data-item" in row
    ]


def item_lines(content: bytes) -> list[tuple[int, int, str]]:
    """(item, attempt, status) of each line of the items table of a foreach group."""
    return [
        (
            int(row["data-item"]),
            int(row["data-attempt"]),
            row["classes"].difference({"durable-branch", "durable-item"}).pop(),
        )
        for row in elements(content, "durable-item", tag="tr")
    ]


# -- foreach -------------------------------------------------------------------------------------


def test_a_foreach_block_shows_its_items_with_status_duration_and_attempts(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = foreach_run(embedded, "page-foreach")
    assert run.status == "completed"
    group = ParallelGroup.objects.get(run=run)
    content = admin_client.get(change_url(run)).content
    # The timeline: the block's header, one line per item drawn, then the two items left off.
    (header,) = elements(content, "dt-group-header")
    assert (header["data-group"], header["data-kind"], header["data-status"]) == ("squares", "foreach", "completed")
    assert texts(content, "dt-label", within="dt-group-header")[0].startswith(
        "squares for each completed 12 items: 10 completed, 2 failed, 15 attempts (3 retries) · "
    )
    assert timeline_items(content) == list(range(FIRST_ITEMS))
    (item_3,) = [row for row in elements(content, "dt-row") if row.get("data-item") == "3"]
    assert " ".join(item_3["text"].split()).startswith("item 3 2 attempts")
    bars = [
        (bar["data-attempt"], bar["data-status"])
        for bar in elements(content, "dt-bar")
        if bar["data-step"] == "squares"
    ]
    assert bars.count(("2", "failed")) == 2 and bars.count(("2", "completed")) == 1
    (more,) = elements(content, "dt-more")
    assert more["data-items"] == "2"
    assert texts(content, "dt-label", within="dt-more") == ["2 more items"]
    (link,) = elements(content, tag="a", within="dt-more")
    assert link["href"] == f"{STEPS}?group__id__exact={group.pk}"
    # The flow graph: one node for all the items.
    (node,) = [node for node in elements(content, "fg-node") if node["data-node"] == "squares/items"]
    assert node["data-status"] == "completed"
    assert (texts(content, "fg-label", within="fg-items"), texts(content, "fg-detail", within="fg-items")) == (
        ["12 items"],
        ["10 completed · 2 failed"],
    )
    # The group's section: counts, links, and a line per attempt of each item drawn.
    assert texts(content, "durable-items-summary") == ["12 items: 10 completed, 2 failed · 15 attempts (3 retries)"]
    assert item_lines(content) == [
        (0, 1, "durable-item-completed"),
        (1, 1, "durable-item-completed"),
        (2, 1, "durable-item-completed"),
        (3, 1, "durable-item-failed"),
        (3, 2, "durable-item-failed"),
        (4, 1, "durable-item-completed"),
        (5, 1, "durable-item-failed"),
        (5, 2, "durable-item-completed"),
        (6, 1, "durable-item-completed"),
        (7, 1, "durable-item-failed"),
        (7, 2, "durable-item-failed"),
        (8, 1, "durable-item-completed"),
        (9, 1, "durable-item-completed"),
    ]
    assert texts(content, "durable-items-note") == ["Showing 10 of 12 items: the first 10."]
    (everything,) = elements(content, "durable-items-all")
    (failed,) = elements(content, "durable-items-failed")
    (api,) = elements(content, "durable-items-api")
    assert everything["href"] == f"{STEPS}?group__id__exact={group.pk}"
    assert failed["href"] == f"{STEPS}?group__id__exact={group.pk}&status__exact=failed"
    assert api["href"] == f"/api/durable/runs/{run.pk}/steps/?group={group.pk}&status=failed"
    # The inline of attempts leaves the same items off, and says so.
    page = content.decode()
    assert "Step attempts, in execution order (2 items of foreach blocks left off: see their groups)" in page
    inline = [row for row in elements(content, "field-item_index", tag="td", within="tabular")]
    assert [" ".join(cell["text"].split()) for cell in inline] == [
        "-",
        *[str(i) for i in range(10)],
        "3",
        "5",
        "7",
        "-",
    ]


def test_the_links_of_a_foreach_block_list_all_its_items_and_the_failed_ones(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = foreach_run(embedded, "page-foreach-links")
    group = ParallelGroup.objects.get(run=run)
    listed = admin_client.get(f"{STEPS}?group__id__exact={group.pk}")
    assert listed.status_code == 200
    assert len(elements(listed.content, tag="tr", within="results")) == 1 + 15  # the header, 15 attempts
    failed = admin_client.get(f"{STEPS}?group__id__exact={group.pk}&status__exact=failed")
    assert len(elements(failed.content, tag="tr", within="results")) == 1 + 5
    api = admin_client.get(f"/api/durable/runs/{run.pk}/steps/?group={group.pk}&status=failed")
    assert api.status_code == 200
    assert [(row["item_index"], row["attempt"]) for row in api.json()["results"]] == [
        (3, 1),
        (5, 1),
        (7, 1),
        (3, 2),
        (7, 2),
    ]


def test_a_block_of_10000_items_draws_the_first_and_the_failed_ones_in_a_bounded_page(admin_client: Client) -> None:
    small = large_foreach_run(items=300)
    large = large_foreach_run()
    assert StepResult.objects.filter(run=large).count() == 10_000 + 37 + 12 + 2

    def fetch(run: WorkflowRun) -> tuple[int, bytes]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(change_url(run))
        assert response.status_code == 200
        return len(captured.captured_queries), response.content

    fetch(small)
    few, _ = fetch(small)
    many, content = fetch(large)
    assert many == few
    assert len(content) < 400_000
    failed_drawn = list(LARGE_FAILED[:FAILED_ITEMS])
    assert timeline_items(content) == [*range(FIRST_ITEMS), *failed_drawn]
    assert texts(content, "dt-label", within="dt-more") == ["9,980 more items"]
    (more_bar,) = elements(content, "dt-more-bar")
    assert more_bar["data-status"] == "completed"
    assert texts(content, "durable-items-summary") == [
        "10,000 items: 9,963 completed, 37 failed · 10,049 attempts (49 retries)"
    ]
    assert texts(content, "durable-items-note") == [
        "Showing 20 of 10,000 items: the first 10 and 10 failed after them. "
        "27 more failed items are in the list of the failed ones."
    ]
    # Every attempt of each item drawn: ten first ones, then ten failed twice.
    assert item_lines(content) == [(i, 1, "durable-item-completed") for i in range(FIRST_ITEMS)] + [
        (index, attempt, "durable-item-failed") for index in failed_drawn for attempt in (1, 2)
    ]
    assert (texts(content, "fg-label", within="fg-items"), texts(content, "fg-detail", within="fg-items")) == (
        ["10,000 items"],
        ["9,963 completed · 37 failed"],
    )
    assert len(elements(content, "field-item_index", tag="td")) == 2 + FIRST_ITEMS + 2 * FAILED_ITEMS
    # The block was retried once: its first outcome is on its group.
    assert "retried" in texts(content, "dt-label", within="dt-group-header")[0]
    (entry,) = elements(content, "durable-history-entry")
    assert [" ".join(cell["text"].split()) for cell in elements(content, tag="td", within="durable-history-entry")][
        :4
    ] == ["1", "failed", "10000", "49"]
    assert entry["tag"] == "tr"


def test_the_group_page_of_a_big_foreach_block_is_bounded_too(admin_client: Client) -> None:
    run = large_foreach_run()
    group = ParallelGroup.objects.get(run=run)
    content = admin_client.get(reverse("admin:durable_django_parallelgroup_change", args=[group.pk])).content
    assert len(content) < 200_000
    assert len(item_lines(content)) == FIRST_ITEMS + 2 * FAILED_ITEMS
    assert texts(content, "durable-items-summary") == [
        "10,000 items: 9,963 completed, 37 failed · 10,049 attempts (49 retries)"
    ]
    assert len(elements(content, "durable-history-entry")) == 1


# -- branch --------------------------------------------------------------------------------------


def test_a_branch_block_shows_the_case_taken_its_value_and_the_cases_steps_under_it(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = branch_run(embedded, "gold")
    assert run.status == "completed"
    content = admin_client.get(change_url(run)).content
    sections = [
        (section["classes"] - {"dt-section", "dt-group", "dt-in-case", "dt-depth-1"}).pop()
        + (" in case" if "dt-in-case" in section["classes"] else "")
        for section in elements(content, "dt-section")
    ]
    assert sections == [
        "dt-section-steps",
        "dt-section-branch",
        "dt-section-steps in case",
        "dt-section-block in case",
        "dt-section-steps",
    ]
    (choice,) = elements(content, "dt-branch-header")
    assert (choice["data-branch"], choice["data-case"], choice["data-status"]) == ("route", "gold", "completed")
    assert texts(content, "dt-label", within="dt-section-branch") == ['◆ route case gold tier = "gold"']
    # The flow graph: the lane taken is marked, the others are greyed out with their steps.
    lanes = [(lane["data-case"], lane["classes"] - {"fg-lane"}) for lane in elements(content, "fg-lane")]
    assert lanes == [("gold", {"fg-lane-taken"}), ("silver", {"fg-lane-skipped"}), ("", {"fg-lane-skipped"})]
    skipped = sorted(node["data-node"] for node in elements(content, "fg-node") if "fg-skipped" in node["classes"])
    assert skipped == ["log_only", "send_email"]
    (box,) = [box for box in elements(content, "fg-block") if box["data-block"] == "route"]
    assert (box["data-kind"], box["data-status"]) == ("branch", "completed")
    assert 'on tier = "gold" → case gold' in box["text"]
    # No goto: the case's steps follow the branch block, the step after it follows the case.
    assert elements(content, "fg-edge-goto") == []
    steps = {row["data-step"]: " ".join(row["text"].split()) for row in elements(content, "durable-step-row")}
    assert steps["call_customer"].startswith("call_customer in route: case gold")
    assert steps["send_email"].startswith("send_email in route: case silver")


def test_the_default_case_is_the_lane_taken_when_no_case_matches(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = branch_run(embedded, "bronze")
    content = admin_client.get(change_url(run)).content
    lanes = [(lane["data-case"], lane["classes"] - {"fg-lane"}) for lane in elements(content, "fg-lane")]
    assert lanes == [("gold", {"fg-lane-skipped"}), ("silver", {"fg-lane-skipped"}), ("", {"fg-lane-taken"})]
    assert texts(content, "dt-label", within="dt-section-branch") == ['◆ route default tier = "bronze"']
    assert [row["data-step"] for row in elements(content, "dt-bar", within="dt-in-case")] == ["log_only"]


# -- compensations -------------------------------------------------------------------------------


def test_compensations_are_bars_after_the_failure_and_a_table_of_what_each_undid(admin_client: Client) -> None:
    run = compensated_run()
    content = admin_client.get(change_url(run)).content
    sections = [section["classes"] for section in elements(content, "dt-section")]
    assert "dt-section-compensations" in sections[-1]
    (header,) = elements(content, "dt-compensation-header")
    assert header["data-status"] == "completed"
    assert texts(content, "dt-label", within="dt-compensation-header") == ["↺ compensations completed 2 steps undone"]
    bars = [
        (bar["data-step"], bar["data-attempt"], bar["data-status"])
        for bar in elements(content, "dt-bar", within="dt-section-compensations")
    ]
    assert bars == [
        ("charge_card", "1", "failed"),
        ("charge_card", "2", "completed"),
        ("reserve_stock", "1", "completed"),
    ]
    assert [line["data-step"] for line in elements(content, "durable-compensation", tag="tr")] == [
        "charge_card",
        "charge_card",
        "reserve_stock",
    ]
    undoes = texts(content, "compensation-undoes")
    statuses = texts(content, "compensation-status")
    outcomes = texts(content, "compensation-outcome")
    assert list(zip(undoes, statuses, outcomes, strict=True)) == [
        ("charge_card in pay", "Failed", "TimeoutError: the payment gateway did not answer"),
        ("charge_card in pay", "Completed", '{"refunded": 250}'),
        ("reserve_stock", "Completed", '{"released": 3}'),
    ]
    charge = StepResult.objects.get(run=run, step="charge_card", kind="step")
    (first_link, *_) = elements(content, tag="a", within="compensation-undoes")
    assert first_link["href"] == reverse("admin:durable_django_stepresult_change", args=[charge.pk])
    assert (
        texts(content, "durable-summary-line")[-1]
        == "Compensation completed: 2 steps undone (charge_card, reserve_stock)"
    )
    assert texts(content, "durable-compensation-outcome") == ["compensation completed"]
    # Each node's text ends with its detail line.
    nodes = {node["data-node"]: node["text"] for node in elements(content, "fg-node")}
    assert nodes["pay/charge_card"].endswith("charge_cardcompleted · undone")
    assert nodes["reserve_stock"].endswith("reserve_stockcompleted · undone")
    assert nodes["ship"].endswith("shipfailed")  # a compensation is no visit of its step


def test_a_failed_compensation_and_a_compensating_run(admin_client: Client) -> None:
    failed = compensated_run("failed")
    content = admin_client.get(change_url(failed)).content
    assert texts(content, "durable-summary-line")[-1] == (
        "Compensation failed: 1 step undone, 1 could not be undone (charge_card)"
    )
    assert texts(content, "durable-compensation-outcome") == ["compensation failed"]
    running = compensated_run("compensating")
    content = admin_client.get(change_url(running)).content
    (badge,) = elements(content, "durable-badge-large")
    assert badge["style"] == f"background-color: {STATUS_COLOURS['compensating']}"
    assert texts(content, "durable-live") == ["live"]
    assert texts(content, "durable-summary-line") == ["Compensating: 1 step undone so far, undoing reserve_stock"]
    (header,) = elements(content, "dt-compensation-header")
    assert header["data-status"] == "compensating"
    # The list of runs too has the compensating badge.
    listed = admin_client.get(CHANGELIST + "?status__exact=compensating").content
    (status,) = elements(listed, "durable-status-compensating")
    assert (status["style"], " ".join(status["text"].split())) == (
        f"background-color: {STATUS_COLOURS['compensating']}",
        "Compensating",
    )


# -- children, lists -----------------------------------------------------------------------------


def test_detached_children_are_marked_as_such(admin_client: Client) -> None:
    run = compensated_run()
    content = admin_client.get(change_url(run)).content
    (child,) = elements(content, "durable-child")
    assert "durable-child-detached" in child["classes"]
    assert " ".join(child["text"].split()).endswith(
        "it_admin_flaky Completed detached started by reserve_stock as audit"
    )


def test_the_step_and_group_lists_have_kind_and_item_columns_and_filters(admin_client: Client) -> None:
    run = compensated_run()
    large_foreach_run(items=30)
    compensations = admin_client.get(f"{STEPS}?kind__exact=compensation")
    assert compensations.status_code == 200
    kinds = texts(compensations.content, "field-kind", within="results")
    assert kinds == ["Compensation"] * 3
    items = admin_client.get(f"{STEPS}?item_index=12")
    assert texts(items.content, "field-item_index", within="results") == ["12"]
    assert StepResult.objects.filter(run=run).count() == 7
    foreach = admin_client.get(f"{GROUPS}?kind__exact=foreach")
    assert texts(foreach.content, "field-name", within="results") == ["squares"]
    assert texts(foreach.content, "field-kind", within="results") == ["For each"]
    assert texts(admin_client.get(GROUPS + "?kind__exact=parallel").content, "field-name", within="results") == ["pay"]
