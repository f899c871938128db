"""The ``DURABLE`` settings dict, read through one object at access time.

Reading at access time (never at import time) keeps ``override_settings`` working in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

from .exceptions import DurableConfigurationError

DEFAULTS: dict[str, Any] = {
    # django-rq queue used for runs and branches unless a workflow or a step names another.
    "QUEUE": "default",
    # RQ job timeout (seconds) of the jobs that execute steps; -1 means no limit.
    "JOB_TIMEOUT": 3600,
    # How long RQ keeps a finished job's return value. The database holds every result,
    # so RQ's copy is dropped at once by default.
    "RESULT_TTL": 0,
    # How long RQ keeps a failed job (an engine crash, not a failed step) for inspection.
    "FAILURE_TTL": 7 * 24 * 3600,
    # The most RQ jobs a parallel block's branches are spread over, per queue. Each such job
    # executes branches in batches until none is left, so this bounds how many workers one block
    # keeps busy at once: raise it when more workers should share blocks of many slow branches.
    "PARALLEL_JOBS": 16,
    # Seconds a worker's lease on an executing step or branch lasts; renewed every third of it
    # while the step runs. A lease that runs out means its worker is gone.
    "LEASE_SECONDS": 15,
    # Seconds between two recovery sweeps (in every rqworker process, and `durable_recover --loop`).
    "RECOVER_INTERVAL": 5,
    # Run the recovery sweeper in a background thread of every `manage.py rqworker` process.
    "RECOVER_IN_WORKERS": True,
    # A step whose worker is lost this many times in a row fails with {"type": "worker_lost"}.
    "MAX_WORKER_LOST": 3,
    # REST API (durable_django.api): permission and authentication classes (dotted paths), page
    # size of list endpoints and the largest request body accepted, in bytes.
    "API_PERMISSION_CLASSES": (
        "rest_framework.permissions.IsAdminUser",
        "durable_django.api.permissions.CanOperateRuns",
    ),
    # None: session authentication, plus token authentication when rest_framework.authtoken is installed.
    "API_AUTHENTICATION_CLASSES": None,
    "API_PAGE_SIZE": 50,
    "API_MAX_BODY_SIZE": 1024 * 1024,
}


class DurableSettings:
    """Typed access to ``settings.DURABLE`` with defaults; unknown keys are a configuration error."""

    def _user(self) -> dict[str, Any]:
        value = getattr(django_settings, "DURABLE", {}) or {}
        if not isinstance(value, dict):
            raise DurableConfigurationError(f"settings.DURABLE must be a dict, not {type(value).__name__}.")
        return value

    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user()) - set(DEFAULTS))

    @property
    def QUEUE(self) -> str:
        return self._user().get("QUEUE", DEFAULTS["QUEUE"])

    @property
    def JOB_TIMEOUT(self) -> int:
        return int(self._user().get("JOB_TIMEOUT", DEFAULTS["JOB_TIMEOUT"]))

    @property
    def RESULT_TTL(self) -> int:
        return int(self._user().get("RESULT_TTL", DEFAULTS["RESULT_TTL"]))

    @property
    def FAILURE_TTL(self) -> int:
        return int(self._user().get("FAILURE_TTL", DEFAULTS["FAILURE_TTL"]))

    @property
    def PARALLEL_JOBS(self) -> int:
        return int(self._user().get("PARALLEL_JOBS", DEFAULTS["PARALLEL_JOBS"]))

    @property
    def LEASE_SECONDS(self) -> float:
        return float(self._user().get("LEASE_SECONDS", DEFAULTS["LEASE_SECONDS"]))

    @property
    def RECOVER_INTERVAL(self) -> float:
        return float(self._user().get("RECOVER_INTERVAL", DEFAULTS["RECOVER_INTERVAL"]))

    @property
    def RECOVER_IN_WORKERS(self) -> bool:
        return bool(self._user().get("RECOVER_IN_WORKERS", DEFAULTS["RECOVER_IN_WORKERS"]))

    @property
    def MAX_WORKER_LOST(self) -> int:
        return int(self._user().get("MAX_WORKER_LOST", DEFAULTS["MAX_WORKER_LOST"]))

    @property
    def API_PERMISSION_CLASSES(self) -> tuple[str, ...]:
        return tuple(self._user().get("API_PERMISSION_CLASSES", DEFAULTS["API_PERMISSION_CLASSES"]))

    @property
    def API_AUTHENTICATION_CLASSES(self) -> tuple[str, ...] | None:
        value = self._user().get("API_AUTHENTICATION_CLASSES", DEFAULTS["API_AUTHENTICATION_CLASSES"])
        return None if value is None else tuple(value)

    @property
    def API_PAGE_SIZE(self) -> int:
        return int(self._user().get("API_PAGE_SIZE", DEFAULTS["API_PAGE_SIZE"]))

    @property
    def API_MAX_BODY_SIZE(self) -> int:
        return int(self._user().get("API_MAX_BODY_SIZE", DEFAULTS["API_MAX_BODY_SIZE"]))


durable_settings = DurableSettings()
