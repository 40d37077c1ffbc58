"""Old GuideLLM report layouts on real reports, zstd-compressed as past studies kept them; `.json.zst` input.

tests/fixtures/guidellm/<version>/guidellm-results.json.zst come from scripts/guidellm_fixtures.py: GuideLLM 0.5.3,
0.5.4 and 0.6.0 each against the GuideLLM 0.8.1 mock server (--ttft-ms 20 --itl-ms 5), a concurrent sweep of 1, 2
and 4 streams, 3 s each (--max-seconds 3), 16 output tokens a request. The numbers are checked against those
settings, so a unit mistake (seconds for milliseconds) shows.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from llmd_bench.integrations.importer import _expected_duration
from llmd_bench.measure import guidellm_layouts
from llmd_bench.measure.guidellm_layouts import v0_5, v0_6, v0_8
from llmd_bench.measure.guidellm_report import load_json, parse_report, parse_report_file
from llmd_bench.model.errors import ReportError

FIXTURES = ROOT / "tests" / "fixtures" / "guidellm"
# the mock server's and the sweep's settings in scripts/guidellm_fixtures.py
TTFT_MS, ITL_MS, OUTPUT_TOKENS, MAX_SECONDS, LEVELS = 20, 5, 16, 3, [1, 2, 4]
ADAPTERS = {"0.5.3": v0_5.LAYOUT, "0.5.4": v0_5.LAYOUT, "0.6.0": v0_6.LAYOUT}
SUPPORTED = "supported: GuideLLM 0.8.x (layout 2); 0.6.0, 0.5.4, 0.5.3 (layout 1)"
NO_DB = "postgresql://nobody:x@127.0.0.1:1/none"  # any write attempt would fail loudly

versions = pytest.mark.parametrize("version", list(ADAPTERS))


def _fixture(version):
    return FIXTURES / version / "guidellm-results.json.zst"


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


