"""System checks: configuration mistakes surface at ``manage.py check`` rather than in a worker."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.module_loading import import_string

from .conf import DEFAULTS, TABLE, durable_settings
from .definition import registered_workflows
from .retention import checked_statuses, finished_statuses
from .schedules import declared_schedules, unknown_workflow


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
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
    errors.extend(_page_size_over_the_maximum(raw))
    return errors


def _page_size_over_the_maximum(raw: dict[str, Any]) -> list[Error]:
    # ?page_size= may not ask for more than API_MAX_PAGE_SIZE; neither may the default.
    keys = ("API_PAGE_SIZE", "API_MAX_PAGE_SIZE")
    if not all(TABLE[key].accepts(raw.get(key, TABLE[key].default)) for key in keys):
        return []  # E004 above
    size, largest = durable_settings.API_PAGE_SIZE, durable_settings.API_MAX_PAGE_SIZE
    if size <= largest:
        return []
    return [
        Error(
            f"settings.DURABLE['API_PAGE_SIZE'] must be at most settings.DURABLE['API_MAX_PAGE_SIZE'] "
            f"({largest}), not {size}.",
            hint="Lower API_PAGE_SIZE or raise API_MAX_PAGE_SIZE.",
            id="durable_django.E004",
        )
    ]


@register(Tags.compatibility)
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``DURABLE["RETENTION"]["status"]`` names finished statuses only: an unfinished run is never deleted."""
    raw = getattr(settings, "DURABLE", {})
    value = raw.get("RETENTION") if isinstance(raw, dict) else None
    if not TABLE["RETENTION"].accepts(value) or value is None or value.get("status") is None:
        return []  # None, or not even a dict of the right shape (durable_django.E004)
    try:
        checked_statuses(value["status"])
    except ValueError as exc:
        return [
            Error(
                f"settings.DURABLE['RETENTION']['status']: {exc}",
                hint=f"Leave 'status' out to delete finished runs of every status ({', '.join(finished_statuses())}).",
                id="durable_django.E007",
            )
        ]
    return []


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


def _used_queues() -> dict[str, str]:
    """Every queue durable_django uses, and who uses it first (for the messages)."""
    needed: dict[str, str] = {}
    raw = getattr(settings, "DURABLE", {})
    if isinstance(raw, dict):
        needed[durable_settings.QUEUE] = "DURABLE['QUEUE']"
    for wf in registered_workflows().values():
        if wf.queue:
            needed.setdefault(wf.queue, f"workflow {wf.name!r}")
        for member in wf.all_steps():
            if member.queue:
                needed.setdefault(member.queue, f"workflow {wf.name!r}, step {member.name!r}")
    return needed


@register(Tags.compatibility)
def check_queues(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every queue a workflow uses must be configured in ``RQ_QUEUES``."""
    configured = set(getattr(settings, "RQ_QUEUES", {}) or {})
    errors: list[CheckMessage] = []
    for queue, user in sorted(_used_queues().items()):
        if queue not in configured:
            errors.append(
                Error(
                    f"Queue {queue!r} (used by {user}) is not configured in settings.RQ_QUEUES.",
                    hint=f"Add RQ_QUEUES[{queue!r}] = {{'URL': 'redis://localhost:6379/0'}} or change the queue.",
                    id="durable_django.E003",
                )
            )
    return errors


@register(Tags.compatibility)
def check_scheduler(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Queues on which RQ's scheduler can never run: django-rq's ``"ASYNC": False``.

    Retries with a delay and the wake-ups of sleeps and timeouts are RQ scheduled jobs, which only a
    worker running RQ's scheduler moves onto their queue. Whether a worker runs one is decided on
    its command line (``durable_worker --without-scheduler``, ``rqworker`` without
    ``--with-scheduler``), which no setting shows: the worker says so when it starts, and the
    recovery sweeper when it finds scheduled jobs overdue. What settings do show is a queue that no
    worker serves at all.
    """
    queues = getattr(settings, "RQ_QUEUES", {}) or {}
    warnings: list[CheckMessage] = []
    for queue, user in sorted(_used_queues().items()):
        config = queues.get(queue)
        if isinstance(config, dict) and config.get("ASYNC", True) is False:
            warnings.append(
                CheckWarning(
                    f"Queue {queue!r} (used by {user}) is configured with 'ASYNC': False: its jobs run at "
                    "once in the process that sends them, and no worker runs RQ's scheduler for it, so "
                    "retries with a delay and the wake-ups of sleeps and timeouts never run.",
                    hint="Drop 'ASYNC': False and run workers (manage.py durable_worker); in tests, use "
                    "durable_django.testing.EmbeddedQueue, which runs scheduled jobs too.",
                    id="durable_django.W001",
                )
            )
    return warnings


API_URLCONF = "durable_django.api.urls"


def _resolvers(patterns: list[URLPattern | URLResolver]) -> Iterator[URLResolver]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield pattern
            yield from _resolvers(pattern.url_patterns)


def _mounted(urlconf: str) -> bool:
    """Whether the URLconf includes the module ``urlconf``, at any depth."""
    if not getattr(settings, "ROOT_URLCONF", None):
        return False
    try:
        return any(
            getattr(resolver.urlconf_module, "__name__", resolver.urlconf_name) == urlconf
            for resolver in _resolvers(get_resolver().url_patterns)
        )
    except Exception:
        # A URLconf that cannot be imported is reported by Django's own URL checks.
        return False


@register(Tags.urls)
def check_api_installed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The REST API mounted in the URLconf needs ``rest_framework`` in ``INSTALLED_APPS``.

    Its JSON endpoints answer without it, which hides the mistake: DRF's translations of its
    messages and its own system checks come with the installed app, and only then is the API
    configured as documented.
    """
    if apps.is_installed("rest_framework") or not _mounted(API_URLCONF):
        return []
    return [
        Error(
            f"The REST API ({API_URLCONF}) is included in the URLconf, but 'rest_framework' is not in "
            "settings.INSTALLED_APPS.",
            hint="Add 'rest_framework' (and 'rest_framework.authtoken' for token authentication) to "
            "INSTALLED_APPS, or remove include('durable_django.api.urls') from your urls.py.",
            id="durable_django.E006",
        )
    ]


METRICS_URLCONF = "durable_django.metrics.urls"


@register(Tags.urls)
def check_metrics_installable(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The metrics view mounted in the URLconf needs ``prometheus_client``."""
    if importlib.util.find_spec("prometheus_client") is not None or not _mounted(METRICS_URLCONF):
        return []
    return [
        Error(
            f"The metrics view ({METRICS_URLCONF}) is included in the URLconf, but prometheus_client is not installed.",
            hint="pip install 'durable-django[prometheus]', or remove include('durable_django.metrics.urls') "
            "from your urls.py.",
            id="durable_django.E008",
        )
    ]


@register(Tags.compatibility)
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every schedule declared with ``schedule()`` starts a registered workflow."""
    return [
        Error(
            f"{message}.",
            hint="Correct the workflow's name in schedule(), or define the workflow in a workflows module.",
            id="durable_django.E020",
        )
        for declaration in declared_schedules().values()
        if (message := unknown_workflow(declaration))
    ]
