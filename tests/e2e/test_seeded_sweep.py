"""A seeded sweep end to end on the local runtime with real GuideLLM and PostgreSQL: the first run of a cell has no
history and sweeps adaptively; stored, it seeds the next run, which measures only the bracket around its peak in one
GuideLLM run, names the levels it did not run, and stores its decisions with the cell. The decisions on known curves
are tests/unit/test_seeded.py; the history's SQL tests/integration/test_seed_history.py."""

from __future__ import annotations

import json

from conftest import tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext

GRID = [1, 2, 4, 8, 16]


def _sweep(campaign, run_id: str):
    from llmd_bench.stack.runtime import local
    from llmd_bench.steps import load_results, sweep, warmup

    params = resolve_params(campaign, {"noise_floor_pct": 10}, catalog.known_versions())
    ctx = StepContext(campaign, params, run_id, "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        sweep.run(ctx)
    finally:
        local.teardown(ctx)
    load_results.run(ctx)
    (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
    return ctx, trial


def test_the_second_run_of_a_cell_measures_only_the_bracket_around_the_first_runs_peak(
        campaigns_dir, results_dir, db_url, monkeypatch, fake_guidellm):
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.steps import sweep
    from llmd_bench.store.read import read_stored_run

    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    doc = tiny_campaign(configs=["no-offload"], sweep="seeded")
    doc["workload"].update(concurrency=GRID, duration_s=2, output_tokens=32)
    doc["local_simulation"]["no-offload"] = {"ttft_ms": 20, "itl_ms": 5, "capacity": 2}
    campaign = load_campaign(write_campaign(campaigns_dir, doc))

    _, first = _sweep(campaign, "week-1")
    assert first["seeded"]["mode"] == "adaptive" and "no stored run of this cell" in first["seeded"]["reason"]
    peak = first["seeded"]["peak"]
    assert peak is not None and first["seeded"]["adaptive"]["stopped_after"] in GRID
    # adaptive from scratch: GuideLLM's over-saturation stop, as sweep: adaptive has it; a bracket has none
    assert all("kind=over_saturation,mode=enforce" in r["argv"] for r in first["runs"])

    ctx, second = _sweep(campaign, "week-2")
    decided = second["seeded"]
    assert (decided["mode"], decided["seeded_from"]["dag_run_id"], decided["seeded_from"]["peak"]) == (
        "bracket", "week-1", peak)
    bracket = decided["bracket"]
    assert peak in bracket and len(bracket) <= 3 and set(bracket) - {peak} <= set(GRID)
    # the bracket is one GuideLLM run; widening or a refinement are runs of their own
    assert second["runs"][0]["levels"] == bracket and len(second["runs"]) <= 1 + len(GRID)
    assert "kind=over_saturation,mode=enforce" not in second["runs"][0]["argv"]
    assert decided["not_run"] and decided["not_run_reason"] == "not run (seeded bracket)"
    measured = sorted(lv.concurrency for lv in parse_report_file(sweep.report_path(ctx, 1)).levels)
    assert measured == decided["run"] and not set(decided["not_run"]) & set(measured)
    assert (ctx.cell_dir / "seed.json").exists()

    stored = read_stored_run("week-2", campaign=campaign.dag_id, url=db_url)
    (cell,) = stored.cells
    assert cell.cell.sweep["policy"] == "seeded" and cell.cell.sweep["bracket"] == bracket
    assert sorted(lv.concurrency for lv in cell.levels) == measured
