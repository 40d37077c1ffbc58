"""level_isolation: reset — caches and index emptied between levels without reloading the model, allowed only
where it is shown equivalent to a fresh server, refused otherwise.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_level_reset.py.
"""

from __future__ import annotations

import json

import pytest

from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from unit.test_level_reset import CACHE, RESET, _campaign


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


def test_a_reset_sweep_empties_both_tiers_before_every_level_and_shows_it(campaigns_dir, results_dir, fake_guidellm):
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
