"""DURABLE["RETENTION"]: checked at start-up, applied by the recovery sweep a few minutes apart."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from durable_django import retention
from durable_django.checks import check_retention, check_settings
from durable_django.conf import RETENTION_MUST_BE, Retention, durable_settings, parse_age
from durable_django.models import StepResult, Wait, WorkflowRun
from durable_django.recovery import recover
from durable_django.testing import EmbeddedQueue

pytestmark = pytest.mark.django_db

KEEP_30_DAYS = {"older_than": "30d", "batch_size": 2}


def finished(days_ago: float, status: str = "completed", **fields: object) -> WorkflowRun:
    return WorkflowRun.objects.create(
        workflow="w", status=status, finished_at=timezone.now() - timedelta(days=days_ago), **fields
    )


@pytest.mark.parametrize(
    ("given", "age"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        (" 7 ", timedelta(days=7)),
        ("2D", timedelta(days=2)),
        (30, timedelta(days=30)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_an_age_is_a_whole_number_with_a_unit_or_a_number_of_days(given: object, age: timedelta) -> None:
    assert parse_age(given) == age


@pytest.mark.parametrize("given", ["", "d", "1.5d", "30 days", "-1d", "0", 0, True, 1.5, None])
def test_anything_else_is_not_an_age(given: object) -> None:
    with pytest.raises(ValueError, match=r" is not an age: "):
        parse_age(given)


def test_the_setting_is_off_by_default_and_read_as_a_policy() -> None:
    with override_settings(DURABLE={}):
        assert durable_settings.RETENTION is None
    with override_settings(DURABLE={"RETENTION": {"older_than": "12h", "status": ["failed"]}}):
        policy = durable_settings.RETENTION
    assert policy == Retention(timedelta(hours=12), ("failed",), 1000)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"status": ["failed"]},
        {"older_than": "soon"},
        {"older_than": "30d", "batch_size": 0},
        {"older_than": "30d", "status": []},
        {"older_than": "30d", "status": "failed"},
        {"older_than": "30d", "keep": 3},
        "30d",
    ],
)
def test_the_check_refuses_a_retention_of_the_wrong_shape(value: object) -> None:
    with override_settings(DURABLE={"RETENTION": value}):
        errors = check_settings()
        assert [(error.id, error.msg) for error in errors] == [
            ("durable_django.E004", f"settings.DURABLE['RETENTION'] must be {RETENTION_MUST_BE}, not {value!r}.")
        ]
        assert check_retention() == []


def test_the_check_refuses_a_retention_that_would_delete_unfinished_runs() -> None:
    with override_settings(DURABLE={"RETENTION": {"older_than": "30d", "status": ["failed", "running"]}}):
        assert check_settings() == []
        [error] = check_retention()
    assert (error.id, error.msg, error.hint) == (
        "durable_django.E007",
        "settings.DURABLE['RETENTION']['status']: 'running' is not a finished status: a pending, running, "
        "waiting or compensating run is never deleted. Give some of completed, failed, cancelled.",
        "Leave 'status' out to delete finished runs of every status (completed, failed, cancelled).",
    )


def test_the_sweep_deletes_nothing_without_the_setting(embedded: EmbeddedQueue) -> None:
    old = finished(400)
    recover()
    assert WorkflowRun.objects.filter(pk=old.pk).exists()


def test_the_sweep_deletes_old_finished_runs_at_most_every_few_minutes(embedded: EmbeddedQueue) -> None:
    old = finished(31)
    failed = finished(40, status="failed")
    recent = finished(29)
    unfinished = WorkflowRun.objects.create(workflow="w", status="running")
    step = StepResult.objects.create(run=old, step="s", status="completed")
    Wait.objects.create(run=old, step_result=step, kind="sleep", name="s", status="resolved")
    with override_settings(DURABLE={"RETENTION": KEEP_30_DAYS}):
        recover()
        assert set(WorkflowRun.objects.values_list("pk", flat=True)) == {recent.pk, unfinished.pk}
        assert not StepResult.objects.exists() and not Wait.objects.exists()
        assert not WorkflowRun.objects.filter(pk=failed.pk).exists()

        # Not again before its turn, however often recovery sweeps.
        later = finished(50)
        recover()
        assert WorkflowRun.objects.filter(pk=later.pk).exists()
        assert 0 < embedded.connection.ttl(retention.SWEEP_TURN_KEY) <= retention.SWEEP_EVERY

        embedded.connection.delete(retention.SWEEP_TURN_KEY)  # SWEEP_EVERY seconds have passed
        recover()
        assert not WorkflowRun.objects.filter(pk=later.pk).exists()


def test_one_sweep_deletes_at_most_its_batches_and_leaves_the_rest_to_the_next(embedded: EmbeddedQueue) -> None:
    for _ in range(retention.SWEEP_BATCHES * 2 + 3):
        finished(60)
    with override_settings(DURABLE={"RETENTION": KEEP_30_DAYS}):
        done = retention.sweep()
        assert done is not None
        assert (done.deleted, done.batches, WorkflowRun.objects.count()) == (retention.SWEEP_BATCHES * 2, 10, 3)
        embedded.connection.delete(retention.SWEEP_TURN_KEY)
        done = retention.sweep()
        assert done is not None
        assert (done.deleted, done.batches, WorkflowRun.objects.count()) == (3, 2, 0)


def test_a_retention_the_check_refuses_is_logged_by_the_sweep_and_recovery_goes_on(
    embedded: EmbeddedQueue, caplog: pytest.LogCaptureFixture
) -> None:
    old = finished(90)
    with (
        override_settings(DURABLE={"RETENTION": {"older_than": "30d", "status": ["running"]}}),
        caplog.at_level(logging.ERROR, logger="durable_django.retention"),
    ):
        report = recover()
    assert report.total == 0
    assert [record.getMessage() for record in caplog.records] == [
        "retention: deleting finished runs failed; the next turn, in 300 s, tries again"
    ]
    assert "'running' is not a finished status" in caplog.text
    assert WorkflowRun.objects.filter(pk=old.pk).exists()


def test_a_dry_run_counts_what_the_deletion_deletes_child_runs_included() -> None:
    parent = finished(40)
    finished(1, parent=parent, ref="recent")  # goes with its parent although it is recent
    finished(35, parent=parent, ref="old")  # one of those asked for: counted once
    grandparent = finished(33)
    middle = finished(32, parent=grandparent)
    finished(31, parent=middle, status="failed")
    finished(45)
    for batch_size in (1, 2, 100):
        dry = retention.delete_finished_runs("30d", batch_size=batch_size, dry_run=True)
        assert (dry.deleted, dry.skipped, WorkflowRun.objects.count()) == (7, 0, 7)
    done = retention.delete_finished_runs("30d", batch_size=2)
    assert (done.deleted, done.skipped, WorkflowRun.objects.count()) == (7, 0, 0)
