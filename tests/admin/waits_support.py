"""Runs that wait: written as rows (no engine) to test the pages on, or started on the embedded queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from durable_django import start_workflow
from durable_django.models import Event, ParallelGroup, StepResult, Wait, WorkflowRun
from durable_django.testing import EmbeddedQueue

APPROVAL_PROMPT = "Refund <b>250</b> EUR to the customer?"


def waiting_run(workflow: str = "it_admin_refund", **wait_fields: Any) -> tuple[WorkflowRun, Wait]:
    """A run waiting in its step ``decide`` for the wait ``wait_fields`` describe (an approval by default)."""
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow=workflow,
        status="waiting",
        current_step="decide",
        input={"amount": 250},
        created_at=now - timedelta(minutes=5),
        started_at=now - timedelta(minutes=5),
    )
    StepResult.objects.create(
        run=run,
        step="prepare",
        status="completed",
        output={"prepared": True},
        created_at=now - timedelta(minutes=5),
        started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=4, seconds=58),
    )
    row = StepResult.objects.create(
        run=run,
        step="decide",
        status="waiting",
        created_at=now - timedelta(minutes=4, seconds=58),
        started_at=now - timedelta(minutes=4, seconds=58),
    )
    fields: dict[str, Any] = {
        "kind": "input",
        "name": "refund_ok",
        "input_kind": "approval",
        "prompt": APPROVAL_PROMPT,
        "created_at": now - timedelta(minutes=4, seconds=57),
        **wait_fields,
    }
    wait = Wait.objects.create(run=run, step_result=row, **fields)
    return run, wait


def branch_waits(run: WorkflowRun) -> tuple[ParallelGroup, list[Wait]]:
    """A block ``notify`` in ``run`` whose two branches wait: one for an event, one sleeping (done)."""
    now = timezone.now()
    group = ParallelGroup.objects.create(
        run=run,
        name="notify",
        on_error="fail_fast",
        branch_count=2,
        pending_count=1,
        waiting_count=1,
        created_at=now - timedelta(minutes=3),
    )
    mail = StepResult.objects.create(
        run=run,
        step="mail",
        status="waiting",
        group=group,
        created_at=now - timedelta(minutes=3),
        started_at=now - timedelta(minutes=3),
    )
    pause = StepResult.objects.create(
        run=run,
        step="pause",
        status="completed",
        group=group,
        created_at=now - timedelta(minutes=3),
        started_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=1),
    )
    event = Wait.objects.create(
        run=run,
        step_result=mail,
        kind="event",
        name="mail_sent",
        events=[],
        created_at=now - timedelta(minutes=3),
        due_at=now + timedelta(minutes=7),
        timeout_seconds=600,
        has_timeout_value=True,
        timeout_value={"sent": False},
    )
    sleep = Wait.objects.create(
        run=run,
        step_result=pause,
        kind="sleep",
        name="pause",
        status="resolved",
        created_at=now - timedelta(minutes=3),
        due_at=now - timedelta(minutes=1),
        resolved_at=now - timedelta(minutes=1),
    )
    return group, [event, sleep]


def buffered(run: WorkflowRun, name: str = "early", payload: Any = None) -> Event:
    return Event.objects.create(run=run, name=name, payload=payload)


def start_waiting(queue: EmbeddedQueue, workflow: str, data: dict[str, Any]) -> WorkflowRun:
    """Start ``workflow`` and run it until it waits (or ends)."""
    run = start_workflow(workflow, data)
    queue.run_until_idle(timeout=30)
    run.refresh_from_db()
    return run
