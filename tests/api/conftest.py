"""Fixtures of the API tests: clients logged in as different users, and workflows defined per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from rest_framework.test import APIClient

from tests.engine_support import Definer, defining
from tests.integration.conftest import redis_db, workers  # noqa: F401 - fixtures of the integration tests


def url(name: str, *args: Any) -> str:
    """The path of the API's URL ``name`` (``"run-list"``, ``"run-retry"``, ...)."""
    return reverse(f"durable_api:{name}", args=args)


def client_for(user: User | None) -> APIClient:
    """An API client logged in (through a real session) as ``user``, or anonymous."""
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


# Users without a password: hashing one takes longer than most of these tests.


@pytest.fixture
def superuser(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", email=None, password=None)


@pytest.fixture
def api(superuser: User) -> APIClient:
    """A client logged in as a superuser."""
    return client_for(superuser)


@pytest.fixture
def staff_user(django_user_model: type[User]) -> User:
    """A staff user with no permission at all."""
    return django_user_model.objects.create_user("staff", is_staff=True)


def grant(user: User, *permissions: str) -> User:
    """``user`` with these ``app_label.codename`` permissions added, fetched again (Django caches permissions)."""
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return type(user).objects.get(pk=user.pk)


#: The view permissions of the API's models: what reading every endpoint needs.
VIEW_PERMISSIONS = (
    "durable_django.view_workflowrun",
    "durable_django.view_stepresult",
    "durable_django.view_parallelgroup",
    "durable_django.view_wait",
)


@pytest.fixture
def viewer_user(staff_user: User) -> User:
    """A staff user with the view permission of every model the API reads, and nothing else."""
    return grant(staff_user, *VIEW_PERMISSIONS)


@pytest.fixture
def operator_user(staff_user: User) -> User:
    """A staff user with ``durable_django.change_workflowrun``."""
    return grant(staff_user, "durable_django.change_workflowrun")


@pytest.fixture
def define(request: pytest.FixtureRequest) -> Iterator[Definer]:
    """Define workflows under names of this test only; they are unregistered afterwards."""
    with defining(request.node.name[:40]) as definer:
        yield definer
