"""Metrics counted by real worker processes reach the view of another process, through Redis.

The workers run with ``DURABLE_METRICS=1``; the test process connects no receiver of its own, so
every count the view shows was made by a worker.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client, override_settings

from durable_django import start_workflow
from durable_django.metrics import receivers
from durable_django.models import RunStatus, WorkflowRun

METRICS = {"DURABLE_METRICS": "1"}


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with override_settings(DURABLE={"METRICS_TOKEN": "scraper"}):
        answer = Client().get("/metrics/", HTTP_AUTHORIZATION="Bearer scraper")
    assert answer.status_code == 200, answer.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.content.decode())
        for sample in family.samples
    }


def of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, workflow: str) -> dict[Any, float]:
    return {
        tuple(pair for pair in labels if pair[0] != "workflow"): value
        for (sample, labels), value in samples.items()
        if sample == name and ("workflow", workflow) in labels
    }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
@pytest.mark.urls("tests.metrics_urls")
def test_counts_made_by_two_workers_appear_in_the_view(workers: Any, redis_db: Any) -> None:
    pytest.importorskip("prometheus_client")
    assert not receivers.connected()
    pool = workers(2, env=METRICS)
    many = [start_workflow("it_many", {"n": n}) for n in range(4)]
    retried = start_workflow("it_retry", {"token": uuid.uuid4().hex})
    pool.finish_all([*many, retried], timeout=120)
    assert pool.failed_jobs() == []
    ids = [run.pk for run in [*many, retried]]
    assert set(WorkflowRun.objects.filter(pk__in=ids).values_list("status", flat=True)) == {RunStatus.COMPLETED}

    samples = scrape()
    # Runs are started by this process, which counts nothing: only the workers' counts are here.
    assert of(samples, "durable_runs_started_total", "it_many") == {}
    assert of(samples, "durable_runs_finished_total", "it_many") == {(("status", "completed"),): 4.0}
    assert of(samples, "durable_runs_finished_total", "it_retry") == {(("status", "completed"),): 1.0}
    assert of(samples, "durable_step_attempts_total", "it_many") == {
        (("step", name),): 4.0 for name in ["begin", "total", *(f"part_{i}" for i in range(10))]
    }
    assert of(samples, "durable_step_attempts_total", "it_retry") == {
        (("step", "flaky"),): 3.0,
        (("step", "flaky_branch"),): 3.0,
        (("step", "steady"),): 1.0,
        (("step", "finish"),): 1.0,
    }
    assert of(samples, "durable_step_failures_total", "it_retry") == {
        (("step", "flaky"),): 2.0,
        (("step", "flaky_branch"),): 2.0,
    }
    assert of(samples, "durable_step_duration_seconds_count", "it_retry")[(("step", "flaky"),)] == 3.0
    assert of(samples, "durable_runs_in_progress", "it_many") == {
        (("status", "running"),): 0.0,
        (("status", "waiting"),): 0.0,
        (("status", "compensating"),): 0.0,
    }
