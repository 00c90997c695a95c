"""The skip gate of tests/conftest.py: under PREFORK_STRICT_SKIPS=1 a skip fails the run.

An inner pytest runs a small test file with the gate loaded as a plugin
(``-p tests.conftest``), in a subprocess with a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALLOWED_SKIPS, ROOT, STRICT_SKIPS_VARIABLE, allowed_skip

TESTS = """
import pytest

def test_passes():
    pass

def test_allowed():
    pytest.skip("IPv6 loopback (::1) cannot be bound on this host")

@pytest.mark.skipif(True, reason="curl is not installed")
def test_not_allowed():
    pass

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_xfail():
    raise AssertionError("still broken")
"""


def inner_pytest(tmp_path: Path, source: str, strict: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != STRICT_SKIPS_VARIABLE}
    env["PYTHONPATH"] = str(ROOT)
    if strict:
        env[STRICT_SKIPS_VARIABLE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
        + ["-q", "-rs", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skip_not_on_the_list_fails_the_run(tmp_path: Path) -> None:
    result = inner_pytest(tmp_path, TESTS, strict=True)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 passed, 2 skipped, 1 xfailed" in out, out
    assert "test_inner.py::test_not_allowed: curl is not installed" in out, out
    assert "1 test(s) skipped for a reason that is not on ALLOWED_SKIPS" in out, out
    # The allowed one is listed with the entry that allows it, and is no offence.
    assert "test_inner.py::test_allowed: IPv6 loopback" in out, out
    assert "[the host has no IPv6 loopback]" in out, out
    assert (
        "test_inner.py::test_allowed: IPv6 loopback (::1) cannot be bound on this host\n" not in out
    )


def test_only_allowed_skips_pass(tmp_path: Path) -> None:
    source = TESTS.replace('reason="curl is not installed"', 'reason="needs root"')
    result = inner_pytest(tmp_path, source, strict=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skips not on the allow-list" not in result.stdout


def test_without_the_variable_a_skip_is_a_skip(tmp_path: Path) -> None:
    result = inner_pytest(tmp_path, TESTS, strict=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "allow-list" not in result.stdout


def test_a_module_level_skip_is_caught_too(tmp_path: Path) -> None:
    source = 'import pytest\npytest.skip("no such program", allow_module_level=True)\n'
    result = inner_pytest(tmp_path, source, strict=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "test_inner.py: no such program" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "reason",
    [
        "curl is not installed (CI installs it)",
        "haproxy not installed (.ci/run installs it)",
        "the CLI has no --interface / --threads settings yet",
        "deploy/nginx/prefork.conf does not exist (yet)",
        "needs root, and also something else",
        "",
    ],
)
def test_the_list_does_not_allow_missing_programs_or_files(reason: str) -> None:
    assert allowed_skip(reason) is None


def test_every_entry_is_explained() -> None:
    text = (ROOT / "tests" / "conftest.py").read_text()
    table = text[text.index("ALLOWED_SKIPS: list") : text.index("STRICT_SKIPS_VARIABLE =")]
    assert len(ALLOWED_SKIPS) <= 8, "the allow-list is meant to stay short"
    # A comment (the why) for every entry, besides its short name.
    assert table.count("        # ") >= len(ALLOWED_SKIPS)
    for _pattern, name in ALLOWED_SKIPS:
        assert name and f'"{name}"' in table


def test_ci_turns_the_gate_on() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    gate = run.index(f"export {STRICT_SKIPS_VARIABLE}=1")
    assert gate < run.index("-m pytest"), "the variable must be set before pytest runs"
