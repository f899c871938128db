"""System checks: a mistake in ``DURABLE`` or ``RQ_QUEUES`` is reported by ``manage.py check``."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from durable_django import ok, step
from durable_django.checks import check_api_installed, check_queues, check_scheduler, check_settings
from tests.engine_support import Definer


def messages(errors: list[CheckMessage]) -> list[tuple[str, str]]:
    return [(error.id or "", error.msg) for error in errors]


def test_the_default_settings_pass() -> None:
    with override_settings(DURABLE={}):
        assert (check_settings(), check_queues(), check_scheduler(), check_api_installed()) == ([], [], [], [])


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
        ("API_MAX_PAGE_SIZE", 0, "a positive integer"),
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


@pytest.mark.parametrize(
    "durable", [{"API_PAGE_SIZE": 1001}, {"API_MAX_PAGE_SIZE": 49}, {"API_PAGE_SIZE": 20, "API_MAX_PAGE_SIZE": 10}]
)
def test_a_page_size_over_the_maximum_page_size_is_e004_naming_both_keys(durable: dict[str, int]) -> None:
    size, largest = durable.get("API_PAGE_SIZE", 50), durable.get("API_MAX_PAGE_SIZE", 1000)
    with override_settings(DURABLE=durable):
        assert messages(check_settings()) == [
            (
                "durable_django.E004",
                f"settings.DURABLE['API_PAGE_SIZE'] must be at most settings.DURABLE['API_MAX_PAGE_SIZE'] "
                f"({largest}), not {size}.",
            )
        ]


def test_a_page_size_equal_to_the_maximum_passes() -> None:
    with override_settings(DURABLE={"API_PAGE_SIZE": 10, "API_MAX_PAGE_SIZE": 10}):
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


# -- RQ's scheduler ---------------------------------------------------------------------------


def test_a_queue_no_worker_serves_is_w001(define: Definer) -> None:
    wf = define([step("send", lambda ctx: ok({}), queue="emails", retry={"max_attempts": 3})])
    queues = {
        "default": {"URL": "redis://localhost:6379/0"},
        "emails": {"URL": "redis://localhost:6379/0", "ASYNC": False},
    }
    with override_settings(RQ_QUEUES=queues):
        found = check_scheduler()
    assert messages(found) == [
        (
            "durable_django.W001",
            f"Queue 'emails' (used by workflow {wf.name!r}, step 'send') is configured with 'ASYNC': False: its "
            "jobs run at once in the process that sends them, and no worker runs RQ's scheduler for it, so "
            "retries with a delay and the wake-ups of sleeps and timeouts never run.",
        )
    ]
    assert "EmbeddedQueue" in (found[0].hint or "")
    with override_settings(RQ_QUEUES={**queues, "emails": {"URL": "redis://localhost:6379/0", "ASYNC": True}}):
        assert check_scheduler() == []


def test_w001_is_a_warning_that_manage_py_check_shows_without_failing() -> None:
    out = StringIO()
    queues = {name: {**config, "ASYNC": name != "default"} for name, config in settings.RQ_QUEUES.items()}
    with override_settings(RQ_QUEUES=queues):
        call_command("check", stdout=out, stderr=out)
    assert "(durable_django.W001) Queue 'default' (used by DURABLE['QUEUE'])" in out.getvalue()


# -- the REST API and rest_framework ----------------------------------------------------------

WITHOUT_DRF = [app for app in settings.INSTALLED_APPS if not app.startswith("rest_framework")]


def test_the_api_mounted_without_rest_framework_installed_is_e006() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_DRF):
        found = check_api_installed()
    assert messages(found) == [
        (
            "durable_django.E006",
            "The REST API (durable_django.api.urls) is included in the URLconf, but 'rest_framework' is not in "
            "settings.INSTALLED_APPS.",
        )
    ]
    assert "Add 'rest_framework'" in (found[0].hint or "")


def test_e006_finds_the_api_included_inside_another_include() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_DRF, ROOT_URLCONF="tests.testapp.urlconfs.nested_api"):
        assert [message.id for message in check_api_installed()] == ["durable_django.E006"]


def test_without_the_api_in_the_urlconf_rest_framework_is_not_needed() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_DRF, ROOT_URLCONF="tests.testapp.urlconfs.no_api"):
        assert check_api_installed() == []


def test_manage_py_check_fails_when_the_api_is_mounted_without_rest_framework() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_DRF), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "(durable_django.E006)" in str(excinfo.value)
