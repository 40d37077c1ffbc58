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


# -- a real sweep on the local runtime: mock servers behind simulated prefix caches --------------------------

CACHE = {"gpu_blocks": 4000, "block_tokens": 16, "offload_blocks": 40000}


