"""``manage.py durable_doctor`` against real worker processes and Redis."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from rq.scheduler import RQScheduler

from .support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def doctor_report() -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("durable_doctor", "--json", stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), json.loads(out.getvalue())
    return 0, json.loads(out.getvalue())


def test_doctor_sees_each_worker_per_queue_and_which_queues_have_a_scheduler(workers, redis_db):
    pool = workers(2, with_scheduler=False)
    code, report = doctor_report()
    names = sorted(worker.name for worker in pool.workers)
    assert report["workers"] == {"default": names, "priority": names}
    assert {"severity": "ok", "check": "workers", "message": "queue 'default': 2 worker(s), scheduler no"} in report[
        "findings"
    ]
    assert [f["message"].split(":")[0] for f in report["findings"] if f["check"] == "scheduler"] == [
        "queue 'default'",
        "queue 'priority'",
    ]
    assert (code, report["healthy"]) == (0, True)

    pool.start(1)  # a third worker, this one with rq's scheduler
    wait_for(lambda: redis_db.exists(RQScheduler.get_locking_key("default")), 30, what="the scheduler's lock")
    wait_for(lambda: redis_db.exists(RQScheduler.get_locking_key("priority")), 30, what="the scheduler's lock")
    code, report = doctor_report()
    assert {"severity": "ok", "check": "workers", "message": "queue 'default': 3 worker(s), scheduler yes"} in report[
        "findings"
    ]
    assert [f for f in report["findings"] if f["check"] == "scheduler"] == []


def test_doctor_exits_1_when_no_worker_listens(redis_db):
    code, report = doctor_report()
    assert code == 1
    assert report["healthy"] is False
    assert [f["message"].split(" is used by")[0] for f in report["findings"] if f["check"] == "queues"] == [
        "queue 'default'"
    ]
