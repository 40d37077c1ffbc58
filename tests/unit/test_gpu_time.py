"""GPU time per phase from a cell's own step timings, and the report's GPU time and cost section."""

from __future__ import annotations

import pandas as pd
import pytest

from llmd_bench.measure import gpu_time
from llmd_bench.measure.cell_folder import CellRecord
from llmd_bench.report import build, render_report
from llmd_bench.report.analysis import normalize_levels
from llmd_bench.report.data import CELL_COLUMNS, ReportInput


def _step(elapsed_s: float, started: str = "2026-11-27T10:00:00.000+00:00",
          ended: str = "2026-11-27T10:30:00.000+00:00") -> dict:
    return {"status": "ok", "started": started, "ended": ended, "elapsed_s": elapsed_s, "summary": {}}


BASE = {"campaign": "c", "campaign_file": None, "run_id": "r", "model": "Qwen/Qwen3-8B", "short_model": "Qwen3-8B",
        "config": "no-offload", "factors": {}, "runtime": "kubernetes", "levels": [1, 2],
        "params": {"tensor_parallel_size": 2, "replicas": 2}, "versions": {"llmd": "v0.4.0"}}


def _record(steps: dict | None = None) -> CellRecord:
    return CellRecord.model_validate(BASE | {
        "steps": {
            "deploy": _step(300.0),
            "warmup": _step(20.0),
            "sweep": _step(1500.0),
            "teardown": _step(30.0),
        } if steps is None else steps,
        "serving": {"replicas": 2, "endpoint": "http://epp", "simulated": False},
        # a per-level run with a restart before level 2, and a redeployed second trial
        "sweep": {"target": "http://epp", "levels": [1, 2], "trials": [
            {"trial": 1, "report": "trial-1/guidellm_report.json", "level_windows": [], "benchmark_s": 240.0,
             "runs": [{"levels": [1], "report": "trial-1/level-1/guidellm_report.json"},
                      {"levels": [2], "report": "trial-1/level-2/guidellm_report.json", "isolation": "redeployed",
                       "redeploy_s": 200.0, "warmup_s": 10.0}]},
            {"trial": 2, "report": "trial-2/guidellm_report.json", "level_windows": [], "benchmark_s": 240.0,
             "isolation": "redeployed", "redeploy_s": 250.0, "warmup_s": 12.0}]},
    })


def test_phases_split_the_wall_time_between_deploy_and_teardown():
    g = gpu_time.phases(_record())
    assert g["gpus"] == 4 and g["wall_s"] == 1800.0
    assert g["seconds"] == {"model_load": 750.0, "warmup": 42.0, "measurement": 480.0, "idle": 498.0, "teardown": 30.0}
    assert sum(g["seconds"].values()) == pytest.approx(1800.0)
    assert g["gpu_hours"]["model_load"] == pytest.approx(750 * 4 / 3600, abs=1e-6)
    assert g["gpu_hours_total"] == pytest.approx(1800 * 4 / 3600, abs=1e-5)
    assert gpu_time.phases(None) == {}  # never deployed: no GPU time
    assert gpu_time.phases(_record(steps={})) == {}
    running = gpu_time.phases(_record(steps={"deploy": _step(300.0)}))  # teardown not run yet
    assert running["complete"] is False and running["seconds"]["teardown"] == 0.0
    assert g["complete"] is True


def test_cost_per_million_output_tokens_at_the_peak():
    # 4 GPUs at 2.5 per GPU-hour = 10 per hour; 1000 tok/s = 3.6 M tokens per hour
    assert gpu_time.cost_per_million_tokens(2.5, 4, 1000.0) == pytest.approx(10 / 3.6)
    assert gpu_time.cost_per_million_tokens(2.5, 4, 0.0) is None


def test_the_report_shows_gpu_hours_per_phase_the_total_and_the_cost():
    g = gpu_time.phases(_record())
    levels = normalize_levels(pd.DataFrame([
        {"model": "Qwen3-8B", "config": "no-offload", "trial": 1, "concurrency": 8, "output_tps_mean": 1000.0,
         "ttft_mean_ms": 40.0, "tpot_mean_ms": 8.0, "requests_successful": 400, "requests_errored": 0, "valid": True}]))
    cells = pd.DataFrame([{"model": "Qwen3-8B", "full_model": "Qwen/Qwen3-8B", "config": "no-offload", "status": "ok",
                           "reason": None, "replicas": 2, "config_effect": "n/a", "config_effect_evidence": "",
                           "configuration": "no-offload", "factors": {}, "sweep": {}, "gpu_time": g}],
                         columns=CELL_COLUMNS)
    data = ReportInput(campaign="c", run_id="r", runtime="kubernetes", levels=levels, cells=cells,
                       params={"concurrency": [8], "gpu_hour_cost": 2.5})
    md, _ = render_report(build(data), {})
    section = md.split("## GPU time and cost")[1].split("\n## ")[0]
    assert "| Qwen3-8B | no-offload | 4 | 0.8333 | 0.0467 | 0.5333 | 0.5533 | 0.0333 | 2.0000 | 5.00 | 2.78 |" in section
    assert "Campaign total: 2.0000 GPU-hours, cost 5.00 at 2.5 per GPU-hour." in section
    data.params.pop("gpu_hour_cost")
    md, _ = render_report(build(data), {})
    assert "## GPU time\n" in md and "Cost per M" not in md
