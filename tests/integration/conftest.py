"""Fixtures shared by the integration tests."""

from tests.integration.test_cli_config import cli  # noqa: F401  (the ``prefork`` CLI fixture)
