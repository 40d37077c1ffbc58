"""The results store against a real PostgreSQL server: migrations, idempotent loads, imports, bad input,
a database that is down and comes back, and a cleared run that does not benchmark stored cells again.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_store.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from integration.test_store import _count
from llmd_bench.integrations.importer import import_reports
from llmd_bench.measure.processes import free_port
from llmd_bench.store import db
from llmd_bench.store.server import server_at


def test_database_down_then_up(tmp_path, real_report, monkeypatch):
    server = server_at(tmp_path / "pg-flaky", free_port())
    url = server.start()
    server.stop()
    monkeypatch.setenv("LLMD_BENCH_DB_RETRY_DELAY_S", "0.5")
    monkeypatch.setenv("LLMD_BENCH_DB_ATTEMPTS", "2")
    started = time.monotonic()
    with pytest.raises(db.DatabaseUnavailable) as err:
        import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", url=url)
    assert f"127.0.0.1:{server.port}/llmd_results unreachable after 2 attempts" in str(err.value)
    assert "password" not in str(err.value) and server.password_file.read_text() not in str(err.value)
    assert time.monotonic() - started < 30
    # the server comes back while the load is retrying: nothing is lost
    monkeypatch.setenv("LLMD_BENCH_DB_ATTEMPTS", "8")
    threading.Timer(1.5, server.start).start()
    try:
        result = import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", url=url)
        assert result["levels"] == 2 and _count(url) == 2
    finally:
        time.sleep(0.1)
        server.stop(mode="immediate")
        import shutil
        shutil.rmtree(server.base, ignore_errors=True)


def test_report_compares_llmd_versions_and_flags_a_regression(db_url, real_report, tmp_path, monkeypatch):
    from llmd_bench.report.generate import generate_report

    slower = tmp_path / "slower.json"
    doc = json.loads(real_report.read_text())
    for b in doc["benchmarks"]:
        b["metrics"]["output_tokens_per_second"]["successful"]["mean"] *= 0.7
    slower.write_text(json.dumps(doc))
    for config in ("no-offload", "llm-d-redis"):
        import_reports([real_report], "Qwen/Qwen3-8B", config, "v0.4.0", run_id="old", campaign="camp", url=db_url)
    import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.5.0", run_id="new", campaign="camp", url=db_url)
    import_reports([slower], "Qwen/Qwen3-8B", "llm-d-redis", "v0.5.0", run_id="new", campaign="camp", url=db_url)
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    report = generate_report("new", tmp_path / "r", campaign="camp")
    old_only = generate_report("old", tmp_path / "o", campaign="camp")
    cv = report.cross_version.set_index("config")
    assert cv.loc["llm-d-redis", "judgement"] == "REGRESSION"
    assert cv.loc["llm-d-redis", "change_pct"] == pytest.approx(-30, abs=0.01)
    assert cv.loc["no-offload", "judgement"] == "within noise" and cv.loc["no-offload", "change_pct"] == pytest.approx(0)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Across llm-d versions" in md and "1 regression(s) beyond noise" in md
    assert (tmp_path / "r" / "cross_version.csv").exists()
    # the older run's newer version is context, never a reference: higher than it, not an improvement or a regression
    assert set(old_only.cross_version["judgement"]) == {"higher (context: newer version)", "within noise"}
