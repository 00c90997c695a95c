"""Fixtures shared by the e2e tests that drive prefork through tests/e2e/support."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import proxy_harness as h  # noqa: E402


@pytest.fixture
def workdir():
    """A folder other users can traverse (nginx's workers run as nobody); removed after."""
    path = h.private_dir("pf-proxy-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs():
    """Processes of one test, stopped by pid (in reverse order) and reaped after it.

    (test_systemd.py has its own, for the processes its harness starts.)
    """
    started: list[h.Proc] = []
    try:
        yield started
    finally:
        problems = []
        for proc in reversed(started):
            proc.stop()
        for proc in started:
            if isinstance(proc, h.Prefork) and proc.returncode not in (0, -signal.SIGTERM):
                problems.append(proc.describe())
        if problems:
            print("\n".join(problems))
