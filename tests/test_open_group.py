"""Opening a block's group: a duplicate fan-out is refused quietly, any other mistake is raised."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from durable_django import store
from durable_django.models import ParallelGroup, RunStatus, StepResult, WorkflowRun
from durable_django.store.groups import Opening, Plan

# Committed transactions, so that PostgreSQL takes its one-statement path (outside any transaction).
pytestmark = pytest.mark.django_db(transaction=True)


def running_run() -> WorkflowRun:
    return WorkflowRun.objects.create(workflow="open_group_wf", status=RunStatus.RUNNING, current_step="fan")


def test_a_second_opening_of_an_open_block_writes_nothing_and_says_so() -> None:
    run = running_run()
    assert store.open_group(run, "fan", "fail_fast", Plan(first=["a", "b"], rest={})) is not None
    # A duplicate job at the run's current version: its move would apply, the group's cannot.
    again = WorkflowRun.objects.get(pk=run.pk)

    assert store.open_group(again, "fan", "fail_fast", Plan(first=["a", "b"], rest={})) is None
    assert WorkflowRun.objects.get(pk=run.pk).version == run.version
    assert ParallelGroup.objects.filter(run=run).count() == 1
    assert StepResult.objects.filter(run=run).count() == 2


def test_an_opening_that_breaks_another_constraint_raises_instead_of_passing_for_a_duplicate() -> None:
    run = running_run()
    with pytest.raises(IntegrityError):
        store.open_group(run, "fan", "fail_fast", Plan(first=["a"], rest={}), opening=Opening(kind=None))  # type: ignore[arg-type]
    assert ParallelGroup.objects.filter(run=run).count() == 0
    assert WorkflowRun.objects.get(pk=run.pk).version == run.version
