"""`llmd-bench plan` for `sweep: seeded` (#26): each cell's mode decided as the sweep decides it, from seed sources fed
directly (the store read is at the edge: plan/seeding.read_seed_history), the levels it will measure, and its
measurement from the seconds a level measured in the store's history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure import seeded
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method, seeding
from llmd_bench.plan.plan_estimate import History, HistoryCell

GRID = [1, 50, 100, 150, 300]
AT = datetime(2026, 11, 30, 9, tzinfo=UTC)


def _past(run: str, mode: str, peak: int | None = 100) -> seeded.PastSweep:
    return seeded.PastSweep(dag_run_id=run, llmd_version="v0.4.0", cell="Qwen3-0.6B / no-offload", at=AT,
                            mode=mode, peak=peak)  # type: ignore[arg-type]


@pytest.fixture
def planned(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(
        sweep="seeded", configs=["no-offload", "llm-d-redis", "llm-d-valkey"])))
    params = resolve_params(campaign, {"concurrency": GRID, "duration_s": 60}, catalog.known_versions())
    ids = {c.config: c.group_id for c in campaign.cells()}
    seeds = seeding.SeedHistory(status="results store test:5432/db: the seed history of 3 cell(s)", sources={
        # last run a full grid with its peak at 100: a bracket around it
        ids["no-offload"]: seeded.SeedSources(same_cell=(_past("weekly-47", "full-grid"),)),
        # three bracket runs since the last full one: the 4th run measures the full grid
        ids["llm-d-redis"]: seeded.SeedSources(same_cell=tuple(_past(f"weekly-{n}", "bracket") for n in (47, 46, 45))),
        # nothing stored: adaptive
        ids["llm-d-valkey"]: seeded.SeedSources(),
    })
    return campaign, params, ids, seeds


def _cell(found: dict, config: str) -> dict:
    return next(c for c in found["cells"] if c["config"] == config)


def test_plan_shows_each_seeded_cells_mode_levels_and_runs_as_the_sweep_decides_them(planned):
    campaign, params, ids, seeds = planned
    found = method.plan(campaign, params, "kubernetes", seeds=seeds)
    bracket, full, scratch = (_cell(found, c) for c in ("no-offload", "llm-d-redis", "llm-d-valkey"))

    assert bracket["seeded"]["mode"] == "bracket" and bracket["levels"] == [50, 100, 150]
    assert bracket["seeded"]["seeded_from"]["dag_run_id"] == "weekly-47"
    # the bracket is one GuideLLM run per trial writing its own report (not the whole grid), as the sweep core names it
    assert [(r["trial"], r["levels"]) for r in bracket["guidellm_runs"]] == [(1, [50, 100, 150])]
    assert bracket["guidellm_runs"][0]["argv"][bracket["guidellm_runs"][0]["argv"].index("--output") + 1] \
        == "kind=json,path=<cell folder>/trial-1/level-50/guidellm_report.json"
    assert bracket["benchmark_s"] == 3 * 60  # 3 levels x duration_s (no history) x 1 trial
    assert bracket["seeded"]["benchmark_s_at_most"] == (5 + 1) * 60  # widened to the whole grid, then refined

    assert full["seeded"]["mode"] == "full-grid" and "one run in 4 measures the full grid" in full["seeded"]["reason"]
    assert full["levels"] == GRID and [r["levels"] for r in full["guidellm_runs"]] == [GRID]
    assert full["benchmark_s"] == (5 + 1) * 60  # the grid and its refinement

    assert scratch["seeded"]["mode"] == "adaptive" and scratch["seeded"]["bound"]
    assert [r["levels"] for r in scratch["guidellm_runs"]] == [[c] for c in GRID]  # decided level by level

    text = method.format_plan(found)
    lines = text.splitlines()
    said = lines[lines.index(next(x for x in lines if x.strip().startswith(ids["no-offload"]))) + 1]
    assert said == ("    seeded: bracket 50,100,150 (seeded from this cell's last run weekly-47); may widen one grid level "
                    "at a time while the peak sits at an edge (at most the grid's 5 + 1 refinement); refines only if "
                    "the peak moved; the full grid instead if the served stack changed since run weekly-47")
    assert "levels 50,100,150  runs 1" in next(x for x in lines if x.strip().startswith(ids["no-offload"]))
    assert "    seeded: full grid (one run in 4 measures the full grid (seeded.full_grid_every: 4; 3 seeded bracket " \
           "run(s) since the last full one)); then up to 1 refinement level(s)" in lines
    assert any(x.startswith("    seeded: adaptive (no stored run of this cell") for x in lines)
    assert ("seeded sweep (results store test:5432/db: the seed history of 3 cell(s)): 1 bracket, 1 full grid, "
            "1 adaptive; at most 1080 s of measurement if every bracket widened to the whole grid") in text
    assert "(at most)" in text  # the adaptive cell is counted at its bound


def test_seeded_measurement_uses_the_seconds_a_level_measured_in_the_stores_history(planned):
    campaign, params, ids, seeds = planned
    measured = HistoryCell(model="Qwen/Qwen3-0.6B", config="no-offload", runtime="kubernetes",
                           llmd_version=params.llmd_version, tensor_parallel_size=params.tensor_parallel_size,
                           one_run_per_level=False, load_s=100.0, warmup_s=10.0, teardown_s=10.0, idle_per_run_s=5.0,
                           level_share=0.75)  # max_requests ended its levels at 3/4 of their window
    found = method.plan(campaign, params, "kubernetes", history=History(cells=[measured], status="test"), seeds=seeds)
    bracket = _cell(found, "no-offload")
    assert bracket["seeded"]["seconds_per_level"] == 45.0 and bracket["benchmark_s"] == 3 * 45.0
    e = bracket["gpu_time_estimate"]
    assert e["seconds"]["measurement"] == 135.0
    assert e["gpu_hours"]["measurement"] == pytest.approx(135.0 * e["gpus"] / 3600, abs=1e-4)
    assert "median 75 % of duration_s" in e["sources"]["measurement"] and "3 (the bracket)" in e["sources"]["measurement"]
    # one GuideLLM run for the bracket (idle from the history's per-run seconds)
    assert e["seconds"]["idle"] == 5.0


def test_without_the_store_the_seeded_cells_are_undecided_and_counted_at_their_bound(planned, monkeypatch):
    from llmd_bench.measure.processes import free_port

    campaign, params, _, _ = planned
    monkeypatch.delenv("LLMD_BENCH_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_LLMD_RESULTS", raising=False)
    none = seeding.read_seed_history(campaign, params, "kubernetes")
    assert none.status.startswith("no results store configured") and not none.sources
    closed = seeding.read_seed_history(campaign, params, "kubernetes",
                                       url=f"postgresql://u:p@127.0.0.1:{free_port()}/none")
    assert "not read (" in closed.status and not closed.sources
    found = method.plan(campaign, params, "kubernetes", seeds=closed)
    for cell in found["cells"]:
        assert cell["seeded"]["mode"] == "undecided" and cell["seeded"]["reason"] == closed.status
        assert cell["levels"] == GRID and cell["benchmark_s"] == (5 + 1) * 60
    text = method.format_plan(found)
    assert "0 bracket, 0 full grid, 0 adaptive, 3 undecided" in text and "(at most)" in text
    assert "the sweep decides at run time; counted as at most the grid plus 1 refinement" in text


def test_the_seed_query_is_the_cells_with_the_runs_params_as_stored(planned):
    campaign, params, _, _ = planned
    cell = next(c for c in campaign.cells() if c.config == "llm-d-redis")
    query = seeding.seed_query(campaign, params, cell, runtime="local", run_id="weekly-48")
    assert (query.campaign, query.model, query.config, query.llmd_version) == (
        campaign.dag_id, "Qwen/Qwen3-0.6B", "llm-d-redis", params.llmd_version)
    assert query.simulated and query.exclude_run == "weekly-48"
    assert query.params["concurrency"] == GRID and query.params["duration_s"] == 60
    assert query.params["warmup_requests"] == campaign.workload.warmup_requests
    assert query.versions == tuple(catalog.known_versions())
    assert not seeding.seed_query(campaign, params, cell, runtime="kubernetes", run_id="r").simulated
