"""Schemathesis against the live `make run` server: every operation, every check, a real token.

A CI-sized run (few examples per operation, a fixed seed); `python scripts/fuzz.py`
is the long one. It must find no server error and no response that breaks
openapi.yaml. Whatever it finds becomes a case in tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

import pytest

from scripts import fuzz

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15
SEED = 5


@pytest.fixture
def _dbsc_on() -> None:
    """The DBSC endpoints answer 404 while SESSION_DBSC is off: fuzz them on (live_server inherits os.environ)."""
    import os

    os.environ["SESSION_DBSC"] = "on"  # restored after the test by conftest's _restore_environ


@pytest.mark.usefixtures("_dbsc_on")  # before live_server starts
def test_schemathesis_finds_nothing(live_server: str) -> None:
    result = fuzz.run(live_server, MAX_EXAMPLES, SEED, capture=True)
    assert result.returncode == 0, f"schemathesis failed:\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    assert "No issues found" in result.stdout, result.stdout[-5000:]
