"""gunicorn config files through the real command line: --check-config and
--print-config on files as they are written for gunicorn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.test_cli_config import APP, run_cli

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

APPS = Path(__file__).parent / "apps"


def test_tiangolos_gunicorn_conf_runs_unchanged() -> None:
    """It was refused: "unknown setting 'graceful_timeout_str'; did you mean
    'graceful_timeout'?" (exit 2)."""
    result = run_cli("--check-config", "-c", str(APPS / "tiangolo_gunicorn_conf.py"), APP)
    assert result.returncode == 0, result.stderr
    assert "graceful_timeout_str" in result.stderr  # (named among the helper variables)
