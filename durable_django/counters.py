"""Counters durable_django keeps in Redis beside its jobs: those of :mod:`durable_django.metrics`.

One hash per metric, a field per label set (its values as a JSON list), on the Redis of
``DURABLE["QUEUE"]``'s queue, so that the worker processes of every machine add to the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .conf import durable_settings
from .dispatch import get_queue

METRICS_PREFIX = "durable_django:metrics:"
#: The counters of what recovery did, by field of durable_django.recovery.Report.
RECOVERY_METRIC = "recovery"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def add_to_metrics(amounts: Iterable[tuple[str, tuple[str, ...], int | float]]) -> None:
    """Add each ``(metric, label values, amount)`` to its counter, in one round trip (``HINCRBY``
    for whole amounts, ``HINCRBYFLOAT`` otherwise); one ``MULTI``, so a scrape sees all or none."""
    pipe = get_queue(durable_settings.QUEUE).connection.pipeline(transaction=True)
    for metric, labels, amount in amounts:
        key = json.dumps(list(labels), separators=(",", ":"))
        if isinstance(amount, int):
            pipe.hincrby(METRICS_PREFIX + metric, key, amount)
        else:
            pipe.hincrbyfloat(METRICS_PREFIX + metric, key, amount)
    pipe.execute()


def read_metrics(metrics: Iterable[str]) -> dict[str, dict[tuple[str, ...], float]]:
    """The counters of each of ``metrics``, by label values, in one round trip."""
    metrics = list(metrics)
    pipe = get_queue(durable_settings.QUEUE).connection.pipeline(transaction=False)
    for metric in metrics:
        pipe.hgetall(METRICS_PREFIX + metric)
    return {
        metric: {tuple(json.loads(_text(key))): float(value) for key, value in found.items()}
        for metric, found in zip(metrics, pipe.execute(), strict=True)
    }
