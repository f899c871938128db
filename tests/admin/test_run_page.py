"""The top of a run's page through the admin: summary, flow graph, the step running now, refresh."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.admin.run_page_support import running_run
from tests.admin.support import change_url, elements, order, texts

pytestmark = pytest.mark.django_db


def test_a_running_sequential_step_is_a_running_bar_and_node(admin_client: Client) -> None:
    run = running_run()
    content = admin_client.get(change_url(run)).content
    page = content.decode()
    assert "No step has run yet." not in page
    (bar,) = elements(content, "dt-running")
    assert bar["data-step"] == "load_rows"
    assert "on worker-7:4242:cafe" in page
    (node,) = [node for node in elements(content, "fg-node") if node["data-node"] == "load_rows"]
    assert "fg-current" in node["classes"] and node["data-status"] == "running"
    (line,) = texts(content, "durable-summary-line")
    # Since the previous step ended (6 s ago), not since the renewed lease.
    assert line.startswith("Running load_rows (attempt 1) on worker-7:4242:cafe for 6.")
    # The page refreshes itself while the run is unfinished, and says so.
    assert texts(content, "durable-live") == ["live"]
    (part,) = [e for e in elements(content, tag="div") if e.get("id") == "durable-live-part"]
    assert part["data-live"] == "1"
    assert "durable_django/live.js" in page
    # Nothing was written.
    assert StepResult.objects.filter(run=run).count() == 1
    assert WorkflowRun.objects.get(pk=run.pk).version == run.version


def test_a_finished_run_is_not_live_and_a_run_without_blocks_has_no_groups_section(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = running_run()
    page = admin_client.get(change_url(run)).content.decode()
    assert 'id="groups-group"' not in page
    completed = order(embedded, "page-finished")
    content = admin_client.get(change_url(completed)).content
    assert texts(content, "durable-live") == []
    assert 'data-live="0"' in content.decode()
    assert 'id="groups-group"' in content.decode()
    # The summary, graph and timeline come before the raw fields.
    page = content.decode()
    assert page.index("durable-run-summary") < page.index("durable-flowgraph") < page.index("durable-timeline")
    assert page.index("durable-timeline") < page.index("field-input_json")


def test_a_failed_run_shows_its_error_readably_at_the_top(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = order(embedded, "page-failed", decline=True)
    content = admin_client.get(change_url(run)).content
    assert texts(content, "durable-error-where") == ["in step charge_card of block fulfil"]
    assert "&quot;card_declined&quot;" in content.decode()
    (box,) = elements(content, "fg-block")
    assert (box["data-block"], box["data-status"]) == ("fulfil", "failed")
    assert "fg-current" in box["classes"]


def test_the_run_page_runs_the_same_queries_for_few_and_for_many_attempts(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = order(embedded, "page-queries")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(change_url(run)).status_code == 200
        return len(captured.captured_queries)

    queries()
    few = queries()
    group = ParallelGroup.objects.get(run=run)
    StepResult.objects.bulk_create(
        StepResult(run=run, group=group, step=f"extra_{i}", status="completed", finished_at=timezone.now())
        for i in range(12)
    )
    StepResult.objects.bulk_create(StepResult(run=run, step="ship", attempt=2 + i, status="failed") for i in range(5))
    assert queries() == few
    # A run at a sequential step drawn live costs no more.
    sequential = running_run()
    with CaptureQueriesContext(connection) as captured:
        admin_client.get(change_url(sequential))
    assert len(captured.captured_queries) <= few
