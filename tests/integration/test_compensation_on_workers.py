"""Compensations on real worker processes: a saga whose compensation keeps failing, and a worker
killed in the middle of a compensation, whose run recovery finishes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from durable_django import start_workflow
from durable_django.models import RunStatus, StepResult
from tests.testapp.recovery_workflows import executions

from .support import lease_pid, wait_for

LEASE = 3.0
INTERVAL = 1.0
# A dead worker's lease runs out at most LEASE after its last renewal, and a sweep follows within
# INTERVAL; the rest is room for a loaded two-core machine.
RECOVERY_BOUND = LEASE + 2 * INTERVAL + 3.0

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CONFIRM_ERROR = {"step": "confirm", "reason": {"code": "airline_down"}}


@pytest.fixture
def short_leases(settings: Any) -> dict[str, str]:
    """Environment of workers with short leases and sweeps; the test process gets the same settings."""
    settings.DURABLE = {"LEASE_SECONDS": LEASE, "RECOVER_INTERVAL": INTERVAL}
    return {"DURABLE_LEASE_SECONDS": f"{LEASE:g}", "DURABLE_RECOVER_INTERVAL": f"{INTERVAL:g}"}


def compensations(run: Any) -> list[tuple[str, int, str]]:
    """``(step, attempt, status)`` of the run's compensation attempts, in the order they were made."""
    rows = StepResult.objects.filter(run=run, kind="compensation").order_by("id")
    return list(rows.values_list("step", "attempt", "status"))


@pytest.mark.timeout(120)
def test_a_saga_with_a_failing_compensation_runs_the_others_and_ends_failed(workers: Any) -> None:
    pool = workers(2)
    token = uuid.uuid4().hex
    run = start_workflow("it_saga", {"token": token})
    pool.finish(run)

    assert (run.status, run.error, run.compensation) == (RunStatus.FAILED, CONFIRM_ERROR, "failed")
    # The branches are undone latest completed first, then the step before the block.
    branches = StepResult.objects.filter(run=run, kind="step", step__in=("hotel", "car"))
    latest_first = [row.step for row in branches.order_by("-finished_at", "-id")]
    expected = {
        "car": [("car", 1, "failed"), ("car", 2, "failed")],
        "hotel": [("hotel", 1, "completed")],
    }
    assert compensations(run) == [*expected[latest_first[0]], *expected[latest_first[1]], ("reserve", 1, "completed")]
    # Every body ran once, the failing compensation as often as its retry policy allows.
    assert executions(token) == {
        "reserve": 1,
        "hotel": 1,
        "car": 1,
        "confirm": 1,
        "cancel_car": 2,
        "cancel_hotel": 1,
        "release": 1,
    }
    outputs = dict(
        StepResult.objects.filter(run=run, kind="compensation", status="completed").values_list("step", "output")
    )
    assert outputs == {
        "hotel": {"undone": "cancel_hotel", "error_step": "confirm"},
        "reserve": {"undone": "release", "error_step": "confirm"},
    }
    assert list(
        StepResult.objects.filter(run=run, kind="compensation", status="failed").values_list("error", flat=True)
    ) == ["cancel_car is refused", "cancel_car is refused"]
    assert run.lease_owner == "" and run.finished_at is not None
    assert pool.failed_jobs() == []


@pytest.mark.timeout(120)
def test_a_worker_killed_during_a_compensation_leaves_it_to_recovery_which_finishes_the_run(
    workers: Any, short_leases: dict[str, str]
) -> None:
    pool = workers(2, env=short_leases)
    token = uuid.uuid4().hex
    run = start_workflow("it_saga_killed", {"token": token})

    wait_for(lambda: executions(token).get("refund") == 1, 60, what="the refund compensation to execute")
    run.refresh_from_db()
    assert (run.status, run.compensation, run.lease_owner != "") == (RunStatus.COMPENSATING, "running", True)
    assert compensations(run) == [("charge", 1, "running")]
    killed_at = pool.kill(pool.worker_of(lease_pid(run.lease_owner)))
    pool.finish(run)

    assert (run.status, run.error, run.compensation) == (RunStatus.FAILED, CONFIRM_ERROR, "completed")
    assert compensations(run) == [("charge", 1, "failed"), ("charge", 2, "completed"), ("reserve", 1, "completed")]
    lost = StepResult.objects.get(run=run, kind="compensation", step="charge", attempt=1)
    assert lost.error == {
        "type": "worker_lost",
        "message": "the worker executing this attempt went away: its lease expired",
        "lost_in_a_row": 1,
    }
    again = StepResult.objects.get(run=run, kind="compensation", step="charge", attempt=2)
    assert again.output == {"refund": 2}
    assert executions(token) == {"reserve": 1, "charge": 1, "confirm": 1, "refund": 2, "release": 1}
    latency = (again.started_at - killed_at).total_seconds()
    print(f"\nFIGURE compensation kill -> compensation executing again: {latency:.2f} s")
    assert 0 <= latency <= RECOVERY_BOUND
    assert pool.failed_jobs() == []
