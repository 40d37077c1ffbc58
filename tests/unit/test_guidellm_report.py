"""The GuideLLM report parser on real 0.8.1 reports, and the sweep's command line."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench.measure.guidellm_levels import ValidityRules, judge_level
from llmd_bench.measure.guidellm_report import parse_report, parse_report_file
from llmd_bench.model import catalog, paths
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import ReportError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.steps.sweep import guidellm_command


def _check_levels_and_metrics(path):
    from importlib.metadata import version

    report = parse_report_file(path, expected_duration_s=2)
    assert report.guidellm_version == version("guidellm") == "0.8.1"
    assert [lv.concurrency for lv in report.levels] == [1, 4]
    for lv in report.levels:
        assert lv.valid, lv.invalid_reason
        assert lv.value("output_tps") > 0 and lv.value("ttft_ms") >= 20 and lv.value("tpot_ms") > 0
        assert lv.requests_successful >= 5 and lv.end > lv.start
        assert "requests" not in lv.summary  # per-request records are not carried along
    # More streams, more throughput against a server with no capacity limit
    assert report.levels[1].value("output_tps") > report.levels[0].value("output_tps")


def test_real_report_levels_and_metrics(real_report):
    """The committed report was made by the pinned GuideLLM (regenerate it with tests/guidellm_run.py when the pin
    moves)."""
    _check_levels_and_metrics(real_report)


def _doc(real_report):
    return json.loads(real_report.read_text())


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["metadata"].update(guidellm_version="0.5.3"), "written by GuideLLM 0.5.3 (layout 2); supported: GuideLLM 0.8.x"),
    (lambda d: d.pop("metadata"), "not a GuideLLM report"),
    (lambda d: d.update(benchmarks=[]), "no benchmarks"),
    (lambda d: d["benchmarks"][0]["metrics"].pop("time_to_first_token_ms"),
     "missing `metrics.time_to_first_token_ms.successful`"),
    (lambda d: d["benchmarks"][0]["metrics"]["output_tokens_per_second"]["successful"].update(mean="fast"), "expected a number"),
    (lambda d: d["benchmarks"][1]["config"]["strategy"].update(streams=1), "concurrency 1 appears twice"),
    (lambda d: d["benchmarks"][0]["config"]["strategy"].update(type_="poisson"), "not a concurrent-profile level"),
])
def test_foreign_or_broken_reports_are_rejected_clearly(real_report, mutate, needle):
    doc = copy.deepcopy(_doc(real_report))
    mutate(doc)
    with pytest.raises(ReportError) as err:
        parse_report(doc, source="r.json")
    assert needle in str(err.value)


def test_truncated_and_nan_reports(real_report, tmp_path):
    text = real_report.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(ReportError, match="not valid JSON"):
        parse_report_file(cut)
    nan = tmp_path / "nan.json"
    doc = _doc(real_report)
    doc["benchmarks"][0]["metrics"]["output_tokens_per_second"]["successful"]["mean"] = float("nan")
    nan.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match="NaN"):
        parse_report_file(nan)


def test_untrustworthy_levels_are_kept_with_a_reason(real_report):
    lv = parse_report(_doc(real_report)).levels[1]
    rules = ValidityRules()
    lv.requests_errored = lv.requests_successful  # 50 % errors
    assert "error ratio 50.0% > 5%" in judge_level(lv, None, rules)
    lv.requests_errored, lv.requests_incomplete = 0, lv.concurrency + 1
    assert "incomplete requests > concurrency" in judge_level(lv, None, rules)
    lv.requests_incomplete, lv.requests_successful = 0, 2
    assert "only 2 successful requests" in judge_level(lv, None, rules)
    lv.requests_successful = 100
    assert "impossible counts: 100 successful, errored and incomplete requests of" in judge_level(lv, 2, rules)
    lv.requests_total = 100
    assert "ran 2.0 s of the 120 s asked" in judge_level(lv, 120, rules)
    assert judge_level(lv, 2, rules) is None


def test_sweep_command_line_matches_the_campaign(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign()))
    params = resolve_params(campaign, {"concurrency": [8, 1, 4, 4], "duration_s": 7.5, "seed": 42}, catalog.known_versions())
    ctx = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-0.6B", "llm-d-redis"))
    cmd = guidellm_command(ctx, "guidellm", "http://gw:80", paths.home() / "out.json", trial=2)
    args = dict(zip(cmd[2::2], cmd[3::2]))
    assert cmd[:2] == ["guidellm", "run"]
    assert json.loads(args["--profile"]) == {"kind": "concurrent", "streams": [1, 4, 8]}
    assert args["--constraint"] == "kind=max_duration,seconds=7.5"
    assert args["--seed"] == "kind=static,value=42"
    assert args["--data"] == "kind=synthetic_text,prompt_tokens=32,output_tokens=16,prefix_tokens=64,prefix_count=1,turns=1"
    assert args["--backend"] == "kind=openai_http,target=http://gw:80,model=Qwen/Qwen3-0.6B"
    assert args["--tokenizer"] == "kind=hf_auto,model=Qwen/Qwen3-0.6B"  # in a cluster: the model's own tokenizer


def test_stored_summary_is_compact_but_keeps_what_matters(real_report):
    doc = _doc(real_report)
    lv = parse_report(doc).levels[0]
    bench = doc["benchmarks"][0]
    s = lv.summary
    assert s["start_time"] == bench["start_time"] and s["scheduler_metrics"]["measure_start_time"] == \
        bench["scheduler_metrics"]["measure_start_time"]  # timestamps exact
    tps = s["metrics"]["output_tokens_per_second"]["successful"]
    assert tps["mean"] == pytest.approx(bench["metrics"]["output_tokens_per_second"]["successful"]["mean"], rel=1e-5)
    assert set(tps["percentiles"]) == {"p50", "p90", "p95", "p99"}
    assert s["metrics"]["request_totals"] == bench["metrics"]["request_totals"]
    assert s["config"]["strategy"]["streams"] == 1
    assert len(json.dumps(s)) < len(json.dumps({k: v for k, v in bench.items() if k != "requests"})) / 5


def _dist(doc, metric, outcome="successful", level=0):
    return doc["benchmarks"][level]["metrics"][metric][outcome]


@pytest.mark.parametrize("edit, field, value", [
    # a negative rate, latency or token count, in the statistics the store keeps and in those it leaves to the file
    (lambda d: _dist(d, "output_tokens_per_second").update(mean=-12.5), "output_tokens_per_second.successful.mean", "-12.5"),
    (lambda d: _dist(d, "time_to_first_token_ms").update(median=-12.5), "time_to_first_token_ms.successful.median",
     "-12.5"),
    (lambda d: _dist(d, "request_latency")["percentiles"].update(p001=-0.5),
     "request_latency.successful.percentiles.p001", "-0.5"),
    (lambda d: _dist(d, "output_token_count", "total").update(min=-1), "output_token_count.total.min", "-1.0"),
    (lambda d: _dist(d, "prompt_tokens_per_second", "errored").update(mean=-3.0),
     "prompt_tokens_per_second.errored.mean", "-3.0"),
    (lambda d: _dist(d, "request_concurrency").update(max=-2.0), "request_concurrency.successful.max", "-2.0"),
    # non-finite: a dict made in Python may hold what JSON cannot
    (lambda d: _dist(d, "inter_token_latency_ms").update(std_dev=float("nan")), "inter_token_latency_ms.successful.std_dev",
     "is not finite (nan)"),
    (lambda d: _dist(d, "tokens_per_second").update(total_sum=float("inf")), "tokens_per_second.successful.total_sum",
     "is not finite (inf)"),
    # percentiles out of order, and a median outside its distribution
    (lambda d: _dist(d, "time_to_first_token_ms")["percentiles"].update(p50=1e6),
     "time_to_first_token_ms.successful.percentiles.p50", "is 1000000.0, above `benchmarks[0].metrics."
     "time_to_first_token_ms.successful.percentiles.p75`"),
    (lambda d: _dist(d, "request_latency")["percentiles"].update(p999=1e6), "request_latency.successful.percentiles.p999",
     "above `benchmarks[0].metrics.request_latency.successful.max`"),
    (lambda d: _dist(d, "request_latency").update(median=1e6), "request_latency.successful.median", "outside its min"),
    # a negative request count
    (lambda d: d["benchmarks"][0]["metrics"]["request_totals"].update(successful=-1), "request_totals.successful",
     "is -1, expected a count >= 0"),
    (lambda d: d["benchmarks"][0]["metrics"]["request_totals"].update(total=-1), "request_totals.total",
     "is -1, expected a count >= 0"),
])
def test_a_report_with_impossible_numbers_is_refused_naming_the_level_and_field(real_report, edit, field, value):
    """Never a stored level (valid or not): the whole report is refused, as GuideLLM cannot have written it."""
    doc = _doc(real_report)
    edit(doc)
    with pytest.raises(ReportError) as err:
        parse_report(doc, source="/data/r.json")
    assert str(err.value).startswith(f"GuideLLM report /data/r.json (level at concurrency 1): `benchmarks[0].metrics."
                                     f"{field}` "), str(err.value)
    assert value in str(err.value), str(err.value)


def test_the_sweeps_load_results_refuses_an_impossible_report_before_anything_is_written(real_report, results_dir):
    from llmd_bench.steps import load_results

    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {"trials": 1}, catalog.known_versions())
    ctx = StepContext(campaign, params, "run-impossible", "local", Cell("Qwen/Qwen3-8B", "no-offload"),
                      step="load_results")
    doc = _doc(real_report)
    _dist(doc, "output_tokens_per_second", level=1).update(mean=-700.0)
    path = ctx.folder.trial_report(1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=r"\(level at concurrency 4\): `benchmarks\[1\]\.metrics\."
                                          r"output_tokens_per_second\.successful\.mean` is -700\.0"):
        load_results.run(ctx)  # no database is reached: the report is refused first
    assert not ctx.folder.levels.exists()


def test_a_level_that_ends_before_it_starts_is_invalid(real_report):
    doc = _doc(real_report)
    bench = doc["benchmarks"][1]
    bench["end_time"] = bench["start_time"] - 5
    level = parse_report(doc, source="window.json").levels[1]
    assert not level.valid and "impossible window" in level.invalid_reason
