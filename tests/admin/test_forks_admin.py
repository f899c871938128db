"""Forks in the admin: "Rerun from here" on a finished run's steps, its form, and the links both ways."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from durable_django import start_workflow
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.admin.support import change_url, elements, messages_of, order, texts

pytestmark = pytest.mark.django_db


def fork_url(run: WorkflowRun, step: str = "") -> str:
    url = reverse("admin:durable_django_workflowrun_fork", args=[run.pk])
    return f"{url}?step={step}" if step else url


def staff_client(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="durable_django", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def rerun_links(html: bytes) -> list[tuple[str, str]]:
    return [
        (" ".join(item["text"].split()), link["href"])
        for item, link in zip(
            elements(html, "durable-fork-step"),
            elements(html, "durable-rerun", within="durable-fork-step"),
            strict=True,
        )
    ]


def test_a_finished_run_offers_a_rerun_from_each_top_level_step(embedded: EmbeddedQueue, admin_client: Client) -> None:
    failed = order(embedded, "fork-page-1", decline=True)
    html = admin_client.get(change_url(failed)).content
    assert rerun_links(html) == [
        ("validate Rerun from here", fork_url(failed, "validate")),
        ("fulfil Rerun from here", fork_url(failed, "fulfil")),
        ("ship Rerun from here", fork_url(failed, "ship")),
    ]
    pending = start_workflow("it_admin_order", {"token": "fork-page-2", "amount": 5, "decline": False})
    assert rerun_links(admin_client.get(change_url(pending)).content) == []


def test_only_an_operator_is_offered_a_rerun(embedded: EmbeddedQueue, django_user_model: Any) -> None:
    failed = order(embedded, "fork-perm", decline=True)
    viewer = staff_client(django_user_model, "view_workflowrun")
    assert rerun_links(viewer.get(change_url(failed)).content) == []
    assert viewer.get(fork_url(failed, "fulfil")).status_code == 403
    assert viewer.post(fork_url(failed), {"from_step": "fulfil", "context": "{}"}).status_code == 403
    assert WorkflowRun.objects.count() == 1


def test_the_form_is_prefilled_with_the_context_before_the_step(embedded: EmbeddedQueue, admin_client: Client) -> None:
    failed = order(embedded, "fork-form", decline=True)
    response = admin_client.get(fork_url(failed, "fulfil"))
    assert response.status_code == 200
    (area,) = elements(response.content, tag="textarea")
    assert json.loads(area["text"]) == {"token": "fork-form", "amount": 250, "decline": True, "valid": True}
    (hidden,) = [field for field in elements(response.content, tag="input") if field.get("name") == "from_step"]
    assert (hidden["type"], hidden["value"]) == ("hidden", "fulfil")
    first = admin_client.get(fork_url(failed, "validate")).content
    assert json.loads(elements(first, tag="textarea")[0]["text"]) == {
        "token": "fork-form",
        "amount": 250,
        "decline": True,
    }


def test_submitting_the_form_starts_the_fork_and_links_both_runs(embedded: EmbeddedQueue, admin_client: Client) -> None:
    failed = order(embedded, "fork-submit", decline=True)
    corrected = {"token": "fork-submit", "amount": 250, "decline": False, "valid": True}
    response = admin_client.post(
        fork_url(failed), {"from_step": "fulfil", "context": json.dumps(corrected)}, follow=True
    )
    fork = WorkflowRun.objects.get(forked_from=failed)
    assert response.redirect_chain == [(change_url(fork), 302)]
    assert messages_of(response) == [("success", f"Started run {fork.pk} from step fulfil of run {failed.pk}.")]
    assert (fork.current_step, fork.context, fork.forked_from_step) == ("fulfil", corrected, "fulfil")
    embedded.run_until_idle(timeout=30)
    fork.refresh_from_db()
    assert fork.status == "completed"

    fork_page = admin_client.get(change_url(fork)).content
    assert texts(fork_page, "field-forked_from_link") == [f"Forked from: {str(failed.pk)[:8]} at fulfil"]
    original_page = admin_client.get(change_url(failed)).content
    assert texts(original_page, "durable-fork") == [f"{str(fork.pk)[:8]} Completed from fulfil"]
    failed.refresh_from_db()
    assert failed.status == "failed"


def test_a_bad_context_is_a_form_error_naming_the_field(embedded: EmbeddedQueue, admin_client: Client) -> None:
    failed = order(embedded, "fork-bad", decline=True)

    def errors(data: dict[str, str]) -> list[str]:
        response = admin_client.post(fork_url(failed), data)
        assert response.status_code == 200
        return texts(response.content, "errorlist")

    assert errors({"from_step": "fulfil", "context": "{not json"}) == [
        "Not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)."
    ]
    assert errors({"from_step": "fulfil", "context": "[1, 2]"}) == ["Must be a JSON object, got list."]
    assert errors({"from_step": "charge_card", "context": "{}"}) == [
        "Select a valid choice. charge_card is not one of the available choices."
    ]
    response = admin_client.post(fork_url(failed), {"from_step": "fulfil", "context": "[1]"})
    assert [e["classes"] for e in elements(response.content, "errors") if "form-row" in e["classes"]] == [
        {"form-row", "field-context", "errors"}
    ]
    assert WorkflowRun.objects.count() == 1


def test_an_unfinished_run_cannot_be_rerun(admin_client: Client) -> None:
    pending = start_workflow("it_admin_order", {"token": "fork-pending", "amount": 5, "decline": False})
    response = admin_client.get(fork_url(pending, "ship"), follow=True)
    assert response.redirect_chain == [(change_url(pending), 302)]
    assert messages_of(response) == [
        ("warning", "Cannot rerun this run: it is pending; only a completed or failed run can be forked.")
    ]


def test_the_rerun_link_of_a_step_with_an_underscore_opens_that_steps_form(
    embedded: EmbeddedQueue, admin_client: Client, define: Any
) -> None:
    from durable_django import error, ok, step

    wf = define([step("charge_card", lambda ctx: ok({"charged": True})), step("send_receipt", lambda ctx: error("x"))])
    failed = wf.start({"order": 1})
    embedded.run_until_idle(timeout=30)
    failed.refresh_from_db()
    assert failed.status == "failed"
    links = dict(rerun_links(admin_client.get(change_url(failed)).content))
    href = links["send_receipt Rerun from here"]
    assert href.endswith("?step=send_receipt")

    form = admin_client.get(href).content
    (hidden,) = [field for field in elements(form, tag="input") if field.get("name") == "from_step"]
    assert hidden["value"] == "send_receipt"
    assert json.loads(elements(form, tag="textarea")[0]["text"]) == {"order": 1, "charged": True}
