"""`llmd-bench plan`: what a run will do, without running anything, from the same code the sweep runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import find_campaign, load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method


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


# --- GPU time and cost estimates (plan_estimate.py) ---------------------------------------------------------------

def _gpu_time(model_load, warmup, measurement, idle, teardown, complete=True):
    seconds = {"model_load": model_load, "warmup": warmup, "measurement": measurement, "idle": idle,
               "teardown": teardown}
    return {"gpus": 2, "seconds": seconds, "complete": complete}


def _store_history(url, llmd_version, tp):
    """Measured cells of Qwen3-8B: two per-level runs with restarts, one per-cell run of two redeployed trials, and
    cells the estimate must not use (a failed one, one whose teardown never ended, one on the local runtime)."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from llmd_bench.store import db as store
    from llmd_bench.store.schema import Cell, LevelResult, Run

    per_level = {"runs": "per-level", "sweep": "grid", "level_isolation": "restart", "trials": 1,
                 "trial_isolation": "redeploy"}
    per_cell = {"runs": "per-cell", "sweep": "grid", "level_isolation": "none", "trials": 2,
                "trial_isolation": "redeploy"}
    # (run, runtime, params, status, trials, gpu_time); each trial ran levels 1, 50, 100
    cells = [
        ("a", "kubernetes", per_level, "ok", 1, _gpu_time(600, 60, 360, 90, 40)),     # 3 loads: 200 s, 20 s; idle 30/run
        ("b", "kubernetes", per_level, "ok", 1, _gpu_time(780, 120, 360, 120, 80)),   # 260 s, 40 s; idle 40 per run
        ("c", "kubernetes", per_cell, "ok", 2, _gpu_time(440, 50, 720, 200, 30)),     # 2 loads: 220 s, 25 s; per-cell runs
        ("d", "kubernetes", per_level, "failed", 1, _gpu_time(9999, 999, 0, 999, 999)),
        ("e", "kubernetes", per_level, "ok", 1, _gpu_time(9999, 999, 360, 999, 999, complete=False)),
        ("f", "local", per_level, "ok", 1, _gpu_time(9, 1, 360, 30, 1)),
    ]
    t0 = datetime(2026, 11, 27, 10, tzinfo=UTC)
    engine = store.make_engine(url)
    store.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            for name, runtime, params, status, trials, gpu in cells:
                run = Run(campaign="llmd_kv_cache_eval_per_level", dag_run_id=f"history-{name}", runtime=runtime,
                          llmd_version=llmd_version, params=params, images={})
                s.add(run)
                for trial in range(1, trials + 1):
                    cell = Cell(run=run, model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config="no-offload",
                                trial=trial, status=status, tensor_parallel_size=tp, replicas=1, gpu_time=gpu,
                                versions={}, config_effect={}, observability={})
                    s.add(cell)
                    if status == "ok":
                        for c in (1, 50, 100):
                            s.add(LevelResult(cell=cell, concurrency=c, valid=True, requests_successful=10,
                                              requests_errored=0, requests_incomplete=0, level_start=t0, level_end=t0,
                                              duration_s=120.0, summary={}))
    finally:
        engine.dispose()


def _per_level_params(**conf):
    campaign = find_campaign("kv_cache_eval_per_level")
    params = resolve_params(campaign, {"models": ["Qwen/Qwen3-8B", "Qwen/Qwen3-14B"], "configs": ["no-offload"],
                                       "concurrency": [1, 50, 100, 150], **conf}, catalog.known_versions())
    return campaign, params


def test_plan_estimates_gpu_time_per_phase_from_the_stores_measured_cells(db_url):
    from llmd_bench.plan import plan_estimate

    campaign, params = _per_level_params()
    _store_history(db_url, params.llmd_version, params.tensor_parallel_size)
    history = plan_estimate.read_history(["Qwen/Qwen3-14B", "Qwen/Qwen3-8B"], "kubernetes", url=db_url)
    assert len(history.cells) == 3, history.status  # not the failed, the incomplete nor the local cell
    found = method.plan(campaign, params, "kubernetes", history=history)
    qwen8, qwen14 = found["cells"]
    e = qwen8["gpu_time_estimate"]
    assert qwen8["model_loads"] == 4 and e["gpus"] == 2
    # medians over the measured cells: 220 s per load (200, 260, 220), 25 s of warm-up per load (20, 40, 25),
    # 40 s of teardown (40, 80, 30); idle from the per-level cells only (30, 40 s per GuideLLM run)
    assert e["seconds"] == {"model_load": 4 * 220.0, "warmup": 4 * 25.0, "measurement": 4 * 120.0,
                            "idle": 4 * 35.0, "teardown": 40.0}
    assert e["gpu_hours"]["model_load"] == pytest.approx(880 * 2 / 3600, abs=1e-4)
    assert e["gpu_hours_total"] == pytest.approx((880 + 100 + 480 + 140 + 40) * 2 / 3600, abs=1e-4)
    what = f"Qwen/Qwen3-8B, kubernetes, llm-d {params.llmd_version}, TP {params.tensor_parallel_size}, no-offload"
    assert e["sources"]["model_load"] == f"history: 3 cells ({what}), median 220.0 s per load x 4"
    assert e["sources"]["idle"].startswith(f"history: 2 cells ({what}, one GuideLLM run per level), median 35.0 s")
    assert e["sources"]["measurement"].startswith("plan: levels x duration_s x trials")
    # no history of Qwen3-14B: the documented defaults, labelled as such (29.5 GB at 0.5 GB/s + 120 s per load)
    d = qwen14["gpu_time_estimate"]
    assert d["seconds"]["model_load"] == pytest.approx(4 * (120 + 29.5 / 0.5))
    assert d["seconds"]["idle"] == 60 + 4 * 15.0 and d["seconds"]["teardown"] == 30.0
    assert all(d["sources"][p].startswith("default: ") for p in ("model_load", "warmup", "idle", "teardown"))
    totals = found["totals"]
    assert totals["gpu_hours_total"] == pytest.approx(e["gpu_hours_total"] + d["gpu_hours_total"], abs=1e-3)
    assert totals["gpu_hours"]["model_load"] == pytest.approx(e["gpu_hours"]["model_load"] + d["gpu_hours"]["model_load"],
                                                              abs=1e-3)
    text = method.format_plan(found)
    assert f"history: 3 cells ({what}) [1 cell]" in text and "default: 120 s start-up + size_gb at 0.5 GB/s" in text


def test_reset_saves_the_model_loads_restart_would_spend(db_url):
    from llmd_bench.plan import plan_estimate

    campaign, restart = _per_level_params()
    _store_history(db_url, restart.llmd_version, restart.tensor_parallel_size)
    history = plan_estimate.read_history(["Qwen/Qwen3-8B", "Qwen/Qwen3-14B"], "kubernetes", url=db_url)
    # "reset" is compared as a string: model_copy, so the test does not depend on campaign.py accepting it yet
    reset = restart.model_copy(update={"level_isolation": "reset"})
    none = restart.model_copy(update={"level_isolation": "none"})
    assert [method.model_loads(p, 4) for p in (restart, reset, none)] == [4, 1, 1]
    assert [method.level_resets(p, 4) for p in (restart, reset, none)] == [0, 4, 0]
    by = {p.level_isolation: method.plan(campaign, p, "kubernetes", history=history) for p in (restart, reset, none)}
    r8, s8 = by["restart"]["cells"][0], by["reset"]["cells"][0]
    assert (r8["model_loads_saved"], r8["gpu_hours_saved"]) == (0, 0)
    assert s8["model_loads"] == 1 and s8["resets"] == 4 and s8["model_loads_saved"] == 3
    # three loads of 220 s avoided; a reset before each of the 4 levels spent: 5 s each plus the rollout of the EPP
    # (no-offload's approximate prefix index lives in its memory), each followed by the warm-up a restart gets
    assert s8["gpu_time_estimate"]["seconds"]["idle"] == 4 * 35.0 + 4 * 5.0 + 4 * 30.0
    assert s8["gpu_time_estimate"]["seconds"]["warmup"] == 5 * 25.0
    assert r8["gpu_time_estimate"]["seconds"]["warmup"] == 4 * 25.0
    assert s8["gpu_time_estimate"]["seconds"]["model_load"] == 220.0
    assert s8["gpu_hours_saved"] == pytest.approx((3 * 220 - 25 - 4 * 5 - 4 * 30) * 2 / 3600, abs=1e-3)
    assert s8["gpu_hours_saved"] == pytest.approx(r8["gpu_time_estimate"]["gpu_hours_total"]
                                                  - s8["gpu_time_estimate"]["gpu_hours_total"], abs=1e-3)
    assert "5 s per reset x 4" in s8["gpu_time_estimate"]["sources"]["idle"]
    assert "30 s per EPP rollout (index in memory) x 4" in s8["gpu_time_estimate"]["sources"]["idle"]
    totals = by["reset"]["totals"]
    assert totals["model_loads_saved"] == 3 + 3 and totals["resets"] == 8
    assert totals["gpu_hours_saved"] == pytest.approx(by["restart"]["totals"]["gpu_hours_total"]
                                                      - totals["gpu_hours_total"], abs=1e-3)
    assert totals["gpu_hours_saved"] > 0
    text = method.format_plan(by["reset"])
    assert (f"level isolation reset: 6 model loads and {totals['gpu_hours_saved']:.3g} GPU-hours saved compared with "
            "restart") in text
    assert "model_loads_saved" not in by["none"]["totals"] and "saved" not in method.format_plan(by["none"])


def test_plan_never_starts_a_store_and_falls_back_to_defaults_when_none_answers(campaigns_dir, tmp_path):
    import os

    from llmd_bench.measure.processes import free_port

    path = write_campaign(campaigns_dir, tiny_campaign())
    base = {k: v for k, v in os.environ.items() if k not in ("LLMD_BENCH_DB_URL", "AIRFLOW_CONN_LLMD_RESULTS")}
    base.update(LLMD_BENCH_PGDATA_BASE=str(tmp_path / "pg"), LLMD_BENCH_RUNTIME="kubernetes")
    out = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", str(path), "--json"],
                         capture_output=True, text=True, env=base)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["estimate"]["history"].startswith("no results store configured")
    assert not (tmp_path / "pg").exists()  # the local server was neither created nor started
    closed = {**base, "LLMD_BENCH_DB_URL": f"postgresql://u:p@127.0.0.1:{free_port()}/none"}
    out = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", str(path)], capture_output=True, text=True,
                         env=closed)
    assert out.returncode == 0, out.stderr
    assert "not read (" in out.stdout and "defaults only" in out.stdout and "default: 120 s start-up" in out.stdout


def test_plan_cli_reads_the_configured_store(db_url):
    import os

    campaign, params = _per_level_params()
    _store_history(db_url, params.llmd_version, params.tensor_parallel_size)
    env = {**os.environ, "LLMD_BENCH_DB_URL": db_url, "LLMD_BENCH_RUNTIME": "kubernetes"}
    argv = [str(BIN / "llmd-bench"), "plan", "--campaign", "kv_cache_eval_per_level", "--json", "--params",
            json.dumps({"models": ["Qwen/Qwen3-8B"], "configs": ["no-offload"], "concurrency": [1, 50, 100, 150]})]
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert "3 measured cell(s)" in found["estimate"]["history"]
    assert found["cells"][0]["gpu_time_estimate"]["seconds"]["model_load"] == 4 * 220.0
    out = subprocess.run([*argv, "--no-history"], capture_output=True, text=True, env=env)
    e = json.loads(out.stdout)["cells"][0]["gpu_time_estimate"]
    assert e["seconds"]["model_load"] == pytest.approx(4 * (120 + 16.4 / 0.5))
    assert e["sources"]["model_load"].startswith("default")


