"""Run the benchmarks side by side and write the report: ``python -m benchmarks.runner``.

Every peer gets the same Redis and PostgreSQL servers and the same number of worker processes.
A peer that fails is reported as ``error: ...`` in its cells; the others carry on. ``--quick``
measures fan-outs of 100 and 1,000 only, with fewer throughput and memory runs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import common, durable, report
from .common import BenchmarkError, Peer, Result, Sample

PEERS = ("durable", "celery", "rq", "dbos")
# Measured with each peer's workers, in this order within one set of workers; then cost and memory.
MEASURED = ("fanout", "sequential", "latency", "throughput", "slow")
SCENARIOS = (*MEASURED, "cost", "memory", "foreach")
# Worker processes of each measured scenario but the fan-out (whose counts are --workers).
SCENARIO_WORKERS = {"sequential": 1, "latency": 2, "throughput": 2, "slow": 3}
SEQUENTIAL_STEPS = 100
# Between two runs of the latency measurement: every worker is idle again when the next one starts.
LATENCY_PAUSE = 0.5
PACKAGES = ("durable-django", "django", "rq", "django-rq", "redis", "psycopg", "celery", "kombu", "dbos", "sqlalchemy")

Cell = tuple[str, str, dict[str, Any], str]


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fan-outs of 100 and 1,000; 200 throughput runs; fewer memory runs"
    )
    parser.add_argument("--sizes", type=_ints, help="fan-out sizes (of 10, 100, 1000, 10000); default 100,1000,10000")
    parser.add_argument("--repetitions", "-r", type=int, default=3, help="repetitions of each measurement (3)")
    parser.add_argument("--workers", type=_ints, default=[1, 2], help="worker processes for fan-out (1,2)")
    parser.add_argument(
        "--worker-class",
        action="append",
        choices=list(durable.WORKER_CLASSES),
        help="how durable_django's workers run, repeatable (default: all three): the durable_worker command, "
        "or rqworker of rq's Worker or SimpleWorker; RQ is measured with the rq classes chosen (SimpleWorker "
        "when there is none)",
    )
    parser.add_argument("--peers", default=",".join(PEERS), help=f"systems to measure ({','.join(PEERS)})")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"what to measure ({','.join(SCENARIOS)})")
    parser.add_argument(
        "--throughput-runs",
        type=_ints,
        help="onboarding runs for throughput, one measurement each (200,1000; 200 with --quick)",
    )
    parser.add_argument("--latency-runs", type=int, default=30, help="onboarding runs, one at a time, for latency (30)")
    parser.add_argument(
        "--memory-runs", type=_ints, help="cumulative runs after which RSS is read (100,10000; 100,1000 with --quick)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one repetition may take (900)")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="skip a fan-out whose repetition is expected to take longer than this many seconds, "
        "extrapolated from the smaller sizes (300)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"), help="where reports go")
    parser.add_argument("--machine", default="", help="how the report names this machine")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 10000])
    args.throughput_runs = args.throughput_runs or ([200] if args.quick else [200, 1000])
    args.memory_runs = args.memory_runs or ([100, 1000] if args.quick else [100, 10000])
    # Always in the order of WORKER_CLASSES: durable_worker's column first.
    chosen = args.worker_class or list(durable.WORKER_CLASSES)
    args.worker_class = [kind for kind in durable.WORKER_CLASSES if kind in chosen]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in args.peers:
        if name not in PEERS:
            parser.error(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if args.latency_runs < 1:
        parser.error("--latency-runs must be at least 1")
    return args


def rq_worker_classes(args: argparse.Namespace) -> list[str]:
    """The rq worker classes RQ is measured with: those chosen for durable_django, or SimpleWorker."""
    return [kind for kind in args.worker_class if kind in durable.RQ_WORKER_CLASSES] or ["SimpleWorker"]


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def settings_lines(peers: list[str]) -> list[str]:
    """How each measured system was configured, for the report (no peer's package is imported)."""
    lines = ["every system on the same PostgreSQL and Redis servers, fsync on"]
    by_peer = {
        "durable": "durable_django: `manage.py durable_worker` processes (DurableWorker: jobs in the worker's "
        "process, rq's scheduler on), or `rqworker` processes of rq's Worker or SimpleWorker without "
        "scheduler; one Django connection per process (per job with the forking Worker)",
        "celery": "Celery: `worker --pool=solo` processes (one task at a time each) for fan-out and sequential "
        "steps; for throughput, latency and slow branches ONE `worker --pool=prefork -c N` (N: the worker "
        "processes of the table); Redis broker and result backend, defaults",
        "rq": "RQ: `rq worker` of the same rq worker class as durable_django's column",
        "dbos": f"DBOS: queue polling interval {common.DBOS_POLLING_INTERVAL:g} s, worker concurrency "
        f"{common.DBOS_WORKER_CONCURRENCY} workflows per process",
    }
    lines += [line for name, line in by_peer.items() if name in peers]
    lines.append(
        "times run from the client's dispatch until the finishing time the system stored "
        "(durable_django: the run's finished_at, or its block's ParallelGroup.finished_at; Celery and RQ: "
        "a timestamp the join task writes to Redis; DBOS: the workflow status row's updated_at)"
    )
    return lines


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_peers(args: argparse.Namespace, log_dir: Path) -> list[Peer | BenchmarkError]:
    """The peers to measure, in order; one that cannot even be imported becomes its error."""
    peers: list[Peer | BenchmarkError] = []
    for name in args.peers:
        try:
            if name == "durable":
                for kind in args.worker_class:
                    peers.append(durable.DurablePeer(log_dir, args.timeout, kind))
            elif name == "celery":
                from .celery_peer import CeleryPeer

                peers.append(CeleryPeer(log_dir, args.timeout))
            elif name == "rq":
                from .rq_peer import RQPeer

                for kind in rq_worker_classes(args):
                    peers.append(RQPeer(log_dir, args.timeout, durable.WORKER_CLASSES[kind]))
            elif name == "dbos":
                from .dbos_peer import DBOSPeer

                peers.append(DBOSPeer(log_dir, args.timeout))
        except Exception as exc:  # an uninstalled peer must not stop the others
            peers.append(BenchmarkError(f"{name}: {type(exc).__name__}: {exc}"))
    return peers


def expected_seconds(previous: list[tuple[int, float]], size: int) -> float | None:
    """Extrapolate a repetition's time at ``size`` from the medians at smaller sizes.

    With two sizes the growth exponent is taken from them (kept between 1 and 2), so a fan-in
    that is quadratic in N is predicted as such; with one, linear growth is assumed.
    """
    if not previous:
        return None
    (n2, t2) = previous[-1]
    exponent = 1.0
    if len(previous) >= 2:
        (n1, t1) = previous[-2]
        if t1 > 0 and t2 > 0 and n2 != n1:
            exponent = min(2.0, max(1.0, math.log(t2 / t1) / math.log(n2 / n1)))
    return t2 * (size / n2) ** exponent


def runs_per_second(peer: Peer, runs: int) -> float:
    """Throughput: ``runs`` onboarding-shaped runs started at once, per second until the last finished."""
    return runs / peer.throughput(runs)


#: A set of workers: how many processes, and whether they are one worker's pool (see ``Peer.pooled``).
Setup = tuple[int, bool]


class Run:
    """One benchmark run: the peers, what they measured, and the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[Result] = []
        self.costs: dict[str, Any] = {}
        self.memory: dict[str, Any] = {}
        self.foreach: dict[str, Any] = {}
        self.started = datetime.now(UTC)
        self.stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.log_dir = args.output_dir / f"logs-{self.stamp}"

    def measure(
        self,
        scenario: str,
        system: str,
        params: dict[str, Any],
        unit: str,
        once: Callable[[], Sample],
        *,
        repetitions: int | None = None,
        each: bool = True,
    ) -> Result:
        times = self.args.repetitions if repetitions is None else repetitions
        result = common.measure(scenario, system, params, unit, times, once, log=log, each=each)
        self.results.append(result)
        return result

    def fail(self, scenario: str, system: str, params: dict[str, Any], unit: str, error: str) -> None:
        self.results.append(Result(scenario, system, params, unit, error=error))

    def setups(self, peer: Peer) -> dict[Setup, list[str]]:
        """The sets of workers ``peer`` is measured with, in order, and the scenarios of each."""
        found: dict[Setup, list[str]] = {}
        for scenario in MEASURED:
            if scenario not in self.args.scenarios or scenario not in peer.scenarios:
                continue
            counts = self.args.workers if scenario == "fanout" else [SCENARIO_WORKERS[scenario]]
            for count in counts:
                found.setdefault((count, scenario in peer.pooled), []).append(scenario)
        return dict(sorted(found.items()))

    def planned(self, peer: Peer, workers: int, scenarios: list[str]) -> list[Cell]:
        """Every cell ``peer`` fills with ``workers`` workers, to mark them all if its workers fail."""
        args = self.args
        cells: list[Cell] = []
        for scenario in scenarios:
            if scenario == "fanout":
                for size in args.sizes:
                    for label in peer.fanout_variants:
                        cells.append(("fanout", label, {"workers": workers, "N": size}, "s"))
            elif scenario == "sequential":
                cells.append(("sequential", peer.label, {"workers": workers, "steps": SEQUENTIAL_STEPS}, "s"))
            elif scenario == "latency":
                cells.append(("latency", peer.label, {"workers": workers, "runs": args.latency_runs}, "s"))
            elif scenario == "throughput":
                for runs in args.throughput_runs:
                    cells.append(("throughput", peer.label, {"workers": workers, "runs": runs}, "runs/s"))
            elif scenario == "slow":
                cells.append(("slow", peer.label, {"workers": workers, "branches": common.SLOW_BRANCHES}, "s"))
        return cells

    def all_planned(self, peer: Peer) -> list[Cell]:
        return [
            cell for (workers, _), names in self.setups(peer).items() for cell in self.planned(peer, workers, names)
        ]

    def first_cell(self, name: str) -> Cell | None:
        """Where the error of a peer that cannot be measured at all goes: its first cell."""
        stub = Peer(self.log_dir, self.args.timeout)
        stub.label = name
        stub.fanout_variants = {name: ""}
        stub.scenarios = frozenset(MEASURED)
        cells = self.all_planned(stub)
        return cells[0] if cells else None

    def run_peer(self, peer: Peer) -> None:
        log(f"== {peer.label}")
        setups = self.setups(peer)
        try:
            peer.setup()
        except Exception as exc:
            for cell in self.all_planned(peer):
                self.fail(*cell, f"setup: {type(exc).__name__}: {exc}")
            log(f"{peer.label}: setup failed: {exc}")
            return
        for (workers, pooled), scenarios in setups.items():
            shape = f"one worker of {workers} pool processes" if pooled else f"{workers} worker(s)"
            try:
                peer.start_workers(workers, pooled=pooled)
            except Exception as exc:
                for cell in self.planned(peer, workers, scenarios):
                    self.fail(*cell, f"workers: {type(exc).__name__}: {exc}".splitlines()[0][:200])
                log(f"{peer.label}: {shape} failed to start: {exc}")
                peer.stop_workers()
                continue
            log(f"  {shape}: {', '.join(scenarios)}")
            try:
                self.run_scenarios(peer, (workers, pooled), scenarios)
            finally:
                peer.stop_workers()

    def run_scenarios(self, peer: Peer, setup: Setup, scenarios: list[str]) -> None:
        args = self.args
        workers = setup[0]
        if "fanout" in scenarios:
            for label, variant in peer.fanout_variants.items():
                previous: list[tuple[int, float]] = []
                for size in args.sizes:
                    params = {"workers": workers, "N": size}
                    expected = expected_seconds(previous, size)
                    if expected is not None and expected > args.budget:
                        note = (
                            f"skipped: ~{expected / 60:.0f} min per repetition expected "
                            f"(from N={previous[-1][0]:,}; budget {args.budget / 60:.0f} min)"
                        )
                        self.results.append(Result("fanout", label, params, "s", note=note))
                        log(f"  fanout {label} {params}: {note}")
                        continue
                    result = self.measure("fanout", label, params, "s", partial(peer.fanout, size, variant))
                    if result.median is not None:
                        previous.append((size, result.median))
                    elif result.error:
                        self._recover(peer, setup)
        if "sequential" in scenarios:
            params = {"workers": workers, "steps": SEQUENTIAL_STEPS}
            result = self.measure("sequential", peer.label, params, "s", partial(peer.sequential, SEQUENTIAL_STEPS))
            if result.error:
                self._recover(peer, setup)
        if "latency" in scenarios:
            params = {"workers": workers, "runs": args.latency_runs}

            def one_run() -> float:
                time.sleep(LATENCY_PAUSE)
                return peer.latency()

            result = self.measure(
                "latency", peer.label, params, "s", one_run, repetitions=args.latency_runs, each=False
            )
            if result.error:
                self._recover(peer, setup)
        if "throughput" in scenarios:
            for runs in args.throughput_runs:
                params = {"workers": workers, "runs": runs}
                result = self.measure("throughput", peer.label, params, "runs/s", partial(runs_per_second, peer, runs))
                if result.error:
                    self._recover(peer, setup)
        if "slow" in scenarios:
            params = {"workers": workers, "branches": common.SLOW_BRANCHES}
            self.measure("slow", peer.label, params, "s", peer.slow)

    def _recover(self, peer: Peer, setup: Setup) -> None:
        """After a failed measurement, fresh workers, so leftovers do not slow down the next one."""
        try:
            peer.start_workers(setup[0], pooled=setup[1])
        except Exception as exc:
            log(f"{peer.label}: could not restart workers: {exc}")

    def run_durable_extras(self, peers: list[Peer]) -> None:
        """Cost per step and branch, and worker memory: durable_django only."""
        ours = [peer for peer in peers if isinstance(peer, durable.DurablePeer)]
        if not ours:
            return
        if "cost" in self.args.scenarios:
            workflows = ["bench_single", "bench_sequential", "bench_fanout_10", "bench_fanout_100"]
            log("== cost per unit of work (in process)")
            try:
                durable.prepare_database()
                self.costs["in process (SimpleWorker)"] = self._costs(durable.cost_in_process(workflows))
            except Exception as exc:
                self.costs["in process (SimpleWorker)"] = {"error": f"{type(exc).__name__}: {exc}"}
                log(traceback.format_exc())
            for peer in ours:
                short = peer.kind
                log(f"== cost per unit of work ({peer.label}, 1 worker)")
                try:
                    peer.extra_env = {"BENCH_RECOVER_IN_WORKERS": "0"}
                    peer.start_workers(1)
                    self.costs[f"1 worker process ({short})"] = self._costs(durable.cost_with_workers(peer, workflows))
                    peer.stop_workers()
                    peer.extra_env = {}
                    peer.start_workers(1)
                    rate = durable.idle_transactions_per_minute(peer)
                    self.costs[f"1 worker process ({short})"]["idle transactions per minute"] = rate
                    log(f"  idle: {rate:.1f} transactions per minute")
                except Exception as exc:
                    self.costs[f"1 worker process ({short})"] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(traceback.format_exc())
                finally:
                    peer.extra_env = {}
                    peer.stop_workers()
        if "foreach" in self.args.scenarios:
            # One worker kind is enough: the figures compare durable_django with itself.
            peer = ours[0]
            log(f"== foreach ({peer.label})")
            try:
                durable.prepare_database()
                self.foreach[peer.label] = durable.foreach_figures(peer, self.args.sizes, self.args.repetitions)
                log(f"  {json.dumps(self.foreach[peer.label])}")
            except Exception as exc:
                self.foreach[peer.label] = {"error": f"{type(exc).__name__}: {exc}"}
                log(traceback.format_exc())
        if "memory" in self.args.scenarios:
            for peer in ours:
                log(f"== memory ({peer.label})")
                try:
                    self.memory[peer.label] = durable.memory(peer, self.args.memory_runs)
                    log(f"  {self.memory[peer.label]}")
                except Exception as exc:
                    self.memory[peer.label] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(traceback.format_exc())

    @staticmethod
    def _costs(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        for workflow, data in runs.items():
            log(f"  {workflow}: {json.dumps({k: v for k, v in data.items() if not isinstance(v, dict)})}")
        return {
            "per sequential step": durable.per_unit(runs["bench_single"], runs["bench_sequential"], 99),
            "per branch": durable.per_unit(runs["bench_fanout_10"], runs["bench_fanout_100"], 90),
            "runs": runs,
        }

    def write(self, finished: float) -> Path:
        minutes, seconds = divmod(int(finished), 60)
        args = self.args
        meta = {
            "started": self.started.strftime("%Y-%m-%d %H:%M UTC"),
            "duration": f"{minutes} min {seconds} s",
            "machine": args.machine or f"{platform.machine()}, {common.cpu_count()} cores",
            "servers": common.server_versions(),
            "versions": versions(),
            "repetitions": args.repetitions,
            "settings": settings_lines(args.peers),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        markdown = report.render(meta, self.results, self.costs, self.memory, self.foreach)
        path = args.output_dir / f"bench-{self.stamp}.md"
        path.write_text(markdown + "\n")
        data = {
            "meta": meta,
            "results": [r.as_dict() for r in self.results],
            "costs": self.costs,
            "memory": self.memory,
            "foreach": self.foreach,
        }
        path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.install_cleanup()
    run = Run(args)
    begin = time.monotonic()
    log(f"servers: {common.server_versions()}")
    log(f"versions: {versions()}")
    # durable_django's runner side (start_workflow, reading runs) needs Django set up in this process.
    durable.configure()
    peers = build_peers(args, run.log_dir)
    for peer in peers:
        if isinstance(peer, BenchmarkError):
            log(f"cannot measure {peer}")
            cell = run.first_cell(str(peer).split(":", 1)[0])
            if cell is not None:
                run.fail(*cell, str(peer))
            continue
        try:
            run.run_peer(peer)
        except Exception as exc:
            log(f"{peer.label} aborted: {exc}\n{traceback.format_exc()}")
            for cell in run.all_planned(peer):
                if not any((r.scenario, r.system, r.params) == cell[:3] for r in run.results):
                    run.fail(*cell, f"{type(exc).__name__}: {exc}")
    run.run_durable_extras([peer for peer in peers if isinstance(peer, Peer)])
    path = run.write(time.monotonic() - begin)
    log(f"report: {path} (and {path.with_suffix('.json').name}); logs in {run.log_dir}")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
