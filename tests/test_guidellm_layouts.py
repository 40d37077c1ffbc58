"""Old GuideLLM report layouts on real reports, zstd-compressed as past studies kept them; `.json.zst` input.

tests/fixtures/guidellm/<version>/guidellm-results.json.zst come from scripts/guidellm_fixtures.py: GuideLLM 0.5.3,
0.5.4 and 0.6.0 each against the GuideLLM 0.8.1 mock server (--ttft-ms 20 --itl-ms 5), a concurrent sweep of 1, 2
and 4 streams, 3 s each (--max-seconds 3), 16 output tokens a request. The numbers are checked against those
settings, so a unit mistake (seconds for milliseconds) shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
import zstandard
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import BIN, ROOT
from llmd_bench.integrations.importer import _expected_duration, import_reports
from llmd_bench.measure import guidellm_layouts
from llmd_bench.measure.guidellm_layouts import v0_5, v0_6, v0_8
from llmd_bench.measure.guidellm_report import load_json, parse_report, parse_report_file
from llmd_bench.model.errors import LlmdBenchError, ReportError
from llmd_bench.store import db
from llmd_bench.store.schema import Cell, LevelResult, Run

FIXTURES = ROOT / "tests" / "fixtures" / "guidellm"
# the mock server's and the sweep's settings in scripts/guidellm_fixtures.py
TTFT_MS, ITL_MS, OUTPUT_TOKENS, MAX_SECONDS, LEVELS = 20, 5, 16, 3, [1, 2, 4]
ADAPTERS = {"0.5.3": v0_5.LAYOUT, "0.5.4": v0_5.LAYOUT, "0.6.0": v0_6.LAYOUT}
SUPPORTED = "supported: GuideLLM 0.8.x (layout 2); 0.6.0, 0.5.4, 0.5.3 (layout 1)"
NO_DB = "postgresql://nobody:x@127.0.0.1:1/none"  # any write attempt would fail loudly

versions = pytest.mark.parametrize("version", list(ADAPTERS))


def _fixture(version):
    return FIXTURES / version / "guidellm-results.json.zst"


def _zst(path, doc):
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(json.dumps(doc).encode()))
    return path


@versions
def test_each_version_is_read_by_its_own_adapter(version):
    doc = load_json(_fixture(version))
    assert doc["metadata"]["guidellm_version"] == version and doc["metadata"]["version"] == 1
    assert guidellm_layouts.detect(doc, "r") is ADAPTERS[version]
    # the level duration asked for comes from the report's own --max-seconds
    assert guidellm_layouts.expected_duration(doc) == _expected_duration(doc) == MAX_SECONDS


def test_the_0_8_report_keeps_its_adapter(real_report):
    doc = load_json(real_report)
    assert guidellm_layouts.detect(doc, "r") is v0_8.LAYOUT
    assert _expected_duration(doc) == 2  # the session's report runs 2 s levels
    assert parse_report(doc).levels[0].summary["scheduler_metrics"]["request_targeted_start_delay_avg"] is not None


@versions
def test_levels_counts_windows_and_settings(version):
    report = parse_report_file(_fixture(version), expected_duration_s=MAX_SECONDS)
    assert report.guidellm_version == version
    assert [lv.concurrency for lv in report.levels] == LEVELS
    for lv in report.levels:
        assert lv.valid, lv.invalid_reason
        assert lv.requests_successful >= 20 and lv.requests_errored == 0 and lv.requests_incomplete <= lv.concurrency
        assert lv.requests_total == lv.requests_successful + lv.requests_errored + lv.requests_incomplete
        assert lv.duration_s == pytest.approx(MAX_SECONDS, abs=0.05) and lv.end - lv.start == pytest.approx(lv.duration_s)
        assert lv.summary["config"]["strategy"]["streams"] == lv.concurrency and "requests" not in lv.summary
        # 0.5/0.6 targeted start delays mean something else than 0.8.1's: not carried (v0_5.py)
        assert "request_targeted_start_delay_avg" not in lv.summary["scheduler_metrics"]
    spec = report.spec
    assert (spec["profile"], spec["rate"], spec["max_seconds"], spec["random_seed"]) == ("concurrent", [1.0, 2.0, 4.0], 3.0, 889)
    assert json.loads(spec["data"][0])["output_tokens"] == OUTPUT_TOKENS
    # judged like 0.8 levels: a level shorter than asked is kept, with the reason
    short = parse_report_file(_fixture(version), expected_duration_s=120)
    assert all("ran 3.0 s of the 120 s asked" in lv.invalid_reason for lv in short.levels)


@versions
def test_metrics_match_the_mock_servers_settings_and_units(version):
    report = parse_report_file(_fixture(version))
    for lv in report.levels:
        ttft, itl, tpot, latency = (lv.value(m) for m in ("ttft_ms", "itl_ms", "tpot_ms", "request_latency_s"))
        assert TTFT_MS <= lv.value("ttft_ms", "median") <= TTFT_MS + 40 and TTFT_MS <= ttft <= TTFT_MS + 50
        assert ITL_MS <= itl <= 2 * ITL_MS
        assert ITL_MS <= tpot <= (TTFT_MS + (OUTPUT_TOKENS - 1) * 2 * ITL_MS) / OUTPUT_TOKENS
        # a request is its first token plus 15 more: seconds here, milliseconds above
        assert latency * 1000 == pytest.approx(ttft + (OUTPUT_TOKENS - 1) * itl, abs=15)
        assert 0.5 <= lv.value("output_tps") / (lv.concurrency * OUTPUT_TOKENS / latency) <= 1.2
        assert lv.value("requests_per_s") == pytest.approx(lv.requests_successful / lv.duration_s, rel=0.2)
        for metric, stats in lv.metrics.items():
            assert all(v is not None and v >= 0 for v in stats.values()), (metric, stats)
            assert stats["p99"] >= stats["p90"] >= stats["median"] * 0.99, (metric, stats)


@versions
def test_metric_units_agree_with_the_raw_request_timings(version):
    """The per-request records' epoch timestamps (seconds) give the same TTFT (ms) and latency (s)."""
    doc = load_json(_fixture(version))
    report = parse_report(doc)
    for bench, lv in zip(doc["benchmarks"], report.levels):
        timings = [r["info"]["timings"] for r in bench["requests"]["successful"]]
        assert len(timings) == lv.requests_successful
        ttft = sum(t["first_token_iteration"] - t["request_start"] for t in timings) / len(timings) * 1000
        latency = sum(t["request_end"] - t["request_start"] for t in timings) / len(timings)
        assert lv.value("ttft_ms") == pytest.approx(ttft, rel=1e-6)
        assert lv.value("request_latency_s") == pytest.approx(latency, rel=1e-6)


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


def test_the_same_report_plain_or_compressed_imports_alike(db_url, tmp_path):
    plain = tmp_path / "guidellm-results.json"
    plain.write_bytes(zstandard.ZstdDecompressor().decompress(_fixture("0.5.4").read_bytes()))
    a = import_reports([_fixture("0.5.4")], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="zst", url=db_url)
    b = import_reports([plain], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="plain", url=db_url)
    assert {k: v for k, v in a.items() if k != "run_id"} == {k: v for k, v in b.items() if k != "run_id"}
    # several zstd frames (`zstd` on a stream, concatenated files) are one report
    text = plain.read_bytes()
    frames = tmp_path / "frames.json.zst"
    frames.write_bytes(b"".join(zstandard.ZstdCompressor().compress(part) for part in (text[:1000], text[1000:])))
    assert load_json(frames) == json.loads(text)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["metadata"].update(guidellm_version="0.7.0", version=2), f"written by GuideLLM 0.7.0 (layout 2); {SUPPORTED}"),
    (lambda d: d["metadata"].update(guidellm_version="0.6.1"), f"written by GuideLLM 0.6.1 (layout 1); {SUPPORTED}"),
    (lambda d: d["metadata"].update(guidellm_version="0.4.0"), f"written by GuideLLM 0.4.0 (layout 1); {SUPPORTED}"),
    (lambda d: d["metadata"].update(version=2), f"written by GuideLLM 0.6.0 (layout 2); {SUPPORTED}"),
    (lambda d: d["metadata"].update(version=True), "written by GuideLLM 0.6.0 (layout True)"),
    # 0.4.x wrote `args` and `benchmarks` and no `metadata` (report.py @v0.4.0)
    (lambda d: d.pop("metadata"), f"written by GuideLLM 0.4.x or earlier (`args` and no `metadata`; GuideLLM names its "
                                  f"version from 0.5.0 on); {SUPPORTED}"),
    (lambda d: d.update(benchmarks=[]), "no benchmarks"),
    (lambda d: d["benchmarks"][1]["metrics"].pop("inter_token_latency_ms"),
     "missing `metrics.inter_token_latency_ms.successful`"),
])
def test_other_versions_and_broken_old_reports_are_refused_by_name(mutate, needle):
    doc = load_json(_fixture("0.6.0"))
    mutate(doc)
    with pytest.raises(ReportError) as err:
        parse_report(doc, source="old.json.zst")
    assert str(err.value).startswith("GuideLLM report old.json.zst") and needle in str(err.value)


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


def test_import_of_an_unsupported_version_names_it_and_writes_nothing(tmp_path):
    doc = load_json(_fixture("0.6.0"))
    doc["metadata"].update(guidellm_version="0.7.0", version=2)
    path = _zst(tmp_path / "guidellm-results.json.zst", doc)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": NO_DB})
    assert out.returncode == 1 and "Traceback" not in out.stderr and "unreachable" not in out.stderr
    assert f"GuideLLM report {path}: written by GuideLLM 0.7.0 (layout 2); {SUPPORTED}" in out.stderr


@versions
@pytest.mark.parametrize("edit, needle", [
    (lambda b: b["metrics"]["output_tokens_per_second"]["successful"].update(mean=-700.0),
     "`benchmarks[2].metrics.output_tokens_per_second.successful.mean` is -700.0; impossible"),
    (lambda b: b["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"].update(p50=1e6),
     "`benchmarks[2].metrics.time_to_first_token_ms.successful.percentiles.p50` is 1000000.0, above "
     "`benchmarks[2].metrics.time_to_first_token_ms.successful.percentiles.p75`"),
    (lambda b: b["metrics"]["prompt_token_count"]["successful"].update(max=-32), "prompt_token_count.successful.max` is -32"),
], ids=["negative-output-rate", "p50-above-p75", "negative-token-count"])
def test_an_old_report_with_impossible_numbers_is_refused_and_never_imported(tmp_path, version, edit, needle):
    doc = load_json(_fixture(version))
    edit(doc["benchmarks"][2])
    path = _zst(tmp_path / "guidellm-results.json.zst", doc)
    with pytest.raises(ReportError) as err:
        parse_report_file(path)
    assert str(err.value).startswith(f"GuideLLM report {path} (level at concurrency 4): ") and needle in str(err.value)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": NO_DB})
    assert out.returncode == 1 and "Traceback" not in out.stderr and needle in out.stderr
    assert "unreachable" not in out.stderr  # refused before any database access


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
