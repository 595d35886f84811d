"""Shared fixtures: the real-data folder (skip when absent, fail when TRANSGAN_REQUIRE_REAL_DATA=1)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# One thread per process: the tests run tiny networks, for which a second thread only waits (measured: a tiny
# convolution 23 ms with 2 threads vs 0.5 ms with 1 on a busy 2-core machine). Set before torch is imported, so
# the CLI subprocesses the tests start inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The tests' engine choices, int8 graphs and features go to a cache of their own (one per test process), never to
# the user's ~/.cache/transgan; a test that checks caching points TRANSGAN_CACHE at its own folder.
os.environ.setdefault("TRANSGAN_CACHE", tempfile.mkdtemp(prefix="transgan-test-cache-"))

REAL_DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def real_data_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test when it is missing, unless CI requires real data."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real data not found at {path} (it lives in ../shared/data beside the repository)"
        if os.environ.get("TRANSGAN_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message + "; TRANSGAN_REQUIRE_REAL_DATA=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture
def real_data():
    """Call it with path parts: real_data('facades', 'test')."""
    return real_data_path
