"""Factors: cells are models x configurations x factor values (replicas, tensor parallel size, memory regime,
offload size); each cell runs, renders, stores and reports with its own values."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import find_campaign, load_campaign
from llmd_bench.model.errors import CampaignError, ParamsError
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method
from llmd_bench.report import analysis, build
from llmd_bench.report.data import CELL_COLUMNS, ReportInput
from llmd_bench.stack import manifests


def _pressure_campaign(**overrides) -> dict:
    doc = tiny_campaign(configs=["no-offload", "native-offload"], models=[
        {"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}, {"name": "Qwen/Qwen3-8B", "size_gb": 16.4}])
    doc["factors"] = {"memory_regime": ["default", "pressure"],
                      "offload_size": {"10k": {"num_cpu_blocks": 10000, "block_size": 16}, "40gib": {"cpu_gib_per_gpu": 40}}}
    doc["memory_regimes"] = {"pressure": {"description": "the GPU cache overflows",
                                          "gpu_memory_utilization": {"Qwen/Qwen3-0.6B": 0.55, "*": 0.65}}}
    doc.update(overrides)
    return doc


def test_the_replicas_study_has_a_cell_per_model_config_and_replica_count():
    campaign = find_campaign("kv_cache_eval_replicas")
    cells = campaign.cells()
    assert len(cells) == 2 * 4 * 3
    assert [c.group_id for c in cells[:3]] == ["Qwen3-0_6B__no-offload__replicas-1", "Qwen3-0_6B__no-offload__replicas-2",
                                              "Qwen3-0_6B__no-offload__replicas-4"]
    params = resolve_params(campaign, {"factors": {"replicas": [2, 4]}, "configs": ["llm-d-redis"]}, catalog.known_versions())
    found = method.plan(campaign, params, "kubernetes")
    assert [(c["model"], c["factors"]["replicas"], c["gpus"]) for c in found["cells"]] == [
        ("Qwen/Qwen3-0.6B", 2, 2), ("Qwen/Qwen3-0.6B", 4, 4), ("Qwen/Qwen3-8B", 2, 2), ("Qwen/Qwen3-8B", 4, 4)]
    # each cell renders its own replica count, under its own names and labels
    docs = {c.group_id: manifests.render_cell(campaign, params, c, "r1", "ns") for c in cells if c.config == "llm-d-redis"}
    servers = {gid: next(d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ms"))
               for gid, objs in docs.items()}
    assert {gid: s["spec"]["replicas"] for gid, s in servers.items() if gid.startswith("Qwen3-8B")} == {
        "Qwen3-8B__llm-d-redis__replicas-1": 1, "Qwen3-8B__llm-d-redis__replicas-2": 2, "Qwen3-8B__llm-d-redis__replicas-4": 4}
    names = [s["metadata"]["name"] for s in servers.values()]
    assert len(set(names)) == len(names)
    assert servers["Qwen3-8B__llm-d-redis__replicas-4"]["metadata"]["labels"]["llmd-bench/factors"] == "replicas-4"


def test_memory_regime_sets_each_models_gpu_memory_and_offload_size_applies_only_to_offloading_configs(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, _pressure_campaign()))
    cells = campaign.cells()
    # no-offload: 2 regimes; native-offload: 2 regimes x 2 sizes; per model
    assert len(cells) == 2 * (2 + 4)
    assert {c.config_factors for c in cells if c.config == "no-offload"} == {""}
    params = resolve_params(campaign, {}, catalog.known_versions())

    def server_args(cell: Cell) -> list[str]:
        objs = manifests.render_cell(campaign, params, cell, "r1", "ns")
        dep = next(d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ms"))
        return dep["spec"]["template"]["spec"]["containers"][0]["args"]

    def flag(args: list[str], name: str) -> str:
        return args[args.index(name) + 1]

    small = Cell("Qwen/Qwen3-0.6B", "native-offload", (("memory_regime", "pressure"), ("offload_size", "40gib")))
    large = Cell("Qwen/Qwen3-8B", "native-offload", (("memory_regime", "pressure"), ("offload_size", "10k")))
    default = Cell("Qwen/Qwen3-8B", "no-offload", (("memory_regime", "default"),))
    assert small in cells and large in cells and default in cells
    assert flag(server_args(small), "--gpu-memory-utilization") == "0.55"
    assert flag(server_args(large), "--gpu-memory-utilization") == "0.65"
    assert flag(server_args(default), "--gpu-memory-utilization") == str(campaign.serving.gpu_memory_utilization)
    # v0.4.0 (vLLM 0.11.2) counts num_cpu_blocks per TP worker: 40 GiB per GPU of Qwen3-0.6B's 16-token blocks
    small_tier = json.loads(flag(server_args(small), "--kv-transfer-config"))["kv_connector_extra_config"]
    large_tier = json.loads(flag(server_args(large), "--kv-transfer-config"))["kv_connector_extra_config"]
    kv_per_token_per_rank = 28 * 2 * (8 // 2) * 128 * 2  # layers x (K, V) x kv heads per rank x head_dim x bf16
    assert small_tier == {"num_cpu_blocks": 40 * 2**30 // (16 * kv_per_token_per_rank)}
    assert large_tier == {"num_cpu_blocks": 10000}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["factors"].update(memory_regime=["default", "tight"]), "'tight' is not defined under memory_regimes"),
    (lambda d: d["memory_regimes"]["pressure"]["gpu_memory_utilization"].pop("*"),
     "memory_regimes.pressure.gpu_memory_utilization has no value for ['Qwen/Qwen3-8B']"),
    (lambda d: d.update(configs=["no-offload", "llm-d-redis"], local_simulation={
        "no-offload": {"ttft_ms": 1, "itl_ms": 1}, "llm-d-redis": {"ttft_ms": 1, "itl_ms": 1}}),
     "factors.offload_size varies the offload tier, but none of this campaign's configs offloads"),
    (lambda d: d.update(baseline="native-offload"), "baseline 'native-offload' offloads"),
    (lambda d: d["factors"].update(replicas=[1, 1]), "values must be unique"),
    (lambda d: d["factors"].update(gpus=[1]), "factors.gpus"),
])
def test_bad_factors_name_the_field_and_the_allowed_values(campaigns_dir, change, message):
    doc = _pressure_campaign()
    change(doc)
    with pytest.raises(CampaignError) as err:
        load_campaign(write_campaign(campaigns_dir, doc))
    assert message in str(err.value) and "tiny.yaml" in str(err.value)


def test_params_narrow_factors_and_refuse_unknown_values(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, _pressure_campaign()))
    params = resolve_params(campaign, {"factors": {"offload_size": ["10k"]}, "models": ["Qwen/Qwen3-8B"]},
                            catalog.known_versions())
    chosen = [c for c in campaign.cells() if params.selects(c)]
    assert [c.variant for c in chosen] == ["memory_regime-default", "memory_regime-pressure",
                                           "memory_regime-default_offload_size-10k", "memory_regime-pressure_offload_size-10k"]
    with pytest.raises(ParamsError, match=r"offload_size values \['1k'\] are not in the campaign's \['10k', '40gib'\]"):
        resolve_params(campaign, {"factors": {"offload_size": ["1k"]}}, catalog.known_versions())


def _peaks_input(cells: list[tuple[str, str, dict, float]]) -> ReportInput:
    levels, rows = [], []
    for model, config, factors, tps in cells:
        stack = ",".join(f"{k}={v}" for k, v in factors.items() if k != "offload_size")
        label = f"{model} [{stack}]" if stack else model
        for c, scale in ((1, 0.5), (8, 1.0)):
            levels.append({"model": label, "config": config, "trial": 1, "concurrency": c, "output_tps_mean": tps * scale,
                           "ttft_mean_ms": 40.0, "tpot_mean_ms": 8.0, "requests_successful": 500, "requests_errored": 0,
                           "request_latency_mean_s": 1.0, "request_latency_std_s": 0.01, "valid": True})
        rows.append({"model": label, "full_model": f"Qwen/{model}", "config": config, "status": "ok", "reason": None,
                     "replicas": factors.get("replicas", 1), "config_effect": "not measured", "config_effect_evidence": "",
                     "configuration": config, "factors": factors})
    return ReportInput(campaign="c", run_id="r", runtime="kubernetes", levels=analysis.normalize_levels(pd.DataFrame(levels)),
                       cells=pd.DataFrame(rows, columns=CELL_COLUMNS),
                       params={"baseline": "no-offload", "noise_floor_pct": 5.0, "concurrency": [1, 8], "trials": 1,
                               "factors": {"replicas": [1, 2, 4]}})


def test_report_compares_within_the_same_replicas_and_shows_scaling():
    data = _peaks_input([("Qwen3-8B", "no-offload", {"replicas": 1}, 1000.0),
                         ("Qwen3-8B", "llm-d-redis", {"replicas": 1}, 1000.0),
                         ("Qwen3-8B", "no-offload", {"replicas": 2}, 1900.0),
                         ("Qwen3-8B", "llm-d-redis", {"replicas": 2}, 2280.0),
                         ("Qwen3-8B", "no-offload", {"replicas": 4}, 3000.0),
                         ("Qwen3-8B", "llm-d-redis", {"replicas": 4}, 3600.0)])
    report = build(data)
    cmp = {(r.model, r.config): r for r in report.comparisons.itertuples()}
    # each replica count has its own baseline: +20 % at 2 and 4 replicas, 0 at 1
    assert cmp[("Qwen3-8B [replicas=2]", "llm-d-redis")].vs_baseline_pct == pytest.approx(20.0)
    assert cmp[("Qwen3-8B [replicas=4]", "llm-d-redis")].vs_baseline_pct == pytest.approx(20.0)
    assert cmp[("Qwen3-8B [replicas=1]", "llm-d-redis")].vs_baseline_pct == pytest.approx(0.0)
    scaling = analysis.scaling(report.peaks)
    redis = scaling[scaling["config"] == "llm-d-redis"].set_index("value")
    assert list(redis.index) == [1, 2, 4]
    assert redis.loc[4, "efficiency"] == pytest.approx(3600 / (1000 * 4))
    from llmd_bench.report import render_report
    md, _ = render_report(report, {})
    assert "## Scaling" in md
    assert "| Qwen3-8B | llm-d-redis | - | 1,000.0 (1.00) | 2,280.0 (1.14) | 3,600.0 (0.90) |" in md
    assert "Factors: replicas 1, 2, 4." in md


def test_a_run_without_factors_has_no_scaling_section_and_unchanged_labels():
    data = _peaks_input([("Qwen3-8B", "no-offload", {}, 1000.0), ("Qwen3-8B", "native-offload", {}, 900.0)])
    data.params.pop("factors")
    report = build(data)
    from llmd_bench.report import render_report
    md, _ = render_report(report, {})
    assert "## Scaling" not in md and "| Qwen3-8B | native-offload |" in md


SHIPPED = ["kv_cache_eval", "kv_cache_eval_per_level", "kv_cache_eval_replicas", "kv_cache_eval_memory_pressure",
           "kv_cache_eval_lmcache"]


def test_the_memory_pressure_study_compares_tiers_under_both_regimes():
    campaign = find_campaign("kv_cache_eval_memory_pressure")
    cells = campaign.cells()
    assert len(cells) == 4 * 5 * 2
    params = resolve_params(campaign, {"models": ["Qwen/Qwen3-14B"], "configs": ["cpu+fs-offload-20k"],
                                       "factors": {"memory_regime": ["pressure"]}}, catalog.known_versions())
    (cell,) = [c for c in cells if params.selects(c)]
    docs = manifests.render_cell(campaign, params, cell, "r1", "bench")
    vllm = next(c for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
                if c["name"] == "vllm")
    args = vllm["args"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.7"
    assert json.loads(args[args.index("--kv-transfer-config") + 1])["kv_connector"] == "MultiConnector"
    found = method.plan(campaign, params, "kubernetes")
    assert found["cells"][0]["factors"]["memory_regime"] == "pressure"
    assert found["cells"][0]["configuration"]["model_server"]["gpu_memory_utilization"] == 0.7
