"""design: aba through Airflow on the local runtime (its default there): the baseline's repeat runs last as its own
task group with `--repeat`, in its own folder, is stored as the baseline's second trial, and the report shows the
drift."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.model.campaign_files import load_campaign

pytestmark = pytest.mark.e2e


def test_the_baseline_runs_again_last_and_the_report_shows_its_drift(airflow_db, campaigns_dir, results_dir, db_url,
                                                                      monkeypatch, fake_guidellm):
    from sqlalchemy import text

    from llmd_bench.orchestration.airflow_dag import build_dag
    from llmd_bench.store.db import make_engine

    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    path = write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload", "llm-d-redis"]))  # design: auto
    dr = build_dag(load_campaign(path), runtime="local").test(run_conf={"concurrency": [1, 4], "duration_s": 2})
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert dr.state == "success", {k: ti.state for k, ti in tis.items()}
    repeat = "Qwen3-0_6B__no-offload__repeat"
    assert all(tis[f"{repeat}.{s}"].state == "success" for s in ("deploy", "sweep", "load_results"))
    # it ran after every other cell of its model
    assert tis[f"{repeat}.deploy"].start_date >= max(tis[f"Qwen3-0_6B__{c}.load_results"].end_date
                                                     for c in ("no-offload", "llm-d-redis"))
    cell = results_dir / dr.run_id / "Qwen3-0.6B" / "no-offload__repeat"
    record = json.loads((cell / "cell.json").read_text())
    assert record["repeat"] == {"of": "Qwen3-0_6B__no-offload", "position": "last", "design": "aba",
                                "stored_as_trials": [2]}
    assert (cell / "trial-1" / "guidellm_report.json").exists()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = sorted(tuple(r) for r in conn.execute(text(
                "SELECT config, trial, status, count(l.id) FROM cells c JOIN level_results l ON l.cell_id = c.id "
                "GROUP BY config, trial, status")))
    finally:
        engine.dispose()
    assert rows == [("llm-d-redis", 1, "ok", 2), ("no-offload", 1, "ok", 2), ("no-offload", 2, "ok", 2)]
    md = (results_dir.parent / "reports" / dr.run_id / "report.md").read_text()
    drift = next(line for line in md.splitlines() if "Baseline drift:" in line)
    assert "Qwen3-0.6B's no-offload first " in drift and "the floor for Qwen3-0.6B's comparisons is 5 % -> " in drift
