"""What a scrape reads: the counters in Redis (one round trip) and the gauges in the database
(two aggregate queries), as Prometheus metric families. Needs ``prometheus_client``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import counters
from ..definition import registered_workflows
from ..models import RunStatus, WorkflowRun
from . import (
    BUCKETS,
    COUNTERS,
    RECOVERY,
    RUNS_FINISHED,
    RUNS_STARTED,
    STEP_ATTEMPTS,
    STEP_DURATION_BUCKETS,
    STEP_DURATION_SUM,
    STEP_FAILURES,
)

#: The statuses of runs in progress that ``durable_runs_in_progress`` counts.
IN_PROGRESS = (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING)


def _counter(
    name: str, documentation: str, label_names: list[str], found: dict[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=label_names)
    for key, value in sorted(found.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(buckets: dict[tuple[str, ...], float], sums: dict[tuple[str, ...], float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "durable_step_duration_seconds",
        "How long attempts of steps took, from their start to their result, by workflow and step.",
        labels=["workflow", "step"],
    )
    counted: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for key, value in buckets.items():
        workflow, step, bound = key
        counted[(workflow, step)][bound] = value
    for (workflow, step), by_bound in sorted(counted.items()):
        total = 0.0
        cumulative = []
        for bound in BUCKETS:
            total += by_bound.get(bound, 0.0)
            cumulative.append((bound, total))
        family.add_metric([workflow, step], cumulative, sums.get((workflow, step), 0.0))
    return family


def in_progress() -> GaugeMetricFamily:
    """Runs running, waiting or compensating now, by workflow and status; zero for a registered
    workflow with none. One query."""
    family = GaugeMetricFamily(
        "durable_runs_in_progress",
        "Runs running, waiting or compensating now, by workflow and status.",
        labels=["workflow", "status"],
    )
    found = {
        (row["workflow"], row["status"]): row["runs"]
        for row in WorkflowRun.objects.filter(status__in=IN_PROGRESS)
        .values("workflow", "status")
        .annotate(runs=Count("pk"))
        .order_by()
    }
    for workflow in sorted(set(registered_workflows()) | {workflow for workflow, _ in found}):
        for status in IN_PROGRESS:
            family.add_metric([workflow, status.value], found.get((workflow, status.value), 0))
    return family


def oldest_pending() -> GaugeMetricFamily:
    """Seconds since the oldest pending run (saved, not yet taken by a worker) was created (a
    delayed run: since its start time; one whose time has not come does not count); 0 when none is
    pending. One query."""
    now = timezone.now()
    pending = WorkflowRun.objects.filter(status=RunStatus.PENDING).exclude(run_at__gt=now)
    oldest = pending.aggregate(oldest=Min(Coalesce("run_at", "created_at")))["oldest"]
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return GaugeMetricFamily(
        "durable_oldest_pending_run_age_seconds",
        "Seconds since the oldest run still pending (not yet taken by a worker) was created; 0 when none is.",
        value=age,
    )


class DurableCollector(Collector):
    """The metrics of durable_django, read afresh at every scrape."""

    def collect(self) -> Iterator[Metric]:
        found = counters.read_metrics(COUNTERS)
        yield _counter("durable_runs_started", "Runs started, by workflow.", ["workflow"], found[RUNS_STARTED])
        yield _counter(
            "durable_runs_finished",
            "Runs finished (completed, failed or cancelled), by workflow and status.",
            ["workflow", "status"],
            found[RUNS_FINISHED],
        )
        yield _counter(
            "durable_step_attempts",
            "Attempts of steps, branches, items and compensations that ended, by workflow and step.",
            ["workflow", "step"],
            found[STEP_ATTEMPTS],
        )
        yield _counter(
            "durable_step_failures",
            "Attempts that failed (retried or not), by workflow and step.",
            ["workflow", "step"],
            found[STEP_FAILURES],
        )
        yield _histogram(found[STEP_DURATION_BUCKETS], found[STEP_DURATION_SUM])
        yield _counter(
            "durable_recovery_redispatches",
            "Work the recovery sweeper took over or sent again, by what it did.",
            ["action"],
            found[RECOVERY],
        )
        yield in_progress()
        yield oldest_pending()
