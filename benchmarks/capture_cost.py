"""What per-step log capture costs: 100 sequential steps, capture on and off, each step quiet or
logging 3 records; the statements and transactions per step, and the time per step.

    python -m benchmarks.capture_cost [--steps 100] [--repeat 7]

Runs in process (``EmbeddedQueue``: RQ on fakeredis, the worker in this process) against the
PostgreSQL database of ``BENCH_DATABASE_URL`` (see ``benchmarks/settings.py``), which it migrates.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from typing import Any


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def kinds(captured: Any) -> tuple[int, int]:
    """(statements, transactions) of the captured queries: a statement outside BEGIN...COMMIT that
    writes is a transaction of its own."""
    statements = transactions = depth = 0
    for query in captured.captured_queries:
        verb = query["sql"].strip().split(None, 1)[0].upper()
        if verb == "BEGIN":
            depth, transactions = depth + 1, transactions + 1
        elif verb in ("COMMIT", "ROLLBACK"):
            depth -= 1
        elif verb in ("SAVEPOINT", "RELEASE"):
            continue
        else:
            statements += 1
            if depth == 0 and verb != "SELECT":
                transactions += 1
    return statements, transactions


def measure(steps: int, repeat: int) -> list[dict[str, Any]]:
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext

    from durable_django import engine, ok, step, workflow
    from durable_django.models import StepResult
    from durable_django.testing import EmbeddedQueue

    logger = logging.getLogger("bench.steps")

    def logging_step(ctx: dict[str, Any]) -> Any:
        logger.info("step %s: loaded %d rows", ctx.get("n", 0), 3)
        logger.info("step %s: checked", ctx.get("n", 0))
        logger.warning("step %s: slow answer from %s", ctx.get("n", 0), "the gateway")
        return ok()

    shapes = {
        "quiet": workflow("bench_capture_quiet", [step(f"s{i}", lambda ctx: ok()) for i in range(steps)]),
        "logging": workflow("bench_capture_logging", [step(f"s{i}", logging_step) for i in range(steps)]),
    }
    # The time inside each step's call (capture's own work included), apart from the commits,
    # whose time varies with what else the machine does.
    calls: list[float] = []
    call_step = engine.call_step

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call_step(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - started)

    engine.call_step = timed  # type: ignore[assignment]
    results: dict[tuple[str, bool], dict[str, Any]] = {}
    with EmbeddedQueue() as queue:
        # On and off alternate, so that both see the same load of the machine.
        for _ in range(repeat):
            for shape, wf in shapes.items():
                for capture in (False, True):
                    entry = results.setdefault(
                        (shape, capture), {"times": [], "calls": [], "costs": set(), "stored": 0}
                    )
                    with override_settings(DURABLE={"QUEUE": "bench", "CAPTURE_LOGS": capture}):
                        run = wf.start()
                        calls.clear()
                        with CaptureQueriesContext(connection) as captured:
                            started = time.perf_counter()
                            queue.run_until_idle(timeout=120)
                            entry["times"].append(time.perf_counter() - started)
                    entry["calls"].append(sum(calls))
                    entry["costs"].add(kinds(captured))
                    logs = StepResult.objects.filter(run=run).values_list("logs", flat=True)
                    entry["stored"] = sum(len(row) for row in logs)
    engine.call_step = call_step  # type: ignore[assignment]
    found = []
    for (shape, capture), entry in results.items():
        (statements, transactions) = entry["costs"].pop() if len(entry["costs"]) == 1 else (None, None)
        found.append(
            {
                "shape": shape,
                "capture": capture,
                "statements": statements,
                "transactions": transactions,
                "ms per step": statistics.median(entry["times"]) / steps * 1000,
                "us per call": statistics.median(entry["calls"]) / steps * 1e6,
                "records stored": entry["stored"],
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()
    setup()
    rows = measure(options.steps, options.repeat)
    print(
        "| steps | capture | statements per run | transactions per run | step call, µs (median) "
        "| whole step, ms (median) | records stored per run |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['shape']} | {'on' if row['capture'] else 'off'} | {row['statements'] or 'varies'} | "
            f"{row['transactions'] or 'varies'} | {row['us per call']:.0f} | {row['ms per step']:.2f} | "
            f"{row['records stored']} |"
        )


if __name__ == "__main__":
    main()
