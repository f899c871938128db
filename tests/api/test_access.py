"""Who may call the API: staff by default, the change permission to operate, session and token
authentication, and the DURABLE settings that replace them."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from durable_django import ok, step
from durable_django.models import WorkflowRun
from tests.engine_support import Definer

from .conftest import client_for, url

pytestmark = pytest.mark.django_db

NOT_LOGGED_IN = {"detail": "Authentication credentials were not provided."}
NOT_STAFF = {"detail": "You do not have permission to perform this action."}
NO_CHANGE_PERMISSION = {
    "detail": "Starting, retrying or cancelling a run or sending it an event needs the 'durable_django.change_workflowrun' permission."
}


@pytest.fixture
def wf(define: Definer) -> Any:
    return define([step("only", lambda ctx: ok({"done": True}))])


@pytest.fixture
def failed() -> WorkflowRun:
    return WorkflowRun.objects.create(workflow="orders", status="failed")


READS = ["run-list", "step-list", "group-list", "workflow-list", "schema"]


@pytest.mark.parametrize("name", READS)
def test_anonymous_requests_are_401_with_a_token_challenge(name: str) -> None:
    response = client_for(None).get(url(name))
    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Token")
    assert response.json() == NOT_LOGGED_IN


def test_anonymous_start_is_401(wf: Any) -> None:
    response = client_for(None).post(url("run-list"), {"workflow": wf.name}, format="json")
    assert (response.status_code, response.json()) == (401, NOT_LOGGED_IN)
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize("name", READS)
def test_users_who_are_not_staff_are_403(django_user_model: type[User], name: str) -> None:
    user = django_user_model.objects.create_user("member")
    response = client_for(user).get(url(name))
    assert (response.status_code, response.json()) == (403, NOT_STAFF)


def test_staff_without_the_change_permission_can_read_but_not_operate(
    staff_user: User, wf: Any, failed: WorkflowRun
) -> None:
    client = client_for(staff_user)
    assert client.get(url("run-list")).status_code == 200
    assert client.get(url("run-detail", failed.pk)).status_code == 200
    for response in (
        client.post(url("run-list"), {"workflow": wf.name}, format="json"),
        client.post(url("run-retry", failed.pk)),
        client.post(url("run-cancel", failed.pk)),
    ):
        assert (response.status_code, response.json()) == (403, NO_CHANGE_PERMISSION)
    failed.refresh_from_db()
    assert (WorkflowRun.objects.count(), failed.status) == (1, "failed")


def test_staff_with_the_change_permission_can_start_and_retry(
    operator_user: User, wf: Any, failed: WorkflowRun
) -> None:
    client = client_for(operator_user)
    assert client.post(url("run-list"), {"workflow": wf.name}, format="json").status_code == 201
    assert client.post(url("run-retry", failed.pk)).status_code == 202


def test_session_authentication_enforces_csrf_on_posts(superuser: User, wf: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post(url("run-list"), {"workflow": wf.name}, format="json")
    assert (response.status_code, response.json()) == (403, {"detail": "CSRF Failed: CSRF cookie not set."})


def test_token_authentication_works_without_a_session(superuser: User, wf: Any) -> None:
    token = Token.objects.create(user=superuser)
    client = APIClient(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(url("run-list")).status_code == 200
    # No CSRF token is needed with a token.
    client = APIClient(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.post(url("run-list"), {"workflow": wf.name}, format="json").status_code == 201


def test_an_unknown_token_is_401() -> None:
    response = APIClient(HTTP_AUTHORIZATION="Token not-a-real-token").get(url("run-list"))
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token."})


def test_a_token_of_a_user_who_is_not_staff_is_403(django_user_model: type[User]) -> None:
    token = Token.objects.create(user=django_user_model.objects.create_user("member"))
    response = APIClient(HTTP_AUTHORIZATION=f"Token {token.key}").get(url("run-list"))
    assert (response.status_code, response.json()) == (403, NOT_STAFF)


def test_without_authtoken_installed_a_token_header_is_ignored_not_an_error(superuser: User) -> None:
    apps = [app for app in settings.INSTALLED_APPS if app != "rest_framework.authtoken"]
    with override_settings(INSTALLED_APPS=apps):
        anonymous = APIClient(HTTP_AUTHORIZATION="Token 0123456789abcdef").get(url("run-list"))
        # Session authentication alone sends no challenge, so DRF answers 403 rather than 401.
        assert (anonymous.status_code, anonymous.json()) == (403, NOT_LOGGED_IN)
        assert client_for(superuser).get(url("run-list")).status_code == 200


@override_settings(DURABLE={"API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]})
def test_permission_classes_come_from_the_durable_setting(django_user_model: type[User], wf: Any) -> None:
    member = client_for(django_user_model.objects.create_user("member"))
    assert member.get(url("run-list")).status_code == 200
    assert member.post(url("run-list"), {"workflow": wf.name}, format="json").status_code == 201
    assert client_for(None).get(url("run-list")).status_code == 401


@override_settings(
    DURABLE={
        "API_PERMISSION_CLASSES": [
            "rest_framework.permissions.IsAuthenticated",
            "durable_django.api.permissions.CanOperateRuns",
        ]
    }
)
def test_can_operate_runs_allows_reads_and_refuses_operations_without_the_permission(
    django_user_model: type[User], failed: WorkflowRun
) -> None:
    member = client_for(django_user_model.objects.create_user("member"))
    assert member.get(url("run-detail", failed.pk)).status_code == 200
    response = member.post(url("run-cancel", failed.pk))
    assert (response.status_code, response.json()) == (403, NO_CHANGE_PERMISSION)


@override_settings(DURABLE={"API_AUTHENTICATION_CLASSES": ["rest_framework.authentication.BasicAuthentication"]})
def test_authentication_classes_come_from_the_durable_setting(admin_user: User) -> None:
    # pytest-django's admin_user: "admin", with the password "password".
    basic = APIClient(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"admin:password").decode())
    assert basic.get(url("run-list")).status_code == 200
    session = client_for(admin_user).get(url("run-list"))
    assert (session.status_code, session["WWW-Authenticate"]) == (401, 'Basic realm="api"')


@override_settings(REST_FRAMEWORK={"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]})
def test_the_rest_framework_setting_does_not_open_the_api() -> None:
    assert client_for(None).get(url("run-list")).status_code == 401
