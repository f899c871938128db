"""The receivers that count signals in Redis: connected only while ``DURABLE["METRICS"]`` is true.

One Redis round trip per signal, in the process that sent it (see :func:`durable_django.counters.add_to_metrics`).
Counting is best effort: a Redis that does not answer loses the signal's counts and logs a warning;
the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .. import counters, dispatch
from ..conf import durable_settings
from ..exceptions import DurableConfigurationError
from ..models import StepResult, StepStatus, WorkflowRun
from ..signals import run_finished, run_started, step_finished
from . import (
    RUNS_FINISHED,
    RUNS_STARTED,
    STEP_ATTEMPTS,
    STEP_DURATION_BUCKETS,
    STEP_DURATION_SUM,
    STEP_FAILURES,
    bucket,
)

logger = logging.getLogger("durable_django.metrics")


def _add(amounts: list[tuple[str, tuple[str, ...], int | float]]) -> None:
    try:
        counters.add_to_metrics(amounts)
    except dispatch.QUEUE_UNAVAILABLE as exc:
        logger.warning("metrics not counted (%s: %s)", type(exc).__name__, exc)


def count_run_started(sender: str, run: WorkflowRun, **named: Any) -> None:
    _add([(RUNS_STARTED, (sender,), 1)])


def count_run_finished(sender: str, run: WorkflowRun, **named: Any) -> None:
    _add([(RUNS_FINISHED, (sender, run.status), 1)])


def count_step_finished(sender: str, run: WorkflowRun, step_result: StepResult, **named: Any) -> None:
    key = (sender, step_result.step)
    amounts: list[tuple[str, tuple[str, ...], int | float]] = [(STEP_ATTEMPTS, key, 1)]
    if step_result.status == StepStatus.FAILED:
        amounts.append((STEP_FAILURES, key, 1))
    if step_result.started_at is not None and step_result.finished_at is not None:
        seconds = max((step_result.finished_at - step_result.started_at).total_seconds(), 0.0)
        amounts.append((STEP_DURATION_BUCKETS, (sender, step_result.step, bucket(seconds)), 1))
        amounts.append((STEP_DURATION_SUM, key, float(seconds)))
    _add(amounts)


RECEIVERS: dict[Signal, Any] = {
    run_started: count_run_started,
    run_finished: count_run_finished,
    step_finished: count_step_finished,
}


def uid(signal: Signal) -> str:
    return f"durable_django.metrics.{RECEIVERS[signal].__name__}"


def connected() -> bool:
    """Whether the receivers are connected."""
    # Each entry of Signal.receivers starts with its lookup key, (dispatch_uid, sender id).
    return all(any(entry[0][0] == uid(signal) for entry in signal.receivers) for signal in RECEIVERS)


def sync(**kwargs: Any) -> None:
    """Connect the receivers when ``DURABLE["METRICS"]`` is true, disconnect them otherwise (also a
    ``setting_changed`` receiver, so that ``override_settings`` turns metrics on and off)."""
    if kwargs.get("setting") not in (None, "DURABLE"):
        return
    try:
        on = durable_settings.METRICS
    except DurableConfigurationError:
        on = False  # settings.DURABLE is not a dict: durable_django.E001 says so
    for signal, receiver in RECEIVERS.items():
        if on:
            signal.connect(receiver, dispatch_uid=uid(signal))
        else:
            signal.disconnect(dispatch_uid=uid(signal))
