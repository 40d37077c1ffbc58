"""`llmd-bench plan`: what a run will do, without running anything, from the same code the sweep runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench import catalog, method
from llmd_bench.campaign import find_campaign, load_campaign, resolve_params


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_plan_json_of_the_reference_campaign_is_the_february_method():
    out = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", "kv_cache_eval", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert len(found["cells"]) == 16 and found["baseline"] == "no-offload"
    for cell in found["cells"]:
        expected = [1, 50, 100, 150, 300] if cell["model"] == "Qwen/Qwen3-32B-AWQ" else [1, 50, 100, 150, 300, 400, 500, 650]
        assert cell["levels"] == expected, cell["model"]
        (run,) = cell["guidellm_runs"]  # one GuideLLM run per cell covering all its levels
        argv = run["argv"]
        assert run["levels"] == expected and json.loads(_flag(argv, "--profile")) == {"kind": "concurrent", "streams": expected}
        assert _flag(argv, "--data") == ("kind=synthetic_text,prompt_tokens=128,output_tokens=128,prefix_tokens=10000,"
                                         "prefix_count=1,turns=5")
        assert _flag(argv, "--seed") == "kind=static,value=889"
        assert _flag(argv, "--constraint") == "kind=max_duration,seconds=120"
        assert cell["model_loads"] == 1 and cell["benchmark_s"] == 120 * len(expected)
        assert cell["isolation"] == {"between_levels": "none", "between_trials": "redeploy"}
    totals = found["totals"]
    assert (totals["cells"], totals["guidellm_runs"], totals["levels"], totals["model_loads"]) == (16, 16, 116, 16)
    assert totals["benchmark_s"] == 116 * 120 and totals["gpu_benchmark_hours"] == pytest.approx(116 * 120 * 2 / 3600, abs=1e-3)


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


def test_plan_shows_a_campaign_configuration_and_refuses_bad_params_clearly(tmp_path, campaigns_dir):
    doc = tiny_campaign(configs=["no-offload", "valkey-lowmem"])
    doc["configurations"] = {"valkey-lowmem": {"description": "d", "model_server": {"gpu_memory_utilization": 0.6},
                                               "router": {"prefix_scorer": "precise", "index": "valkey"},
                                               "evidence": "index-keys"}}
    doc["local_simulation"]["valkey-lowmem"] = {"ttft_ms": 40, "itl_ms": 8.0}
    path = write_campaign(campaigns_dir, doc)
    found = method.plan(load_campaign(path), resolve_params(load_campaign(path), {}, catalog.known_versions()), "local")
    own = next(c for c in found["cells"] if c["config"] == "valkey-lowmem")
    assert own["configuration"]["model_server"]["gpu_memory_utilization"] == 0.6
    out = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", str(path), "--params", '{"trials": 0}'],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "param `trials`" in out.stderr
    text = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", str(path)], capture_output=True, text=True)
    assert text.returncode == 0 and "Qwen3-0_6B__valkey-lowmem" in text.stdout and "first run: guidellm run" in text.stdout


def test_plan_json_of_the_per_level_campaign_is_the_revised_method():
    out = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", "kv_cache_eval_per_level", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["method"] == {"runs": "per-level", "sweep": "grid", "prefix_count": "2x", "max_requests": "2x",
                               "level_isolation": "restart", "trials": 1, "trial_isolation": "redeploy"}
    assert len(found["cells"]) == 16
    for cell in found["cells"]:
        runs = cell["guidellm_runs"]
        assert [r["levels"] for r in runs] == [[c] for c in cell["levels"]]  # one GuideLLM run per level
        for run in runs:
            (level,) = run["levels"]
            argv = run["argv"]
            assert json.loads(_flag(argv, "--profile"))["streams"] == [level]
            assert _flag(argv, "--data") == ("kind=synthetic_text,prompt_tokens=128,output_tokens=128,prefix_tokens=10000,"
                                             f"prefix_count={2 * level},turns=5")
            assert f"kind=max_requests,count={2 * level * 5}" in argv and "kind=max_duration,seconds=120" in argv
            assert _flag(argv, "--output").endswith(f"trial-1/level-{level}/guidellm_report.json")
        assert cell["isolation"]["between_levels"] == "restart"
        assert cell["model_loads"] == len(cell["levels"])  # the deploy, then a restart before every later level
    assert found["totals"]["guidellm_runs"] == found["totals"]["levels"] == 116 == found["totals"]["model_loads"]


def test_a_per_level_multiplier_needs_per_level_runs(tmp_path):
    doc = tiny_campaign()
    doc["workload"]["prefix_count"] = "2x"
    from llmd_bench.errors import CampaignError

    with pytest.raises(CampaignError, match=r"workload.*prefix_count as a per-level multiplier \('2x'\) needs runs: per-level"):
        load_campaign(write_campaign(tmp_path, doc))
    doc["workload"].update(prefix_count=1, level_isolation="restart")
    with pytest.raises(CampaignError, match="level_isolation: restart needs runs: per-level"):
        load_campaign(write_campaign(tmp_path, doc))
    doc["workload"].update(level_isolation="none", max_requests="two")
    with pytest.raises(CampaignError, match=r"workload.max_requests"):
        load_campaign(write_campaign(tmp_path, doc))
