"""`llmd-bench plan` for `sweep: seeded` (#26) against PostgreSQL: the seed history read from a store in SQL
(store/history.py through plan/seeding.read_seed_history, read-only with a statement timeout), each cell's mode as the
sweep decides it, and the measurement from the seconds a level measured in the store."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method, seeding

GRID = [1, 50, 100, 150, 300]
# output tok/s per level of the stored run: the peak at 100
CURVE = {1: 50.0, 50: 900.0, 100: 1000.0, 150: 950.0, 300: 700.0}


def _store_seeded_run(url, campaign, params, run_id="weekly-47"):
    """One stored run of the campaign with sweep: seeded: its no-offload cell measured the full grid (peak at 100),
    each level 45 s of its 60 s window (max_requests ended it sooner)."""
    from sqlalchemy.orm import Session

    from llmd_bench.store import db as store
    from llmd_bench.store.schema import Cell, LevelResult, Run

    cell = next(c for c in campaign.cells() if c.config == "no-offload")
    stored = seeding.seed_query(campaign, params, cell, runtime="kubernetes", run_id=run_id).params
    t0 = datetime(2026, 11, 27, 10, tzinfo=UTC)
    engine = store.make_engine(url)
    store.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            run = Run(campaign=campaign.dag_id, dag_run_id=run_id, runtime="kubernetes",
                      llmd_version=params.llmd_version, params=json.loads(json.dumps(stored)), images={},
                      started_at=t0)
            s.add(run)
            row = Cell(run=run, model=cell.model, short_model=cell.short_model, config=cell.config, trial=1,
                       status="ok", tensor_parallel_size=params.tensor_parallel_size, replicas=params.replicas,
                       sweep={"policy": "seeded", "mode": "full-grid"}, stack={}, versions={}, config_effect={},
                       observability={},
                       gpu_time={"gpus": 2, "complete": True, "seconds": {
                           "model_load": 100, "warmup": 10, "measurement": 5 * 45, "idle": 20, "teardown": 10}})
            s.add(row)
            for c, tps in CURVE.items():
                s.add(LevelResult(cell=row, concurrency=c, valid=True, requests_successful=10, requests_errored=0,
                                  requests_incomplete=0, level_start=t0, level_end=t0, duration_s=45.0, summary={},
                                  output_tps_mean=tps))
    finally:
        engine.dispose()


def test_plan_decides_seeded_cells_from_the_stores_history(db_url, campaigns_dir):
    path = write_campaign(campaigns_dir, tiny_campaign(sweep="seeded"))
    campaign = load_campaign(path)
    params = resolve_params(campaign, {"concurrency": GRID, "duration_s": 60}, catalog.known_versions())
    _store_seeded_run(db_url, campaign, params)

    seeds = seeding.read_seed_history(campaign, params, "kubernetes", url=db_url)
    assert seeds.status.endswith("the seed history of 2 cell(s)"), seeds.status
    found = method.plan(campaign, params, "kubernetes", seeds=seeds)
    bracket, scratch = found["cells"]
    assert bracket["seeded"]["mode"] == "bracket" and bracket["levels"] == [50, 100, 150]
    assert bracket["seeded"]["seeded_from"]["dag_run_id"] == "weekly-47"
    assert bracket["seeded"]["seeded_from"]["peak"] == 100
    # llm-d-redis has no run and no other cell of its configuration: adaptive from scratch
    assert scratch["seeded"]["mode"] == "adaptive"
    # the simulated runtime's history is another one: nothing seeds from the kubernetes run
    local = seeding.read_seed_history(campaign, params, "local", url=db_url)
    assert {s.same_cell for s in local.sources.values()} == {()}

    # the CLI reads the same store, and the GPU-time history's seconds per level (45 of 60 s)
    env = {**os.environ, "LLMD_BENCH_DB_URL": db_url, "LLMD_BENCH_RUNTIME": "kubernetes"}
    argv = [str(BIN / "llmd-bench"), "plan", "--campaign", str(path), "--params",
            json.dumps({"concurrency": GRID, "duration_s": 60})]
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)["cells"]
    assert cells[0]["seeded"]["mode"] == "bracket" and cells[0]["seeded"]["seconds_per_level"] == 45.0
    assert cells[0]["gpu_time_estimate"]["seconds"]["measurement"] == 3 * 45.0
    text = subprocess.run(argv, capture_output=True, text=True, env=env).stdout
    assert "seeded: bracket 50,100,150 (seeded from this cell's last run weekly-47)" in text
    assert "1 bracket, 0 full grid, 1 adaptive" in text
    no_history = subprocess.run([*argv, "--no-history"], capture_output=True, text=True, env=env).stdout
    assert "0 bracket, 0 full grid, 0 adaptive, 2 undecided" in no_history and "(--no-history)" in no_history
