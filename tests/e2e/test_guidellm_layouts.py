"""Old GuideLLM report layouts on real reports, zstd-compressed as past studies kept them; `.json.zst` input.

tests/fixtures/guidellm/<version>/guidellm-results.json.zst come from scripts/guidellm_fixtures.py: GuideLLM 0.5.3,
0.5.4 and 0.6.0 each against the GuideLLM 0.8.1 mock server (--ttft-ms 20 --itl-ms 5), a concurrent sweep of 1, 2
and 4 streams, 3 s each (--max-seconds 3), 16 output tokens a request. The numbers are checked against those
settings, so a unit mistake (seconds for milliseconds) shows.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_guidellm_layouts.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import BIN
from llmd_bench.integrations.importer import import_reports
from llmd_bench.measure.guidellm_report import load_json
from llmd_bench.model.errors import LlmdBenchError, ReportError
from llmd_bench.store import db
from llmd_bench.store.schema import Cell, LevelResult, Run
from unit.test_guidellm_layouts import ITL_MS, LEVELS, MAX_SECONDS, NO_DB, TTFT_MS, _fixture, versions


@versions
def test_import_of_the_compressed_report_into_the_store(db_url, version):
    path = _fixture(version)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0", "--run-id", f"old-{version}"],
                         capture_output=True, text=True, env={**os.environ, "LLMD_BENCH_DB_URL": db_url})
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["trials"], summary["levels"], summary["invalid_levels"]) == (1, 3, 0)
    engine = db.make_engine(db_url)
    try:
        with Session(engine) as s:
            run = s.execute(select(Run)).scalar_one()
            assert run.guidellm_version == version and run.params["guidellm_spec"]["max_seconds"] == MAX_SECONDS
            cell = s.execute(select(Cell)).scalar_one()
            assert cell.status == "ok" and cell.report_path.endswith(".json.zst")
            assert cell.report_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            levels = s.execute(select(LevelResult).order_by(LevelResult.concurrency)).scalars().all()
            assert [lv.concurrency for lv in levels] == LEVELS and all(lv.valid for lv in levels)
            for lv in levels:
                assert lv.duration_s == pytest.approx(MAX_SECONDS, abs=0.05)
                assert TTFT_MS <= lv.ttft_ms_mean <= TTFT_MS + 50 and ITL_MS <= lv.itl_ms_mean <= 2 * ITL_MS
                assert 0.09 <= lv.request_latency_s_mean <= 0.25 and lv.requests_successful >= 20
    finally:
        engine.dispose()


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupted(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


def _not_zstd(path):
    path.write_text('{"metadata": {}}')


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage, needle", [
    (_truncated, "zstd data ends mid-frame (truncated?)"),
    (_corrupted, "not valid zstd data (truncated or corrupted?)"),
    (_not_zstd, "not zstd-compressed (a .zst name, but no zstd frame)"),
    (_empty, "not zstd-compressed"),
])
def test_a_damaged_zst_is_refused_clearly_before_any_database_access(tmp_path, damage, needle):
    path = tmp_path / "guidellm-results.json.zst"
    path.write_bytes(_fixture("0.5.3").read_bytes())
    damage(path)
    with pytest.raises(ReportError) as err:
        load_json(path)
    assert str(err.value).startswith(f"GuideLLM report {path}: ") and needle in str(err.value)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": NO_DB})
    assert out.returncode == 1 and "Traceback" not in out.stderr and needle in out.stderr and str(path) in out.stderr
    assert "unreachable" not in out.stderr


def test_a_past_studys_factor_values_import_as_separate_cells_and_report_as_scaling(db_url):
    """A replica-scaling study of GuideLLM 0.5.4 reports: each report imported with its factor values under one run
    id is its own cell; the report compares within each replica count and adds the Scaling section."""
    from llmd_bench import report as rpt
    from llmd_bench.integrations.importer import parse_factors
    from llmd_bench.report.data import from_store

    for replicas in (1, 2):
        for config in ("no-offload", "llm-d-valkey"):
            import_reports([_fixture("0.5.4")], "Qwen/Qwen3-8B", config, "v0.5.0", run_id="study-replicas",
                           campaign="past-replicas", url=db_url, factors=parse_factors(f"replicas={replicas}"))
    # the command line takes the same values
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(_fixture("0.6.0")), "--model", "Qwen/Qwen3-8B",
                          "--config", "fs-offload", "--llmd-version", "v0.7.0", "--run-id", "study-pressure",
                          "--factors", "memory_regime=pressure"],
                         capture_output=True, text=True, env={**os.environ, "LLMD_BENCH_DB_URL": db_url})
    assert out.returncode == 0, out.stderr
    engine = db.make_engine(db_url)
    try:
        with Session(engine) as s:
            pressure = s.execute(select(Cell).where(Cell.config == "fs-offload")).scalar_one()
            assert pressure.stack_factors == "memory_regime=pressure" and pressure.factors == {"memory_regime": "pressure"}
            cells = s.execute(select(Cell).where(Cell.config != "fs-offload")
                              .order_by(Cell.config, Cell.stack_factors)).scalars().all()
            assert [(c.config, c.stack_factors, c.replicas, c.factors) for c in cells] == [
                ("llm-d-valkey", "replicas=1", 1, {"replicas": 1}), ("llm-d-valkey", "replicas=2", 2, {"replicas": 2}),
                ("no-offload", "replicas=1", 1, {"replicas": 1}), ("no-offload", "replicas=2", 2, {"replicas": 2})]
        data = from_store(engine, "study-replicas", "past-replicas")
    finally:
        engine.dispose()
    md, _ = rpt.render_report(rpt.build(data), {})
    assert "| Qwen3-8B [replicas=2] | llm-d-valkey |" in md and "## Scaling" in md
    with pytest.raises(LlmdBenchError, match=r"'gpus=2' is not factor=value; factors: \['replicas'"):
        parse_factors("gpus=2")
    with pytest.raises(LlmdBenchError, match="replicas=two must be an integer >= 1"):
        parse_factors("replicas=two")
