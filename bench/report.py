"""Turning measurements into the report: medians, ratios, Markdown and JSON.

A row is one (scenario, server): the median over the rounds that succeeded,
and the ratio of prefork to that peer from the same run.  Ratios are
prefork / peer throughout: above 1 is better for req/s, below 1 is better
for latency and memory.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

RATIO_KEYS = ("req_per_s", "p50_ms", "p99_ms", "rss_mb", "cpu_us")
EXTRA_KEYS = ("threads", "load_cpu", "other_cpu")  # medians too, but no ratio


def aggregate(rounds: list[dict[str, Any]], calm: float | None = None) -> dict[str, Any]:
    """Median of each figure over the good rounds; errors are summed, not medianed.

    ``calm``: rounds in which other processes took more than this share of a
    core on the pinned cores (``other_cpu``) are left out of the medians, as
    long as at least one round was calm; ``left_out`` counts them.
    """
    good = [r for r in rounds if not r.get("error")]
    row: dict[str, Any] = {"rounds": rounds}
    if not good:
        row["status"] = "failed: " + (rounds[-1]["error"] if rounds else "no rounds")
        return row
    failed = len(rounds) - len(good)
    row["status"] = (
        f"{failed} of {len(rounds)} rounds failed: {_first_error(rounds)}" if failed else "ok"
    )
    if calm is not None:
        quiet = [r for r in good if (r.get("other_cpu") or 0.0) <= calm]
        row["left_out"] = len(good) - len(quiet) if quiet else 0
        good = quiet or good
    for key in RATIO_KEYS + EXTRA_KEYS:
        values = [r[key] for r in good if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    row["errors"] = sum(r["errors"] for r in good)
    row["non_2xx"] = sum(r["non_2xx"] for r in good)
    return row


def _first_error(rounds: list[dict[str, Any]]) -> str:
    return next(r["error"] for r in rounds if r.get("error"))


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Give each measured row of a scenario its prefork / peer ratios."""
    prefork = next((r for r in rows if r["server"] == "prefork" and "req_per_s" in r), None)
    for row in rows:
        row["ratio"] = {}
        if prefork is None or "req_per_s" not in row:
            continue
        for key in RATIO_KEYS:
            mine, theirs = prefork.get(key), row.get(key)
            row["ratio"][key] = mine / theirs if mine and theirs else None


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if digits == 0 else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ratio(row: dict[str, Any], key: str) -> str:
    if row["server"] == "prefork":
        return "1"
    value = row.get("ratio", {}).get(key)
    return "-" if value is None else f"{value:.2f}x"


SCENARIO_HEADER = (
    "| server | req/s | p50 ms | p99 ms | errors | non-2xx | RSS MB | CPU µs/req "
    "| prefork/peer req/s | p50 | p99 | RSS | CPU/req | threads | load CPU | others' CPU |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def scenario_row(row: dict[str, Any]) -> str:
    """One Markdown line; a row that was not measured says why across the table."""
    label = row["label"]
    if "req_per_s" not in row:
        return f"| {label} | {row['status']} |" + "  |" * 14
    if row["status"] != "ok":
        label += f" ({row['status']})"
    if row.get("left_out"):
        label += f" ({row['left_out']} disturbed round(s) left out)"
    cells = [
        label,
        _num(row["req_per_s"], 0),
        _num(row["p50_ms"]),
        _num(row["p99_ms"]),
        str(row["errors"]),
        str(row["non_2xx"]),
        _num(row["rss_mb"], 1),
        _num(row.get("cpu_us"), 1),
        *(_ratio(row, key) for key in RATIO_KEYS),
        _num(row.get("threads"), 0),
        _percent(row.get("load_cpu")),
        _percent(row.get("other_cpu")),
    ]
    return "| " + " | ".join(cells) + " |"


SUPERVISOR_NOTE = (
    "Launch: from spawning the command to the first 200. Replacement: from SIGKILL "
    "of one worker to the first answer from a new pid (X-Pid). PSS per worker: the "
    "mean over the worker processes after a little traffic (shared pages split "
    "among sharers), without and with the server's preload mode (`-`: it has none; "
    "tornado always forks after importing the app)."
)

SUPERVISOR_HEADER = (
    "| server | launch to first response ms | SIGKILL to replacement answering ms "
    "| PSS per worker MB | PSS per worker MB, preload | notes |\n"
    "|---|--:|--:|--:|--:|---|"
)


def supervisor_row(label: str, figures: dict[str, Any]) -> str:
    """One Markdown line of supervisor figures (``-`` where not applicable)."""
    if "status" in figures:
        return f"| {label} | {figures['status']} |  |  |  |  |"
    cells = [
        label,
        _num(figures.get("launch_ms"), 0),
        _num(figures.get("replace_ms"), 1),
        _num(figures.get("worker_pss_mb"), 1),
        _num(figures.get("worker_pss_preload_mb"), 1),
        "; ".join(figures.get("notes", [])),
    ]
    return "| " + " | ".join(cells) + " |"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean nothing without it."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "wrk": (wrk.stdout or wrk.stderr).split("Copyright")[0].strip(),
    }


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown: setup, one table per scenario, supervisor table."""
    m, cfg = results["machine"], results["config"]
    lines = [
        f"# prefork benchmark, {results['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}, {m['wrk']}.",
        f"Load: `wrk -t1 -c50 -d{cfg['duration']}s --latency`, {cfg['rounds']} round(s) "
        f"interleaved server by server, median shown. Workers: {cfg['workers']}; "
        f"{cfg['pinning']}.",
        "",
        "Ratios are prefork / peer: above 1 is better for prefork in req/s, "
        "below 1 is better for it in latency and RSS. RSS is the whole process tree "
        "(master + workers), the peak sampled during the load; with 1 worker tornado "
        "and uvicorn run as a single process (no supervisor), prefork, gunicorn and "
        "nginx as master + worker. CPU µs/req: the CPU (user + system) the server's whole "
        "tree used during the load, per answer (ws-echo: per message): the cost per "
        "request, which noise from other processes moves less than req/s; its ratio "
        "below 1 is better for prefork. Errors are wrk's socket errors, summed over rounds. "
        "Threads: the most seen in the server's tree during the load (all processes). "
        "Load CPU: the load generator's own CPU use (wrk, or bench/ws_load.py for "
        "ws-echo), as a share of its one core: near 100% means it, not the server, "
        "may have set the rate. Others' CPU: what other processes took of the two "
        "pinned cores during the load, in cores (their busy time less the server's, "
        "the load's and the harness's): above a few % the round was disturbed by "
        "something else running on the machine.",
        "",
        "Servers:",
        *(f"- {name}: {text}" for name, text in results["servers"].items()),
    ]
    for name, scenario in results["scenarios"].items():
        lines += ["", f"## {name}: {scenario['description']}", "", SCENARIO_HEADER]
        lines += [scenario_row(row) for row in scenario["rows"]]
    if results["supervisor"]:
        lines += ["", "## Supervisor (2 workers, not pinned)", "", SUPERVISOR_NOTE, ""]
        lines += [
            SUPERVISOR_HEADER,
            *(supervisor_row(s["label"], s) for s in results["supervisor"]),
        ]
    if results.get("warnings"):
        lines += ["", "Warnings:", *(f"- {w}" for w in results["warnings"])]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], directory: Path) -> str:
    """Write results.md and results.json into ``directory``; return the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (directory / "results.md").write_text(text)
    (directory / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return text
