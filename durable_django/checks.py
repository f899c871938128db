"""System checks: configuration mistakes surface at ``manage.py check`` rather than in a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, durable_settings
from .definition import Step, registered_workflows


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    raw = getattr(settings, "DURABLE", {})
    if not isinstance(raw, dict):
        return [
            Error(
                "settings.DURABLE must be a dict.",
                hint=f"Use a dict with some of the keys {', '.join(DEFAULTS)}.",
                id="durable_django.E001",
            )
        ]
    unknown = durable_settings.unknown_keys()
    if unknown:
        errors.append(
            Error(
                f"settings.DURABLE has unknown key(s): {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(DEFAULTS)}.",
                id="durable_django.E002",
            )
        )
    for key, value in raw.items():
        if key not in _VALID:
            continue
        accepts, expected = _VALID[key]
        if not accepts(value):
            errors.append(
                Error(
                    f"settings.DURABLE[{key!r}] must be {expected}, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="durable_django.E004",
                )
            )
        elif key in ("API_PERMISSION_CLASSES", "API_AUTHENTICATION_CLASSES") and value is not None:
            errors.extend(_unimportable(key, value))
    return errors


def _whole(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _paths(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(path, str) and path for path in value)


# What each DURABLE value may be, and how the error says it.
_VALID: dict[str, tuple[Callable[[Any], bool], str]] = {
    "QUEUE": (lambda value: isinstance(value, str) and bool(value), "a queue name (a non-empty string)"),
    "JOB_TIMEOUT": (lambda value: _whole(1)(value) or value == -1, "a positive number of seconds or -1"),
    "RESULT_TTL": (_whole(-1), "a number of seconds (0 or more; -1 keeps results forever)"),
    "FAILURE_TTL": (_whole(1), "a positive number of seconds"),
    "PARALLEL_JOBS": (_whole(1), "a positive integer"),
    "LEASE_SECONDS": (_positive, "a positive number of seconds"),
    "RECOVER_INTERVAL": (_positive, "a positive number of seconds"),
    "RECOVER_IN_WORKERS": (lambda value: isinstance(value, bool), "True or False"),
    "MAX_WORKER_LOST": (_whole(1), "a positive integer"),
    "API_PERMISSION_CLASSES": (_paths, "a list or tuple of dotted paths"),
    "API_AUTHENTICATION_CLASSES": (lambda value: value is None or _paths(value), "None or a list of dotted paths"),
    "API_PAGE_SIZE": (_whole(1), "a positive integer"),
    "API_MAX_BODY_SIZE": (_whole(1), "a positive number of bytes"),
}


def _unimportable(key: str, paths: list[str] | tuple[str, ...]) -> list[Error]:
    errors = []
    for path in paths:
        try:
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"settings.DURABLE[{key!r}] names {path!r}, which cannot be imported: {exc}",
                    hint="Give the dotted path of a class, such as 'rest_framework.permissions.IsAdminUser'.",
                    id="durable_django.E005",
                )
            )
    return errors


@register(Tags.compatibility)
def check_queues(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every queue a workflow uses must be configured in ``RQ_QUEUES``."""
    configured = set(getattr(settings, "RQ_QUEUES", {}) or {})
    errors: list[Error] = []
    needed: dict[str, str] = {}
    raw = getattr(settings, "DURABLE", {})
    if isinstance(raw, dict):
        needed[durable_settings.QUEUE] = "DURABLE['QUEUE']"
    for wf in registered_workflows().values():
        if wf.queue:
            needed.setdefault(wf.queue, f"workflow {wf.name!r}")
        for node in wf.steps:
            for member in (node,) if isinstance(node, Step) else node.steps:
                if member.queue:
                    needed.setdefault(member.queue, f"workflow {wf.name!r}, step {member.name!r}")
    for queue, user in sorted(needed.items()):
        if queue not in configured:
            errors.append(
                Error(
                    f"Queue {queue!r} (used by {user}) is not configured in settings.RQ_QUEUES.",
                    hint=f"Add RQ_QUEUES[{queue!r}] = {{'URL': 'redis://localhost:6379/0'}} or change the queue.",
                    id="durable_django.E003",
                )
            )
    return errors
