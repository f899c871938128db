"""Schedules: their definition, the sync of declared rows, fire times (DST included), catch-up, exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.checks import run_checks
from django.db import connection, connections

from durable_django import Schedule, WorkflowDefinitionError, firing, schedule
from durable_django import jobs as job_functions
from durable_django import schedules as schedules_module
from durable_django.doctor import Diagnosis, check_schedules
from durable_django.firing import (
    fire,
    fire_due,
    fire_now,
    save_schedule,
    set_enabled,
    sync_after_migrate,
    sync_schedules,
)
from durable_django.models import WorkflowRun
from durable_django.recovery import Sweeper
from durable_django.schedule_jobs import fire_job_id
from durable_django.schedules import CATCH_UP_LIMIT, declared_schedules, forget_schedule, next_fire

BERLIN = ZoneInfo("Europe/Berlin")
REPORT = "stock_report"  # a workflow of the example shop: two steps, no input needed


@pytest.fixture
def declare() -> Iterator[Callable[..., Any]]:
    """``declare(name, ...)`` calls ``schedule()``; the declarations are forgotten afterwards."""
    names: list[str] = []

    def make(name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return schedule(name, *args, **kwargs)

    yield make
    for name in names:
        forget_schedule(name)


def row(name: str, cron: str, after: datetime, *, tz: str = "UTC", **fields: Any) -> Schedule:
    """A schedule row as made in the admin, due next after ``after``."""
    return Schedule.objects.create(
        name=name, workflow=REPORT, cron=cron, timezone=tz, next_fire_at=next_fire(cron, tz, after), **fields
    )


def keys(name: str) -> list[str]:
    runs = WorkflowRun.objects.filter(schedule__name=name).order_by("idempotency_key")
    return list(runs.values_list("idempotency_key", flat=True))


# -- definition -----------------------------------------------------------------------------------


def test_an_invalid_cron_expression_is_refused_naming_the_schedule() -> None:
    with pytest.raises(WorkflowDefinitionError) as raised:
        schedule("nightly", REPORT, "61 * * * *")
    assert str(raised.value) == (
        "Schedule 'nightly': '61 * * * *' is not a valid cron expression (5 fields, or 6 with seconds last)."
    )
    assert "nightly" not in declared_schedules()


def test_an_unknown_timezone_is_refused_naming_the_schedule() -> None:
    with pytest.raises(WorkflowDefinitionError) as raised:
        schedule("nightly", REPORT, "0 3 * * *", timezone="Europe/Atlantis")
    assert str(raised.value) == (
        "Schedule 'nightly': 'Europe/Atlantis' is not a known timezone (e.g. 'UTC', 'Europe/Berlin')."
    )


def test_an_unknown_workflow_is_refused_once_the_apps_are_loaded() -> None:
    with pytest.raises(WorkflowDefinitionError) as raised:
        schedule("nightly", "no_such_workflow", "0 3 * * *")
    assert str(raised.value) == "Schedule 'nightly': no workflow named 'no_such_workflow' is registered."


def test_input_that_is_not_json_is_refused_naming_the_schedule() -> None:
    with pytest.raises(WorkflowDefinitionError) as raised:
        schedule("nightly", REPORT, "0 3 * * *", input={"when": object()})
    assert str(raised.value).startswith("Schedule 'nightly': input is not JSON-serializable:")
    with pytest.raises(WorkflowDefinitionError, match=r"^Schedule 'nightly': input must be a dict, got list\.$"):
        schedule("nightly", REPORT, "0 3 * * *", input=[1])  # type: ignore[arg-type]


def test_the_example_shop_declares_its_weekly_report() -> None:
    declared = declared_schedules()["weekly_stock_report"]
    assert (declared.workflow, declared.cron, declared.timezone, declared.input) == (
        REPORT,
        "0 7 * * 1",
        "Europe/Berlin",
        {"threshold": 5},
    )


# -- sync -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sync_creates_and_updates_declared_rows_and_keeps_the_admins(declare: Callable[..., Any]) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
    admin_row = row("made_in_admin", "*/5 * * * *", now)
    declare("code_report", REPORT, "0 7 * * 1", timezone="Europe/Berlin", input={"threshold": 3})

    done = sync_schedules(now, send_jobs=False)

    assert "code_report" in done.created
    created = Schedule.objects.get(name="code_report")
    assert (created.declared_in_code, created.enabled, created.input) == (True, True, {"threshold": 3})
    assert created.next_fire_at == datetime(2026, 3, 9, 7, 0, tzinfo=BERLIN)

    forget_schedule("code_report")
    declare("code_report", REPORT, "30 6 * * *", timezone="Europe/Berlin", input={"threshold": 3})
    done = sync_schedules(now, send_jobs=False)
    assert done.updated == ["code_report"]
    created.refresh_from_db()
    assert (created.cron, created.next_fire_at) == ("30 6 * * *", datetime(2026, 3, 3, 6, 30, tzinfo=BERLIN))
    assert Schedule.objects.get(name="made_in_admin").next_fire_at == admin_row.next_fire_at

    assert sync_schedules(now, send_jobs=False).updated == []


@pytest.mark.django_db
def test_sync_keeps_an_operators_switch_and_disables_rows_whose_declaration_is_gone(
    declare: Callable[..., Any],
) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    declare("code_report", REPORT, "0 7 * * *")
    declare("dropped", REPORT, "0 8 * * *")
    sync_schedules(now, send_jobs=False)
    set_enabled(Schedule.objects.get(name="code_report"), False, now)
    forget_schedule("dropped")

    done = sync_schedules(now, send_jobs=False)

    assert done.retired == ["dropped"]
    dropped = Schedule.objects.get(name="dropped")
    assert (dropped.enabled, dropped.declared_in_code, dropped.next_fire_at) == (False, False, None)
    kept = Schedule.objects.get(name="code_report")
    assert (kept.enabled, kept.declared_in_code) == (False, True)


# -- fire times -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_fire_starts_one_run_keyed_by_the_schedule_and_its_fire_time() -> None:
    reports = row("reports", "0 7 * * 1", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), tz="Europe/Berlin")
    due = datetime(2026, 3, 9, 7, 0, tzinfo=BERLIN)

    assert fire_due(due - timedelta(seconds=1)) == []
    [run] = fire_due(due)

    assert run.idempotency_key == "schedule:reports:2026-03-09T07:00:00+01:00"
    assert (run.workflow, run.input, run.schedule_id) == (REPORT, {}, reports.pk)
    reports.refresh_from_db()
    assert reports.last_fired_at == due
    assert reports.next_fire_at == datetime(2026, 3, 16, 7, 0, tzinfo=BERLIN)
    assert fire_due(due + timedelta(minutes=1)) == []


@pytest.mark.django_db
def test_spring_forward_in_berlin_fires_the_skipped_time_at_three() -> None:
    row("night", "30 2 * * *", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), tz="Europe/Berlin")
    night = Schedule.objects.get(name="night")
    # 02:30 does not exist on 29 March 2026: clocks go from 02:00 to 03:00 (CET to CEST).
    assert night.next_fire_at == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert night.next_fire_at.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)

    fire_due(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))

    assert keys("night") == ["schedule:night:2026-03-29T03:00:00+02:00"]
    night.refresh_from_db()
    assert night.next_fire_at == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_fall_back_in_berlin_fires_the_repeated_time_twice() -> None:
    row("night", "30 2 * * *", datetime(2026, 10, 24, 12, 0, tzinfo=UTC), tz="Europe/Berlin")
    # 02:30 comes twice on 25 October 2026: at 00:30 UTC (CEST) and at 01:30 UTC (CET).
    first, second = datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert Schedule.objects.get(name="night").next_fire_at == first

    fire_due(first)
    assert Schedule.objects.get(name="night").next_fire_at == second
    fire_due(second)

    assert keys("night") == [
        "schedule:night:2026-10-25T02:30:00+01:00",
        "schedule:night:2026-10-25T02:30:00+02:00",
    ]
    assert Schedule.objects.get(name="night").next_fire_at == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


# -- missed fires ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_catch_up_only_the_latest_missed_fire_starts_a_run() -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("hourly", "0 * * * *", start - timedelta(minutes=1))

    fire_due(start + timedelta(hours=5, minutes=20))  # 10:00 to 14:00 missed, nothing ran

    assert keys("hourly") == ["schedule:hourly:2026-05-04T14:00:00+00:00"]
    assert Schedule.objects.get(name="hourly").next_fire_at == datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_with_catch_up_every_missed_fire_starts_a_run() -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("hourly", "0 * * * *", start - timedelta(minutes=1), catch_up=True)

    fire_due(start + timedelta(hours=3, minutes=20))

    assert keys("hourly") == [f"schedule:hourly:2026-05-04T{hour:02d}:00:00+00:00" for hour in (9, 10, 11, 12)]
    assert Schedule.objects.get(name="hourly").next_fire_at == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_catch_up_fires_at_most_catch_up_limit_per_pass() -> None:
    start = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
    row("minutely", "* * * * *", start - timedelta(seconds=1), catch_up=True)
    now = start + timedelta(minutes=CATCH_UP_LIMIT + 50)

    assert len(fire_due(now)) == CATCH_UP_LIMIT
    assert Schedule.objects.get(name="minutely").next_fire_at == start + timedelta(minutes=CATCH_UP_LIMIT)
    assert len(fire_due(now)) == 51  # the rest, up to and including now
    assert len(set(keys("minutely"))) == CATCH_UP_LIMIT + 51
    assert Schedule.objects.get(name="minutely").next_fire_at == now + timedelta(minutes=1)


@pytest.mark.django_db
def test_a_disabled_schedule_does_not_fire_and_skips_what_it_missed_once_enabled() -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    hourly = row("hourly", "0 * * * *", start - timedelta(minutes=1), catch_up=True)
    assert set_enabled(hourly, False, start) is True
    assert set_enabled(hourly, False, start) is False

    assert fire_due(start + timedelta(hours=3)) == []
    assert Schedule.objects.get(name="hourly").next_fire_at is None

    set_enabled(hourly, True, start + timedelta(hours=3, minutes=10))
    assert Schedule.objects.get(name="hourly").next_fire_at == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)
    assert keys("hourly") == []


@pytest.mark.django_db
def test_a_schedule_of_an_unknown_workflow_is_skipped_once_per_fire(caplog: pytest.LogCaptureFixture) -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("orphan", "0 * * * *", start - timedelta(minutes=1))
    Schedule.objects.filter(name="orphan").update(workflow="renamed_away")

    assert fire_due(start) == []
    assert fire_due(start) == []

    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        "schedule 'orphan' skipped its fire at 2026-05-04T09:00:00+00:00: "
        "no workflow named 'renamed_away' is registered"
    ]
    assert Schedule.objects.get(name="orphan").next_fire_at == datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


# -- fire now, the fire job -------------------------------------------------------------------------


@pytest.mark.django_db
def test_fire_now_starts_a_run_keyed_by_the_current_second_and_keeps_the_next_fire() -> None:
    reports = row("reports", "0 7 * * 1", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), tz="Europe/Berlin")
    set_enabled(reports, False)
    now = datetime(2026, 3, 3, 12, 0, 5, 250000, tzinfo=UTC)

    run = fire_now(reports, now)
    again = fire_now(reports, now + timedelta(milliseconds=500))

    assert again.pk == run.pk
    assert run.idempotency_key == "schedule:reports:now:2026-03-03T13:00:05+01:00"
    assert run.schedule_id == reports.pk
    assert Schedule.objects.get(name="reports").next_fire_at is None


@pytest.mark.django_db
def test_a_fire_schedules_the_job_of_the_next_fire_time(embedded: Any, django_capture_on_commit_callbacks: Any) -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    hourly = row("hourly", "0 * * * *", start - timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):
        fire(hourly, start)

    registry = embedded.queues()[0].scheduled_job_registry
    job_id = fire_job_id(hourly.pk, datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    assert job_id == f"durable-schedule-{hourly.pk}-{int(datetime(2026, 5, 4, 10, 0, tzinfo=UTC).timestamp())}"
    assert job_id in registry.get_job_ids()
    assert registry.get_scheduled_time(job_id) == datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_the_fire_job_fires_its_schedule_when_due_and_nothing_early() -> None:
    now = datetime.now(UTC)
    early = row("later", "0 0 1 1 *", now)
    Schedule.objects.create(
        name="due", workflow=REPORT, cron="* * * * * *", next_fire_at=now.replace(microsecond=0) - timedelta(seconds=1)
    )

    job_functions.fire_schedule(early.pk)
    job_functions.fire_schedule(Schedule.objects.get(name="due").pk)

    assert keys("later") == []
    assert len(keys("due")) == 1


# -- exactly once under races ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_processes_racing_for_a_fire_start_one_run() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("threads racing on two connections need PostgreSQL")
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("hourly", "0 * * * *", start - timedelta(minutes=1), catch_up=True)
    now = start + timedelta(hours=2)
    barrier = threading.Barrier(4)
    started: list[int] = []

    def racer() -> None:
        try:
            mine = Schedule.objects.get(name="hourly")  # each read the same next_fire_at
            barrier.wait(timeout=10)
            started.append(len(fire(mine, now)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(started) == [0, 0, 0, 3]
    assert keys("hourly") == [f"schedule:hourly:2026-05-04T{hour:02d}:00:00+00:00" for hour in (9, 10, 11)]


# -- where fires and syncs come from --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_workers_sweeper_fires_a_schedule_whose_fire_job_was_lost(embedded: Any) -> None:
    now = datetime.now(UTC)
    row("lost_job", "0 0 1 1 *", now)
    Schedule.objects.filter(name="lost_job").update(next_fire_at=now - timedelta(seconds=2))

    report = Sweeper().sweep_once()

    assert report is not None
    [key] = keys("lost_job")
    assert key == "schedule:lost_job:" + (now - timedelta(seconds=2)).isoformat()
    assert Schedule.objects.get(name="lost_job").next_fire_at == next_fire("0 0 1 1 *", "UTC", now)


def test_the_system_check_names_a_declared_schedule_whose_workflow_is_unknown(
    monkeypatch: pytest.MonkeyPatch, declare: Callable[..., Any]
) -> None:
    # While the workflows modules load, schedule() cannot tell a workflow that comes later from none.
    monkeypatch.setattr(schedules_module, "apps", SimpleNamespace(ready=False))
    declare("orphan", "renamed_away", "0 3 * * *")

    [problem] = [error for error in run_checks() if error.id == "durable_django.E020"]

    assert problem.msg == "Schedule 'orphan' starts workflow 'renamed_away', which is not registered."
    assert problem.hint == ("Correct the workflow's name in schedule(), or define the workflow in a workflows module.")


@pytest.mark.django_db
def test_migrate_syncs_the_declared_rows_without_sending_jobs(declare: Callable[..., Any], embedded: Any) -> None:
    declare("after_migrate", REPORT, "15 4 * * *")

    sync_after_migrate(using="default")

    created = Schedule.objects.get(name="after_migrate")
    assert (created.declared_in_code, created.enabled) == (True, True)
    assert embedded.queues()[0].scheduled_job_registry.get_job_ids() == []


@pytest.mark.django_db
def test_an_operators_edit_writes_only_its_fields_and_keeps_a_fire_made_meanwhile() -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("hourly", "0 * * * *", start - timedelta(minutes=1))
    loaded = Schedule.objects.get(name="hourly")  # as the admin's form loads it
    fire_due(start)  # a worker fires meanwhile: next fire 10:00
    loaded.input = {"threshold": 1}

    save_schedule(loaded, ["input"], now=start)

    saved = Schedule.objects.get(name="hourly")
    assert saved.input == {"threshold": 1}
    assert (saved.last_fired_at, saved.next_fire_at) == (start, datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    loaded.cron = "30 * * * *"
    save_schedule(loaded, ["cron"], now=start)  # a new cron expression: the next fire time is computed again
    assert Schedule.objects.get(name="hourly").next_fire_at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_the_doctor_names_a_schedule_no_worker_fired_for_over_a_minute() -> None:
    now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("stalled", "0 0 1 1 *", now)
    row("on_time", "0 0 1 1 *", now)
    Schedule.objects.filter(name="stalled").update(next_fire_at=now - timedelta(seconds=61))
    Schedule.objects.filter(name="on_time").update(next_fire_at=now - timedelta(seconds=59))
    diagnosis = Diagnosis()

    check_schedules(diagnosis, now)

    assert [(f.severity, f.check, f.message) for f in diagnosis.findings] == [
        ("problem", "schedules", "1 schedule(s) overdue: stalled; check that a worker fires schedules")
    ]


@pytest.mark.django_db
def test_a_row_written_with_an_invalid_cron_is_disabled_and_the_others_still_fire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    start = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    row("broken", "0 * * * *", start - timedelta(minutes=1))
    row("fine", "0 * * * *", start - timedelta(minutes=1))
    Schedule.objects.filter(name="broken").update(cron="every hour")  # past the form's validation

    fired = fire_due(start)

    assert [run.idempotency_key for run in fired] == ["schedule:fine:2026-05-04T09:00:00+00:00"]
    broken = Schedule.objects.get(name="broken")
    assert (broken.enabled, broken.next_fire_at) == (False, None)
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        "schedule 'broken' is disabled: 'every hour' is not a valid cron expression (5 fields, or 6 with "
        "seconds last); correct it and enable it again"
    ]


def test_a_cron_expression_that_never_matches_a_date_is_refused_naming_the_schedule() -> None:
    with pytest.raises(WorkflowDefinitionError) as caught:
        schedule("leap", REPORT, "0 0 30 2 *")
    assert str(caught.value) == "Schedule 'leap': '0 0 30 2 *' never matches a date (such as 30 February)."
    assert "leap" not in declared_schedules()


def test_a_schedule_name_with_a_slash_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError) as caught:
        schedule("reports/daily", REPORT, "0 7 * * *")
    assert "without '/'" in str(caught.value)


@pytest.mark.django_db
def test_a_worker_syncs_declared_rows_but_never_retires_one_only_migrate_does(declare: Callable[..., Any]) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    declare("kept", REPORT, "0 8 * * *")
    sync_schedules(now, send_jobs=False)
    forget_schedule("kept")  # a worker of another release, which does not declare it
    firing._synced.clear()

    firing.ensure_synced()

    kept = Schedule.objects.get(name="kept")
    assert (kept.enabled, kept.declared_in_code) == (True, True)
    sync_after_migrate()
    kept.refresh_from_db()
    assert (kept.enabled, kept.declared_in_code) == (False, False)


@pytest.mark.django_db
def test_a_declaration_that_cannot_be_saved_is_logged_and_the_others_are_synced(
    declare: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    declare("broken", REPORT, "0 8 * * *")
    declare("fine", REPORT, "0 9 * * *")
    save = firing.rows.save_declared

    def failing(declaration: Any, next_at: Any) -> Any:
        if declaration.name == "broken":
            raise RuntimeError("disk full")
        return save(declaration, next_at)

    monkeypatch.setattr(firing.rows, "save_declared", failing)

    done = sync_schedules(now, send_jobs=False)

    assert "fine" in done.created and "broken" not in done.created
    assert not Schedule.objects.filter(name="broken").exists()
    assert "schedule 'broken' could not be synced; the next sync tries again" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_sweep_recovers_runs_even_when_schedules_cannot_be_checked(
    embedded: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("schedules table locked")

    monkeypatch.setattr(firing, "fire_due", broken)

    report = Sweeper().sweep_once()

    assert report is not None  # recovery ran, and the failure was logged rather than raised
    assert "schedules could not be checked for due fires; the next sweep tries again" in caplog.text
