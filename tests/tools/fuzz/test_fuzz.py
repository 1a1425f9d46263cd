"""The REST API against its own OpenAPI document: a short schemathesis run, every check,
authenticated (``twopc fuzz-api`` runs the long one)."""

from __future__ import annotations

import pytest

from tools.fuzz import fuzz_api

pytestmark = pytest.mark.slow


def test_thirty_seconds_of_schemathesis_find_no_failing_check_and_no_server_error() -> None:
    result = fuzz_api(30, seed=17)
    assert result.exit_code == 0, result.report[-6000:]
    assert "generated" in result.report and "passed" in result.report
