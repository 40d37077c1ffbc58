"""The results store against a real PostgreSQL server: migrations, idempotent loads, imports, bad input,
a database that is down and comes back, and a cleared run that does not benchmark stored cells again."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.orm import Session

from conftest import BIN
from llmd_bench.integrations.importer import import_reports
from llmd_bench.model.errors import LlmdBenchError, ReportError
from llmd_bench.store import db
from llmd_bench.store.read import latest_run_peaks
from llmd_bench.store.schema import Cell, LevelResult, Run


def _count(url, model=LevelResult):
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            return s.execute(select(func.count()).select_from(model)).scalar_one()
    finally:
        engine.dispose()


def test_migration_creates_the_schema_from_empty(db_url):
    engine = db.make_engine(db_url)
    db.migrate(engine)
    db.migrate(engine)  # idempotent
    insp = inspect(engine)
    assert {"runs", "cells", "level_results", "alembic_version"} <= set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("level_results")}
    for metric in ("output_tps", "requests_per_s", "ttft_ms", "tpot_ms", "itl_ms", "request_latency_s"):
        for stat in ("mean", "median", "p90", "p99"):
            assert f"{metric}_{stat}" in cols
    assert {"requests_successful", "requests_errored", "requests_incomplete", "level_start", "level_end",
            "duration_s", "summary", "valid", "invalid_reason"} <= cols
    uniques = {u["name"] for t in ("runs", "cells", "level_results") for u in insp.get_unique_constraints(t)}
    assert uniques == {"uq_runs_campaign_dag_run", "uq_cells_run_model_config_factors_trial", "uq_level_results_cell_concurrency"}
    engine.dispose()


def test_import_then_reimport_writes_no_duplicates(db_url, real_report):
    first = import_reports([real_report], "Qwen/Qwen3-8B", "llm-d-redis", "v0.4.0", run_id="past-1", url=db_url)
    again = import_reports([real_report], "Qwen/Qwen3-8B", "llm-d-redis", "v0.4.0", run_id="past-1", url=db_url)
    assert first == again and first["levels"] == 2
    assert (_count(db_url, Run), _count(db_url, Cell), _count(db_url)) == (1, 1, 2)
    engine = db.make_engine(db_url)
    with Session(engine) as s:
        run = s.execute(select(Run)).scalar_one()
        assert (run.llmd_version, run.vllm_version, run.guidellm_version) == ("v0.4.0", "0.11.2", "0.8.1")
        assert run.images["vllm"] == "ghcr.io/llm-d/llm-d-cuda:v0.4.0"
        level = s.execute(select(LevelResult).order_by(LevelResult.concurrency)).scalars().first()
        assert level.concurrency == 1 and level.valid and level.output_tps_mean > 0
        assert level.level_end > level.level_start and level.duration_s == pytest.approx(2, abs=0.2)
        assert "requests" not in level.summary and "metrics" in level.summary
        cell = s.execute(select(Cell)).scalar_one()
        assert (cell.short_model, cell.status, len(cell.report_sha256)) == ("Qwen3-8B", "ok", 64)
    engine.dispose()


def test_stored_levels_read_back_exactly_what_was_loaded_awkward_text_included(db_url):
    """Level rows go in with COPY: tabs, newlines, backslashes, quotes and non-ASCII in text and JSON,
    NULLs, an infinite float and fractional timestamps must come back unchanged."""
    from llmd_bench.measure.guidellm_levels import LevelResult as ParsedLevel

    awkward = 'tab\there\nnew line \\ back\\slash "quoted" \\N naïve ✓'
    metrics = {"output_tps": {"mean": 123.456789012345, "median": None, "std_dev": 1.5},
               "ttft_ms": {"mean": float("inf")}}
    levels = [ParsedLevel(1, 1_790_000_000.123456, 1_790_000_004.5, 4.377, 10, 0, 2, metrics,
                          {"warnings": [{"message": awkward}], "metrics": {"x": [1, 2.5, None]}}),
              ParsedLevel(2, 1_790_000_010.0, 1_790_000_014.0, 4.0, 0, 3, 0, {}, {}, invalid_reason=awkward)]
    run = db.RunInfo(campaign="copy", dag_run_id="run-1", runtime="local", llmd_version="v0.4.0", vllm_version=None,
                     guidellm_version="0.8.1", llmd_bench_version=None, images={}, params={})
    engine = db.make_engine(db_url)
    db.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            cell = db.CellInfo(model="org/M", short_model="M", config="no-offload", trial=1, status="ok")
            db.store_cell(s, run, cell, levels, suspects={2: awkward})
        with Session(engine) as s:
            first, second = s.execute(select(LevelResult).order_by(LevelResult.concurrency)).scalars().all()
            assert first.summary == {"warnings": [{"message": awkward}], "metrics": {"x": [1, 2.5, None]}}
            assert first.output_tps_mean == 123.456789012345 and first.output_tps_median is None
            assert first.output_tps_std == 1.5 and first.ttft_ms_mean == float("inf") and first.tpot_ms_mean is None
            assert first.level_start.timestamp() == pytest.approx(1_790_000_000.123456, abs=1e-6)
            assert (first.valid, first.invalid_reason, first.suspect_reason) == (True, None, None)
            assert (first.requests_successful, first.requests_errored, first.requests_incomplete) == (10, 0, 2)
            assert (second.valid, second.invalid_reason, second.suspect_reason) == (False, awkward, awkward)
            assert second.summary == {}
    finally:
        engine.dispose()


def test_import_command_line(db_url, real_report, monkeypatch):
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(real_report), str(real_report), "--model", "Qwen/Qwen3-14B",
                          "--config", "no-offload", "--llmd-version", "v0.4.0", "--run-id", "cli-1"],
                         capture_output=True, text=True, env={**os.environ, "LLMD_BENCH_DB_URL": db_url})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["trials"] == 2
    assert (_count(db_url, Cell), _count(db_url)) == (2, 4)
    bad = subprocess.run([str(BIN / "llmd-bench"), "import", str(real_report), "--model", "Qwen/Qwen3-14B",
                          "--config", "gpu-magic", "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": db_url})
    assert bad.returncode == 1 and ("--config 'gpu-magic' is not in the configuration catalog "
                                    "(include/configurations.yaml); allowed: ['no-offload'") in bad.stderr


@pytest.mark.parametrize("breakage", ["truncated", "no_benchmarks", "nan", "wrong_version"])
def test_malformed_report_writes_nothing(db_url, real_report, tmp_path, breakage):
    text_ = real_report.read_text()
    doc = json.loads(text_)
    bad = tmp_path / f"{breakage}.json"
    if breakage == "truncated":
        bad.write_text(text_[: len(text_) * 2 // 3])
    else:
        if breakage == "no_benchmarks":
            doc.pop("benchmarks")
        elif breakage == "nan":
            doc["benchmarks"][1]["metrics"]["time_to_first_token_ms"]["successful"]["mean"] = float("nan")
        else:
            doc["metadata"]["guidellm_version"] = "0.6.0"
        bad.write_text(json.dumps(doc))
    # the good file first: the bad one must roll the whole load back
    with pytest.raises(ReportError):
        import_reports([real_report, bad], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", url=db_url)
    engine = db.make_engine(db_url)
    db.migrate(engine)
    engine.dispose()
    assert (_count(db_url, Run), _count(db_url, Cell), _count(db_url)) == (0, 0, 0)


def test_latest_run_peaks_come_from_valid_levels_only(db_url, real_report):
    doc = json.loads(real_report.read_text())
    import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="older", campaign="c", url=db_url)
    time.sleep(0.01)
    import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="newer", campaign="c", url=db_url)
    engine = db.make_engine(db_url)
    with Session(engine) as s, s.begin():
        s.execute(text("UPDATE level_results SET valid = false, invalid_reason = 'test' WHERE concurrency = 4 "
                       "AND cell_id IN (SELECT c.id FROM cells c JOIN runs r ON r.id = c.run_id WHERE r.dag_run_id = 'newer')"))
    peaks = latest_run_peaks(engine, "c")
    engine.dispose()
    level1 = next(b for b in doc["benchmarks"] if b["config"]["strategy"]["streams"] == 1)
    assert len(peaks) == 1 and peaks[0].optimal_concurrency == 1
    assert peaks[0].peak_output_tps == pytest.approx(level1["metrics"]["output_tokens_per_second"]["successful"]["mean"])


def test_cleared_run_does_not_benchmark_a_stored_cell_again(db_url, real_report, monkeypatch, campaigns_dir, results_dir):
    from conftest import tiny_campaign, write_campaign
    write_campaign(campaigns_dir, tiny_campaign())
    import_reports([real_report], "Qwen/Qwen3-0.6B", "no-offload", "v0.4.0", run_id="run-7", campaign="llmd_tiny", url=db_url)
    env = {**os.environ, "LLMD_BENCH_DB_URL": db_url}
    args = [str(BIN / "llmd-bench"), "deploy", "--campaign", "tiny", "--run-id", "run-7", "--model", "Qwen/Qwen3-0.6B"]
    stored = subprocess.run(args + ["--config", "no-offload"], capture_output=True, text=True, env=env)
    assert stored.returncode == 99 and "already stored for run run-7" in stored.stdout
    assert not (results_dir / "run-7" / "Qwen3-0.6B" / "no-offload" / "runtime.json").exists()


def test_import_takes_any_catalog_configuration_and_a_campaigns_own(db_url, real_report, campaigns_dir):
    from conftest import tiny_campaign, write_campaign

    done = import_reports([real_report], "Qwen/Qwen3-8B", "native-offload-20k", "v0.4.0", run_id="past-20k", url=db_url)
    assert done["levels"] == 2
    doc = tiny_campaign(configs=["no-offload", "fs-offload-lab"])
    doc["configurations"] = {"fs-offload-lab": {"description": "a lab variant", "evidence": "none"}}
    doc["local_simulation"]["fs-offload-lab"] = {"ttft_ms": 40, "itl_ms": 8.0}
    write_campaign(campaigns_dir, doc)
    import_reports([real_report], "Qwen/Qwen3-8B", "fs-offload-lab", "v0.4.0", run_id="past-lab", campaign="llmd_tiny",
                   url=db_url)
    with pytest.raises(LlmdBenchError, match=r"'fs-offload-lab' is not in the configuration catalog .*allowed: "
                                             r"\['no-offload', 'native-offload', 'llm-d-redis'"):
        import_reports([real_report], "Qwen/Qwen3-8B", "fs-offload-lab", "v0.4.0", run_id="past-x", url=db_url)
    engine = db.make_engine(db_url)
    with Session(engine) as s:
        assert sorted(s.execute(select(Cell.config)).scalars()) == ["fs-offload-lab", "native-offload-20k"]
    engine.dispose()


def test_a_run_id_two_campaigns_share_is_read_only_with_the_campaign_named(db_url, real_report, tmp_path):
    """Backfills of two campaigns over the same dates share a run id: the report, the Benchmark Report export and
    the MLflow log each refuse to guess, naming both campaigns and --campaign, and read the right one when told."""
    from llmd_bench.integrations import benchmark_report, mlflow_log
    from llmd_bench.report.data import from_store

    run_id = "backfill__2026-10-04T00:00:00+00:00"
    import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id=run_id, campaign="camp_a", url=db_url)
    import_reports([real_report], "Qwen/Qwen3-8B", "llm-d-redis", "v0.4.0", run_id=run_id, campaign="camp_b", url=db_url)
    engine = db.make_engine(db_url)
    readers = {"report": lambda c: from_store(engine, run_id, c).campaign,
               "benchmark report": lambda c: benchmark_report.export_run(run_id, tmp_path / "br", c, url=db_url)["campaign"],
               "mlflow": lambda c: mlflow_log._read(engine, run_id, c).run.campaign}
    try:
        for name, read in readers.items():
            with pytest.raises(LlmdBenchError) as err:
                read(None)
            assert f"run id {run_id!r} exists in several campaigns ['camp_a', 'camp_b']: pass --campaign" == str(err.value), name
            assert read("camp_b") == "camp_b", name
            with pytest.raises(LlmdBenchError, match="is not in the results store for campaign camp_c"):
                read("camp_c")
    finally:
        engine.dispose()
