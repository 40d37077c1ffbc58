"""`llmd-bench plan`: what a run will do, without running anything, from the same code the sweep runs.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_plan.py.
"""

from __future__ import annotations

import pytest

from conftest import tiny_campaign, write_campaign
from integration.test_plan import _flag, _gpu_time
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import find_campaign, load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method


@pytest.mark.parametrize("isolation, loads", [("redeploy", 3), ("same-server", 1)])
def test_redeployed_trials_count_as_model_loads_and_narrowed_params_narrow_the_plan(isolation, loads):
    campaign = find_campaign("kv_cache_eval")
    params = resolve_params(campaign, {"models": ["Qwen/Qwen3-8B"], "configs": ["no-offload", "llm-d-redis"],
                                       "concurrency": [1, 50], "trials": 3, "trial_isolation": isolation},
                            catalog.known_versions())
    found = method.plan(campaign, params, "kubernetes")
    assert [c["group_id"] for c in found["cells"]] == ["Qwen3-8B__no-offload", "Qwen3-8B__llm-d-redis"]
    for cell in found["cells"]:
        assert [r["trial"] for r in cell["guidellm_runs"]] == [1, 2, 3] and cell["model_loads"] == loads
        assert _flag(cell["guidellm_runs"][2]["argv"], "--tokenizer") == "kind=hf_auto,model=Qwen/Qwen3-8B"
        assert cell["guidellm_runs"][2]["argv"][-2] == "trial=3"
    assert found["totals"]["model_loads"] == 2 * loads and found["totals"]["benchmark_s"] == 2 * 3 * 2 * 120


def test_a_per_level_multiplier_needs_per_level_runs(tmp_path):
    doc = tiny_campaign()
    doc["workload"]["prefix_count"] = "2x"
    from llmd_bench.model.errors import CampaignError

    with pytest.raises(CampaignError, match=r"workload.*prefix_count as a per-level multiplier \('2x'\) needs runs: per-level"):
        load_campaign(write_campaign(tmp_path, doc))
    doc["workload"].update(prefix_count=1, level_isolation="restart")
    with pytest.raises(CampaignError, match="level_isolation: restart needs runs: per-level"):
        load_campaign(write_campaign(tmp_path, doc))
    doc["workload"].update(level_isolation="none", max_requests="two")
    with pytest.raises(CampaignError, match=r"workload.max_requests"):
        load_campaign(write_campaign(tmp_path, doc))


def test_cost_appears_only_when_the_campaign_states_a_gpu_hour_cost(campaigns_dir):
    doc = tiny_campaign()
    plain = load_campaign(write_campaign(campaigns_dir, doc))
    doc["gpu_hour_cost"] = 2.5
    priced = load_campaign(write_campaign(campaigns_dir, doc, name="priced"))
    params = resolve_params(plain, {}, catalog.known_versions())
    without, with_cost = method.plan(plain, params, "kubernetes"), method.plan(priced, params, "kubernetes")
    assert "cost" not in without["totals"] and all("cost" not in c["gpu_time_estimate"] for c in without["cells"])
    assert "gpu_hour_cost" not in without["estimate"] and "cost" not in method.format_plan(without)
    total = with_cost["totals"]["gpu_hours_total"]
    assert total == without["totals"]["gpu_hours_total"] > 0
    assert with_cost["totals"]["cost"] == pytest.approx(total * 2.5, abs=0.01)
    for cell in with_cost["cells"]:
        assert cell["gpu_time_estimate"]["cost"] == pytest.approx(cell["gpu_time_estimate"]["gpu_hours_total"] * 2.5,
                                                                   abs=0.01)
    assert f"cost {total * 2.5:,.2f} at 2.5 per GPU-hour" in method.format_plan(with_cost)


def test_without_history_the_defaults_are_used_and_labelled_and_adaptive_is_an_upper_bound(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(sweep="adaptive")))
    params = resolve_params(campaign, {}, catalog.known_versions())
    found = method.plan(campaign, params, "kubernetes")
    e = found["cells"][0]["gpu_time_estimate"]
    # 2 grid levels + 1 refinement, one run each; 1.5 GB of weights at 0.5 GB/s + 120 s start-up
    assert e["seconds"] == {"model_load": 123.0, "warmup": 30.0, "measurement": 3 * 2.0, "idle": 60 + 3 * 15.0,
                            "teardown": 30.0}
    assert e["sources"]["model_load"] == "default: 120 s start-up + size_gb at 0.5 GB/s per load = 123.0 s x 1"
    assert "at most: the adaptive sweep stops past saturation" in e["sources"]["measurement"]
    assert "the grid's 2 + 1 refinement" in e["sources"]["measurement"]
    assert found["estimate"]["history"] == "history not read: defaults only"
    assert any("adaptive" in b for b in found["estimate"]["upper_bound"])
    assert "(at most)" in method.format_plan(found)
    local = method.plan(campaign, params, "local")["cells"][0]["gpu_time_estimate"]
    assert local["seconds"]["model_load"] == 5.0 and "simulated servers" in local["sources"]["model_load"]


def test_a_measured_reset_cell_counts_a_warm_up_per_reset_and_its_resets_out_of_idle():
    from llmd_bench.plan import plan_estimate
    from llmd_bench.store.rows import GpuTimeHistoryRow

    reset = {"runs": "per-level", "sweep": "grid", "level_isolation": "reset", "trials": 1, "trial_isolation": "redeploy"}
    row = {"run_pk": 1, "runtime": "kubernetes", "llmd_version": "v0.4.0", "params": reset, "model": "Qwen/Qwen3-8B",
           "config": "llm-d-redis", "trial": 1, "status": "ok", "tensor_parallel_size": 2, "levels": 4,
           "gpu_time": _gpu_time(200, 100, 480, 4 * 30 + 3 * 5, 30)}
    (cell,) = plan_estimate.history_cells([GpuTimeHistoryRow.model_validate(row)])
    # one load, three resets: four warm-ups of 25 s; idle 30 s per GuideLLM run once the 5 s resets are taken out
    assert (cell.load_s, cell.warmup_s, cell.idle_per_run_s, cell.teardown_s) == (200.0, 25.0, 30.0, 30.0)
    assert plan_estimate.history_cells([GpuTimeHistoryRow.model_validate({**row, "status": "failed"})]) == []
