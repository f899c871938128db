"""System checks: a mistake in ``DURABLE`` or ``RQ_QUEUES`` is reported by ``manage.py check``."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from durable_django import ok, step
from durable_django.checks import check_queues, check_settings
from tests.engine_support import Definer


def messages(errors: list[Error]) -> list[tuple[str, str]]:
    return [(error.id or "", error.msg) for error in errors]


def test_the_default_settings_pass() -> None:
    with override_settings(DURABLE={}):
        assert (check_settings(), check_queues()) == ([], [])


def test_durable_that_is_not_a_dict_is_e001() -> None:
    with override_settings(DURABLE=["QUEUE", "default"]):
        assert messages(check_settings()) == [("durable_django.E001", "settings.DURABLE must be a dict.")]


def test_an_unknown_key_is_e002_naming_it() -> None:
    with override_settings(DURABLE={"JOB_TIMOUT": 60, "QUEUE": "default"}):
        assert messages(check_settings()) == [
            ("durable_django.E002", "settings.DURABLE has unknown key(s): JOB_TIMOUT.")
        ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("QUEUE", "", "a queue name (a non-empty string)"),
        ("JOB_TIMEOUT", 0, "a positive number of seconds or -1"),
        ("JOB_TIMEOUT", "3600", "a positive number of seconds or -1"),
        ("RESULT_TTL", -2, "a number of seconds (0 or more; -1 keeps results forever)"),
        ("FAILURE_TTL", 0, "a positive number of seconds"),
        ("PARALLEL_JOBS", 0, "a positive integer"),
        ("PARALLEL_JOBS", True, "a positive integer"),
        ("LEASE_SECONDS", 0, "a positive number of seconds"),
        ("RECOVER_INTERVAL", "5", "a positive number of seconds"),
        ("RECOVER_IN_WORKERS", "yes", "True or False"),
        ("MAX_WORKER_LOST", 2.5, "a positive integer"),
        ("API_PERMISSION_CLASSES", "rest_framework.permissions.IsAdminUser", "a list or tuple of dotted paths"),
        ("API_AUTHENTICATION_CLASSES", [None], "None or a list of dotted paths"),
        ("API_PAGE_SIZE", -1, "a positive integer"),
        ("API_MAX_BODY_SIZE", 0, "a positive number of bytes"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_e004_naming_the_key(key: str, value: Any, expected: str) -> None:
    with override_settings(DURABLE={key: value}):
        assert messages(check_settings()) == [
            ("durable_django.E004", f"settings.DURABLE[{key!r}] must be {expected}, not {value!r}.")
        ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("JOB_TIMEOUT", -1),
        ("RESULT_TTL", -1),
        ("LEASE_SECONDS", 0.5),
        ("RECOVER_IN_WORKERS", False),
        ("API_AUTHENTICATION_CLASSES", None),
        ("API_PERMISSION_CLASSES", ["rest_framework.permissions.IsAuthenticated"]),
    ],
)
def test_valid_values_pass(key: str, value: Any) -> None:
    with override_settings(DURABLE={key: value}):
        assert check_settings() == []


def test_an_api_class_that_cannot_be_imported_is_e005_naming_the_path() -> None:
    paths = ["rest_framework.permissions.IsAdminUser", "myproject.permissions.IsOperator"]
    with override_settings(DURABLE={"API_PERMISSION_CLASSES": paths}):
        assert messages(check_settings()) == [
            (
                "durable_django.E005",
                "settings.DURABLE['API_PERMISSION_CLASSES'] names 'myproject.permissions.IsOperator', which cannot "
                "be imported: No module named 'myproject'",
            )
        ]


def test_a_queue_missing_from_rq_queues_is_e003_naming_the_workflow_and_step(define: Definer) -> None:
    wf = define([step("send", lambda ctx: ok({}), queue="emails")])
    assert messages(check_queues()) == [
        (
            "durable_django.E003",
            f"Queue 'emails' (used by workflow {wf.name!r}, step 'send') is not configured in settings.RQ_QUEUES.",
        )
    ]


def test_manage_py_check_fails_on_a_bad_setting() -> None:
    with override_settings(DURABLE={"LEASE_SECONDS": -15}), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "(durable_django.E004) settings.DURABLE['LEASE_SECONDS'] must be a positive number of seconds, not -15." in (
        str(excinfo.value)
    )
