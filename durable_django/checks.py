"""System checks: configuration mistakes surface at ``manage.py check`` rather than in a worker."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, TABLE, durable_settings
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
        setting = TABLE.get(key)
        if setting is None:
            continue
        if not setting.accepts(value):
            errors.append(
                Error(
                    f"settings.DURABLE[{key!r}] must be {setting.must_be}, not {value!r}.",
                    hint=f"The default is {setting.default!r}.",
                    id="durable_django.E004",
                )
            )
        elif setting.importable and value is not None:
            errors.extend(_unimportable(key, value))
    return errors


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
