"""One trace for a run executed by real rqworker processes, one of which is killed mid-step.

Every process (the test's, which starts the run under its own span, and each worker) exports its
spans to one file (``tests/testapp/span_export.py``); the test reads them all back.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from durable_django import start_workflow
from durable_django.models import RunStatus, StepResult, WorkflowRun
from tests.testapp import span_export
from tests.testapp.recovery_workflows import FAN_WIDTH, executions

from .support import lease_pid, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def span_file(tmp_path: Path) -> Iterator[Path]:
    """The file every process of the test writes its spans to; this process stops writing after the test."""
    path = tmp_path / "spans.jsonl"
    span_export.install(path)
    yield path
    span_export.install(None)


def start_traced(workflow: str, input: dict[str, Any]) -> tuple[WorkflowRun, str]:
    """A run started under a span of the test's own, and the id of that span's trace."""
    with trace.get_tracer("tests").start_as_current_span("caller") as caller:
        run = start_workflow(workflow, input)
    return run, format(caller.get_span_context().trace_id, "032x")


def exported_spans(span_file: Path, workflow: str) -> list[dict[str, Any]]:
    """Every span exported by the test's processes, once the run's own span is among them."""
    # The run span is exported right after the commit that finished the run.
    wait_for(
        lambda: any(span["name"] == f"durable.run {workflow}" for span in span_export.read(span_file)),
        10,
        what="the run span",
    )
    return span_export.read(span_file)


@pytest.mark.timeout(120)
def test_one_trace_spans_a_run_whose_worker_was_killed_mid_step_and_recovered(workers: Any, span_file: Path) -> None:
    pool = workers(2, env={"DURABLE_IT_SPANS": str(span_file)})
    token = uuid.uuid4().hex
    run, trace_id = start_traced("it_killed_step", {"token": token})

    wait_for(lambda: executions(token).get("slow") == 1, 60, what="the slow step to execute")
    run.refresh_from_db()
    assert (run.status, run.current_step, run.current_attempt) == (RunStatus.RUNNING, "slow", 1)
    killed = pool.worker_of(lease_pid(run.lease_owner))
    pool.kill(killed)
    pool.finish(run)
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)

    spans = exported_spans(span_file, "it_killed_step")
    assert Counter(span["name"] for span in spans) == Counter(
        {
            "caller": 1,
            "durable.start it_killed_step": 1,
            "durable.step first": 1,
            # Attempt 1 of "slow" died with its worker: its span never ended. Attempt 2 did.
            "durable.step slow": 1,
            "durable.recover": 1,
            "durable.step last": 1,
            "durable.run it_killed_step": 1,
        }
    )
    assert {span["trace_id"] for span in spans} == {trace_id}
    named = {span["name"]: span for span in spans}
    start = named["durable.start it_killed_step"]
    assert start["parent_id"] == named["caller"]["span_id"]
    # Every span of the run is a child of its start span, whichever process made it.
    assert {span["parent_id"] for span in spans if span["name"].startswith("durable.") and span is not start} == {
        start["span_id"]
    }
    run_id = str(run.pk)
    assert named["durable.recover"]["attributes"] == {
        "durable.run_id": run_id,
        "durable.workflow": "it_killed_step",
        "durable.action": "run_taken_over",
        "durable.step": "slow",
        "durable.attempt": 1,
    }
    assert named["durable.step slow"]["attributes"] == {
        "durable.run_id": run_id,
        "durable.workflow": "it_killed_step",
        "durable.step": "slow",
        "durable.attempt": 2,
        "durable.status": "completed",
    }
    assert named["durable.run it_killed_step"]["attributes"] == {
        "durable.run_id": run_id,
        "durable.workflow": "it_killed_step",
        "durable.status": "completed",
    }
    # Made by three processes: the test's, the killed worker (before it died), and the survivor.
    assert named["durable.start it_killed_step"]["pid"] == named["caller"]["pid"]
    assert named["durable.step first"]["pid"] == killed.pid
    survivors = {worker.pid for worker in pool.workers if worker is not killed}
    assert {named[name]["pid"] for name in ("durable.recover", "durable.step slow", "durable.step last")} <= survivors
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_one_trace_spans_a_block_whose_branch_lost_its_worker(workers: Any, span_file: Path) -> None:
    pool = workers(3, env={"DURABLE_IT_SPANS": str(span_file)})
    victim = 7
    name = f"b_{victim:02}"
    branches = [f"b_{i:02}" for i in range(FAN_WIDTH)]
    token = uuid.uuid4().hex
    run, trace_id = start_traced("it_killed_branch", {"token": token, "victim": victim})

    wait_for(lambda: executions(token).get(name) == 1, 60, what=f"{name} to execute")
    # Its batch overran and gave back the branches it had not started: the victim alone is lost.
    wait_for(
        lambda: StepResult.objects.filter(run=run, step__in=branches[:victim], status="completed").count() == victim,
        30,
        what="the branches before the victim to be recorded",
    )
    held = StepResult.objects.get(run=run, step=name)
    assert list(StepResult.objects.filter(run=run, lease_owner=held.lease_owner).values_list("step", flat=True)) == [
        name
    ]
    killed = pool.worker_of(lease_pid(held.lease_owner))
    pool.kill(killed)
    pool.finish(run)
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)

    spans = exported_spans(span_file, "it_killed_branch")
    # The victim's first attempt died with its worker (no span); its second one ended.
    assert Counter(span["name"] for span in spans) == Counter(
        {
            "caller": 1,
            "durable.start it_killed_branch": 1,
            "durable.step before": 1,
            **{f"durable.step {branch}": 1 for branch in branches},
            "durable.recover": 1,
            "durable.join fan": 1,
            "durable.block fan": 1,
            "durable.step after": 1,
            "durable.run it_killed_branch": 1,
        }
    )
    assert {span["trace_id"] for span in spans} == {trace_id}
    named = {span["name"]: span for span in spans}
    start = named["durable.start it_killed_branch"]["span_id"]
    assert {
        span["parent_id"] for span in spans if span["name"] not in ("caller", "durable.start it_killed_branch")
    } == {start}
    assert named["durable.recover"]["attributes"] == {
        "durable.run_id": str(run.pk),
        "durable.workflow": "it_killed_branch",
        "durable.action": "branch_taken_over",
        "durable.step": name,
        "durable.attempt": 1,
        "durable.block": "fan",
    }
    resumed = named[f"durable.step {name}"]
    assert (resumed["attributes"]["durable.attempt"], resumed["attributes"]["durable.block"]) == (2, "fan")
    assert named["durable.block fan"]["attributes"]["durable.branches"] == FAN_WIDTH
    assert named["durable.block fan"]["attributes"]["durable.status"] == "completed"
    assert resumed["pid"] != killed.pid
    assert pool.failed_jobs() == []
