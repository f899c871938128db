"""Who may call the API: staff with the view permission of each model to read, the change
permission to operate, session and token authentication, and the DURABLE settings that replace them."""

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
from durable_django.models import ParallelGroup, StepResult, WorkflowRun
from tests.engine_support import Definer

from .conftest import VIEW_PERMISSIONS, client_for, grant, url

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


READS = ["run-list", "step-list", "group-list", "wait-list", "workflow-list", "schema"]
#: The permission each read needs, and the message of its 403 without it.
READ_PERMISSIONS = {
    "run-list": ("durable_django.view_workflowrun", "workflow runs"),
    "step-list": ("durable_django.view_stepresult", "step results"),
    "group-list": ("durable_django.view_parallelgroup", "parallel groups"),
    "wait-list": ("durable_django.view_wait", "waits"),
    # Workflows and the schema are read with the permission to read runs.
    "workflow-list": ("durable_django.view_workflowrun", "workflow runs"),
    "schema": ("durable_django.view_workflowrun", "workflow runs"),
}


def no_view_permission(name: str) -> dict[str, str]:
    permission, rows = READ_PERMISSIONS[name]
    return {"detail": f"Reading {rows} needs the {permission!r} permission."}


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


@pytest.mark.parametrize("name", READS)
def test_staff_without_the_view_permission_is_403_on_reads(staff_user: User, name: str) -> None:
    response = client_for(staff_user).get(url(name))
    assert (response.status_code, response.json()) == (403, no_view_permission(name))


@pytest.mark.parametrize("name", READS)
def test_the_view_permission_of_a_model_opens_its_reads_and_no_other(staff_user: User, name: str) -> None:
    permission, _ = READ_PERMISSIONS[name]
    client = client_for(grant(staff_user, permission))
    opened = {other for other in READS if READ_PERMISSIONS[other][0] == permission}
    assert {other: client.get(url(other)).status_code for other in READS} == {
        other: 200 if other in opened else 403 for other in READS
    }


def test_staff_with_every_view_permission_reads_every_endpoint(viewer_user: User, failed: WorkflowRun) -> None:
    client = client_for(viewer_user)
    assert {name: client.get(url(name)).status_code for name in READS} == dict.fromkeys(READS, 200)
    assert client.get(url("run-detail", failed.pk)).json()["id"] == str(failed.pk)
    assert client.head(url("run-list")).status_code == 200


def test_head_and_options_need_the_view_permission_too(staff_user: User) -> None:
    client = client_for(staff_user)
    assert (client.head(url("run-list")).status_code, client.options(url("run-list")).status_code) == (403, 403)
    client = client_for(grant(staff_user, "durable_django.view_workflowrun"))
    assert (client.head(url("run-list")).status_code, client.options(url("run-list")).status_code) == (200, 200)


def test_a_run_shows_its_steps_and_groups_with_the_permission_to_read_runs(staff_user: User) -> None:
    run = WorkflowRun.objects.create(workflow="orders", status="running")
    group = ParallelGroup.objects.create(run=run, name="pay", on_error="fail_fast")
    row = StepResult.objects.create(run=run, step="charge", group=group)
    client = client_for(grant(staff_user, "durable_django.view_workflowrun"))
    detail = client.get(url("run-detail", run.pk)).json()
    assert ([item["id"] for item in detail["steps"]], [item["id"] for item in detail["groups"]]) == (
        [row.pk],
        [group.pk],
    )
    assert client.get(url("step-detail", row.pk)).json() == no_view_permission("step-list")
    assert client.get(url("group-detail", group.pk)).status_code == 403


def test_the_change_permission_includes_the_view_permission_as_in_the_admin(
    operator_user: User, failed: WorkflowRun
) -> None:
    client = client_for(operator_user)
    assert client.get(url("run-detail", failed.pk)).status_code == 200
    assert client.get(url("step-list")).status_code == 403
    assert client_for(grant(operator_user, "durable_django.change_stepresult")).get(url("step-list")).status_code == 200


def test_view_permissions_alone_cannot_start_retry_cancel_nor_send_events(
    viewer_user: User, wf: Any, failed: WorkflowRun
) -> None:
    client = client_for(viewer_user)
    for response in (
        client.post(url("run-list"), {"workflow": wf.name}, format="json"),
        client.post(url("run-retry", failed.pk)),
        client.post(url("run-cancel", failed.pk)),
        client.post(url("run-events", failed.pk, "paid"), {}, format="json"),
    ):
        assert (response.status_code, response.json()) == (403, NO_CHANGE_PERMISSION)
    failed.refresh_from_db()
    assert (WorkflowRun.objects.count(), failed.status) == (1, "failed")


def test_a_superuser_reads_and_operates_without_any_permission_granted(
    superuser: User, wf: Any, failed: WorkflowRun
) -> None:
    assert not superuser.user_permissions.exists()
    client = client_for(superuser)
    assert {name: client.get(url(name)).status_code for name in READS} == dict.fromkeys(READS, 200)
    assert client.post(url("run-cancel", failed.pk)).status_code == 409


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


def test_a_token_of_a_user_who_is_not_staff_is_403_whatever_their_permissions(django_user_model: type[User]) -> None:
    token = Token.objects.create(user=grant(django_user_model.objects.create_user("member"), *VIEW_PERMISSIONS))
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
def test_can_operate_runs_leaves_reads_to_the_other_classes_and_refuses_operations_without_the_permission(
    django_user_model: type[User], failed: WorkflowRun
) -> None:
    member = client_for(django_user_model.objects.create_user("member"))
    assert member.get(url("run-detail", failed.pk)).status_code == 200
    response = member.post(url("run-cancel", failed.pk))
    assert (response.status_code, response.json()) == (403, NO_CHANGE_PERMISSION)


@override_settings(
    DURABLE={
        "API_PERMISSION_CLASSES": [
            "rest_framework.permissions.IsAuthenticated",
            "durable_django.api.permissions.CanViewRows",
            "durable_django.api.permissions.CanOperateRuns",
        ]
    }
)
def test_without_is_admin_user_a_user_who_is_not_staff_reads_with_the_view_permission(
    django_user_model: type[User], failed: WorkflowRun
) -> None:
    member = django_user_model.objects.create_user("member")
    assert client_for(member).get(url("run-list")).json() == no_view_permission("run-list")
    reader = client_for(grant(member, "durable_django.view_workflowrun"))
    assert reader.get(url("run-detail", failed.pk)).json()["id"] == str(failed.pk)
    assert reader.get(url("step-list")).status_code == 403


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
