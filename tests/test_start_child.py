"""start_child: a child run started from a step, linked to its parent, that the parent does not wait for."""

from __future__ import annotations

from typing import Any

import pytest

from durable_django import call_workflow, cancel_run, error, ok, sleep, start_child, step
from durable_django.exceptions import NotInStepError
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, finish

runs = pytest.mark.django_db(transaction=True)


@runs
def test_a_detached_child_is_linked_to_its_parent_and_runs_on_its_own(embedded: EmbeddedQueue, define: Definer) -> None:
    audit = define([step("record", lambda ctx: ok({"recorded": ctx["what"]}))])
    started: list[str] = []

    def checkout(ctx: dict[str, Any]) -> Any:
        child = start_child(audit, {"what": "checkout"}, ref="audit")
        started.append(str(child.pk))
        # The parent goes on at once: the child has not run yet.
        return ok({"audit_run": str(child.pk), "audit_status": child.status})

    parent = define([step("checkout", checkout), step("done", lambda ctx: ok({"done": True}))])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert run.context == {"audit_run": started[0], "audit_status": "pending", "done": True}
    child = WorkflowRun.objects.get(pk=started[0])
    assert (child.parent_id, child.parent_step, child.ref, child.detached) == (run.pk, "checkout", "audit", True)
    assert (child.status, child.context) == ("completed", {"what": "checkout", "recorded": "checkout"})
    assert list(run.children.values_list("pk", "detached")) == [(child.pk, True)]


@runs
def test_the_same_ref_returns_the_same_child_when_the_step_runs_again(embedded: EmbeddedQueue, define: Definer) -> None:
    audit = define([step("record", lambda ctx: ok())])
    seen: list[str] = []

    def flaky(ctx: dict[str, Any]) -> Any:
        seen.append(str(start_child(audit.name, {"n": 1}, ref="audit").pk))
        # Numbered refs without one: per workflow, in the order the step starts them.
        seen.append(start_child(audit, {"n": 2}).ref)
        return error("try again") if len(seen) < 4 else ok()

    parent = define([step("flaky", flaky, retry={"max_attempts": 2, **IMMEDIATE})])
    run = finish(embedded, parent.start())
    assert run.status == "completed"
    assert seen[0] == seen[2]
    assert seen[1] == seen[3] == f"{audit.name}~1"
    assert WorkflowRun.objects.filter(parent=run).count() == 2


@runs
def test_cancelling_the_parent_leaves_detached_children_running_but_cancels_called_ones(
    embedded: EmbeddedQueue, define: Definer
) -> None:
    slow = define([step("nap", lambda ctx: sleep(3600)), step("after", lambda ctx: ok())])
    parent = define(
        [
            step("spawn", lambda ctx: ok({"child": str(start_child(slow, {}, ref="bg").pk)})),
            step("wait", lambda ctx: sleep(3600)),
        ]
    )
    run = finish(embedded, parent.start())
    assert run.status == "waiting"
    child = WorkflowRun.objects.get(parent=run)
    assert child.status == "waiting"
    cancel_run(run.pk)
    run.refresh_from_db()
    child.refresh_from_db()
    assert (run.status, child.status) == ("cancelled", "waiting")


@runs
def test_a_ref_taken_by_a_called_child_is_refused(embedded: EmbeddedQueue, define: Definer) -> None:
    other = define([step("x", lambda ctx: ok())])
    problems: list[str] = []

    def both(ctx: dict[str, Any]) -> Any:
        call_workflow(other, {}, ref="same")
        try:
            start_child(other, {}, ref="same")
        except ValueError as exc:
            problems.append(str(exc))
        return ok()

    run = finish(embedded, define([step("both", both)]).start())
    assert run.status == "completed"
    assert problems == [
        f"step 'both' already has a child with ref 'same' (a run of {other.name!r} called with call_workflow); "
        "give this one another ref"
    ]


def test_start_child_outside_a_step_says_so(define: Definer) -> None:
    audit = define([step("record", lambda ctx: ok())])
    with pytest.raises(NotInStepError) as caught:
        start_child(audit, {})
    assert str(caught.value) == "start_child() was called outside a running step; pass the context explicitly."
