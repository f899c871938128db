"""Deleting runs in the admin: finished runs only, from a run's page and from the list."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from durable_django.exceptions import RunNotDeletable
from durable_django.models import UNFINISHED_RUN_STATUSES, StepResult, WorkflowRun
from durable_django.retention import delete_runs
from durable_django.testing import EmbeddedQueue
from tests.admin.support import CHANGELIST, change_url, elements, messages_of, order

pytestmark = pytest.mark.django_db

CANCEL_FIRST = "Cancel it first; a run can be deleted once it has finished."


def delete_url(run: WorkflowRun) -> str:
    return reverse("admin:durable_django_workflowrun_delete", args=[run.pk])


def select(client: Client, *runs: WorkflowRun, confirm: bool = False) -> Any:
    data: dict[str, Any] = {"action": "delete_selected", "_selected_action": [str(run.pk) for run in runs]}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data)


def staff_client(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="durable_django", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


# -- one run, from its page ------------------------------------------------------------------------


@pytest.mark.parametrize("status", UNFINISHED_RUN_STATUSES)
def test_an_unfinished_run_is_not_deleted_and_the_message_says_to_cancel_it_first(
    admin_client: Client, status: str
) -> None:
    run = WorkflowRun.objects.create(workflow="it_admin_order", status=status)
    expected = [("error", f"Did not delete it_admin_order run {run.pk}: it is {status}. {CANCEL_FIRST}")]
    for send in (admin_client.get, lambda url: admin_client.post(url, {"post": "yes"})):
        response = send(delete_url(run))
        assert (response.status_code, response["Location"]) == (302, change_url(run))
        assert messages_of(admin_client.get(response["Location"])) == expected
    assert WorkflowRun.objects.filter(pk=run.pk).exists()


def test_a_finished_run_tied_to_an_unfinished_parent_or_child_is_not_deleted(admin_client: Client) -> None:
    running = WorkflowRun.objects.create(workflow="it_admin_sync", status="running")
    finished_child = WorkflowRun.objects.create(workflow="it_admin_import", status="completed", parent=running)
    failed_parent = WorkflowRun.objects.create(workflow="it_admin_sync", status="failed")
    waiting_child = WorkflowRun.objects.create(
        workflow="it_admin_import", status="waiting", parent=failed_parent, ref="a"
    )
    grandparent = WorkflowRun.objects.create(workflow="it_admin_sync", status="completed")
    middle = WorkflowRun.objects.create(workflow="it_admin_sync", status="completed", parent=grandparent)
    pending_grandchild = WorkflowRun.objects.create(workflow="it_admin_import", status="pending", parent=middle)
    expected = {
        finished_child: f"its parent run {running.pk} is running and may still need it. "
        "Cancel that run first, or wait until it has finished.",
        failed_parent: f"its child run {waiting_child.pk} is waiting, and deleting a run deletes its child runs. "
        "Cancel that run first.",
        grandparent: f"run {pending_grandchild.pk} below it (a child run of one of its child runs) is pending, "
        "and deleting a run deletes its child runs. Cancel that run first.",
    }
    for run, reason in expected.items():
        response = admin_client.post(delete_url(run), {"post": "yes"}, follow=True)
        assert response.redirect_chain == [(change_url(run), 302)]
        assert messages_of(response) == [("error", f"Did not delete {run.workflow} run {run.pk}: {reason}")]
    assert WorkflowRun.objects.count() == 7


def test_a_finished_run_is_deleted_with_its_finished_child_runs(admin_client: Client) -> None:
    parent = WorkflowRun.objects.create(workflow="it_admin_sync", status="failed")
    child = WorkflowRun.objects.create(workflow="it_admin_import", status="failed", parent=parent)
    other = WorkflowRun.objects.create(workflow="it_admin_sync", status="completed")
    confirmation = admin_client.get(delete_url(parent))
    assert confirmation.status_code == 200
    assert not confirmation.context["perms_lacking"]
    response = admin_client.post(delete_url(parent), {"post": "yes"})
    assert (response.status_code, response["Location"]) == (302, CHANGELIST)
    assert list(WorkflowRun.objects.values_list("pk", flat=True)) == [other.pk]
    assert not WorkflowRun.objects.filter(pk=child.pk).exists()


def test_a_run_that_moved_since_it_was_checked_is_refused_by_the_deletion_itself() -> None:
    running = WorkflowRun.objects.create(workflow="it_admin_order", status="running")
    done = WorkflowRun.objects.create(workflow="it_admin_order", status="completed")
    with pytest.raises(RunNotDeletable) as refused:
        delete_runs([done.pk, running.pk])
    assert refused.value.refusals == {running.pk: f"it is running. {CANCEL_FIRST}"}
    assert str(refused.value) == f"Run {running.pk}: it is running. {CANCEL_FIRST}"
    assert WorkflowRun.objects.count() == 2
    assert delete_runs([done.pk]) == 1


# -- a selection, from the list --------------------------------------------------------------------


def test_a_selection_with_unfinished_runs_is_refused_whole_naming_each_of_them(admin_client: Client) -> None:
    completed = WorkflowRun.objects.create(workflow="it_admin_order", status="completed")
    running = WorkflowRun.objects.create(workflow="it_admin_order", status="running")
    failed = WorkflowRun.objects.create(workflow="it_admin_order", status="failed")
    waiting = WorkflowRun.objects.create(workflow="it_admin_sync", status="waiting")
    for confirm in (False, True):
        response = select(admin_client, completed, running, failed, waiting, confirm=confirm)
        assert (response.status_code, response["Location"]) == (302, CHANGELIST)
        refusals = {
            running.pk: f"it_admin_order run {running.pk}: it is running. {CANCEL_FIRST}",
            waiting.pk: f"it_admin_sync run {waiting.pk}: it is waiting. {CANCEL_FIRST}",
        }
        assert messages_of(admin_client.get(CHANGELIST)) == [
            (
                "error",
                "Nothing was deleted: 2 of the 4 selected runs may not be deleted now. Leave them out of the "
                # Newest first, as the list shows them.
                "selection, or cancel them first. " + " ".join(refusals[run.pk] for run in (waiting, running)),
            )
        ]
    assert WorkflowRun.objects.count() == 4


def test_a_refused_selection_names_five_runs_and_counts_the_others(admin_client: Client) -> None:
    runs = [WorkflowRun.objects.create(workflow="it_admin_order", status="pending") for _ in range(7)]
    select(admin_client, *runs)
    [(level, text)] = messages_of(admin_client.get(CHANGELIST))
    assert level == "error"
    assert text.startswith("Nothing was deleted: 7 of the 7 selected runs may not be deleted now.")
    assert text.count(f"it is pending. {CANCEL_FIRST}") == 5
    assert text.endswith(f"{CANCEL_FIRST} and 2 more.")


def test_a_selection_of_finished_runs_is_confirmed_then_deleted_with_their_rows(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    failed = order(embedded, "bulk-1", decline=True)
    completed = order(embedded, "bulk-2")
    kept = order(embedded, "bulk-3")
    confirmation = select(admin_client, failed, completed)
    assert confirmation.status_code == 200
    assert confirmation.context["title"] == "Delete multiple objects"
    assert not confirmation.context["perms_lacking"]
    response = select(admin_client, failed, completed, confirm=True)
    assert (response.status_code, response["Location"]) == (302, CHANGELIST)
    assert messages_of(admin_client.get(CHANGELIST)) == [("success", "Successfully deleted 2 workflow runs.")]
    assert list(WorkflowRun.objects.values_list("pk", flat=True)) == [kept.pk]
    assert set(StepResult.objects.values_list("run_id", flat=True)) == {kept.pk}


def test_deleting_needs_the_delete_permission(django_user_model: Any) -> None:
    run = WorkflowRun.objects.create(workflow="it_admin_order", status="completed")
    viewer = staff_client(django_user_model, "view_workflowrun", "change_workflowrun")
    deleter = staff_client(django_user_model, "view_workflowrun", "delete_workflowrun")

    def offered(client: Client) -> list[str]:
        return [option["value"] for option in elements(client.get(CHANGELIST).content, tag="option", within="actions")]

    assert "delete_selected" not in offered(viewer)
    assert offered(deleter) == ["", "delete_selected"]
    assert viewer.post(delete_url(run), {"post": "yes"}).status_code == 403
    select(viewer, run, confirm=True)  # an action the user is not offered does nothing
    assert WorkflowRun.objects.filter(pk=run.pk).exists()
    assert deleter.post(delete_url(run), {"post": "yes"}).status_code == 302
    assert not WorkflowRun.objects.filter(pk=run.pk).exists()
