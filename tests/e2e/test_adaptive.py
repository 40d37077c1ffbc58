"""Adaptive sweeps: the decision rules on known curves, and a real sweep on the local runtime whose simulated
server saturates.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_adaptive.py.
"""

from __future__ import annotations

import json

from conftest import tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext


def test_a_real_adaptive_sweep_stops_past_the_simulated_servers_capacity(campaigns_dir, results_dir):
    """The simulated server serves 2 requests at a time: throughput stops rising past 2-4 streams. The sweep stops
    at the plateau, measures one level between the best and its better neighbour, and never runs 16."""
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.stack.runtime import local
    from llmd_bench.steps import sweep, warmup

    doc = tiny_campaign(configs=["no-offload"], sweep="adaptive")
    doc["workload"].update(concurrency=[1, 2, 4, 8, 16], duration_s=2, output_tokens=32)
    doc["local_simulation"]["no-offload"] = {"ttft_ms": 20, "itl_ms": 5, "capacity": 2}
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    params = resolve_params(campaign, {"noise_floor_pct": 10}, catalog.known_versions())
    ctx = StepContext(campaign, params, "adaptive", "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        sweep.run(ctx)
        (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
        decided = trial["adaptive"]
        # 2 streams may not fill both slots (GuideLLM's gaps between requests), so the plateau shows at 4 or 8
        assert decided["stopped_after"] in (4, 8) and 16 in decided["not_run"], decided
        assert set(decided["not_run"]) == {c for c in [1, 2, 4, 8, 16] if c > decided["stopped_after"]}, decided
        (refined,) = decided["refined"]
        assert refined not in [1, 2, 4, 8, 16] and refined < decided["stopped_after"], decided
        levels = parse_report_file(sweep.report_path(ctx, 1)).levels
        assert sorted(lv.concurrency for lv in levels) == decided["run"]
        assert all("kind=over_saturation,mode=enforce" in r["argv"] for r in trial["runs"])
    finally:
        local.teardown(ctx)
