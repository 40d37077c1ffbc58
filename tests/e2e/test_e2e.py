"""End to end through Airflow on the local runtime: real mock servers, real Redis, real GuideLLM runs."""

from __future__ import annotations

import csv
import json
import stat

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure.guidellm_report import parse_report_file
from llmd_bench.measure.processes import pid_alive, port_is_free
from llmd_bench.model.campaign_files import load_campaign

pytestmark = pytest.mark.e2e

# design: single: these runs are not about the baseline's repeat (tests/e2e/test_aba.py is)
CONF = {"concurrency": [1, 4], "duration_s": 2, "design": "single"}


def _states(dr):
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def _assert_nothing_left(results_dir):
    states = list(results_dir.rglob("runtime.json"))
    assert states, "no cell started anything"
    for path in states:
        state = json.loads(path.read_text())
        assert state["processes"] == [] and state["leftovers"] == [], path
        assert state["stopped"], path
    for log in results_dir.rglob("cell.json"):
        record = json.loads(log.read_text())
        assert record["steps"]["teardown"]["status"] == "ok"
        for port in record["steps"]["teardown"]["summary"]["ports_freed"]:
            assert port_is_free(port)
    for path in states:
        for proc in json.loads(path.read_text())["stopped"]:
            assert not pid_alive(proc["pid"]), proc
            assert port_is_free(proc["port"]), proc


def _run(campaign_path, conf):
    from llmd_bench.orchestration.airflow_dag import build_dag
    dag = build_dag(load_campaign(campaign_path), runtime="local")
    return dag.test(run_conf=conf)


def _db_rows(url, sql):
    from sqlalchemy import text

    from llmd_bench.store.db import make_engine
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_campaign_runs_end_to_end_and_leaves_nothing_behind(airflow_db, campaigns_dir, results_dir, db_url, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    # valkey-lowmem exists only in this campaign file: a configuration added in YAML, no code
    doc = tiny_campaign(configs=["no-offload", "native-offload", "valkey-lowmem"])
    doc["configurations"] = {"valkey-lowmem": {
        "description": "precise routing with a Valkey index, GPU cache squeezed",
        "model_server": {"gpu_memory_utilization": 0.6}, "router": {"prefix_scorer": "precise", "index": "valkey"},
        "evidence": "index-keys"}}
    doc["local_simulation"]["valkey-lowmem"] = {"ttft_ms": 40, "itl_ms": 8.0, "max_concurrent_requests": 64}
    path = write_campaign(campaigns_dir, doc)
    dr = _run(path, {**CONF, "configs": ["no-offload", "valkey-lowmem"]})
    states = _states(dr)
    assert dr.state == "success", states
    for cell in ("Qwen3-0_6B__no-offload", "Qwen3-0_6B__valkey-lowmem"):
        for step in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"):
            assert states[f"{cell}.{step}"] == "success", (cell, step)
    # not selected: skipped, not failed
    assert {states[f"Qwen3-0_6B__native-offload.{s}"] for s in ("deploy", "sweep", "teardown")} == {"skipped"}
    run_dir = next(results_dir.iterdir())
    assert run_dir.name == dr.run_id
    for config in ("no-offload", "valkey-lowmem"):
        report = parse_report_file(run_dir / "Qwen3-0.6B" / config / "trial-1" / "guidellm_report.json")
        assert sorted(lv.concurrency for lv in report.levels) == [1, 4]
        assert all(lv.requests_successful > 0 for lv in report.levels)
        record = json.loads((run_dir / "Qwen3-0.6B" / config / "cell.json").read_text())
        assert record["versions"]["guidellm"] == "0.8.1" and record["versions"]["llmd"] == "v0.4.0"
        assert record["params"]["concurrency"] == [1, 4]
        argv = record["sweep"]["trials"][0]["argv"]  # the command as run: the one `llmd-bench plan` shows
        assert argv[1] == "run" and json.loads(argv[argv.index("--profile") + 1])["streams"] == [1, 4]
        assert argv[argv.index("--data") + 1].startswith("kind=synthetic_text,prompt_tokens=32,output_tokens=16,")
        windows = record["sweep"]["trials"][0]["level_windows"]
        assert [w["concurrency"] for w in windows] == [1, 4] and all(w["end"] > w["start"] for w in windows)
    valkey = json.loads((run_dir / "Qwen3-0.6B" / "valkey-lowmem" / "cell.json").read_text())
    assert valkey["serving"]["kv_backend"]["kind"] == "valkey"
    summary = json.loads((run_dir / "summary.json").read_text())
    by_cell = {(c["model"], c["config"]): c for c in summary["cells"]}
    assert by_cell[("Qwen3-0.6B", "no-offload")]["status"] == "ok"
    assert by_cell[("Qwen3-0.6B", "native-offload")]["status"] == "skipped"
    report_dir = results_dir.parent / "reports" / dr.run_id
    assert (results_dir.parent / "reports" / "latest").resolve() == report_dir.resolve()
    peaks = {(r["config"]): r for r in csv.DictReader(open(report_dir / "all_peak_metrics.csv"))}
    assert float(peaks["no-offload"]["peak_output_tps"]) > 0 and peaks["no-offload"]["optimal_concurrency"] == "4"
    assert peaks["native-offload"]["status"] == "skipped" and peaks["native-offload"]["peak_output_tps"] == ""
    # the YAML-only configuration is measured, compared with the baseline and has an effect verdict
    assert float(peaks["valkey-lowmem"]["peak_output_tps"]) > 0 and peaks["valkey-lowmem"]["vs_baseline_pct"] != ""
    md = (report_dir / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Qwen3-0.6B | valkey-lowmem |"))
    assert row.rstrip(" |").endswith(("confirmed", "not taking effect", "not measured")), row
    assert "The serving layer was SIMULATED" in md.split("\n## ")[0]
    # the method as run, and how it differs from the February evaluation's
    method = md.split("## Method")[1].split("\n## ")[0]
    assert "Levels: concurrency 1, 4; one GuideLLM run per cell sweeps them in order." in method
    assert "Warm-up: 2 requests after deploy" in method and "Trials: 1 (no run-to-run interval" in method
    assert ("differs from the February evaluation's: concurrency [1, 4] "
            "(February: [1, 50, 100, 150, 300, 400, 500, 650])") in method
    _assert_nothing_left(results_dir)
    # the results store holds the run, every cell (skipped ones too) and every level
    assert _db_rows(db_url, "SELECT dag_run_id, status, llmd_version, guidellm_version FROM runs") == [
        (dr.run_id, "ok", "v0.4.0", "0.8.1")]
    assert sorted(_db_rows(db_url, "SELECT config, status FROM cells")) == [
        ("native-offload", "skipped"), ("no-offload", "ok"), ("valkey-lowmem", "ok")]
    assert sorted(_db_rows(db_url, "SELECT c.config, l.concurrency FROM level_results l JOIN cells c ON c.id = l.cell_id")) == [
        ("no-offload", 1), ("no-offload", 4), ("valkey-lowmem", 1), ("valkey-lowmem", 4)]


def test_failed_sweep_still_tears_down_and_other_cells_finish(airflow_db, campaigns_dir, results_dir,
                                                              tmp_path, monkeypatch, db_url, fake_guidellm):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    wrapper = tmp_path / "guidellm-failing"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"cell=Qwen3-0_6B__no-offload"*) echo "simulated GuideLLM crash" >&2; exit 3;; esac\n'
        f'exec "{fake_guidellm}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LLMD_BENCH_GUIDELLM", str(wrapper))
    path = write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload", "llm-d-redis"]))
    dr = _run(path, CONF)
    states = _states(dr)
    failed = "Qwen3-0_6B__no-offload"
    assert states[f"{failed}.sweep"] == "failed"
    assert states[f"{failed}.teardown"] == "success"
    assert states[f"{failed}.load_results"] == "upstream_failed"
    assert all(states[f"Qwen3-0_6B__llm-d-redis.{s}"] == "success"
               for s in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"))
    assert states["compare"] == "failed" and dr.state == "failed"
    summary = json.loads((next(results_dir.iterdir()) / "summary.json").read_text())
    bad = next(c for c in summary["cells"] if c["config"] == "no-offload")
    assert bad["status"] == "failed" and "guidellm exited with 3" in bad["reason"]
    assert next(c for c in summary["cells"] if c["config"] == "llm-d-redis")["status"] == "ok"
    _assert_nothing_left(results_dir)
    cells = dict(_db_rows(db_url, "SELECT config, status || ': ' || coalesce(reason, '') FROM cells"))
    assert cells["llm-d-redis"] == "ok: " and cells["no-offload"].startswith("failed: sweep: guidellm exited with 3")
    # the stack deploy found is stored for the failed cell too
    stacks = dict(_db_rows(db_url, "SELECT config, stack->>'platform' FROM cells"))
    assert stacks == {"llm-d-redis": "local", "no-offload": "local"}
    assert _db_rows(db_url, "SELECT status FROM runs") == [("failed",)]


def test_a_factor_campaign_runs_a_cell_per_factor_value_and_reports_scaling(airflow_db, campaigns_dir, results_dir, db_url,
                                                                            monkeypatch, fake_guidellm):
    """replicas [1, 2] x (no-offload, lmcache-valkey): four cells, each with its own replica count (mock servers
    behind the local router), the LMCache remote store started for real, and a report that compares within
    each replica count and shows the scaling."""
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    doc = tiny_campaign(configs=["no-offload", "lmcache-valkey"], factors={"replicas": [1, 2]})
    doc["serving"]["llmd_version"] = "v0.7.0"
    doc["local_simulation"]["lmcache-valkey"] = {"ttft_ms": 45, "itl_ms": 8.6, "max_concurrent_requests": 64}
    path = write_campaign(campaigns_dir, doc)
    dr = _run(path, {"concurrency": [2], "duration_s": 2, "design": "single"})
    states = _states(dr)
    assert dr.state == "success", states
    groups = ["Qwen3-0_6B__no-offload__replicas-1", "Qwen3-0_6B__no-offload__replicas-2",
              "Qwen3-0_6B__lmcache-valkey__replicas-1", "Qwen3-0_6B__lmcache-valkey__replicas-2"]
    assert all(states[f"{g}.load_results"] == "success" for g in groups), states
    run_dir = results_dir / dr.run_id / "Qwen3-0.6B"
    for config in ("no-offload", "lmcache-valkey"):
        for n in (1, 2):
            record = json.loads((run_dir / f"{config}__replicas-{n}" / "cell.json").read_text())
            assert record["factors"] == {"replicas": n} and record["params"]["replicas"] == n
            assert record["serving"]["replicas"] == n  # n mock servers behind the router
    store = json.loads((run_dir / "lmcache-valkey__replicas-2" / "cell.json").read_text())
    assert store["serving"]["kv_backend"]["kind"] == "valkey"
    assert sorted(_db_rows(db_url, "SELECT config, stack_factors, replicas FROM cells")) == [
        ("lmcache-valkey", "replicas=1", 1), ("lmcache-valkey", "replicas=2", 2),
        ("no-offload", "replicas=1", 1), ("no-offload", "replicas=2", 2)]
    md = (results_dir.parent / "reports" / dr.run_id / "report.md").read_text()
    assert "| Qwen3-0.6B [replicas=2] | lmcache-valkey |" in md and "## Scaling" in md
    scaling = md.split("## Scaling")[1].split("\n## ")[0]
    assert "| Qwen3-0.6B | lmcache-valkey | - |" in scaling and "replicas=2: tok/s (eff.)" in scaling
    assert "Factors: replicas 1, 2." in md
    # GPU time: TP 2 x replicas held from deploy to teardown, split into phases that add up to the wall time
    for (replicas, g) in _db_rows(db_url, "SELECT replicas, gpu_time FROM cells"):
        assert g["gpus"] == 2 * replicas and g["complete"], g
        assert sum(g["seconds"].values()) == pytest.approx(g["wall_s"], abs=0.01) and g["seconds"]["measurement"] > 0
    assert "## GPU time\n" in md and "The GPUs were SIMULATED" in md
    _assert_nothing_left(results_dir)
