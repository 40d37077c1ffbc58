"""One settings object: every variable the package reads is a documented field of `Settings`, docs/settings.md's table
is generated from those fields, nothing else reads them, and the parsing that moved into the fields behaves as
it did next to each read.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_settings.py.
"""

from __future__ import annotations

import pytest

from llmd_bench.model import settings as settings_module
from unit.test_settings import no_store  # noqa: F401  (fixtures these tests request)


def test_each_step_keeps_its_own_error_class(monkeypatch, tmp_path):
    from llmd_bench.integrations import storage
    from llmd_bench.model.errors import RuntimeStepError
    from llmd_bench.steps import sweep
    from llmd_bench.store import server

    monkeypatch.setenv("LLMD_BENCH_PGDATA_BASE", str(tmp_path / "pg"))
    monkeypatch.setenv("LLMD_BENCH_PG_PORT", "fifty")
    with pytest.raises(server.DatabaseServerError, match="LLMD_BENCH_PG_PORT='fifty'"):
        server.default_server()
    monkeypatch.setenv("LLMD_BENCH_STORE_PUSH_WAIT_S", "soon")
    with pytest.raises(storage.StorageError, match="LLMD_BENCH_STORE_PUSH_WAIT_S='soon'"):
        storage._PushWait()
    monkeypatch.setenv("LLMD_BENCH_SWEEP_STALL_RETRIES", "-1")
    with pytest.raises(RuntimeStepError, match="LLMD_BENCH_SWEEP_STALL_RETRIES='-1'"):
        sweep.stall_retries()


def test_nobody_starts_a_server_to_learn_there_is_no_store(monkeypatch, no_store, tmp_path):
    from llmd_bench.integrations import notify
    from llmd_bench.plan import plan_estimate

    monkeypatch.setenv("LLMD_BENCH_PGDATA_BASE", str(tmp_path / "pg"))
    history = plan_estimate.read_history(["Qwen/Qwen3-0.6B"], "local")
    assert history.status.startswith("no results store configured")
    monkeypatch.setattr(settings_module, "results_store_url", lambda airflow=False: None)
    assert notify.results_url() is None  # the local server is not running here and is not started
