"""The ``/metrics`` view: Prometheus's text format, for staff who may view runs or a scraper's token."""

from __future__ import annotations

import hmac
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ..conf import durable_settings

PERMISSION = "durable_django.view_workflowrun"
MISSING = (
    "durable_django.metrics needs prometheus_client, which is not installed: "
    "pip install 'durable-django[prometheus]' (or prometheus_client), or remove "
    "include('durable_django.metrics.urls') from your urls.py."
)

_registry: Any = None


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if the request has one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def denied(request: HttpRequest) -> HttpResponse | None:
    """The answer to a request that may not read the metrics; ``None`` when it may.

    A bearer token must equal ``DURABLE["METRICS_TOKEN"]`` (compared in constant time); without
    one, the user must be staff with ``durable_django.view_workflowrun``.
    """
    token = bearer_token(request)
    if token is not None:
        expected = durable_settings.METRICS_TOKEN
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return HttpResponse("Invalid metrics token.\n", status=403, content_type="text/plain")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        answer = HttpResponse(
            "Log in as staff, or send Authorization: Bearer <DURABLE['METRICS_TOKEN']>.\n",
            status=401,
            content_type="text/plain",
        )
        answer["WWW-Authenticate"] = 'Bearer realm="durable_django metrics"'
        return answer
    if user.is_staff and user.has_perm(PERMISSION):
        return None
    return HttpResponse(
        f"Reading the metrics needs staff status and {PERMISSION}.\n", status=403, content_type="text/plain"
    )


def registry() -> Any:
    """The registry that holds the collector, built once; raises ``ImproperlyConfigured`` without
    ``prometheus_client``."""
    global _registry
    if _registry is None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise ImproperlyConfigured(MISSING) from exc
        from .collector import DurableCollector

        # auto_describe would collect (and query) once at registration.
        built = CollectorRegistry(auto_describe=False)
        built.register(DurableCollector())
        _registry = built
    return _registry


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The metrics of durable_django in Prometheus's text exposition format."""
    answer = denied(request)
    if answer is not None:
        return answer
    scraped = registry()
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return HttpResponse(generate_latest(scraped), content_type=CONTENT_TYPE_LATEST)
