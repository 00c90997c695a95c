"""Benchmark prefork against its peers, side by side, in one run.

    python bench/run.py                 # everything: 1 worker, pinned, 3 rounds of 5 s
    python bench/run.py --quick         # the CI smoke mode: seconds, never fails on a number
    python bench/run.py --servers prefork,uvicorn-httptools --scenarios hello,close

Each (scenario, round, server) gets a fresh server on a fresh port, a 1 s
warm-up, then ``wrk`` for ``--duration`` seconds while the RSS of the server's
process tree is sampled.  Rounds are interleaved (A B C, A B C, ...) so that
drift on a shared machine hits every server alike; the report shows medians
and prefork / peer ratios.  Nothing is installed: a missing peer is a row
saying how to install it.  Exit status: 0 when it ran, 1 when prefork itself
could not be started, 2 for bad usage or a missing wrk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import asgi, load, procs, report, supervisor, ws_load  # noqa: E402
from bench.servers import BY_NAME, Launch, Server, prefork_wsgi_missing  # noqa: E402

MIB = 1024 * 1024
DISTURBED = 0.10  # others' CPU on the pinned cores above which a round is flagged
QUICK_SCENARIOS = ("hello", "pipeline16", "asgi-hello", "fastapi-json", "asgi-echo-10k", "ws-echo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: 1 s, 1 round, 6 scenarios"
    )
    parser.add_argument("--results", type=Path, help="output folder (default bench/results/TIME)")
    parser.add_argument("--workers", type=int, default=1, help="workers per server (default 1)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--warmup", type=int, help="seconds of wrk before each run (default 1)")
    parser.add_argument("--servers", help="comma list, default all: " + ",".join(BY_NAME))
    parser.add_argument("--scenarios", help="comma list, default all: " + ",".join(load.BY_NAME))
    parser.add_argument("--no-supervisor", action="store_true", help="skip supervisor figures")
    parser.add_argument(
        "--calm",
        type=float,
        default=DISTURBED,
        help="leave rounds out of the medians in which other processes took more than this "
        "share of a core on the pinned cores (default %(default)s; -1: keep every round)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1 if quick else 5)
    args.rounds = args.rounds or (1 if quick else 3)
    args.warmup = (0 if quick else 1) if args.warmup is None else args.warmup
    args.server_list = _pick(parser, args.servers, BY_NAME, tuple(BY_NAME), "server")
    default_scenarios = QUICK_SCENARIOS if quick else tuple(load.BY_NAME)
    args.scenario_list = _pick(parser, args.scenarios, load.BY_NAME, default_scenarios, "scenario")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.calm < 0:
        args.calm = None
    return args


def _pick(parser, given: str | None, known: dict, default: tuple, what: str) -> list:
    """Names from a comma list (or the default), checked, in the order given."""
    names = [n.strip() for n in given.split(",") if n.strip()] if given else list(default)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {what}(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def cpu_plan(workers: int) -> tuple[int | None, int | None, str]:
    """(server CPU, wrk CPU, description): pinned apart with one worker and two CPUs.

    With more workers the servers need every core, so nothing is pinned and
    the load generator competes with them, as on a real host.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if workers == 1 and len(cpus) >= 2:
        return cpus[0], cpus[1], f"server pinned to CPU {cpus[0]}, wrk to CPU {cpus[1]}"
    return None, None, "not pinned"


class Bench:
    """One run: the settings, where logs go, and what has been measured so far."""

    def __init__(self, args: argparse.Namespace, results_dir: Path, workdir: Path) -> None:
        self.args = args
        self.logs = results_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.server_cpu, self.wrk_cpu, self.pinning = cpu_plan(args.workers)
        self.warnings: list[str] = []
        self.prefork_failed = False

    def why_not(self, server: Server, scenario: load.Scenario) -> str | None:
        """Why ``server`` has no numbers in ``scenario`` (None: it runs)."""
        missing = server.missing()
        if missing:
            return missing
        if scenario.wsgi and server.name == "prefork":
            return prefork_wsgi_missing()
        if scenario.asgi_app:
            return asgi.why_not(server, scenario, self.workdir, self.logs / "prefork.log")
        return None

    def measure(self, server: Server, scenario: load.Scenario, round_no: int) -> dict[str, Any]:
        """One fresh server, one warm-up, one measured wrk run; the figures of that round."""
        port = procs.free_port()
        launch = Launch(
            port,
            self.args.workers,
            self.workdir,
            wsgi=scenario.wsgi,
            asgi=scenario.asgi_app,
            websocket=scenario.websocket,
        )
        log = self.logs / f"{server.name}.log"
        with open(log, "a") as out:
            out.write(f"\n=== {scenario.name} round {round_no} ===\n")
        running = procs.start(server.name, server.command(launch), log, self.server_cpu)
        try:
            problem = procs.wait_ready(running, port)
            if problem:
                self.prefork_failed |= server.name == "prefork"
                return {"error": f"did not start: {problem}"}
            return self._load(running, scenario, port)
        finally:
            left = procs.stop(running)
            if left:
                self.warnings.append(f"{server.name} left processes running: {left}")

    def _load(self, running: procs.Running, scenario: load.Scenario, port: int) -> dict[str, Any]:
        drive = ws_load.run if scenario.websocket else load.run_wrk
        if self.args.warmup:
            drive(scenario, port, self.args.warmup, self.wrk_cpu)
        peak, threads, load_cpu, other_cpu = [0], [0], [None], [None]
        cores = {c for c in (self.server_cpu, self.wrk_cpu) if c is not None}

        def sample(wrk) -> None:
            """Peak RSS and threads of the server's whole tree, and the load's CPU, while it runs.

            With pinning, also what other processes took of the two cores
            (their busy time less the server's, the load's and this harness's):
            a shared machine's noise, which makes a round worth less.
            """
            started = time.monotonic()
            first = last = None
            while wrk.poll() is None:
                peak[0] = max(peak[0], procs.tree_rss(running.pid))
                threads[0] = max(threads[0], procs.tree_threads(running.pid))
                load_cpu[0] = procs.cpu_fraction(wrk.pid, time.monotonic() - started) or load_cpu[0]
                if cores:
                    ours = procs.tree_cpu(running.pid) + procs.tree_cpu(wrk.pid)
                    now = (time.monotonic(), procs.cpus_busy(cores), ours + time.process_time())
                    first, last = first or now, now
                time.sleep(0.2)
            if first and last and last[0] - first[0] > 0.5:
                others = (last[1] - first[1]) - (last[2] - first[2])
                other_cpu[0] = max(0.0, others / (last[0] - first[0]))

        cpu_before = procs.tree_cpu(running.pid)
        result = drive(scenario, port, self.args.duration, self.wrk_cpu, during=sample)
        cpu_used = procs.tree_cpu(running.pid) - cpu_before
        latency = scenario.latency
        return {
            "req_per_s": result.req_per_s,
            "p50_ms": result.p50_ms if latency else None,
            "p99_ms": result.p99_ms if latency else None,
            "errors": result.socket_errors,
            "non_2xx": result.non_2xx,
            "rss_mb": peak[0] / MIB if peak[0] else None,
            # The server's own CPU per answer: its cost per request, which a
            # busy machine's noise moves less than req/s (a core shared with
            # another process serves fewer requests, each costing about the same).
            "cpu_us": cpu_used / result.requests * 1e6 if result.requests else None,
            "threads": threads[0] or None,
            "load_cpu": result.load_cpu if result.load_cpu is not None else load_cpu[0],
            "other_cpu": other_cpu[0],
            "error": result.error,
        }

    def scenario(self, scenario: load.Scenario, servers: list[Server]) -> dict[str, Any]:
        """All rounds of one scenario, interleaved; its rows with medians and ratios."""
        rounds: dict[str, list[dict[str, Any]]] = {}
        skipped = {s.name: self.why_not(s, scenario) for s in servers}
        for round_no in range(1, self.args.rounds + 1):
            for server in servers:
                if skipped[server.name]:
                    continue
                figures = self.measure(server, scenario, round_no)
                rounds.setdefault(server.name, []).append(figures)
                _progress(scenario.name, round_no, server.name, figures)
                if (figures.get("other_cpu") or 0) > (self.args.calm or DISTURBED):
                    self.warnings.append(
                        f"{scenario.name} round {round_no}, {server.name}: other processes "
                        f"took {figures['other_cpu']:.0%} of a core on the pinned cores"
                    )
        rows = []
        for server in servers:
            if skipped[server.name]:
                row = {"status": skipped[server.name]}
            else:
                row = report.aggregate(rounds[server.name], self.args.calm)
            rows.append({"server": server.name, "label": label(server), **row})
        report.add_ratios(rows)
        return {"description": scenario.description, "rows": rows}

    def supervisor(self, servers: list[Server]) -> list[dict[str, Any]]:
        """Supervisor figures per server (one server at a time, 2 workers)."""
        rows = []
        for server in servers:
            missing = server.missing()
            figures = {"status": missing} if missing else supervisor.measure(server, self.workdir)
            self.prefork_failed |= server.name == "prefork" and bool(figures.get("start_failed"))
            rows.append({"server": server.name, "label": label(server), **figures})
            print(f"supervisor: {server.name}: {figures}", file=sys.stderr)
        return rows


def label(server: Server) -> str:
    """The row label: name and version when installed (descriptions are listed once)."""
    return server.name if server.missing() else f"{server.name} {server.version()}"


def _progress(scenario: str, round_no: int, server: str, figures: dict[str, Any]) -> None:
    what = figures.get("error") or f"{figures['req_per_s']:,.0f} req/s"
    print(f"{scenario} round {round_no}: {server}: {what}", file=sys.stderr, flush=True)


def results_dir(args: argparse.Namespace) -> Path:
    if args.results:
        return args.results
    return Path(__file__).resolve().parent / "results" / time.strftime("%Y%m%d-%H%M%S")


def run(args: argparse.Namespace) -> int:
    """Measure everything asked for, write and print the report; the exit status."""
    if load.wrk_path() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    directory = results_dir(args)
    with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmp:
        bench = Bench(args, directory, Path(tmp))
        results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": report.machine(),
            "config": {
                "workers": args.workers,
                "duration": args.duration,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "quick": args.quick,
                "pinning": bench.pinning,
                "calm": args.calm,
            },
            "servers": {s.name: s.description for s in args.server_list},
            "scenarios": {},
        }
        for scenario in args.scenario_list:
            servers = [
                s for s in args.server_list if s.takes_part(scenario.wsgi, bool(scenario.asgi_app))
            ]
            results["scenarios"][scenario.name] = bench.scenario(scenario, servers)
        results["supervisor"] = [] if args.no_supervisor else bench.supervisor(args.server_list)
        results["warnings"] = bench.warnings
    print(report.write(results, directory))
    print(f"written: {directory / 'results.md'} and results.json", file=sys.stderr)
    return 1 if bench.prefork_failed else 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
