"""The query parameters of the lists: unknown ones refused, ``page_size`` bounded, ``ordering`` whitelisted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from durable_django.models import ParallelGroup, StepResult, Wait, WorkflowRun

from .conftest import client_for, url

pytestmark = pytest.mark.django_db

T0 = datetime.fromisoformat("2026-01-01T12:00:00+00:00")


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ids(response: Any) -> list[Any]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


@pytest.fixture
def runs() -> dict[str, WorkflowRun]:
    """Three runs created a minute apart: ``a`` first. ``b`` has not started, ``c`` has not finished."""
    return {
        "a": WorkflowRun.objects.create(
            workflow="payments", status="completed", created_at=at(0), started_at=at(1), finished_at=at(9)
        ),
        "b": WorkflowRun.objects.create(workflow="orders", status="pending", created_at=at(1)),
        "c": WorkflowRun.objects.create(workflow="shipping", status="running", created_at=at(2), started_at=at(3)),
    }


def run_ids(runs: dict[str, WorkflowRun], names: str) -> list[str]:
    return [str(runs[name].pk) for name in names]


# -- unknown parameters ---------------------------------------------------------------------------

ACCEPTED = {
    "run-list": "workflow, status, parent, detached, created_before, created_after, ordering, page, page_size, format",
    "step-list": "run, status, step, group, kind, item_index, ordering, page, page_size, format",
    "group-list": "run, status, kind, ordering, page, page_size, format",
    "wait-list": "run, status, kind, name, input_kind, ordering, page, page_size, format",
    "workflow-list": "page, page_size, format",
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_an_unknown_parameter_is_a_400_naming_it_and_listing_the_known_ones(api: APIClient, name: str) -> None:
    response = api.get(url(name), {"colour": "red"})
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": f"Unknown query parameter(s): colour. This list accepts: {ACCEPTED[name]}.",
            "unknown_parameters": ["colour"],
        },
    )


def test_a_misspelled_filter_no_longer_returns_the_whole_list(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    response = api.get(url("run-list"), {"stauts": "failed", "workflow": "orders", "Page": ""})
    assert (response.status_code, response.json()["unknown_parameters"]) == (400, ["Page", "stauts"])
    assert response.json()["detail"].startswith("Unknown query parameter(s): Page, stauts. ")


def test_ordering_is_an_unknown_parameter_of_the_workflows(api: APIClient) -> None:
    response = api.get(url("workflow-list"), {"ordering": "name"})
    assert (response.status_code, response.json()["unknown_parameters"]) == (400, ["ordering"])


def test_the_known_parameters_are_accepted_together(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    params = {"workflow": "orders", "status": "", "parent": "", "ordering": "-status", "page": 1, "page_size": 5}
    assert ids(api.get(url("run-list"), {**params, "format": "json"})) == run_ids(runs, "b")


@override_settings(REST_FRAMEWORK={"URL_FORMAT_OVERRIDE": "as"})
def test_the_format_parameter_is_the_one_rest_framework_names(api: APIClient) -> None:
    assert api.get(url("workflow-list"), {"as": "json"}).status_code == 200
    response = api.get(url("workflow-list"), {"format": "json"})
    assert (response.status_code, response.json()["unknown_parameters"]) == (400, ["format"])


def test_parameters_are_checked_after_the_permissions(staff_user: User) -> None:
    response = client_for(staff_user).get(url("run-list"), {"colour": "red"})
    assert response.status_code == 403


def test_unknown_parameters_of_a_detail_are_not_checked(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    # A detail reads no parameter: a client that sends its list's filters along still gets the row.
    assert api.get(url("run-detail", runs["a"].pk), {"status": "failed"}).json()["id"] == str(runs["a"].pk)


# -- page_size ------------------------------------------------------------------------------------


def test_page_size_sizes_the_page_and_its_links_keep_it(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    first = api.get(url("run-list"), {"page_size": 2})
    assert (ids(first), first.json()["count"]) == (run_ids(runs, "cb"), 3)
    assert first.json()["next"] == "http://testserver" + url("run-list") + "?page=2&page_size=2"
    second = api.get(url("run-list"), {"page_size": 2, "page": 2})
    assert (ids(second), second.json()["next"]) == (run_ids(runs, "a"), None)


@override_settings(DURABLE={"API_PAGE_SIZE": 1})
def test_without_page_size_the_page_is_the_api_page_size(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    assert ids(api.get(url("run-list"))) == run_ids(runs, "c")
    assert ids(api.get(url("run-list"), {"page_size": ""})) == run_ids(runs, "c")


@override_settings(DURABLE={"API_PAGE_SIZE": 1, "API_MAX_PAGE_SIZE": 3})
def test_page_size_may_be_the_maximum_page_size(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    assert ids(api.get(url("run-list"), {"page_size": 3})) == run_ids(runs, "cba")
    assert len(api.get(url("workflow-list"), {"page_size": 3}).json()["results"]) == 3


@pytest.mark.parametrize("size", ["4", "0", "-1", "2.5", "two", " 2", "+2", "9" * 5000])
@override_settings(DURABLE={"API_MAX_PAGE_SIZE": 3})
def test_a_page_size_over_the_maximum_or_not_a_positive_integer_is_a_400_naming_it(api: APIClient, size: str) -> None:
    expected = {"page_size": ['Must be a whole number from 1 to 3 (DURABLE["API_MAX_PAGE_SIZE"]).']}
    for name in ("run-list", "workflow-list"):
        response = api.get(url(name), {"page_size": size})
        assert (response.status_code, response.json()) == (400, expected)


def test_the_default_maximum_page_size_is_1000(api: APIClient) -> None:
    assert api.get(url("step-list"), {"page_size": 1000}).status_code == 200
    response = api.get(url("step-list"), {"page_size": 1001})
    assert (response.status_code, response.json()) == (
        400,
        {"page_size": ['Must be a whole number from 1 to 1000 (DURABLE["API_MAX_PAGE_SIZE"]).']},
    )


def test_every_invalid_parameter_is_named_in_one_400(api: APIClient) -> None:
    response = api.get(url("run-list"), {"status": "done", "ordering": "colour", "page_size": "0"})
    assert response.status_code == 400
    assert sorted(response.json()) == ["ordering", "page_size", "status"]


# -- ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ordering", "order"),
    [
        ("created_at", "abc"),
        ("-created_at", "cba"),
        ("workflow", "bac"),
        ("-workflow", "cab"),
        ("status", "abc"),  # completed, pending, running
        ("-status", "cba"),
        # b has not started and c has not finished: runs without the value come last both ways.
        ("started_at", "acb"),
        ("-started_at", "cab"),
        ("finished_at", "acb"),  # b and c tie: newest first, the default order
        ("-finished_at", "acb"),
    ],
)
def test_runs_are_ordered_by_a_field_in_both_directions(
    api: APIClient, runs: dict[str, WorkflowRun], ordering: str, order: str
) -> None:
    assert ids(api.get(url("run-list"), {"ordering": ordering})) == run_ids(runs, order)


def test_ordering_takes_several_fields_and_keeps_filters_and_pages(
    api: APIClient, runs: dict[str, WorkflowRun]
) -> None:
    runs["c"].status = "completed"
    runs["c"].save(update_fields=["status"])
    assert ids(api.get(url("run-list"), {"ordering": "status, -workflow"})) == run_ids(runs, "cab")
    assert ids(api.get(url("run-list"), {"ordering": "status,workflow"})) == run_ids(runs, "acb")
    assert ids(api.get(url("run-list"), {"ordering": "workflow", "status": "completed"})) == run_ids(runs, "ac")
    second = api.get(url("run-list"), {"ordering": "workflow", "page_size": 1, "page": 2})
    assert (ids(second), second.json()["next"]) == (
        run_ids(runs, "a"),
        "http://testserver" + url("run-list") + "?ordering=workflow&page=3&page_size=1",
    )


def test_an_empty_ordering_keeps_the_default_order(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    assert ids(api.get(url("run-list"), {"ordering": ""})) == run_ids(runs, "cba")


@pytest.mark.parametrize(
    ("ordering", "bad"),
    [("colour", ["colour"]), ("-id", ["-id"]), ("workflow,--status,input", ["--status", "input"])],
)
def test_a_field_off_the_whitelist_is_a_400_naming_ordering_and_the_allowed_values(
    api: APIClient, ordering: str, bad: list[str]
) -> None:
    allowed = (
        "created_at, -created_at, started_at, -started_at, finished_at, -finished_at, status, -status, "
        "workflow, -workflow"
    )
    response = api.get(url("run-list"), {"ordering": ordering})
    assert (response.status_code, response.json()) == (
        400,
        {"ordering": [f"{term!r} is not a field to order by; use one of {allowed}." for term in bad]},
    )


def test_steps_groups_and_waits_are_ordered_by_their_fields(api: APIClient, runs: dict[str, WorkflowRun]) -> None:
    run = runs["a"]
    first = StepResult.objects.create(run=run, step="charge", attempt=2, created_at=at(0), finished_at=at(5))
    second = StepResult.objects.create(run=run, step="reserve", attempt=1, created_at=at(1))
    third = StepResult.objects.create(run=run, step="charge", attempt=3, created_at=at(2), finished_at=at(4))
    assert ids(api.get(url("step-list"), {"ordering": "attempt"})) == [second.pk, first.pk, third.pk]
    assert ids(api.get(url("step-list"), {"ordering": "-attempt"})) == [third.pk, first.pk, second.pk]
    assert ids(api.get(url("step-list"), {"ordering": "-id"})) == [third.pk, second.pk, first.pk]
    assert ids(api.get(url("step-list"), {"ordering": "-finished_at"})) == [first.pk, third.pk, second.pk]
    assert ids(api.get(url("step-list"), {"ordering": "step,-attempt"})) == [third.pk, first.pk, second.pk]

    pay = ParallelGroup.objects.create(run=run, name="pay", on_error="fail_fast", created_at=at(0))
    ask = ParallelGroup.objects.create(run=run, name="ask", on_error="fail_fast", created_at=at(1))
    assert ids(api.get(url("group-list"), {"ordering": "name"})) == [ask.pk, pay.pk]
    assert ids(api.get(url("group-list"), {"ordering": "-name"})) == [pay.pk, ask.pk]

    soon = Wait.objects.create(run=run, step_result=first, kind="sleep", name="", due_at=at(10), created_at=at(0))
    later = Wait.objects.create(run=run, step_result=second, kind="sleep", name="", due_at=at(20), created_at=at(1))
    never = Wait.objects.create(run=run, step_result=third, kind="event", name="paid", created_at=at(2))
    assert ids(api.get(url("wait-list"), {"ordering": "due_at"})) == [soon.pk, later.pk, never.pk]
    assert ids(api.get(url("wait-list"), {"ordering": "-due_at"})) == [later.pk, soon.pk, never.pk]
    response = api.get(url("wait-list"), {"ordering": "payload"})
    assert (response.status_code, list(response.json())) == (400, ["ordering"])
