"""The benchmark's CI smoke mode: ``python bench/run.py --quick`` runs and reports.

It never judges a number (CI machines are too noisy for that, and the
harness must not gate on absolute times); it checks that the harness starts
prefork and whatever peers are installed, measures, prints the table,
writes results.json with a positive prefork req/s, and leaves no process
behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_TIMEOUT = 150


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_quick_run_prints_table_and_writes_prefork_row(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| server | req/s | p50 ms | p99 ms |" in result.stdout
    assert "## Supervisor" in result.stdout
    assert (tmp_path / "results.md").read_text() in result.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["scenarios"]["hello"]["rows"]
    prefork = next(row for row in rows if row["server"] == "prefork")
    assert prefork["status"] == "ok", prefork
    assert prefork["req_per_s"] > 0
    # The server's CPU per answer: a real share of a core, not zero (nothing
    # measured) nor more than a second per request (a unit mix-up).
    assert "CPU µs/req" in result.stdout
    assert 0 < prefork["cpu_us"] < 1_000_000, prefork
    assert not [w for w in results["warnings"] if "left processes" in w]
