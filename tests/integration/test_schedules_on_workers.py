"""A schedule fired by three real workers: their fire jobs and sweepers race for every fire time.

Either path alone fires every time too: the fire jobs (workers whose sweepers are off) and the
sweepers (workers that run no RQ scheduler, so that no fire job is ever released).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from durable_django.firing import save_schedule, set_enabled
from durable_django.models import RunStatus, Schedule, WorkflowRun

from .support import wait_for

BOTH = {"with_scheduler": True, "env": {}}
FIRE_JOBS_ONLY = {"with_scheduler": True, "env": {"DURABLE_RECOVER_IN_WORKERS": "0"}}
SWEEPERS_ONLY = {"with_scheduler": False, "env": {}}


def fire_time(key: str) -> datetime:
    # "schedule:<name>:<ISO>": the ISO time has colons of its own.
    return datetime.fromisoformat(key.split(":", 2)[2])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [BOTH, FIRE_JOBS_ONLY, SWEEPERS_ONLY], ids=["both", "fire-jobs", "sweepers"])
def test_three_workers_start_one_run_per_fire_time_of_a_schedule_every_second(workers, how):
    pool = workers(3, with_scheduler=how["with_scheduler"], env=how["env"])
    every_second = Schedule(name="every_second", workflow="stock_report", cron="* * * * * *", catch_up=True)
    save_schedule(every_second, [])  # as the admin's form does: its next fire time and its fire job
    first = every_second.next_fire_at
    assert first is not None

    wait_for(lambda: WorkflowRun.objects.filter(schedule=every_second).count() >= 5, 30, what="five fires")
    # A fire is claimed only while the row is enabled, and with its runs: none can follow this.
    set_enabled(every_second, False)

    runs = list(WorkflowRun.objects.filter(schedule=every_second))
    times = sorted(fire_time(run.idempotency_key) for run in runs)
    assert len(set(times)) == len(runs)
    assert times[0] == first
    assert times == [first + timedelta(seconds=n) for n in range(len(times))]
    assert {run.idempotency_key for run in runs} == {f"schedule:every_second:{at.isoformat()}" for at in times}
    ids = [run.pk for run in runs]
    if how["with_scheduler"]:
        pool.finish_all(ids, timeout=60)
    else:
        # Without RQ's scheduler the fire jobs stay scheduled: the pool is never quiet, the runs finish.
        wait_for(lambda: WorkflowRun.objects.filter(pk__in=ids).finished().count() == len(ids), 60, what="the runs")
    assert set(WorkflowRun.objects.filter(pk__in=ids).values_list("status", flat=True)) == {RunStatus.COMPLETED}
    # How late each fire started its run, for the record; load on the machine decides, not asserted.
    late = max((run.created_at - fire_time(run.idempotency_key)).total_seconds() for run in runs)
    print(f"{len(runs)} fires, the latest {late:.2f} s after its fire time")
