"""Prometheus metrics of runs, attempts and recovery (optional: ``pip install durable-django[prometheus]``).

With ``DURABLE["METRICS"] = True``, receivers of :mod:`durable_django.signals`
(:mod:`.receivers`) add to counters kept in Redis, in whatever process made the change; the view
of :mod:`.views` (mount :mod:`.urls`) reads them, and the database for the gauges, when Prometheus
scrapes it (:mod:`.collector`). Only the collector and the view need ``prometheus_client``.

The counters are named here; :mod:`durable_django.dispatch` keeps them in Redis.
"""

from __future__ import annotations

from .. import counters

RUNS_STARTED = "runs_started"  # field [workflow]
RUNS_FINISHED = "runs_finished"  # [workflow, status]
STEP_ATTEMPTS = "step_attempts"  # [workflow, step]
STEP_FAILURES = "step_failures"  # [workflow, step]
STEP_DURATION_BUCKETS = "step_duration_buckets"  # [workflow, step, upper bound]: not cumulative
STEP_DURATION_SUM = "step_duration_sum"  # [workflow, step]
RECOVERY = counters.RECOVERY_METRIC  # [what recovery did: a field of durable_django.recovery.Report]

COUNTERS = (
    RUNS_STARTED,
    RUNS_FINISHED,
    STEP_ATTEMPTS,
    STEP_FAILURES,
    STEP_DURATION_BUCKETS,
    STEP_DURATION_SUM,
    RECOVERY,
)

#: Upper bounds, in seconds, of the step duration histogram's buckets, as Prometheus writes them.
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0",
           "300.0", "900.0", "3600.0", "+Inf")  # fmt: skip


def bucket(seconds: float) -> str:
    """The upper bound of the one bucket a duration of ``seconds`` is counted in."""
    return next(bound for bound in BUCKETS if seconds <= float(bound))
