"""Prometheus metrics: counted in Redis by signal receivers, read with the database at scrape time."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from durable_django import counters, dispatch, error, ok, parallel, step
from durable_django.checks import check_metrics_installable
from durable_django.metrics import receivers, views
from durable_django.models import RunStatus, StepResult, StepStatus, WorkflowRun
from durable_django.recovery import Report, count
from durable_django.signals import NAMES, listening
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)
METRICS_ON = {"METRICS": True, "METRICS_TOKEN": "scrape-secret"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def prometheus() -> Any:
    return pytest.importorskip("prometheus_client")


@pytest.fixture
def metrics_on(embedded: EmbeddedQueue) -> Iterator[None]:
    with override_settings(DURABLE=METRICS_ON):
        yield


def parse(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Client | None = None) -> Samples:
    client = client or Client()
    answer = client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert answer.status_code == 200, answer.content
    return parse(answer.content.decode())


def of(samples: Samples, name: str, workflow: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples ``name`` of ``workflow``, by their other labels."""
    return {
        tuple(pair for pair in labels if pair[0] != "workflow"): value
        for (sample, labels), value in samples.items()
        if sample == name and ("workflow", workflow) in labels
    }


def metric_keys() -> list[str]:
    connection = dispatch.get_queue("default").connection
    return sorted(key.decode() for key in connection.keys(f"{counters.METRICS_PREFIX}*"))


# -- off by default ------------------------------------------------------------------------------


def ours(signal: Any) -> list[Any]:
    return [entry for entry in signal.receivers if str(entry[0][0]).startswith("durable_django.metrics.")]


@runs
def test_metrics_are_off_by_default_no_receiver_is_connected_and_nothing_is_counted(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    with override_settings(DURABLE={}):
        assert not receivers.connected()
        assert [entry for signal in NAMES for entry in ours(signal)] == []
        assert not listening(*NAMES)
        finish(embedded, define([step("a", lambda ctx: ok())]).start())
        assert metric_keys() == []
    with override_settings(DURABLE={"METRICS": True}):
        assert receivers.connected()
        assert {NAMES[signal] for signal in NAMES if ours(signal)} == {"run_started", "run_finished", "step_finished"}
    assert not receivers.connected()


# -- counters and the histogram ------------------------------------------------------------------


@runs
@pytest.mark.urls("tests.metrics_urls")
def test_runs_with_a_parallel_block_and_retried_steps_count_exactly(
    prometheus: Any, metrics_on: None, embedded: EmbeddedQueue, define: Definer
) -> None:
    calls: list[int] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        return error({"try": len(calls)}) if len(calls) < 3 else ok()

    wf = define(
        [
            step("a", lambda ctx: ok()),
            parallel(*(step(f"b{i}", lambda ctx: ok()) for i in range(3)), name="fan"),
            step("flaky", flaky, retry={"max_attempts": 3, **IMMEDIATE}),
        ]
    )
    doomed = define([step("broken", lambda ctx: error("no"), retry={"max_attempts": 2, **IMMEDIATE})])
    assert finish(embedded, wf.start()).status == RunStatus.COMPLETED
    assert finish(embedded, wf.start()).status == RunStatus.COMPLETED
    assert finish(embedded, doomed.start()).status == RunStatus.FAILED

    samples = scrape()
    assert of(samples, "durable_runs_started_total", wf.name) == {(): 2.0}
    assert of(samples, "durable_runs_started_total", doomed.name) == {(): 1.0}
    assert of(samples, "durable_runs_finished_total", wf.name) == {(("status", "completed"),): 2.0}
    assert of(samples, "durable_runs_finished_total", doomed.name) == {(("status", "failed"),): 1.0}
    # The second run's flaky step succeeds at once: calls goes on counting from the first run.
    assert of(samples, "durable_step_attempts_total", wf.name) == {
        (("step", "a"),): 2.0,
        (("step", "b0"),): 2.0,
        (("step", "b1"),): 2.0,
        (("step", "b2"),): 2.0,
        (("step", "flaky"),): 4.0,
    }
    assert of(samples, "durable_step_failures_total", wf.name) == {(("step", "flaky"),): 2.0}
    assert of(samples, "durable_step_attempts_total", doomed.name) == {(("step", "broken"),): 2.0}
    assert of(samples, "durable_step_failures_total", doomed.name) == {(("step", "broken"),): 2.0}
    # Every attempt has its duration in the histogram.
    counts = of(samples, "durable_step_duration_seconds_count", wf.name)
    assert counts == {
        (("step", name),): n for name, n in [("a", 2.0), ("b0", 2.0), ("b1", 2.0), ("b2", 2.0), ("flaky", 4.0)]
    }
    infinite = of(samples, "durable_step_duration_seconds_bucket", doomed.name)[(("le", "+Inf"), ("step", "broken"))]
    assert infinite == 2.0


def attempt(seconds: float) -> StepResult:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    return StepResult(
        step="s", status=StepStatus.COMPLETED, started_at=start, finished_at=start + timedelta(seconds=seconds)
    )


@pytest.mark.django_db
@pytest.mark.urls("tests.metrics_urls")
def test_the_duration_histogram_counts_each_attempt_in_its_bucket_cumulatively(
    prometheus: Any, metrics_on: None
) -> None:
    for seconds in (0.003, 0.3, 0.3, 42, 5000):
        receivers.count_step_finished("wf_h", WorkflowRun(workflow="wf_h"), attempt(seconds))
    buckets = {
        labels[0][1]: value for labels, value in of(scrape(), "durable_step_duration_seconds_bucket", "wf_h").items()
    }
    assert buckets == {
        "0.005": 1.0,
        "0.01": 1.0,
        "0.025": 1.0,
        "0.05": 1.0,
        "0.1": 1.0,
        "0.25": 1.0,
        "0.5": 3.0,
        "1.0": 3.0,
        "2.5": 3.0,
        "5.0": 3.0,
        "10.0": 3.0,
        "30.0": 3.0,
        "60.0": 4.0,
        "300.0": 4.0,
        "900.0": 4.0,
        "3600.0": 4.0,
        "+Inf": 5.0,
    }
    samples = scrape()
    assert of(samples, "durable_step_duration_seconds_count", "wf_h") == {(("step", "s"),): 5.0}
    assert of(samples, "durable_step_duration_seconds_sum", "wf_h") == {(("step", "s"),): pytest.approx(5042.603)}


@pytest.mark.django_db
@pytest.mark.urls("tests.metrics_urls")
def test_each_signal_costs_one_redis_round_trip(metrics_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[Any]] = []
    monkeypatch.setattr(counters, "add_to_metrics", lambda amounts: sent.append(list(amounts)))
    failed = attempt(2)
    failed.status = StepStatus.FAILED
    receivers.count_step_finished("wf_c", WorkflowRun(workflow="wf_c"), failed)
    receivers.count_run_finished("wf_c", WorkflowRun(workflow="wf_c", status=RunStatus.FAILED))
    assert sent == [
        [
            ("step_attempts", ("wf_c", "s"), 1),
            ("step_failures", ("wf_c", "s"), 1),
            ("step_duration_buckets", ("wf_c", "s", "2.5"), 1),
            ("step_duration_sum", ("wf_c", "s"), 2.0),
        ],
        [("runs_finished", ("wf_c", "failed"), 1)],
    ]


@pytest.mark.django_db
@pytest.mark.urls("tests.metrics_urls")
def test_what_recovery_did_is_counted_by_action(prometheus: Any, metrics_on: None) -> None:
    count(Report(runs_sent_again=2, joins_sent_again=1))
    count(Report(runs_sent_again=1))
    found = {
        labels: value for (name, labels), value in scrape().items() if name == "durable_recovery_redispatches_total"
    }
    assert found == {(("action", "runs_sent_again"),): 3.0, (("action", "joins_sent_again"),): 1.0}


# -- gauges --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_gauges_count_runs_in_progress_and_the_oldest_pending_age_in_two_queries(
    prometheus: Any, metrics_on: None, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    from durable_django.metrics import collector

    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for workflow, status, age in [
        ("wf_g", RunStatus.RUNNING, 1),
        ("wf_g", RunStatus.RUNNING, 1),
        ("wf_g", RunStatus.WAITING, 1),
        ("wf_k", RunStatus.COMPENSATING, 1),
        ("wf_k", RunStatus.COMPLETED, 900),
        ("wf_g", RunStatus.PENDING, 120),
        ("wf_k", RunStatus.PENDING, 30),
    ]:
        WorkflowRun.objects.create(workflow=workflow, status=status, created_at=now - timedelta(seconds=age))
    monkeypatch.setattr(collector, "timezone", SimpleNamespace(now=lambda: now))
    monkeypatch.setattr(collector, "registered_workflows", lambda: {"wf_idle": None})

    with django_assert_num_queries(2):
        families = {family.name: family for family in (collector.in_progress(), collector.oldest_pending())}
    gauges = {
        (sample.labels.get("workflow"), sample.labels.get("status")): sample.value
        for sample in families["durable_runs_in_progress"].samples
    }
    assert gauges == {
        ("wf_g", "running"): 2,
        ("wf_g", "waiting"): 1,
        ("wf_g", "compensating"): 0,
        ("wf_k", "running"): 0,
        ("wf_k", "waiting"): 0,
        ("wf_k", "compensating"): 1,
        ("wf_idle", "running"): 0,
        ("wf_idle", "waiting"): 0,
        ("wf_idle", "compensating"): 0,
    }
    assert [s.value for s in families["durable_oldest_pending_run_age_seconds"].samples] == [120.0]
    WorkflowRun.objects.filter(status=RunStatus.PENDING).delete()
    assert [s.value for s in collector.oldest_pending().samples] == [0.0]


# -- access --------------------------------------------------------------------------------------


def user(name: str, *, staff: bool, may_view: bool) -> User:
    made = User.objects.create_user(name, password="pw", is_staff=staff)
    if may_view:
        made.user_permissions.add(Permission.objects.get(codename="view_workflowrun"))
    return made


@pytest.mark.django_db
@pytest.mark.urls("tests.metrics_urls")
def test_the_view_needs_staff_with_the_view_permission(prometheus: Any, metrics_on: None) -> None:
    client = Client()
    anonymous = client.get("/metrics/")
    assert (anonymous.status_code, anonymous["WWW-Authenticate"]) == (401, 'Bearer realm="durable_django metrics"')
    for name, staff, may_view in [("plain", False, True), ("staff", True, False)]:
        client.force_login(user(name, staff=staff, may_view=may_view))
        assert client.get("/metrics/").status_code == 403
    client.force_login(user("viewer", staff=True, may_view=True))
    answer = client.get("/metrics/")
    assert (answer.status_code, answer["Content-Type"]) == (200, prometheus.CONTENT_TYPE_LATEST)
    assert "durable_runs_in_progress" in answer.content.decode()
    assert client.post("/metrics/").status_code == 405


@pytest.mark.django_db
@pytest.mark.urls("tests.metrics_urls")
def test_a_scraper_reads_with_the_token_and_never_with_another(prometheus: Any, embedded: EmbeddedQueue) -> None:
    client = Client()
    with override_settings(DURABLE={"METRICS_TOKEN": "scrape-secret"}):
        answer = client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-secret")
        assert (answer.status_code, answer["Content-Type"]) == (200, prometheus.CONTENT_TYPE_LATEST)
        assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-secreT").status_code == 403
        assert client.get("/metrics/", HTTP_AUTHORIZATION="Basic scrape-secret").status_code == 401
    with override_settings(DURABLE={}):
        assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 403


# -- without prometheus_client -------------------------------------------------------------------


@pytest.fixture
def without_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import raise ImportError, as if the package were not installed.
    for name in [name for name in sys.modules if name.split(".")[0] == "prometheus_client"] or ["prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(views, "_registry", None)


@pytest.mark.django_db
def test_without_prometheus_client_the_view_is_a_configuration_error(
    without_prometheus: None, metrics_on: None, rf: Any
) -> None:
    request = rf.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-secret")
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'durable-django\[prometheus\]'"):
        views.metrics(request)


def test_the_metrics_view_mounted_without_prometheus_client_is_durable_django_e008(without_prometheus: None) -> None:
    with override_settings(ROOT_URLCONF="tests.metrics_urls"):
        errors = check_metrics_installable()
    assert [(e.id, e.hint) for e in errors] == [
        (
            "durable_django.E008",
            "pip install 'durable-django[prometheus]', or remove include('durable_django.metrics.urls') "
            "from your urls.py.",
        )
    ]
    assert check_metrics_installable() == []  # the project's URLconf does not mount it
