"""Bad requests are 4xx, never 500: malformed JSON, wrong types, text the database cannot store,
deep nesting and bodies over DURABLE["API_MAX_BODY_SIZE"]."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from durable_django import ok, step
from durable_django.api.serializers import MAX_INPUT_DEPTH
from durable_django.models import WorkflowRun
from tests.engine_support import Definer

from .conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def wf(define: Definer) -> Any:
    return define([step("only", lambda ctx: ok({"done": True}))])


def post_raw(api: APIClient, body: str | bytes, content_type: str = "application/json") -> Any:
    return api.post(url("run-list"), body, content_type=content_type)


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ... {}}}``: ``depth`` objects inside one another."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "body",
    ['{"workflow": ', "{'workflow': 'x'}", '{"workflow": "x"} trailing', "\xff\xfe", '{"input": NaN}'],
)
def test_malformed_json_is_a_400(api: APIClient, body: str) -> None:
    response = post_raw(api, body.encode("latin-1"))
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error - ")


@pytest.mark.parametrize(("body", "kind"), [("[1, 2]", "list"), ('"text"', "str"), ("12", "int"), ("true", "bool")])
def test_a_body_that_is_not_an_object_is_a_400(api: APIClient, body: str, kind: str) -> None:
    response = post_raw(api, body)
    assert (response.status_code, response.json()) == (
        400,
        {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]},
    )


def test_a_null_body_is_a_400(api: APIClient) -> None:
    response = post_raw(api, "null")
    assert (response.status_code, response.json()) == (400, {"non_field_errors": ["No data provided"]})


def test_form_encoded_bodies_are_415(api: APIClient, wf: Any) -> None:
    response = post_raw(api, f"workflow={wf.name}", "application/x-www-form-urlencoded")
    assert (response.status_code, response.json()) == (
        415,
        {"detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.'},
    )


@pytest.mark.parametrize(
    ("input", "problem"),
    [
        ({"name": "a\x00b"}, "value at ['name'] contains a NUL character (\\u0000), which the database cannot store"),
        ({"a\x00": 1}, "key ['a\\x00'] contains a NUL character (\\u0000), which the database cannot store"),
        (
            {"items": [{"note": "\ud800"}]},
            "value at ['items'][0]['note'] contains a lone surrogate (such as \\ud800), which is not valid Unicode text",
        ),
        (nested(MAX_INPUT_DEPTH + 1), f"is nested more than {MAX_INPUT_DEPTH} levels deep"),
    ],
)
def test_input_the_database_cannot_store_is_a_400_naming_input(
    api: APIClient, wf: Any, input: dict[str, Any], problem: str
) -> None:
    response = post_raw(api, json.dumps({"workflow": wf.name, "input": input}))
    assert (response.status_code, response.json()) == (400, {"input": [f"The input {problem}."]})
    assert not WorkflowRun.objects.exists()


def test_input_nested_up_to_the_limit_is_stored(api: APIClient, wf: Any) -> None:
    response = post_raw(api, json.dumps({"workflow": wf.name, "input": nested(MAX_INPUT_DEPTH)}))
    assert response.status_code == 201
    assert WorkflowRun.objects.get().input == nested(MAX_INPUT_DEPTH)


def test_json_nested_too_deeply_to_parse_is_a_400(api: APIClient, wf: Any) -> None:
    depth = 100_000
    deep = '{"a":' * depth + "}" * depth
    response = post_raw(api, f'{{"workflow": "{wf.name}", "input": {deep}}}')
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "JSON parse error - the document is nested too deeply."},
    )


@pytest.mark.parametrize(("field", "value"), [("workflow", "a\x00b"), ("idempotency_key", "\ud800")])
def test_names_and_keys_the_database_cannot_store_are_a_400(api: APIClient, wf: Any, field: str, value: str) -> None:
    body = {"workflow": wf.name, field: value}
    response = post_raw(api, json.dumps(body))
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not WorkflowRun.objects.exists()


def test_unknown_field_names_that_are_not_valid_unicode_are_echoed_as_ascii_json(api: APIClient, wf: Any) -> None:
    response = post_raw(api, f'{{"workflow": "{wf.name}", "\\ud800": 1}}')
    assert response.status_code == 400
    assert (
        response.content == b'{"\\ud800":["Unknown field; expected workflow, input, idempotency_key, delay, run_at."]}'
    )


@override_settings(DURABLE={"API_MAX_BODY_SIZE": 100})
def test_a_body_over_the_size_limit_is_413_before_it_is_read(api: APIClient, wf: Any) -> None:
    body = json.dumps({"workflow": wf.name, "input": {"padding": "x" * 100}})
    response = post_raw(api, body)
    assert (response.status_code, response.json()) == (
        413,
        {
            "detail": f"The request body is {len(body)} bytes; this API accepts at most 100 bytes "
            '(DURABLE["API_MAX_BODY_SIZE"]).'
        },
    )
    assert not WorkflowRun.objects.exists()


@override_settings(DURABLE={"API_MAX_BODY_SIZE": 100})
def test_a_body_at_the_size_limit_is_accepted(api: APIClient, wf: Any) -> None:
    body = json.dumps({"workflow": wf.name, "input": {"p": ""}})
    body = body.replace('"p": ""', '"p": "' + "x" * (100 - len(body)) + '"')
    assert len(body) == 100
    assert post_raw(api, body).status_code == 201


def test_the_default_size_limit_is_one_mebibyte(api: APIClient, wf: Any) -> None:
    body = json.dumps({"workflow": wf.name, "input": {"padding": "x" * 1024 * 1024}})
    response = post_raw(api, body)
    assert response.status_code == 413
    assert response.json()["detail"].endswith('this API accepts at most 1048576 bytes (DURABLE["API_MAX_BODY_SIZE"]).')
