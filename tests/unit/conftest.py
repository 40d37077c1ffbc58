"""Unit tier: pure logic, fixture files and in-process fakes. No process, no server, no PostgreSQL: the session's
results_db is refused at collection (tests/conftest.py), and LLMD_BENCH_DB_URL is unset for every unit test, so a test
that reaches for the results store fails here instead of quietly using a server another tier's test started."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_results_store(monkeypatch):
    monkeypatch.delenv("LLMD_BENCH_DB_URL", raising=False)
