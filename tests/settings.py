"""Settings of the test suite.

PostgreSQL by default (``DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/durable_django``);
``DURABLE_TEST_DATABASE=sqlite`` runs the unit tests on SQLite instead. Redis for the
integration tests comes from ``REDIS_URL`` (default database 15 of the local server).
``DURABLE_LEASE_SECONDS``, ``DURABLE_RECOVER_INTERVAL``, ``DURABLE_MAX_WORKER_LOST``,
``DURABLE_RECOVER_IN_WORKERS`` and ``DURABLE_METRICS`` (``1`` or ``0``), ``DURABLE_WORKER_MAX_JOBS`` and
``DURABLE_DEFAULT_TIMEOUT`` set the ``DURABLE`` entry of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from example_project.settings import database_from_url

SECRET_KEY = "durable-django-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "rest_framework",
    "rest_framework.authtoken",
    "durable_django",
    "example_project.shop",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, dict[str, object]]
if os.environ.get("DURABLE_TEST_DATABASE") == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
else:
    DATABASES = {
        "default": database_from_url(
            os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/durable_django")
        )
    }

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL},
    "priority": {"URL": REDIS_URL},
}


def durable_from_environ(environ: Mapping[str, str]) -> dict[str, object]:
    """``DURABLE`` entries given as ``DURABLE_<NAME>`` variables; none by default.

    The fault-injection tests start their workers with short leases and sweeps this way.
    """
    parsers: dict[str, Callable[[str], object]] = {
        "LEASE_SECONDS": float,
        "RECOVER_INTERVAL": float,
        "MAX_WORKER_LOST": int,
        "RECOVER_IN_WORKERS": lambda value: value == "1",
        "WORKER_MAX_JOBS": int,
        "DEFAULT_TIMEOUT": float,
        "METRICS": lambda value: value == "1",
    }
    return {name: parse(environ[f"DURABLE_{name}"]) for name, parse in parsers.items() if f"DURABLE_{name}" in environ}


DURABLE: dict[str, object] = durable_from_environ(os.environ)

STATIC_URL = "static/"

SHOP_WEBHOOK_SECRET = "webhook-secret-of-the-tests"
