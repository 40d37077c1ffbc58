"""Integration tier: every test here may reach the results store implicitly (step runs calling load_results, DAG runs), so
the session's PostgreSQL (tests/conftest.py results_db) is started for it and LLMD_BENCH_DB_URL points at it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _results_store(results_db):
    return results_db
