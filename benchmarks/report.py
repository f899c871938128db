"""The markdown report of a benchmark run: one table per scenario, then durable_django's ratios."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from .common import Result

DURABLE = "durable_django"


def cell(result: Result | None) -> str:
    """``median (min-max)`` of a measurement, or why there is none."""
    if result is None:
        return "-"
    if result.note and not result.samples:
        return result.note
    if result.error and not result.samples:
        return f"error: {result.error}"
    digits = 1 if result.unit == "runs/s" else 2 if (result.median or 0) >= 10 else 3
    text = f"{result.median:.{digits}f} {result.unit}"
    if len(result.samples) > 1:
        text += f" ({min(result.samples):.{digits}f}-{max(result.samples):.{digits}f})"
    if result.error:
        text += f", then error: {result.error}"
    return text


def ratio(ours: Result | None, theirs: Result | None) -> str:
    if ours is None or theirs is None:
        return "-"
    return _ratio(ours.median, theirs.median)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def _variant(system: str) -> str:
    """``durable_django (durable_worker)`` -> ``durable_worker``: the row label of a ratio table."""
    return system.removeprefix(DURABLE).strip().strip("()") or system


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _systems(results: list[Result]) -> list[str]:
    seen: list[str] = []
    for result in results:
        if result.system not in seen:
            seen.append(result.system)
    return seen


def _find(results: list[Result], system: str, **params: Any) -> Result | None:
    for result in results:
        if result.system == system and all(result.params.get(k) == v for k, v in params.items()):
            return result
    return None


def _scenario_tables(results: list[Result], scenario: str, keys: list[str], note: str) -> list[str]:
    """The measurements of ``scenario`` (rows: parameter values, columns: systems) and the ratios."""
    chosen = [r for r in results if r.scenario == scenario]
    if not chosen:
        return []
    systems = _systems(chosen)
    combos: list[tuple[Any, ...]] = []
    for result in chosen:
        combo = tuple(result.params.get(key) for key in keys)
        if combo not in combos:
            combos.append(combo)
    lines = _table(
        [*keys, *systems],
        (
            [*(f"{value:,}" if isinstance(value, int) else str(value) for value in combo)]
            + [cell(_find(chosen, system, **dict(zip(keys, combo, strict=True)))) for system in systems]
            for combo in combos
        ),
    )
    ours, peers = _split(systems)
    if ours and peers:
        # One row per durable_django variant, one column per peer.
        lines += ["", note, ""]
        lines += _table(
            [*keys, DURABLE, *peers],
            (
                [*(f"{value:,}" if isinstance(value, int) else str(value) for value in combo), _variant(o)]
                + [
                    ratio(
                        _find(chosen, o, **dict(zip(keys, combo, strict=True))),
                        _find(chosen, p, **dict(zip(keys, combo, strict=True))),
                    )
                    for p in peers
                ]
                for combo in combos
                for o in ours
            ),
        )
    return lines


def _split(systems: list[str]) -> tuple[list[str], list[str]]:
    """durable_django's variants, and the peers."""
    return [s for s in systems if s.startswith(DURABLE)], [s for s in systems if not s.startswith(DURABLE)]


def _values(result: Result | None, name: str | None = None) -> list[float]:
    """A measurement's samples, or the named figures each repetition returned besides them."""
    if result is None:
        return []
    return list(result.samples) if name is None else [float(v) for v in result.extra.get(name, [])]


def _summary(result: Result | None, values: list[float]) -> str:
    """``median (min-max)`` of ``values`` in seconds, or why there are none."""
    if result is None:
        return "-"
    if not values:
        return result.note or (f"error: {result.error}" if result.error else "-")
    digits = 3 if statistics.median(values) < 10 else 2
    text = f"{statistics.median(values):.{digits}f} s"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    if result.error:
        text += f", then error: {result.error}"
    return text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def latency_tables(results: list[Result]) -> list[str]:
    """Median and p90 of one onboarding-shaped run at a time, and durable_django's ratios to each peer."""
    chosen = [r for r in results if r.scenario == "latency"]
    if not chosen:
        return []
    systems = _systems(chosen)
    rows = []
    for system in systems:
        result = _find(chosen, system)
        assert result is not None
        if not result.samples:
            rows.append([system, str(result.params.get("workers", "")), "0", _summary(result, []), "", ""])
            continue
        rows.append(
            [
                system,
                str(result.params.get("workers", "")),
                str(len(result.samples)),
                _ms(result.median),
                _ms(result.p90),
                f"{_ms(min(result.samples))} - {_ms(max(result.samples))}"
                + (f", then error: {result.error}" if result.error else ""),
            ]
        )
    lines = _table(["system", "workers", "runs", "median", "p90", "min - max"], rows)
    ours, peers = _split(systems)
    if ours and peers:
        lines += ["", "durable_django's median and p90 / the peer's (below 1x: durable_django is faster):", ""]
        header = [DURABLE, *(f"{kind} / {p}" for p in peers for kind in ("median", "p90"))]
        body = []
        for o in ours:
            mine = _find(chosen, o)
            row = [_variant(o)]
            for p in peers:
                theirs = _find(chosen, p)
                row.append(ratio(mine, theirs))
                row.append(_ratio(mine.p90 if mine else None, theirs.p90 if theirs else None))
            body.append(row)
        lines += _table(header, body)
    return lines


def slow_tables(results: list[Result]) -> list[str]:
    """Slow branches: until the block was joined and until the run finished, and the ratios."""
    chosen = [r for r in results if r.scenario == "slow"]
    if not chosen:
        return []
    systems = _systems(chosen)
    rows = []
    for system in systems:
        result = _find(chosen, system)
        workers = str(result.params.get("workers", "")) if result else ""
        rows.append(
            [system, workers, _summary(result, _values(result)), _summary(result, _values(result, "run finished"))]
        )
    lines = _table(["system", "workers", "block joined", "run finished"], rows)
    ours, peers = _split(systems)
    if ours and peers:
        lines += ["", TIME_NOTE, ""]
        header = [DURABLE, *(f"{kind} / {p}" for p in peers for kind in ("block", "run"))]
        body = []
        for o in ours:
            mine = _find(chosen, o)
            row = [_variant(o)]
            for p in peers:
                theirs = _find(chosen, p)
                row.append(ratio(mine, theirs))
                mine_run, theirs_run = _values(mine, "run finished"), _values(theirs, "run finished")
                row.append(
                    _ratio(
                        statistics.median(mine_run) if mine_run else None,
                        statistics.median(theirs_run) if theirs_run else None,
                    )
                )
            body.append(row)
        lines += _table(header, body)
    return lines


TIME_NOTE = "durable_django's time / the peer's time (below 1x: durable_django is faster):"


def render_foreach(foreach: dict[str, Any]) -> list[str]:
    """The foreach section: a dynamic fan-out next to a static one, and max_concurrency."""
    lines: list[str] = []
    for label, entry in foreach.items():
        if "error" in entry:
            lines += [f"{label}: error: {entry['error']}", ""]
            continue
        rows = [
            [
                f"{int(size):,}",
                str(figures["workers"]),
                _spread(figures["static_seconds"]),
                _spread(figures["foreach_seconds"]),
                f"{figures['ratio']:.2f}x",
            ]
            for size, figures in entry["fan-out"].items()
        ]
        lines += [
            f"{label}: a foreach over N no-op items, then a join that reads every result, next to a static "
            "parallel block of N branches (seconds, median and min-max):",
            "",
        ]
        lines += [*_table(["N", "workers", "parallel block", "foreach", "foreach / parallel"], rows), ""]
        rows = [
            [
                limit,
                str(figures["workers"]),
                f"{figures['items']} x {figures['item_seconds']:g} s",
                f"{figures['ideal_seconds']:.2f}",
                _spread(figures["seconds"]),
                str(figures["peak"]),
            ]
            for limit, figures in entry["max_concurrency"].items()
        ]
        lines += ["Slow items under max_concurrency (the most items seen executing at once, read from their rows):", ""]
        lines += [*_table(["max_concurrency", "workers", "items", "ideal (s)", "seconds", "peak at once"], rows), ""]
    return lines


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    return f"{middle:.3f} ({ordered[0]:.3f}-{ordered[-1]:.3f})"


def render(
    meta: dict[str, Any],
    results: list[Result],
    costs: dict[str, Any],
    memory: dict[str, Any],
    foreach: dict[str, Any] | None = None,
) -> str:
    """The whole report as markdown."""
    lines = [f"# Benchmark run of {meta['started']}", ""]
    lines += [
        f"Machine: {meta['machine']}. PostgreSQL {meta['servers']['postgresql']} "
        f"(fsync={meta['servers']['fsync']}, synchronous_commit={meta['servers']['synchronous_commit']}), "
        f"Redis {meta['servers']['redis']}, Python {meta['servers']['python']}. "
        f"Repetitions: {meta['repetitions']} (median, min-max). The whole run took {meta['duration']}.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()) + ".",
        "",
        "Settings: " + "; ".join(meta["settings"]) + ".",
        "",
    ]
    sections = [
        ("Fan-out/fan-in: N no-op branches, then a join that reads every result", "fanout", ["workers", "N"]),
        ("Sequential: 100 no-op steps, one worker process", "sequential", ["workers", "steps"]),
    ]
    for title, scenario, keys in sections:
        body = _scenario_tables(results, scenario, keys, TIME_NOTE)
        if body:
            lines += [f"## {title}", "", *body, ""]
    body = _scenario_tables(
        results,
        "throughput",
        ["workers", "runs"],
        "durable_django's runs per second / the peer's (above 1x: durable_django is faster):",
    )
    if body:
        lines += [
            "## Throughput: onboarding-shaped runs (1 step, 3 in parallel, 1 step) started at once",
            "",
            "Runs per second from the first start until the last run finished. Celery: one "
            "`worker --pool=prefork -c 2`; the others: 2 worker processes.",
            "",
            *body,
            "",
        ]
    body = latency_tables(results)
    if body:
        lines += [
            "## Latency: one onboarding-shaped run at a time, on idle workers",
            "",
            "From the start of a run until it finished, one run after the other with a pause of 0.5 s "
            "between them, so that every worker is idle when a run starts. Celery: one `worker --pool=prefork -c 2`; "
            "the others: 2 worker processes.",
            "",
            *body,
            "",
        ]
    body = slow_tables(results)
    if body:
        lines += [
            "## Slow branches: a block of 3 branches sleeping 1 s each, then a step",
            "",
            "From the start of the run until the block was joined (durable_django: its group's stored "
            "`finished_at`; Celery: the time its chord's body recorded, which is also the step after the "
            "block) and until the run finished (durable_django: the run's `finished_at`). With the branches "
            "side by side the block takes a little over 1 s, one after the other 3 s. Celery: one "
            "`worker --pool=prefork -c 3`; durable_django: 3 worker processes.",
            "",
            *body,
            "",
        ]
    if costs:
        lines += ["## durable_django: cost per unit of work", "", *render_costs(costs), ""]
    if memory:
        lines += ["## durable_django: worker resident memory (RSS)", "", *render_memory(memory), ""]
    if foreach:
        lines += ["## durable_django: foreach", "", *render_foreach(foreach)]
    return "\n".join(lines)


def render_costs(costs: dict[str, Any]) -> list[str]:
    rows = []
    for label, entry in costs.items():
        if "error" in entry:
            rows.append([label, f"error: {entry['error']}", "", "", ""])
            continue
        for unit in ("per sequential step", "per branch"):
            numbers = entry.get(unit, {})
            rows.append(
                [
                    label,
                    unit,
                    _number(numbers.get("transactions")),
                    _number(numbers.get("statements")),
                    _number(numbers.get("redis_commands")),
                ]
            )
    lines = _table(["measured with", "unit", "PostgreSQL transactions", "SQL statements", "Redis commands"], rows)
    lines += [
        "",
        "Each figure is the difference between two runs divided by the steps or branches between them "
        "(100 steps vs 1; 100 branches vs 10), so a run's fixed cost is left out. Transactions are "
        "`pg_stat_database.xact_commit` deltas of the benchmark database (every statement outside a "
        "transaction block is one); statements come from Django's query log in the in-process run; "
        "Redis commands are those `MONITOR` saw on the benchmark's Redis database (rq's own "
        "bookkeeping included).",
    ]
    idle = [
        f"{label}: {entry['idle transactions per minute']:.0f}"
        for label, entry in costs.items()
        if "idle transactions per minute" in entry
    ]
    if idle:
        lines += [
            "",
            "Measured with the workers' recovery sweep turned off: its transactions come with time, not "
            "with work. Idle workers with the sweep on (the default) commit, per minute: " + "; ".join(idle) + ".",
        ]
    breakdown = costs.get("in process (SimpleWorker)", {}).get("runs", {})
    if breakdown:
        lines += ["", "Statements by kind and Redis commands by name of the in-process runs:", ""]
        lines += _table(
            ["workflow", "statements", "Redis commands (top 8)"],
            (
                [
                    workflow,
                    ", ".join(f"{k} {v}" for k, v in sorted(data["statements_by_kind"].items())),
                    ", ".join(
                        f"{k} {v}" for k, v in sorted(data["redis_commands_by_name"].items(), key=lambda kv: -kv[1])[:8]
                    ),
                ]
                for workflow, data in breakdown.items()
            ),
        )
    return lines


def render_memory(memory: dict[str, Any]) -> list[str]:
    checkpoints: list[str] = []
    for entry in memory.values():
        for key in entry.get("rss_kib", {}):
            if key not in checkpoints:
                checkpoints.append(key)
    rows = []
    for label, entry in memory.items():
        if "error" in entry:
            rows.append([label, *(["error: " + entry["error"]] + [""] * (len(checkpoints) - 1))])
            continue
        rss = entry["rss_kib"]
        rows.append([label, *(f"{rss[key] / 1024:.1f} MiB" if key in rss else "-" for key in checkpoints)])
    header = ["worker", *("after warm-up" if key == "0" else f"after {int(key):,} runs" for key in checkpoints)]
    return [
        *_table(header, rows),
        "",
        "The worker's main process (VmRSS of /proc/<pid>/status), one worker running the one-step "
        "workflow `bench_single`, the runs after each checkpoint started at once. rq's forking Worker "
        "executes each job in a short-lived child; its main process holds the recovery sweep and rq's "
        "own bookkeeping.",
    ]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
