"""level_isolation: reset — caches and index emptied between levels without reloading the model, allowed only
where it is shown equivalent to a fresh server, refused otherwise."""

from __future__ import annotations

import json

import pytest

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell, ParamsError
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime.prefix_cache_sim import SimulatedPrefixCache, prompt_text

PROMPT = " ".join(f"w{i}" for i in range(100))  # 6 whole blocks of 16 tokens


def test_simulated_cache_counts_a_repeated_prompt_as_hits_in_whole_blocks():
    cache = SimulatedPrefixCache(gpu_blocks=100, block_tokens=16)
    cache.request(PROMPT)
    assert cache.counters["prefix_cache_queries"] == 100 and cache.counters["prefix_cache_hits"] == 0
    cache.request(PROMPT)
    assert cache.counters["prefix_cache_hits"] == 96
    cache.request(" ".join(PROMPT.split()[:15]) + " a different tail of words")  # less than one whole block in common
    assert cache.counters["prefix_cache_hits"] == 96


def test_simulated_cache_evicts_least_recently_used_blocks():
    cache = SimulatedPrefixCache(gpu_blocks=6, block_tokens=16)
    cache.request(PROMPT)
    cache.request(" ".join(f"x{i}" for i in range(100)))  # six other blocks push the first prompt out
    cache.request(PROMPT)
    assert cache.counters["prefix_cache_hits"] == 0


def test_reset_empties_the_gpu_tier_and_the_offload_tier_only_when_asked():
    cache = SimulatedPrefixCache(gpu_blocks=100, block_tokens=16, offload_blocks=1000)
    cache.request(PROMPT)
    cache.reset(reset_external=False)
    cache.request(PROMPT)  # the GPU misses, the offload tier still has every block
    assert cache.counters["prefix_cache_hits"] == 0
    assert cache.counters["external_prefix_cache_hits"] == 96
    cache.reset(reset_external=True)
    cache.request(PROMPT)
    assert cache.counters["prefix_cache_hits"] == 0 and cache.counters["external_prefix_cache_hits"] == 96


def test_a_server_whose_offload_tier_survives_reset_keeps_serving_it():
    cache = SimulatedPrefixCache(gpu_blocks=100, block_tokens=16, offload_blocks=1000, offload_survives_reset=True)
    cache.request(PROMPT)
    assert cache.reset(reset_external=True) == {"gpu": True, "external": False}
    cache.request(PROMPT)
    assert cache.counters["external_prefix_cache_hits"] == 96


def test_prompt_text_reads_completions_and_chat_bodies():
    assert prompt_text(json.dumps({"prompt": "a b c"}).encode()) == "a b c"
    chat = {"messages": [{"role": "user", "content": "a b"}, {"role": "user", "content": [{"type": "text", "text": "c"}]}]}
    assert prompt_text(json.dumps(chat).encode()) == "a b c"
    assert prompt_text(b"not json") == "" and prompt_text(None) == ""


# -- what is refused before anything runs ------------------------------------------------------------------

RESET = {"runs": "per-level", "level_isolation": "reset"}


def _campaign(campaigns_dir, configs, sim=None, **workload):
    doc = tiny_campaign(configs=configs)
    doc["workload"].update(concurrency=[1, 2], duration_s=2, **workload)
    for config, profile in (sim or {}).items():
        doc["local_simulation"][config] = profile
    return load_campaign(write_campaign(campaigns_dir, doc))


def test_reset_of_a_cpu_offload_tier_is_refused_where_vllm_cannot_empty_it_and_allowed_from_llmd_v0_8(campaigns_dir):
    campaign = _campaign(campaigns_dir, ["no-offload", "native-offload"])
    with pytest.raises(ParamsError) as err:
        resolve_params(campaign, {**RESET, "llmd_version": "v0.7.0"}, catalog.known_versions())
    message = str(err.value)
    assert "native-offload" in message and "OffloadingConnector.reset_cache" in message
    assert "no-offload (" not in message  # the GPU prefix cache alone resets at every version
    assert "use level_isolation: restart" in message
    for version in ("v0.8.0", "v0.8.1", "v0.9.0"):
        assert resolve_params(campaign, {**RESET, "llmd_version": version}, catalog.known_versions()).level_isolation == "reset"
    # only the configurations selected count: no-offload alone resets at v0.7.0
    assert resolve_params(campaign, {**RESET, "llmd_version": "v0.7.0", "configs": ["no-offload"]},
                          catalog.known_versions()).level_isolation == "reset"


def test_reset_is_refused_for_lmcache_and_filesystem_tiers_at_every_version(campaigns_dir):
    campaign = _campaign(campaigns_dir, ["no-offload", "lmcache-local", "fs-offload"],
                         sim={"lmcache-local": {"ttft_ms": 40, "itl_ms": 8}, "fs-offload": {"ttft_ms": 40, "itl_ms": 8}})
    with pytest.raises(ParamsError) as err:
        resolve_params(campaign, {**RESET, "llmd_version": "v0.9.0"}, catalog.known_versions())
    assert "lmcache-local (vLLM's LMCacheConnectorV1 has no reset_cache" in str(err.value)
    assert "fs-offload (the filesystem offload tier's files outlive a reset" in str(err.value)


def test_reset_needs_one_guidellm_run_per_level(campaigns_dir):
    campaign = _campaign(campaigns_dir, ["no-offload"])
    with pytest.raises(ParamsError, match="level_isolation: reset needs runs: per-level"):
        resolve_params(campaign, {"level_isolation": "reset"}, catalog.known_versions())


def test_the_local_runtime_refuses_reset_without_a_simulated_prefix_cache(campaigns_dir):
    from llmd_bench.measure.level_reset import NotEquivalent
    from llmd_bench.steps import sweep

    campaign = _campaign(campaigns_dir, ["no-offload"])
    params = resolve_params(campaign, RESET, catalog.known_versions())
    ctx = StepContext(campaign, params, "reset", "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))
    with pytest.raises(NotEquivalent, match=r"local_simulation\.no-offload has no prefix_cache"):
        sweep.reset_targets(ctx)


def test_model_servers_run_in_vllm_dev_mode_only_when_levels_are_reset():
    from llmd_bench.stack import manifests

    campaign = load_campaign(REFERENCE)
    cell = Cell("Qwen/Qwen3-8B", "no-offload")

    def server_env(conf):
        params = resolve_params(campaign, conf, catalog.known_versions())
        docs = manifests.render_cell(campaign, params, cell, "run-1", "bench")
        (server,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["spec"]["template"]["metadata"]["labels"].get("llmd-bench/component") == "model-server"]
        return {e["name"]: e.get("value") for c in server["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}

    assert server_env({**RESET, "configs": ["no-offload"]})["VLLM_SERVER_DEV_MODE"] == "1"
    assert "VLLM_SERVER_DEV_MODE" not in server_env({"runs": "per-level", "level_isolation": "restart"})


def test_the_epp_is_rolled_to_new_ready_pods_to_empty_its_in_memory_index(monkeypatch, results_dir):
    from fake_kube import FakeKube
    from llmd_bench.stack.runtime import kubernetes as k8s

    fake = FakeKube("ready")
    try:
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "3")
        campaign = load_campaign(REFERENCE)
        params = resolve_params(campaign, {**RESET, "configs": ["no-offload"]}, catalog.known_versions())
        ctx = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
        k8s.deploy(ctx)
        epp = "llmd-bench/component=epp"
        before = {p["metadata"]["uid"] for p in fake.list("pods", "bench", epp)}
        servers = {p["metadata"]["uid"] for p in fake.list("pods", "bench", "llmd-bench/component=model-server")}
        k8s.restart_epp(ctx)
        after = fake.list("pods", "bench", epp)
        assert after and not before & {p["metadata"]["uid"] for p in after}
        assert all(p["metadata"]["annotations"].get(k8s.RESTARTED_AT) for p in after)
        # the model servers (and their loaded weights) are untouched
        assert {p["metadata"]["uid"] for p in fake.list("pods", "bench", "llmd-bench/component=model-server")} == servers
        k8s.teardown(ctx)
    finally:
        fake.close()


# -- a real sweep on the local runtime: mock servers behind simulated prefix caches --------------------------

CACHE = {"gpu_blocks": 4000, "block_tokens": 16, "offload_blocks": 40000}


def _offload_cell(campaigns_dir, cache):
    campaign = _campaign(campaigns_dir, ["no-offload", "native-offload"],
                         sim={"native-offload": {"ttft_ms": 20, "itl_ms": 5, "prefix_cache": cache}},
                         prefix_tokens=64)
    params = resolve_params(campaign, {**RESET, "llmd_version": "v0.8.0", "configs": ["native-offload"]},
                            catalog.known_versions())
    return StepContext(campaign, params, "reset", "local", Cell("Qwen/Qwen3-0.6B", "native-offload"))


def _sim_resets(url: str) -> float:
    from llmd_bench.measure.observe import prometheus

    found = prometheus.scrape(f"{url}/metrics", known={"llmd_bench_sim_resets_total": ("counter", "resets")})
    assert isinstance(found, dict), found
    return found["llmd_bench_sim_resets_total"]


def test_a_reset_sweep_empties_both_tiers_before_every_level_and_shows_it(campaigns_dir, results_dir):
    from llmd_bench.measure import gpu_time
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.stack.runtime import local
    from llmd_bench.steps import sweep, warmup

    ctx = _offload_cell(campaigns_dir, CACHE)
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        sweep.run(ctx)
        (replica,) = local.load_state(ctx).replicas
        resets = _sim_resets(replica)
    finally:
        local.teardown(ctx)
    record = json.loads(ctx.record_path.read_text())
    (trial,) = record["sweep"]["trials"]
    runs = trial["runs"]
    assert [r["levels"] for r in runs] == [[1], [2]]
    assert all(r["isolation"] == "reset" for r in runs)
    # the fresh-server reference: a new prompt misses both tiers, its repeat hits the GPU cache
    (reference,) = runs[0]["reference"].values()
    assert reference["first"] == {"prefix_cache_hits": 0.0, "external_prefix_cache_hits": 0.0}
    assert reference["repeat"]["prefix_cache_hits"] > 0
    # before each level, a prompt cached before the reset got no hit in either tier after it
    for run in runs:
        (hits,) = run["check"]["probe_hits_after_reset"].values()
        assert hits == {"prefix_cache_hits": 0.0, "external_prefix_cache_hits": 0.0}
        assert run["warmup_s"] > 0 and run["warmup_requests"] == 2
    assert resets == 4  # two per level: the reset checked, and the probe out again
    levels = parse_report_file(sweep.report_path(ctx, 1)).levels
    assert [lv.concurrency for lv in levels] == [1, 2] and all(lv.valid for lv in levels)
    # the warm-ups after resets count as warm-up GPU time, not as model loads (steps timed as the runner records them)
    from llmd_bench.measure.cell_folder import CellRecord

    def step(started: str, ended: str, elapsed_s: float) -> dict:
        return {"status": "ok", "started": started, "ended": ended, "elapsed_s": elapsed_s, "summary": {}}

    record["steps"] = {"deploy": step("2026-11-27T10:00:00+00:00", "2026-11-27T10:00:01+00:00", 1.0),
                       "warmup": step("2026-11-27T10:00:01+00:00", "2026-11-27T10:00:01.500+00:00", 0.5),
                       "teardown": step("2026-11-27T10:04:59+00:00", "2026-11-27T10:05:00+00:00", 1.0)}
    record["serving"] = {"replicas": 1, "endpoint": replica, "simulated": True}
    split = gpu_time.phases(CellRecord.model_validate(record))["seconds"]
    assert split["model_load"] == 1.0
    assert split["warmup"] == round(0.5 + sum(r["warmup_s"] for r in runs), 3)


def test_a_reset_that_leaves_the_offload_tier_stops_the_sweep_before_anything_is_measured(campaigns_dir, results_dir):
    from llmd_bench.measure.level_reset import NotEquivalent
    from llmd_bench.stack.runtime import local
    from llmd_bench.steps import sweep, warmup

    ctx = _offload_cell(campaigns_dir, {**CACHE, "offload_survives_reset": True})
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        with pytest.raises(NotEquivalent) as err:
            sweep.run(ctx)
    finally:
        local.teardown(ctx)
    message = str(err.value)
    assert "not equivalent to a restart" in message and "use level_isolation: restart" in message
    assert "0 prefix-cache and" in message and "external-cache hit tokens" in message
    assert not list(ctx.cell_dir.glob("trial-*/level-*/guidellm_report.json"))  # no level was measured under it
