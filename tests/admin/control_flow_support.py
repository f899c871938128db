"""Runs with control flow for the run page's tests and screenshots: foreach, branch, compensations.

The small ones run on the embedded queue; a 10,000-item foreach block and a compensated run are
written as the engine leaves them (compensations are recorded by the engine's compensate job).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from durable_django import start_workflow
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.testing import EmbeddedQueue

#: The 10,000-item block: items that failed twice (then the block's into took the rest), items retried once.
LARGE_ITEMS = 10_000
LARGE_FAILED = tuple(range(137, LARGE_ITEMS, 270))  # 37 items
LARGE_RETRIED = tuple(range(55, 55 + 12 * 800, 800))  # 12 items


def foreach_run(queue: EmbeddedQueue, token: str, count: int = 12, **input: Any) -> WorkflowRun:
    """A finished ``it_admin_foreach`` run: items 3 and 7 fail twice, item 5 fails once then succeeds."""
    run = start_workflow("it_admin_foreach", {"token": token, "count": count, "bad": [3, 7], "flaky": [5], **input})
    queue.run_until_idle(timeout=60)
    run.refresh_from_db()
    return run


def branch_run(queue: EmbeddedQueue, tier: str) -> WorkflowRun:
    """A finished ``it_admin_branch`` run that took the case ``tier`` (``gold``, ``silver``, or the default)."""
    run = start_workflow("it_admin_branch", {"tier": tier})
    queue.run_until_idle(timeout=60)
    run.refresh_from_db()
    return run


def _at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def large_foreach_run(items: int = LARGE_ITEMS) -> WorkflowRun:
    """A completed ``it_admin_foreach`` run whose block had ``items`` items, 50 at a time, 30 ms each.

    The items of :data:`LARGE_FAILED` failed both attempts, those of :data:`LARGE_RETRIED` succeeded
    on the second; the block was retried once by an operator (its first outcome is in its history).
    """
    t0 = timezone.now() - timedelta(minutes=5)
    span = (items // 50 + 1) * 0.03
    run = WorkflowRun.objects.create(
        workflow="it_admin_foreach",
        status="completed",
        input={"count": items},
        context={"total": 1},
        created_at=t0,
        started_at=t0,
        finished_at=_at(t0, span + 1.2),
    )
    StepResult.objects.create(
        run=run,
        step="load",
        status="completed",
        output={"count": items},
        created_at=t0,
        started_at=t0,
        finished_at=_at(t0, 0.1),
    )
    failed = {index for index in LARGE_FAILED if index < items}
    retried = {index for index in LARGE_RETRIED if index < items}
    group = ParallelGroup.objects.create(
        run=run,
        name="squares",
        kind="foreach",
        on_error="complete_all",
        items=list(range(items)),
        status="completed",
        branch_count=items,
        failed_count=len(failed),
        created_at=_at(t0, 0.1),
        finished_at=_at(t0, span + 1.0),
        history=[
            {
                "status": "failed",
                "error": {"type": "items_failed", "failed": len(failed) + len(retried)},
                "branches": items,
                "failed": len(failed) + len(retried),
                "finished_at": _at(t0, span + 0.2).isoformat(),
                "retried_at": _at(t0, span + 0.5).isoformat(),
            }
        ],
    )
    rows = []
    for index in range(items):
        begin = _at(t0, 0.1 + (index // 50) * 0.03)
        first_failed = index in failed or index in retried
        rows.append(
            StepResult(
                run=run,
                group=group,
                step="squares",
                item_index=index,
                status="failed" if first_failed else "completed",
                output=None if first_failed else {"square": index * index},
                error={"type": "ValueError", "message": f"item {index} cannot be squared"} if first_failed else None,
                created_at=_at(t0, 0.1),
                started_at=begin,
                finished_at=begin + timedelta(seconds=0.03),
            )
        )
    for index in sorted(failed | retried):
        begin = _at(t0, span + 0.5)
        rows.append(
            StepResult(
                run=run,
                group=group,
                step="squares",
                item_index=index,
                attempt=2,
                status="failed" if index in failed else "completed",
                output=None if index in failed else {"square": index * index},
                error={"type": "ValueError", "message": f"item {index} cannot be squared"} if index in failed else None,
                created_at=begin,
                started_at=begin,
                finished_at=begin + timedelta(seconds=0.04),
            )
        )
    StepResult.objects.bulk_create(rows, batch_size=2000)
    StepResult.objects.create(
        run=run,
        step="report",
        status="completed",
        output={"reported": 1},
        created_at=_at(t0, span + 1.0),
        started_at=_at(t0, span + 1.0),
        finished_at=_at(t0, span + 1.2),
    )
    return run


def compensated_run(outcome: str = "completed") -> WorkflowRun:
    """A failed ``it_admin_saga`` run: ``ship`` failed, then ``charge_card`` (retried once) and
    ``reserve_stock`` were undone. ``outcome``: ``completed``, ``failed`` (the second compensation of
    ``charge_card`` failed too) or ``compensating`` (``reserve_stock``'s compensation is running)."""
    t0 = timezone.now() - timedelta(minutes=2)
    status = "compensating" if outcome == "compensating" else "failed"
    run = WorkflowRun.objects.create(
        workflow="it_admin_saga",
        status=status,
        current_step="ship",
        error={"step": "ship", "reason": {"code": "carrier_down"}},
        compensation="" if outcome == "compensating" else outcome,
        created_at=t0,
        started_at=t0,
        finished_at=None if outcome == "compensating" else _at(t0, 3.1),
    )

    def row(step: str, begin: float, end: float | None, status: str = "completed", **fields: Any) -> StepResult:
        return StepResult.objects.create(
            run=run,
            step=step,
            status=status,
            created_at=_at(t0, begin),
            started_at=_at(t0, begin),
            finished_at=_at(t0, end) if end is not None else None,
            **fields,
        )

    reserve = row("reserve_stock", 0, 0.4, output={"reserved": 3})
    pay = ParallelGroup.objects.create(
        run=run,
        name="pay",
        on_error="fail_fast",
        status="completed",
        branch_count=2,
        created_at=_at(t0, 0.4),
        finished_at=_at(t0, 1.2),
    )
    charge = row("charge_card", 0.4, 1.1, group=pay, output={"charged": 250})
    row("notify_warehouse", 0.4, 0.9, group=pay, output={"notified": True})
    row("ship", 1.2, 1.5, "failed", error={"code": "carrier_down"})
    timeout = {"type": "TimeoutError", "message": "the payment gateway did not answer"}
    row("charge_card", 1.6, 1.9, "failed", kind="compensation", compensates=charge, error=timeout)
    if outcome == "failed":
        row("charge_card", 2.2, 2.5, "failed", kind="compensation", compensates=charge, attempt=2, error=timeout)
    else:
        row("charge_card", 2.2, 2.5, kind="compensation", compensates=charge, attempt=2, output={"refunded": 250})
    if outcome == "compensating":
        row("reserve_stock", 2.6, None, "running", kind="compensation", compensates=reserve)
    else:
        row("reserve_stock", 2.6, 2.9, kind="compensation", compensates=reserve, output={"released": 3})
    WorkflowRun.objects.create(
        workflow="it_admin_flaky",
        status="completed",
        parent=run,
        parent_step="reserve_stock",
        ref="audit",
        detached=True,
        created_at=_at(t0, 0.2),
        started_at=_at(t0, 0.2),
        finished_at=_at(t0, 0.6),
    )
    return run
