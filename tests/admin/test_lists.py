"""The admin's lists answer a filter or search they cannot apply with a message, never a server error."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.views.main import ChangeList
from django.db import OperationalError, connection
from django.test import Client
from django.urls import reverse

from durable_django.models import Event, ParallelGroup, StepResult, Wait, WorkflowRun
from tests.admin.support import messages_of

pytestmark = pytest.mark.django_db

NUL = "holds a NUL character (%00), which PostgreSQL cannot compare with text."
TOO_LARGE = "a number in it is too large."
BAD_REGEX = (
    "the database refused it (invalid regular expression: parentheses () not balanced)."
    if connection.vendor == "postgresql"
    else "the database refused it (user-defined function raised exception)."
)

#: Each list, a text field of its model to filter by, and the message of a bad integer id.
LISTS = {
    "workflowrun": ("workflow", "“not-a-uuid” is not a valid UUID.", "“x” is not a valid UUID."),
    "stepresult": (
        "step",
        "Field 'id' expected a number but got 'not-a-uuid'.",
        "Field 'id' expected a number but got 'x'.",
    ),
    "parallelgroup": (
        "name",
        "Field 'id' expected a number but got 'not-a-uuid'.",
        "Field 'id' expected a number but got 'x'.",
    ),
    "wait": ("name", "Field 'id' expected a number but got 'not-a-uuid'.", "Field 'id' expected a number but got 'x'."),
    "event": (
        "name",
        "Field 'id' expected a number but got 'not-a-uuid'.",
        "Field 'id' expected a number but got 'x'.",
    ),
}
PLURALS = {
    "workflowrun": "workflow runs",
    "stepresult": "step results",
    "parallelgroup": "parallel groups",
    "wait": "waits",
    "event": "events",
}


def changelist(model: str) -> str:
    return reverse(f"admin:durable_django_{model}_changelist")


@pytest.fixture
def rows() -> None:
    """One row in every list, with text in each field filtered by a regular expression below."""
    run = WorkflowRun.objects.create(workflow="orders", status="waiting", idempotency_key="cart-1")
    group = ParallelGroup.objects.create(run=run, name="fulfil", on_error="fail_fast")
    step = StepResult.objects.create(run=run, step="charge", group=group)
    Wait.objects.create(run=run, step_result=step, kind="event", name="paid")
    Event.objects.create(run=run, name="shipped")


def bad_filters(model: str) -> list[tuple[str, str, str]]:
    """(query string, the filter as the message shows it, the reason) of the filters that cannot be applied."""
    field, bad_pk, bad_in = LISTS[model]
    regex_field = "idempotency_key" if model == "workflowrun" else field
    return [
        (f"{field}=%00", f"{field}=%00", f"{field} {NUL}"),
        ("created_at__year=99999999999", "created_at__year=99999999999", TOO_LARGE),
        (f"{regex_field}__regex=(", f"{regex_field}__regex=(", BAD_REGEX),
        ("pk=not-a-uuid", "pk=not-a-uuid", bad_pk),
        ("id__in=x", "id__in=x", bad_in),
    ]


CASES = [(model, *case) for model in LISTS for case in bad_filters(model)]


@pytest.mark.usefixtures("rows")
@pytest.mark.parametrize(("model", "query", "shown", "reason"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_filter_that_cannot_be_applied_leads_to_the_unfiltered_list_with_a_message(
    admin_client: Client, model: str, query: str, shown: str, reason: str
) -> None:
    url = changelist(model)
    response = admin_client.get(f"{url}?{query}")
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    page = admin_client.get(response["Location"])
    assert page.status_code == 200
    assert messages_of(page) == [
        ("error", f"Could not filter the list by {shown}: {reason} All {PLURALS[model]} are shown instead.")
    ]
    assert page.context["cl"].result_count == 1


@pytest.mark.usefixtures("rows")
@pytest.mark.parametrize("model", list(LISTS))
def test_a_nul_in_the_search_box_is_refused_by_the_search_form_and_the_list_shown_unsearched(
    admin_client: Client, model: str
) -> None:
    response = admin_client.get(changelist(model), {"q": "\x00"})
    assert response.status_code == 200
    assert messages_of(response) == [("error", "Null characters are not allowed.")]
    assert response.context["cl"].result_count == 1


@pytest.mark.usefixtures("rows")
def test_the_run_list_names_every_filter_given_and_the_date_drill_down_says_what_is_wrong(
    admin_client: Client,
) -> None:
    url = changelist("workflowrun")
    response = admin_client.get(url, {"created_at__year": "2026", "created_at__month": "13"}, follow=True)
    assert response.redirect_chain == [(f"{url}?e=1", 302)]
    assert messages_of(response) == [
        (
            "error",
            "Could not filter the list by created_at__year=2026, created_at__month=13: month must be in 1..12. "
            "All workflow runs are shown instead.",
        )
    ]
    response = admin_client.get(url, {"created_at__year": "x"}, follow=True)
    assert messages_of(response) == [
        (
            "error",
            "Could not filter the list by created_at__year=x: it is not a whole number. All workflow runs are shown instead.",
        )
    ]


@pytest.mark.usefixtures("rows")
def test_a_bad_filter_with_the_error_flag_already_set_gets_djangos_database_error_page(admin_client: Client) -> None:
    response = admin_client.get(f"{changelist('workflowrun')}?e=1&workflow=%00")
    assert response.status_code == 200
    assert [template.name for template in response.templates] == [
        "admin/invalid_setup.html",
        "admin/base_site.html",
        "admin/base.html",
    ]
    assert response.context["title"] == "Database error"


@pytest.mark.usefixtures("rows")
def test_good_filters_still_filter(admin_client: Client) -> None:
    response = admin_client.get(changelist("workflowrun"), {"idempotency_key__regex": "^cart-[0-9]$"})
    assert response.status_code == 200
    assert (messages_of(response), response.context["cl"].result_count) == ([], 1)
    response = admin_client.get(changelist("workflowrun"), {"idempotency_key__regex": "^nope"})
    assert (messages_of(response), response.context["cl"].result_count) == ([], 0)


def test_a_nul_in_the_inboxs_run_is_no_such_run(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:durable_django_wait_inbox"), {"run": "\x00"})
    assert response.status_code == 404


def test_any_other_database_error_of_an_unfiltered_list_is_not_hidden(admin_client: Client, monkeypatch: Any) -> None:
    def broken(self: Any, request: Any) -> None:
        raise OperationalError("the server closed the connection")

    monkeypatch.setattr(ChangeList, "get_results", broken)
    with pytest.raises(OperationalError):
        admin_client.get(changelist("workflowrun"))
