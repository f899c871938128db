"""The database or Redis unreachable: the API answers a JSON 503 with Retry-After, never an HTML 500."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import DatabaseError, InterfaceError, OperationalError
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from durable_django import dispatch, ok, step
from durable_django.api import views
from durable_django.models import WorkflowRun
from durable_django.recovery import recover
from durable_django.testing import EmbeddedQueue
from tests.engine_support import Definer

from .conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_steps(define: Definer) -> Any:
    return define([step("first", lambda ctx: ok({"first": True})), step("second", lambda ctx: ok({"second": True}))])


def raising(exc: Exception) -> Any:
    def fn(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fn


def assert_unavailable(response: Any, what: str) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"The {what} is unavailable; try again later."}
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize(
    "exc",
    [OperationalError("connection refused"), InterfaceError("connection already closed"), DatabaseError("gone")],
    ids=["operational", "interface", "database"],
)
def test_a_database_error_in_a_view_is_a_json_503(
    api: APIClient, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    monkeypatch.setattr(views.RunViewSet, "get_queryset", raising(exc))
    assert_unavailable(api.get(url("run-list")), "database")


@pytest.mark.parametrize(
    "exc",
    [redis.exceptions.ConnectionError("Connection refused"), redis.exceptions.TimeoutError("Timeout reading")],
    ids=["connection", "timeout"],
)
def test_a_redis_error_in_a_view_is_a_json_503(
    api: APIClient, two_steps: Any, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    monkeypatch.setattr(views, "get_or_start_run", raising(exc))
    response = api.post(url("run-list"), {"workflow": two_steps.name}, format="json")
    assert_unavailable(response, "queue (Redis)")


def test_other_errors_are_left_to_django(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views.RunViewSet, "get_queryset", raising(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        api.get(url("run-list"))


def project_handler(exc: Exception, context: dict[str, Any]) -> Any:
    raise AssertionError("the API must not use the project's exception handler")


@override_settings(REST_FRAMEWORK={"EXCEPTION_HANDLER": "tests.api.test_unavailable.project_handler"})
def test_the_projects_exception_handler_is_left_alone(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from rest_framework.settings import api_settings

    assert api_settings.EXCEPTION_HANDLER is project_handler
    monkeypatch.setattr(views.RunViewSet, "get_queryset", raising(OperationalError("down")))
    assert_unavailable(api.get(url("run-list")), "database")
    monkeypatch.undo()
    assert api.get(url("run-detail", "not-an-id")).status_code == 404  # DRF's own errors as before


@pytest.mark.django_db(transaction=True)
def test_start_with_redis_down_answers_201_and_a_resend_with_its_key_gets_the_same_run(
    api: APIClient, embedded: EmbeddedQueue, two_steps: Any
) -> None:
    body = {"workflow": two_steps.name, "input": {"n": 1}, "idempotency_key": "order-1"}
    dispatch.use_connection(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5))
    try:
        first = api.post(url("run-list"), body, format="json")
        again = api.post(url("run-list"), body, format="json")
    finally:
        dispatch.use_connection(embedded.connection)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert WorkflowRun.objects.count() == 1

    assert recover(now=timezone.now() + timedelta(minutes=10)).runs_sent_again == 1
    embedded.run_until_idle(timeout=30)
    run = WorkflowRun.objects.get()
    assert (run.status, run.context) == ("completed", {"n": 1, "first": True, "second": True})
