"""The ``DURABLE`` settings dict, read through one object at access time.

Each key is declared once, as a :class:`Setting` on :class:`DurableSettings`: its default, how its
value is read, and what the system check accepts. Reading at access time (never at import time)
keeps ``override_settings`` working in tests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Never, TypeVar, cast, overload

from django.conf import settings as django_settings

from .exceptions import DurableConfigurationError

T = TypeVar("T")

TABLE: dict[str, Setting[Any]] = {}
"""Every key of ``settings.DURABLE``, in declaration order, filled as :class:`DurableSettings` is defined."""


def _user() -> dict[str, Any]:
    value = getattr(django_settings, "DURABLE", {}) or {}
    if not isinstance(value, dict):
        raise DurableConfigurationError(f"settings.DURABLE must be a dict, not {type(value).__name__}.")
    return value


class Setting(Generic[T]):
    """One key of ``settings.DURABLE``, named by the attribute it is assigned to.

    ``default`` is written as a user would configure it, and goes through ``convert`` like a
    configured value: ``convert`` turns either into what the code uses; ``accepts``
    and ``must_be`` are the system check's rule and how its error words it
    ("settings.DURABLE[key] must be <must_be>"). ``importable`` values are dotted paths that the
    check also imports.
    """

    key: str

    def __init__(
        self,
        default: Any,
        convert: Callable[[Any], T],
        *,
        accepts: Callable[[Any], bool],
        must_be: str,
        importable: bool = False,
    ) -> None:
        self.default = default
        self.convert = convert
        self.accepts = accepts
        self.must_be = must_be
        self.importable = importable

    def __set_name__(self, owner: type, name: str) -> None:
        # A second Setting of the same name (on a subclass, say) would silently replace the first in the check.
        if name in TABLE:
            raise TypeError(f"settings.DURABLE[{name!r}] is declared twice.")
        self.key = name
        TABLE[name] = self

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Setting[T] | T:
        if instance is None:
            return self
        return self.convert(_user().get(self.key, self.default))

    def __set__(self, instance: object, value: Never) -> None:
        # Read-only, and Never makes mypy reject an assignment too: a value set on the object would
        # shadow settings.DURABLE and outlive override_settings.
        raise AttributeError(f"{self.key} is read from settings.DURABLE; set it there.")


def _whole(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _paths(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(path, str) and path for path in value)


def _optional_paths(value: Any) -> bool:
    return value is None or _paths(value)


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _timeout(value: Any) -> bool:
    return _whole(1)(value) or value == -1


def _optional_seconds(value: Any) -> bool:
    return value is None or _positive(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _optional_name(value: Any) -> bool:
    return value is None or _name(value)


def _as_is(value: Any) -> str:
    # Not str(value): a queue name of another type is the check's to report, not to be renamed here.
    return cast(str, value)


def _path_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _optional_path_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


_AGE = re.compile(r"\s*(\d+)\s*([dhms]?)\s*", re.IGNORECASE)
_AGE_UNITS = {"": "days", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_age(value: Any) -> timedelta:
    """An age as a setting or a command line gives it: ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``,
    a whole number of days (``30`` or ``"30"``), or a ``timedelta``; more than zero.

    Raises ``ValueError`` saying what is accepted.
    """
    if isinstance(value, timedelta):
        age = value
    elif isinstance(value, int) and not isinstance(value, bool):
        age = timedelta(days=value)
    elif isinstance(value, str) and (match := _AGE.fullmatch(value)):
        age = timedelta(**{_AGE_UNITS[match.group(2).lower()]: int(match.group(1))})
    else:
        raise ValueError(
            f"{value!r} is not an age: give a whole number with a unit, such as 30d, 12h, 90m or 45s, "
            "or a whole number of days."
        )
    if age <= timedelta(0):
        raise ValueError(f"{value!r} is not an age: it must be more than zero.")
    return age


@dataclass(frozen=True)
class Retention:
    """``DURABLE["RETENTION"]``: which finished runs the recovery sweeper deletes, and how many at a time."""

    older_than: timedelta
    #: The statuses of the runs it deletes; ``None``: every finished status.
    statuses: tuple[str, ...] | None
    batch_size: int


RETENTION_KEYS = ("older_than", "status", "batch_size")
#: How many runs one cleanup deletes per transaction unless told otherwise.
RETENTION_BATCH_SIZE = 1000


def _retention(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or "older_than" not in value or set(value) - set(RETENTION_KEYS):
        return False
    try:
        parse_age(value["older_than"])
    except ValueError:
        return False
    statuses = value.get("status")
    if statuses is not None and not (_paths(statuses) and statuses):
        return False  # which names are finished statuses is durable_django.E007's to say
    return _whole(1)(value.get("batch_size", RETENTION_BATCH_SIZE))


def _retention_policy(value: Any) -> Retention | None:
    if value is None:
        return None
    if not _retention(value):
        raise DurableConfigurationError(f"settings.DURABLE['RETENTION'] must be {RETENTION_MUST_BE}, not {value!r}.")
    statuses = value.get("status")
    return Retention(
        parse_age(value["older_than"]),
        tuple(statuses) if statuses else None,
        value.get("batch_size", RETENTION_BATCH_SIZE),
    )


def _log_level(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(logging.getLevelNamesMapping()[str(value).upper()])


def _is_log_level(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.upper() in logging.getLevelNamesMapping()


RETENTION_MUST_BE = (
    'None or a dict such as {"older_than": "30d", "status": ["completed", "failed", "cancelled"], '
    '"batch_size": 1000}: "older_than" (required) an age such as 30d, 12h, 90m, 45s or a number of days, '
    '"status" a list of finished statuses, "batch_size" a positive number of runs'
)


def _tracing(value: Any) -> bool:
    if value is None:
        from importlib.util import find_spec

        try:
            return find_spec("opentelemetry.trace") is not None
        except ModuleNotFoundError:
            return False
    return bool(value)


class DurableSettings:
    """Typed access to ``settings.DURABLE`` with defaults; unknown keys are a configuration error."""

    def unknown_keys(self) -> list[str]:
        """The configured keys that are not settings, sorted."""
        return sorted(set(_user()) - set(TABLE))

    # django-rq queue used for runs and branches unless a workflow or a step names another.
    QUEUE = Setting("default", _as_is, accepts=_name, must_be="a queue name (a non-empty string)")
    # RQ job timeout (seconds) of the jobs that execute steps; -1 means no limit.
    JOB_TIMEOUT = Setting(3600, int, accepts=_timeout, must_be="a positive number of seconds or -1")
    # The time limit (seconds) of an attempt of every step, branch and compensation that has no
    # timeout= of its own; None: no limit but JOB_TIMEOUT's.
    DEFAULT_TIMEOUT = Setting(
        None, _optional_float, accepts=_optional_seconds, must_be="None or a positive number of seconds"
    )
    # How long RQ keeps a finished job's return value. The database holds every result,
    # so RQ's copy is dropped at once by default.
    RESULT_TTL = Setting(
        0, int, accepts=_whole(-1), must_be="a number of seconds (0 or more; -1 keeps results forever)"
    )
    # How long RQ keeps a failed job (an engine crash, not a failed step) for inspection.
    FAILURE_TTL = Setting(7 * 24 * 3600, int, accepts=_whole(1), must_be="a positive number of seconds")
    # The most RQ jobs a parallel block's branches are spread over, per queue. Each such job
    # executes branches in batches until none is left, so this bounds how many workers one block
    # keeps busy at once: raise it when more workers should share blocks of many slow branches.
    PARALLEL_JOBS = Setting(16, int, accepts=_whole(1), must_be="a positive integer")
    # Seconds a worker's lease on an executing step or branch lasts; renewed every third of it
    # while the step runs. A lease that runs out means its worker is gone. With RECOVER_INTERVAL,
    # it sets how soon a dead worker's work resumes: within LEASE_SECONDS + 2 * RECOVER_INTERVAL.
    LEASE_SECONDS = Setting(5, float, accepts=_positive, must_be="a positive number of seconds")
    # Seconds between two recovery sweeps (in every rqworker process, and `durable_recover --loop`);
    # one process sweeps per interval, whatever the number of workers.
    RECOVER_INTERVAL = Setting(1, float, accepts=_positive, must_be="a positive number of seconds")
    # Run the recovery sweeper in a background thread of every `manage.py rqworker` process.
    RECOVER_IN_WORKERS = Setting(True, bool, accepts=_flag, must_be="True or False")
    # Finished runs the recovery sweeper deletes, a few minutes apart (see durable_django.retention);
    # None: it deletes none. The same cleanup by hand: manage.py durable_cleanup.
    RETENTION = Setting(None, _retention_policy, accepts=_retention, must_be=RETENTION_MUST_BE)
    # A step whose worker is lost this many times in a row fails with {"type": "worker_lost"}.
    MAX_WORKER_LOST = Setting(3, int, accepts=_whole(1), must_be="a positive integer")
    # durable_django.worker.DurableWorker starts afresh (same process, fresh memory) after this
    # many jobs; 0: never for that reason.
    WORKER_MAX_JOBS = Setting(0, int, accepts=_whole(0), must_be="a number of jobs (0 for no limit)")
    # ... or once its resident memory exceeds this many MiB, checked after every job; 0: never.
    WORKER_MAX_MEMORY = Setting(512, int, accepts=_whole(0), must_be="a number of MiB (0 for no limit)")
    # REST API (durable_django.api): permission and authentication classes (dotted paths), page
    # size of list endpoints and the largest one ?page_size= may ask for, and the largest request
    # body accepted, in bytes.
    API_PERMISSION_CLASSES = Setting(
        (
            "rest_framework.permissions.IsAdminUser",
            "durable_django.api.permissions.CanViewRows",
            "durable_django.api.permissions.CanOperateRuns",
        ),
        _path_tuple,
        accepts=_paths,
        must_be="a list or tuple of dotted paths",
        importable=True,
    )
    # None: session authentication, plus token authentication when rest_framework.authtoken is installed.
    API_AUTHENTICATION_CLASSES = Setting(
        None,
        _optional_path_tuple,
        accepts=_optional_paths,
        must_be="None or a list of dotted paths",
        importable=True,
    )
    API_PAGE_SIZE = Setting(50, int, accepts=_whole(1), must_be="a positive integer")
    API_MAX_PAGE_SIZE = Setting(1000, int, accepts=_whole(1), must_be="a positive integer")
    API_MAX_BODY_SIZE = Setting(1024 * 1024, int, accepts=_whole(1), must_be="a positive number of bytes")
    # Prometheus metrics (durable_django.metrics): count runs, attempts and recovery in Redis, from
    # every process; False connects no receiver and costs nothing. Needs prometheus_client to be served.
    # Spans for runs, steps, blocks and joins (docs/observability.md); on when opentelemetry-api is installed.
    TRACING = Setting(
        None, _tracing, accepts=lambda value: value is None or isinstance(value, bool), must_be="None, True or False"
    )
    METRICS = Setting(False, bool, accepts=_flag, must_be="True or False")
    # A bearer token that lets a scraper read the metrics view without a staff session; None: staff only.
    METRICS_TOKEN = Setting(None, lambda value: value, accepts=_optional_name, must_be="None or a non-empty string")
    # Per-step log capture (durable_django.capture): records logged while a step runs, at or above
    # CAPTURE_LOGS_LEVEL, are stored with its attempt in StepResult.logs, within both caps.
    CAPTURE_LOGS = Setting(True, bool, accepts=_flag, must_be="True or False")
    CAPTURE_LOGS_LEVEL = Setting("INFO", _log_level, accepts=_is_log_level, must_be="a logging level name or number")
    CAPTURE_LOGS_MAX_RECORDS = Setting(100, int, accepts=_whole(1), must_be="a positive integer")
    CAPTURE_LOGS_MAX_BYTES = Setting(64 * 1024, int, accepts=_whole(1), must_be="a positive number of bytes")
    # Also capture what a step prints (sys.stdout), as records of logger "print".
    CAPTURE_PRINT = Setting(False, bool, accepts=_flag, must_be="True or False")


DEFAULTS: dict[str, Any] = {key: setting.default for key, setting in TABLE.items()}
"""Each key of ``settings.DURABLE`` and its default, in declaration order."""

durable_settings = DurableSettings()
