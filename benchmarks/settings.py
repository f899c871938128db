"""Django settings of the benchmark project: durable_django on PostgreSQL and a local Redis.

``BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/durable_bench``) and
``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/9``) choose the servers; the runner creates,
migrates and empties the database and flushes that Redis database before each measurement.
"""

from __future__ import annotations

import os

from example_project.settings import database_from_url

SECRET_KEY = "durable-django-benchmarks"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_rq",
    "durable_django",
    # Its workflows module holds the benchmark workflows, autodiscovered like any app's.
    "benchmarks",
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/durable_bench")
    )
}

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
RQ_QUEUES = {"bench": {"URL": REDIS_URL}}

DURABLE: dict[str, object] = {"QUEUE": "bench"}
if os.environ.get("BENCH_RECOVER_IN_WORKERS") == "0":
    # The cost measurement counts transactions per step: the workers' periodic recovery sweep
    # is work per second, not per step, and is measured on its own.
    DURABLE["RECOVER_IN_WORKERS"] = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Workers log every job at INFO; a benchmark only wants to hear about problems.
    "loggers": {
        "durable_django": {"handlers": ["console"], "level": "WARNING"},
        "rq.worker": {"handlers": ["console"], "level": "WARNING"},
    },
}
