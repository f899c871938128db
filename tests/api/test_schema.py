"""The OpenAPI schema of the API, and the API fuzzed from it with schemathesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone
from drf_spectacular.validation import validate_schema
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from durable_django import ok, step
from durable_django.models import ParallelGroup, Schedule, StepResult, Wait, WorkflowRun
from tests.engine_support import Definer

from .conftest import client_for, grant, url

pytestmark = pytest.mark.django_db

PATHS = {
    "/api/durable/runs/": ["get", "post"],
    "/api/durable/runs/{id}/": ["get"],
    "/api/durable/runs/{id}/retry/": ["post"],
    "/api/durable/runs/{id}/cancel/": ["post"],
    "/api/durable/runs/{id}/events/{event}/": ["post"],
    "/api/durable/runs/{id}/inputs/{name}/": ["post"],
    "/api/durable/runs/{id}/steps/": ["get"],
    "/api/durable/runs/retry/": ["post"],
    "/api/durable/runs/cancel/": ["post"],
    "/api/durable/runs/{id}/fork/": ["post"],
    "/api/durable/steps/": ["get"],
    "/api/durable/steps/{id}/": ["get"],
    "/api/durable/groups/": ["get"],
    "/api/durable/groups/{id}/": ["get"],
    "/api/durable/waits/": ["get"],
    "/api/durable/waits/{id}/": ["get"],
    "/api/durable/workflows/": ["get"],
    "/api/durable/workflows/{name}/": ["get"],
    "/api/durable/schedules/": ["get"],
    "/api/durable/schedules/{name}/": ["get"],
    "/api/durable/schedules/{name}/enable/": ["post"],
    "/api/durable/schedules/{name}/disable/": ["post"],
    "/api/durable/schedules/{name}/fire/": ["post"],
    "/api/durable/schedules/{name}/runs/": ["get"],
}


def fetch_schema(client: APIClient, **extra: Any) -> dict[str, Any]:
    response = client.get(url("schema"), **extra)
    assert response.status_code == 200
    return json.loads(response.content)


def test_schema_is_valid_openapi_3_json_listing_the_api_only(api: APIClient) -> None:
    response = api.get(url("schema"))
    assert response["Content-Type"] == "application/vnd.oai.openapi+json"
    schema = json.loads(response.content)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "durable_django API"
    assert {path: sorted(operations) for path, operations in schema["paths"].items()} == PATHS


def test_schema_is_served_as_yaml_on_request(api: APIClient) -> None:
    response = api.get(url("schema"), {"format": "yaml"})
    assert (response.status_code, response["Content-Type"]) == (200, "application/vnd.oai.openapi; charset=utf-8")
    assert response.content.startswith(b"openapi: 3.")


def test_schema_describes_retry_as_bodiless_and_cancel_with_its_optional_body(api: APIClient) -> None:
    schema = fetch_schema(api)
    paths = schema["paths"]
    assert "requestBody" not in paths["/api/durable/runs/{id}/retry/"]["post"]
    cancel = paths["/api/durable/runs/{id}/cancel/"]["post"]["requestBody"]
    assert cancel.get("required", False) is False
    assert cancel["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Cancel"}
    assert schema["components"]["schemas"]["Cancel"]["properties"]["compensate"]["type"] == "boolean"
    for action in ("retry", "cancel"):
        operation = paths[f"/api/durable/runs/{{id}}/{action}/"]["post"]
        assert sorted(operation["responses"]) == ["202", "400", "404", "409"]
        # A run's routes take an id prefix too: the id is a string, not a UUID.
        (run_id,) = [param for param in operation["parameters"] if param["name"] == "id"]
        assert run_id["schema"] == {"type": "string", "pattern": "^[0-9a-fA-F-]{8,36}$"}
        assert "8 hex characters" in run_id["description"]
        assert operation["responses"]["409"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Detail"
        }


def test_schema_describes_the_start_body_and_the_filters(api: APIClient) -> None:
    schema = fetch_schema(api)
    start = schema["paths"]["/api/durable/runs/"]["post"]
    assert sorted(start["responses"]) == ["200", "201", "400", "413"]
    body = schema["components"]["schemas"]["StartRun"]
    assert (sorted(body["properties"]), body["required"]) == (
        ["delay", "idempotency_key", "input", "run_at", "workflow"],
        ["workflow"],
    )
    assert body["properties"]["input"]["type"] == "object"
    parameters = schema["paths"]["/api/durable/runs/"]["get"]["parameters"]
    assert sorted(parameter["name"] for parameter in parameters) == [
        "created_after",
        "created_before",
        "detached",
        "ordering",
        "page",
        "page_size",
        "parent",
        "status",
        "workflow",
    ]
    steps = schema["paths"]["/api/durable/runs/{id}/steps/"]["get"]
    assert sorted(parameter["name"] for parameter in steps["parameters"]) == [
        "group",
        "id",
        "item_index",
        "kind",
        "page",
        "page_size",
        "status",
        "step",
    ]
    assert steps["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaginatedStepResultList"
    }
    # A step result's own detail has its logs; the lists do not.
    detail = schema["paths"]["/api/durable/steps/{id}/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert detail["schema"] == {"$ref": "#/components/schemas/StepResultDetail"}
    components = schema["components"]["schemas"]
    assert "logs" not in components["StepResult"]["properties"]
    logs = components["StepResultDetail"]["properties"]["logs"]
    assert (logs["type"], logs["items"]) == ("array", {"$ref": "#/components/schemas/LogRecord"})
    assert {name: value["type"] for name, value in components["LogRecord"]["properties"].items()} == {
        "at": "string",
        "level": "string",
        "logger": "string",
        "message": "string",
    }


def test_schema_describes_sending_an_event_and_answering_an_input(api: APIClient) -> None:
    schema = fetch_schema(api)
    events = schema["paths"]["/api/durable/runs/{id}/events/{event}/"]["post"]
    assert sorted(events["responses"]) == ["200", "400", "404", "409", "413"]
    assert events["requestBody"]["content"]["application/json"]["schema"] == {"description": "Any JSON value."}
    assert events["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventResult"
    }
    assert schema["components"]["schemas"]["EventResult"]["properties"]["result"]["enum"] == ["delivered", "buffered"]
    assert sorted(parameter["name"] for parameter in events["parameters"]) == ["event", "id"]

    inputs = schema["paths"]["/api/durable/runs/{id}/inputs/{name}/"]["post"]
    assert sorted(inputs["responses"]) == ["200", "400", "403", "404", "409", "413"]
    assert inputs["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "additionalProperties": {},
    }
    assert inputs["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunDetail"
    }
    assert sorted(parameter["name"] for parameter in inputs["parameters"]) == ["id", "name"]


def test_schema_describes_waits_and_their_filters(api: APIClient) -> None:
    schema = fetch_schema(api)
    parameters = schema["paths"]["/api/durable/waits/"]["get"]["parameters"]
    assert sorted(parameter["name"] for parameter in parameters) == [
        "input_kind",
        "kind",
        "name",
        "ordering",
        "page",
        "page_size",
        "run",
        "status",
    ]
    wait = schema["components"]["schemas"]["Wait"]["properties"]
    assert list(wait) == [
        "id",
        "run",
        "step",
        "group",
        "kind",
        "name",
        "events",
        "mode",
        "status",
        "due_at",
        "created_at",
        "resolved_at",
        "payload",
        "input_kind",
        "prompt",
        "spec",
        "permission",
        "resolved_by",
        "can_answer",
    ]
    assert wait["can_answer"]["type"] == "boolean"
    run_waits = {"type": "array", "items": {"$ref": "#/components/schemas/Wait"}, "readOnly": True}
    assert {key: schema["components"]["schemas"]["Run"]["properties"]["waits"][key] for key in run_waits} == run_waits
    detail_waits = schema["components"]["schemas"]["RunDetail"]["properties"]["waits"]
    assert (detail_waits["type"], detail_waits["items"]) == ("array", {"$ref": "#/components/schemas/Wait"})
    statuses = schema["paths"]["/api/durable/runs/"]["get"]["parameters"]
    [status] = [parameter for parameter in statuses if parameter["name"] == "status"]
    assert "waiting" in status["schema"]["enum"]


LIST_ORDERING = {
    "/api/durable/runs/": ["created_at", "started_at", "finished_at", "status", "workflow"],
    "/api/durable/steps/": ["id", "created_at", "started_at", "finished_at", "attempt", "step", "status"],
    "/api/durable/groups/": ["id", "created_at", "finished_at", "name", "status"],
    "/api/durable/waits/": ["id", "created_at", "due_at", "resolved_at", "kind", "name", "status"],
}


def parameter(schema: dict[str, Any], path: str, name: str) -> dict[str, Any] | None:
    found = [item for item in schema["paths"][path]["get"].get("parameters", []) if item["name"] == name]
    return found[0] if found else None


@pytest.mark.parametrize("path", [*LIST_ORDERING, "/api/durable/workflows/"])
@override_settings(DURABLE={"API_PAGE_SIZE": 20, "API_MAX_PAGE_SIZE": 200})
def test_schema_lists_page_size_with_its_bounds_on_every_list(api: APIClient, path: str) -> None:
    page_size = parameter(fetch_schema(api), path, "page_size")
    assert page_size == {
        "name": "page_size",
        "required": False,
        "in": "query",
        "description": "Number of results to return per page (default 20).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    }


@pytest.mark.parametrize(("path", "fields"), LIST_ORDERING.items())
def test_schema_lists_ordering_with_its_enum_on_the_lists_of_rows(api: APIClient, path: str, fields: list[str]) -> None:
    ordering = parameter(fetch_schema(api), path, "ordering")
    assert ordering is not None
    assert (ordering["in"], ordering["style"], ordering["explode"]) == ("query", "form", False)
    assert ordering["schema"] == {
        "type": "array",
        "items": {"type": "string", "enum": [term for field in fields for term in (field, f"-{field}")]},
    }


def test_schema_lists_no_ordering_for_workflows_nor_pagination_on_details(api: APIClient) -> None:
    schema = fetch_schema(api)
    assert parameter(schema, "/api/durable/workflows/", "ordering") is None
    assert [parameter(schema, "/api/durable/runs/{id}/", name) for name in ("page", "page_size", "ordering")] == [
        None,
        None,
        None,
    ]


def test_schema_needs_no_drf_spectacular_app_nor_rest_framework_settings(api: APIClient) -> None:
    assert "drf_spectacular" not in settings.INSTALLED_APPS
    assert not hasattr(settings, "REST_FRAMEWORK")
    assert not hasattr(settings, "SPECTACULAR_SETTINGS")
    validate_schema(fetch_schema(api))


@override_settings(REST_FRAMEWORK={"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"})
def test_schema_is_the_same_when_the_project_uses_drf_spectacular_everywhere(api: APIClient) -> None:
    configured = fetch_schema(api)
    with override_settings(REST_FRAMEWORK={}):
        assert fetch_schema(api) == configured


def test_schema_is_served_to_staff_only() -> None:
    response = APIClient().get(url("schema"))
    assert response.status_code == 401


def test_schema_is_served_with_the_permission_to_read_runs(staff_user: User) -> None:
    assert client_for(staff_user).get(url("schema")).status_code == 403
    assert client_for(grant(staff_user, "durable_django.view_workflowrun")).get(url("schema")).status_code == 200


# -- fuzzing -------------------------------------------------------------------------------------
#
# Every operation of the served schema, fuzzed by schemathesis with valid (positive) and invalid
# (negative) requests, sent through Django's WSGI application as a superuser. Half of the cases
# point at rows that exist and name a registered workflow, so that they reach the engine.
# The schema is loaded inside the test (it is served to staff only, so it needs the database);
# schemathesis' lazy ``from_fixture`` loader would do that, but it relies on a pytest internal
# (``Node._nodeid``) that pytest 9.2 removed, so each operation is driven through its strategy.


@pytest.fixture
def superuser_token(superuser: User) -> str:
    return Token.objects.create(user=superuser).key


@pytest.fixture
def django_wsgi_app() -> Iterator[WSGIHandler]:
    """Django's WSGI application, keeping the test's database connection (and transaction) open.

    Django closes connections at the end of each request; its test client stops that, and so do we.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def existing(define: Definer) -> dict[str, str]:
    """Path parameters and a workflow name that exist, for the cases that use them."""
    wf = define([step("only", lambda ctx: ok({"done": True}))])
    run = WorkflowRun.objects.create(workflow=wf.name, status="failed", error={"step": "only"})
    group = ParallelGroup.objects.create(run=run, name="block", on_error="fail_fast")
    row = StepResult.objects.create(run=run, step="only", status="failed", group=group)
    wait = Wait.objects.create(run=run, step_result=row, kind="input", name="approve", input_kind="approval")
    fired = Schedule.objects.create(name="fuzzed", workflow=wf.name, cron="0 7 * * 1", next_fire_at=timezone.now())
    return {
        "runs": str(run.pk),
        "steps": str(row.pk),
        "groups": str(group.pk),
        "waits": str(wait.pk),
        "workflows": wf.name,
        "schedules": fired.name,
    }


# A workflow's or a schedule's name is any string: no request to these operations is invalid by the schema.
NOTHING_INVALID = {
    ("GET", "/api/durable/workflows/{name}/"),
    ("GET", "/api/durable/schedules/{name}/"),
    ("POST", "/api/durable/schedules/{name}/enable/"),
    ("POST", "/api/durable/schedules/{name}/disable/"),
    ("POST", "/api/durable/schedules/{name}/fire/"),
}
CASES = [
    (method.upper(), path, mode)
    for path, methods in PATHS.items()
    for method in methods
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode == GenerationMode.NEGATIVE and (method.upper(), path) in NOTHING_INVALID)
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_fuzzed_requests_never_get_a_server_error(
    django_wsgi_app: WSGIHandler,
    superuser_token: str,
    existing: dict[str, str],
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    headers = {"Authorization": f"Token {superuser_token}"}
    schema = schemathesis.openapi.from_wsgi(url("schema"), django_wsgi_app, headers=headers)
    operation = schema[path][method]
    resource = path.split("/")[3]

    @hypothesis.given(case=operation.as_strategy(mode), use_existing=st.booleans())
    @hypothesis.settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def fuzz(case: Any, use_existing: bool) -> None:
        if use_existing and case.path_parameters:
            case.path_parameters = {**case.path_parameters, next(iter(case.path_parameters)): existing[resource]}
        if use_existing and path == "/api/durable/runs/" and isinstance(case.body, dict):
            case.body = {**case.body, "workflow": existing["workflows"]}
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    fuzz()
