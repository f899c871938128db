"""A flaky external API: it fails the first N calls for a key, then answers.

Which call fails is decided by a counter row (``ExternalEndpoint``), not by chance, so the
retry example always shows the same attempts: N failures, then a success.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from ..models import ExternalEndpoint


class ExternalAPIError(Exception):
    """The external service answered with an error."""


def fetch_data(key: str, *, fail_first: int = 0) -> dict[str, Any]:
    """Call the API for ``key``; raises :class:`ExternalAPIError` on each of its first ``fail_first`` calls."""
    with transaction.atomic():
        endpoint, _ = ExternalEndpoint.objects.get_or_create(key=key, defaults={"fail_first": fail_first})
        # Counted in the database, so concurrent and later attempts see every earlier call.
        ExternalEndpoint.objects.filter(pk=endpoint.pk).update(calls=F("calls") + 1)
        endpoint.refresh_from_db(fields=["calls"])
    if endpoint.calls <= endpoint.fail_first:
        raise ExternalAPIError(f"503 Service Unavailable (call {endpoint.calls} of {key!r})")
    return {"key": key, "rate": 1.0842, "served_on_call": endpoint.calls}
