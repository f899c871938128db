"""The admin through Django's test client: lists, a run's page, its timeline, retry and cancel."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from durable_django import start_workflow
from durable_django.exceptions import RunStateError
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from durable_django.operations import cancel_run, retry_run
from durable_django.testing import EmbeddedQueue
from tests.admin.support import (
    CHANGELIST,
    button_url,
    change_url,
    elements,
    fix,
    messages_of,
    order,
    sync,
    texts,
)

pytestmark = pytest.mark.django_db


def staff_client(django_user_model: Any, *codenames: str) -> Client:
    """A client logged in as a staff user holding only the given permissions of durable_django."""
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="durable_django", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def listed(response: Any) -> list[str]:
    """Full ids of the runs a changelist page shows, in order."""
    assert response.status_code == 200
    return [element["title"] for element in elements(response.content, "durable-run-id")]


def ids(*runs: WorkflowRun) -> list[str]:
    return [str(run.pk) for run in runs]


def refusal(operation: Any, run: WorkflowRun) -> str:
    """Why ``operation`` refuses ``run`` (it raises before changing anything)."""
    with pytest.raises(RunStateError) as refused:
        operation(run)
    return str(refused.value)


def json_field(response: Any, field: str, block_class: str = "durable-json") -> str:
    """The text of the JSON block (or of another ``<pre>``) of a run page's read-only ``field``."""
    (block,) = elements(response.content, block_class, within=f"field-{field}")
    return str(block["text"])


# -- the run list ----------------------------------------------------------------------------------


def test_run_list_shows_workflow_status_current_step_and_duration(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    failed = order(embedded, "list-1", decline=True)
    completed = order(embedded, "list-2")
    response = admin_client.get(CHANGELIST)
    assert listed(response) == ids(completed, failed)
    assert texts(response.content, "field-workflow_display") == ["it_admin_order", "it_admin_order"]
    assert texts(response.content, "durable-badge") == ["Completed", "Failed"]
    assert [badge["style"] for badge in elements(response.content, "durable-badge")] == [
        "background-color: #15803d",
        "background-color: #b91c1c",
    ]
    assert texts(response.content, "field-current_step_display") == ["-", "fulfil"]
    durations = texts(response.content, "field-duration_display")
    assert len(durations) == 2
    assert all(text.endswith((" ms", " s")) for text in durations), durations


def test_run_list_links_a_child_run_to_its_parent(embedded: EmbeddedQueue, admin_client: Client) -> None:
    parent = sync(embedded, "list-child")
    child = parent.children.get()
    response = admin_client.get(CHANGELIST)
    assert listed(response) == ids(child, parent)
    links = [link["href"] for link in elements(response.content, tag="a", within="field-workflow_display")]
    assert links == [change_url(parent)]
    assert texts(response.content, "field-workflow_display") == [
        f"it_admin_import child of {str(parent.pk)[:8]}",
        "it_admin_sync",
    ]


def test_run_list_filters_by_status_and_by_workflow(embedded: EmbeddedQueue, admin_client: Client) -> None:
    failed = order(embedded, "filter-1", decline=True)
    completed = order(embedded, "filter-2")
    parent = sync(embedded, "filter-3")
    child = parent.children.get()
    assert listed(admin_client.get(CHANGELIST, {"status__exact": "failed"})) == ids(child, parent, failed)
    assert listed(admin_client.get(CHANGELIST, {"status__exact": "completed"})) == ids(completed)
    assert listed(admin_client.get(CHANGELIST, {"workflow": "it_admin_import"})) == ids(child)
    assert listed(admin_client.get(CHANGELIST, {"workflow": "it_admin_order", "status__exact": "failed"})) == ids(
        failed
    )
    filters = admin_client.get(CHANGELIST).content.decode()
    assert "?workflow=it_admin_sync" in filters and "?status__exact=cancelled" in filters


def test_search_finds_a_run_by_its_whole_id_its_first_characters_or_its_idempotency_key(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    keyed = start_workflow("it_admin_order", {"token": "s1", "amount": 1, "decline": False}, idempotency_key="cart-42")
    uuid_key = str(uuid.uuid4())
    other = start_workflow("it_admin_order", {"token": "s2", "amount": 1, "decline": False}, idempotency_key=uuid_key)
    plain = start_workflow("it_admin_order", {"token": "s3", "amount": 1, "decline": False})

    def search(term: str) -> list[str]:
        return listed(admin_client.get(CHANGELIST, {"q": term}))

    assert search(str(plain.pk)) == ids(plain)
    assert search(f"  {str(plain.pk).upper()} ") == ids(plain)
    assert search(plain.pk.hex) == ids(plain)
    assert search(str(plain.pk)[:8]) == ids(plain)
    assert search(str(plain.pk)[:13]) == ids(plain)
    assert search("cart-42") == ids(keyed)
    assert search("art-4") == ids(keyed)
    # A whole UUID matches an idempotency key that is one, too.
    assert search(uuid_key) == ids(other)
    assert search(str(uuid.uuid4())) == []
    assert search("no such run!") == []


def test_run_list_runs_the_same_queries_for_1_and_for_20_runs(admin_client: Client) -> None:
    now = timezone.now()
    parent = WorkflowRun.objects.create(workflow="it_admin_sync", status="running", started_at=now)

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(CHANGELIST)
        assert response.status_code == 200
        return [query["sql"] for query in captured.captured_queries]

    queries()  # caches filled by the first request (sessions, content types) stay out of the count
    with_one = queries()
    WorkflowRun.objects.bulk_create(
        WorkflowRun(
            workflow=("it_admin_order", "it_admin_import")[i % 2],
            status=("failed", "completed", "running")[i % 3],
            current_step="fulfil",
            current_attempt=1 + i % 2,
            parent=parent if i % 2 else None,
            ref=f"child-{i}" if i % 2 else "",
            started_at=now,
            finished_at=now if i % 3 < 2 else None,
        )
        for i in range(19)
    )
    with_twenty = queries()
    assert len(listed(admin_client.get(CHANGELIST))) == 20
    assert len(with_twenty) == len(with_one)


# -- a run's page ----------------------------------------------------------------------------------


def test_run_page_shows_input_context_and_error_as_indented_escaped_json(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    failed = order(embedded, "json-1", decline=True)
    response = admin_client.get(change_url(failed))
    assert response.status_code == 200
    assert json_field(response, "input_json") == '{\n  "token": "json-1",\n  "amount": 250,\n  "decline": true\n}'
    error = json_field(response, "error_json")
    assert json.loads(error) == {
        "step": "charge_card",
        "parallel": "fulfil",
        "reason": {"code": "card_declined", "amount": 250},
    }
    assert '\n  "step": "charge_card",\n' in error
    assert '\n  "reason": {\n    "code": "card_declined",\n    "amount": 250\n  }' in error

    completed = order(embedded, "json-2")
    page = admin_client.get(change_url(completed)).content.decode()
    # The branch's output holds markup: shown as text, never as HTML.
    assert "&quot;receipt&quot;: &quot;&lt;b&gt;json-2&lt;/b&gt;&quot;" in page
    assert "<b>json-2</b>" not in page
    context = json.loads(json_field(admin_client.get(change_url(completed)), "context_json"))
    assert context["__results__"]["send_receipt"] == ["ok", {"receipt": "<b>json-2</b>"}]
    assert context["shipped"] is True


def test_run_page_shows_the_traceback_of_a_raised_exception(embedded: EmbeddedQueue, admin_client: Client) -> None:
    parent = sync(embedded, "traceback")
    child = parent.children.get()
    response = admin_client.get(change_url(child))
    # At the top of the page: type and message, and the traceback folded as plain text.
    assert texts(response.content, "durable-error-headline") == ["RuntimeError feed 'prices' is unreachable"]
    (block,) = elements(response.content, "durable-traceback", within="durable-traceback-details")
    traceback = str(block["text"])
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert traceback.endswith("RuntimeError: feed 'prices' is unreachable\n")
    assert "RuntimeError: feed &#x27;prices&#x27; is unreachable" in response.content.decode()
    # In the error's JSON the traceback gives way to the readable copy above.
    assert json.loads(json_field(response, "error_json")) == {
        "step": "import_rows",
        "reason": {"type": "RuntimeError", "message": "feed 'prices' is unreachable", "traceback": "(see Traceback)"},
    }
    assert texts(response.content, "field-result") == [
        '{"connected": "prices"}',
        "RuntimeError: feed 'prices' is unreachable",
    ]
    # The parent failed with its child's error, traceback included.
    parent_page = admin_client.get(change_url(parent))
    (block,) = elements(parent_page.content, "durable-traceback", within="durable-run-error")
    assert block["text"] == traceback
    assert json.loads(json_field(parent_page, "error_json"))["reason"]["reason"]["traceback"] == "(see Traceback)"


def test_run_page_lists_every_step_attempt_in_execution_order(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = order(embedded, "steps", decline=True)
    content = admin_client.get(change_url(run)).content
    assert texts(content, "field-step_link") == [
        "validate",
        "reserve_stock",
        "charge_card",
        "send_receipt",
        "charge_card",
    ]
    step_ids = StepResult.objects.filter(run=run).order_by("id").values_list("pk", flat=True)
    links = [link["href"] for link in elements(content, tag="a", within="field-step_link")]
    assert links == [reverse("admin:durable_django_stepresult_change", args=[pk]) for pk in step_ids]
    assert texts(content, "field-group_name") == ["", "fulfil", "fulfil", "fulfil", "fulfil"]
    assert texts(content, "field-attempt") == ["1", "1", "1", "1", "2"]
    assert texts(content, "durable-badge", within="field-status_badge")[-5:] == [
        "Completed",
        "Completed",
        "Failed",
        "Completed",
        "Failed",
    ]
    assert texts(content, "field-result") == [
        '{"valid": true}',
        '{"reserved": 25}',
        '{"code": "card_declined", "amount": 250}',
        '{"receipt": "<b>steps</b>"}',
        '{"code": "card_declined", "amount": 250}',
    ]


def test_run_page_lists_each_group_with_the_outcome_of_every_branch(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = order(embedded, "branches", decline=True)
    content = admin_client.get(change_url(run)).content
    assert texts(content, "field-counts") == ["Branches: 3 in all, 1 failed, 0 without a final result"]
    rows = list(
        zip(
            texts(content, "branch-step"),
            texts(content, "branch-attempt"),
            texts(content, "branch-status"),
            texts(content, "branch-outcome"),
            strict=True,
        )
    )
    assert rows == [
        ("reserve_stock", "1", "Completed", '{"reserved": 25}'),
        ("charge_card", "1", "Failed", '{"code": "card_declined", "amount": 250}'),
        ("send_receipt", "1", "Completed", '{"receipt": "<b>branches</b>"}'),
        ("charge_card", "2", "Failed", '{"code": "card_declined", "amount": 250}'),
    ]
    branch_ids = StepResult.objects.filter(run=run, group__isnull=False).order_by("id").values_list("pk", flat=True)
    links = [link["href"] for link in elements(content, tag="a", within="branch-step")]
    assert links == [reverse("admin:durable_django_stepresult_change", args=[pk]) for pk in branch_ids]


def test_run_page_draws_one_timeline_bar_per_attempt_with_its_status(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = order(embedded, "timeline", decline=True)
    content = admin_client.get(change_url(run)).content
    (timeline,) = elements(content, "durable-timeline")
    assert timeline["data-bars"] == "5"
    bars = [(bar["data-step"], bar["data-attempt"], bar["data-status"]) for bar in elements(content, "dt-bar")]
    assert bars == [
        ("validate", "1", "completed"),
        ("reserve_stock", "1", "completed"),
        ("charge_card", "1", "failed"),
        ("charge_card", "2", "failed"),
        ("send_receipt", "1", "completed"),
    ]
    fills = [rect["fill"] for rect in elements(content, tag="rect", within="dt-bar")]
    assert fills == ["#15803d", "#15803d", "#b91c1c", "#b91c1c", "#15803d"]
    (header,) = elements(content, "dt-group-header")
    assert (header["data-group"], header["data-status"]) == ("fulfil", "failed")
    # Branches are stacked rows inside their group: one row per branch.
    header_label, *branch_labels = texts(content, "dt-label", within="dt-group")
    assert header_label.startswith("fulfil failed 3 branches, 1 failed · ")
    assert header_label.endswith((" ms", " s"))
    assert branch_labels == ["reserve_stock", "charge_card 2 attempts", "send_receipt"]
    assert [text.split(" ")[0] for text in texts(content, "dt-bar-label", within="dt-group")][1:3] == ["#1", "#2"]
    assert len(elements(content, "dt-axis")) == 1


def test_timeline_of_a_running_run_shows_running_and_pending_attempts(admin_client: Client) -> None:
    now = timezone.now()
    run = WorkflowRun.objects.create(
        workflow="it_admin_order",
        status="running",
        current_step="fulfil",
        started_at=now - timezone.timedelta(seconds=4),
    )
    group = ParallelGroup.objects.create(
        run=run, name="fulfil", on_error="fail_fast", branch_count=2, pending_count=2, created_at=now
    )
    StepResult.objects.create(run=run, step="reserve_stock", group=group, status="running", started_at=now)
    StepResult.objects.create(run=run, step="charge_card", group=group, status="pending")
    content = admin_client.get(change_url(run)).content
    bars = [(bar["data-step"], bar["data-status"], bar["class"]) for bar in elements(content, "dt-bar")]
    assert bars == [
        ("reserve_stock", "running", "dt-bar dt-running"),
        ("charge_card", "pending", "dt-bar dt-waiting"),
    ]
    assert texts(content, "dt-bar-label")[1] == "pending"
    assert texts(content, "dt-label", within="dt-axis")[0].endswith(" so far")


def test_run_page_links_the_parent_and_its_children(embedded: EmbeddedQueue, admin_client: Client) -> None:
    parent = sync(embedded, "links")
    child = parent.children.get()
    parent_page = admin_client.get(change_url(parent)).content
    assert [link["href"] for link in elements(parent_page, tag="a", within="field-children_links")] == [
        change_url(child)
    ]
    assert texts(parent_page, "durable-children") == [
        f"{str(child.pk)[:8]} it_admin_import Failed called by sync_prices as prices"
    ]
    child_page = admin_client.get(change_url(child)).content
    assert [link["href"] for link in elements(child_page, tag="a", within="field-parent_link")] == [change_url(parent)]
    assert texts(child_page, "field-children_links") == ["Child runs: -"]


def test_run_page_is_read_only(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = order(embedded, "readonly")
    page = admin_client.get(change_url(run)).content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert 'class="closelink"' in page
    assert elements(page, tag="input", within="field-context_json") == []
    before = WorkflowRun.objects.values().get(pk=run.pk)
    response = admin_client.post(change_url(run), {"status": "failed", "context": "{}"})
    assert response.status_code == 405
    assert WorkflowRun.objects.values().get(pk=run.pk) == before
    assert admin_client.get(reverse("admin:durable_django_workflowrun_add")).status_code == 403
    step_url = reverse("admin:durable_django_stepresult_change", args=[StepResult.objects.filter(run=run).first().pk])
    assert 'name="_save"' not in admin_client.get(step_url).content.decode()
    assert admin_client.post(step_url, {"status": "failed"}).status_code == 403


# -- retry and cancel: actions -------------------------------------------------------------------


def test_retry_action_retries_the_failed_runs_of_the_selection_and_counts_those_left_alone(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    failed = order(embedded, "retry-action-1", decline=True)
    completed = order(embedded, "retry-action-2")
    response = admin_client.post(
        CHANGELIST, {"action": "retry_selected", "_selected_action": ids(failed, completed)}, follow=True
    )
    assert messages_of(response) == [
        ("success", "Retried 1 of the 2 selected runs."),
        ("warning", "Left 1 alone: only a failed run (whose compensations have not run) can be retried."),
    ]
    failed.refresh_from_db()
    completed.refresh_from_db()
    assert (failed.status, completed.status) == ("running", "completed")
    response = admin_client.post(
        CHANGELIST, {"action": "retry_selected", "_selected_action": ids(completed)}, follow=True
    )
    assert messages_of(response) == [
        ("warning", "Retried 0 of the 1 selected runs."),
        ("warning", "Left 1 alone: only a failed run (whose compensations have not run) can be retried."),
    ]


def test_cancel_action_cancels_the_unfinished_runs_of_the_selection_and_counts_those_left_alone(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    completed = order(embedded, "cancel-action-1")
    pending = start_workflow("it_admin_order", {"token": "cancel-action-2", "amount": 5, "decline": False})
    response = admin_client.post(
        CHANGELIST, {"action": "cancel_selected", "_selected_action": ids(pending, completed)}, follow=True
    )
    assert messages_of(response) == [
        ("success", "Cancelled 1 of the 2 selected runs."),
        ("warning", "Left 1 alone: only a pending, running or waiting run can be cancelled."),
    ]
    assert WorkflowRun.objects.get(pk=pending.pk).status == "cancelled"
    assert WorkflowRun.objects.get(pk=completed.pk).status == "completed"


def test_actions_are_offered_only_with_the_change_permission(embedded: EmbeddedQueue, django_user_model: Any) -> None:
    failed = order(embedded, "perm-action", decline=True)
    viewer = staff_client(django_user_model, "view_workflowrun")
    operator = staff_client(django_user_model, "view_workflowrun", "change_workflowrun")

    def offered(client: Client) -> list[str]:
        return [option["value"] for option in elements(client.get(CHANGELIST).content, tag="option", within="actions")]

    assert offered(viewer) == []
    assert offered(operator) == ["", "retry_selected", "cancel_selected"]
    # Posting the action anyway does nothing.
    response = viewer.post(CHANGELIST, {"action": "retry_selected", "_selected_action": ids(failed)}, follow=True)
    assert response.status_code == 200
    assert WorkflowRun.objects.get(pk=failed.pk).status == "failed"


# -- retry and cancel: buttons on the run's page ----------------------------------------------------


def test_retry_button_retries_a_failed_run_and_the_timeline_shows_the_new_attempt(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = order(embedded, "retry-button", decline=True)
    page = admin_client.get(change_url(run)).content
    assert [form["action"] for form in elements(page, "durable-operation")] == [button_url(run, "retry")]

    fix("retry-button")
    response = admin_client.post(button_url(run, "retry"))
    assert (response.status_code, response["Location"]) == (302, change_url(run))
    response = admin_client.get(response["Location"])
    assert messages_of(response) == [("success", f"Retried it_admin_order run {run.pk}: it is running again.")]
    assert [form["action"] for form in elements(response.content, "durable-operation")] == [button_url(run, "cancel")]
    # The run's admin history says who retried it.
    assert list(LogEntry.objects.filter(object_id=str(run.pk)).values_list("user__username", "change_message")) == [
        ("admin", "Retried.")
    ]

    embedded.run_until_idle(timeout=30)
    content = admin_client.get(change_url(run)).content
    assert texts(content, "durable-badge", within="field-status_badge")[0] == "Completed"
    bars = [(bar["data-step"], bar["data-attempt"], bar["data-status"]) for bar in elements(content, "dt-bar")]
    assert bars == [
        ("validate", "1", "completed"),
        ("reserve_stock", "1", "completed"),
        ("charge_card", "1", "failed"),
        ("charge_card", "2", "failed"),
        ("charge_card", "3", "completed"),
        ("send_receipt", "1", "completed"),
        ("ship", "1", "completed"),
    ]
    history = json.loads(json_field(admin_client.get(change_url(run)), "error_history_json"))
    assert [entry["error"] for entry in history] == [
        {"step": "charge_card", "parallel": "fulfil", "reason": {"code": "card_declined", "amount": 250}}
    ]


def test_a_refused_button_says_why(embedded: EmbeddedQueue, admin_client: Client) -> None:
    completed = order(embedded, "refused-button")
    assert elements(admin_client.get(change_url(completed)).content, "durable-operation") == []
    reason = refusal(retry_run, completed)
    response = admin_client.post(button_url(completed, "retry"), follow=True)
    assert messages_of(response) == [("warning", f"Did not retry it_admin_order run {completed.pk}: {reason}")]
    reason = refusal(cancel_run, completed)
    response = admin_client.post(button_url(completed, "cancel"), follow=True)
    assert messages_of(response) == [("warning", f"Did not cancel it_admin_order run {completed.pk}: {reason}")]


def test_cancel_button_cancels_a_pending_run(embedded: EmbeddedQueue, admin_client: Client) -> None:
    pending = start_workflow("it_admin_order", {"token": "cancel-button", "amount": 5, "decline": False})
    page = admin_client.get(change_url(pending)).content
    assert [form["action"] for form in elements(page, "durable-operation")] == [button_url(pending, "cancel")]
    response = admin_client.post(button_url(pending, "cancel"), follow=True)
    assert messages_of(response) == [("success", f"Cancelled it_admin_order run {pending.pk}.")]
    assert WorkflowRun.objects.get(pk=pending.pk).status == "cancelled"


def test_buttons_accept_only_post_and_known_runs(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = order(embedded, "button-methods", decline=True)
    assert admin_client.get(button_url(run, "retry")).status_code == 405
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"
    unknown = reverse("admin:durable_django_workflowrun_retry", args=[uuid.uuid4()])
    assert admin_client.post(unknown).status_code == 404
    assert admin_client.post(reverse("admin:durable_django_workflowrun_cancel", args=["not-a-uuid"])).status_code == 404


def test_buttons_need_the_change_permission(embedded: EmbeddedQueue, django_user_model: Any) -> None:
    run = order(embedded, "perm-button", decline=True)
    viewer = staff_client(django_user_model, "view_workflowrun")
    page = viewer.get(change_url(run))
    assert page.status_code == 200
    assert elements(page.content, "durable-operation") == []
    assert viewer.post(button_url(run, "retry")).status_code == 403
    assert viewer.post(button_url(run, "cancel")).status_code == 403
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"
    # The steps and groups of a run are part of what a viewer of the run sees.
    assert texts(page.content, "field-step_link") == [
        "validate",
        "reserve_stock",
        "charge_card",
        "send_receipt",
        "charge_card",
    ]

    operator = staff_client(django_user_model, "change_workflowrun")
    response = operator.post(button_url(run, "retry"), follow=True)
    assert messages_of(response) == [("success", f"Retried it_admin_order run {run.pk}: it is running again.")]


# -- deleting --------------------------------------------------------------------------------------


def test_a_finished_run_can_be_deleted_with_its_steps_and_groups(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = order(embedded, "delete", decline=True)
    delete_url = reverse("admin:durable_django_workflowrun_delete", args=[run.pk])
    confirmation = admin_client.get(delete_url)
    assert confirmation.status_code == 200
    assert not confirmation.context["perms_lacking"]
    response = admin_client.post(delete_url, {"post": "yes"})
    assert response.status_code == 302
    assert not WorkflowRun.objects.filter(pk=run.pk).exists()
    assert (StepResult.objects.filter(run_id=run.pk).count(), ParallelGroup.objects.filter(run_id=run.pk).count()) == (
        0,
        0,
    )


# -- step results and groups on their own ----------------------------------------------------------


def test_step_results_and_groups_are_listed_and_searchable_by_run_id(
    embedded: EmbeddedQueue, admin_client: Client
) -> None:
    run = order(embedded, "rows-1", decline=True)
    order(embedded, "rows-2")
    steps = admin_client.get(reverse("admin:durable_django_stepresult_changelist"), {"q": str(run.pk)})
    assert texts(steps.content, "field-step") == [
        "validate",
        "reserve_stock",
        "charge_card",
        "send_receipt",
        "charge_card",
    ]
    groups = admin_client.get(reverse("admin:durable_django_parallelgroup_changelist"), {"q": str(run.pk)})
    assert texts(groups.content, "field-name") == ["fulfil"]
    group = ParallelGroup.objects.get(run=run)
    page = admin_client.get(reverse("admin:durable_django_parallelgroup_change", args=[group.pk]))
    assert texts(page.content, "branch-step") == ["reserve_stock", "charge_card", "send_receipt", "charge_card"]
    assert 'name="_save"' not in page.content.decode()
