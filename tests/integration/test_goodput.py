"""Goodput under SLOs and latency against throughput, on stored data made of a real GuideLLM 0.8.1 report's level
(tests/stored_levels.py: its latencies scaled per level as under more load) in PostgreSQL, reported by
report/generate.py as compare does: the level chosen, the judgement against the baseline, the CSV columns, the keys
stored with the report, the section in Markdown and HTML, and the plot with its SLO line."""

from __future__ import annotations

import csv

import psycopg2
import pytest

from llmd_bench.report import goodput, goodput_section
from llmd_bench.report.data import from_store
from llmd_bench.report.generate import generate_report
from llmd_bench.store import db
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2, 4, 8], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1, "llmd_version": "v0.9.0", "baseline": "no-offload",
          "noise_floor_pct": 5}
# the committed level: TTFT p95 26.75 ms, ITL p99 4.28 ms, request latency p95 0.0897 s (89.7 ms)
SLO = {"ttft_ms": {"p50": None, "p90": None, "p95": 200.0, "p99": None},
       "itl_ms": {"p50": None, "p90": None, "p95": None, "p99": 10.0},
       "request_latency_ms": {"p50": None, "p90": None, "p95": 500.0, "p99": None}}
# config -> (output tokens/s by level, latency factors by level, suspect levels)
CELLS = {
    # c=8 has the peak but TTFT p95 267.5 ms > 200: goodput at c=4
    "no-offload": ({1: 100.0, 2: 190.0, 4: 300.0, 8: 320.0}, {4: {"ttft_ms": 4.0}, 8: {"ttft_ms": 10.0}}, {}),
    # c=4, its highest throughput, misses one percentile only (ITL p99 12.8 ms > 10; its p95 is no target): c=2
    "native-offload": ({1: 90.0, 2: 170.0, 4: 330.0}, {4: {"itl_ms": 3.0}}, {}),
    # c=8 meets the SLO with the most throughput but is suspect: never counts, goodput at c=4 (-3.3 %: within noise)
    "llm-d-redis": ({1: 100.0, 2: 200.0, 4: 290.0, 8: 400.0}, {}, {8: "the load generator was saturated"}),
    # c=1 misses TTFT, c=2 request latency (717.9 ms > 500: converted from GuideLLM's seconds): no goodput
    "llm-d-valkey": ({1: 100.0, 2: 200.0}, {1: {"ttft_ms": 10.0}, 2: {"request_latency_s": 8.0}}, {}),
    # c=4 ran on a host busy with other work: goodput at c=2 (-33 %), but no verdict, as for the peak (suspects.py)
    "native-offload-20k": ({1: 100.0, 2: 200.0, 4: 150.0}, {},
                           {4: "busy host: 97 % busy, 61 % of it outside the cell's servers and GuideLLM"}),
}


def _store(db_url, real_report, run_id: str, slo: dict | None) -> None:
    params = PARAMS | ({"slo": slo} if slo is not None else {})
    run = RunInfo(campaign="slo", dag_run_id=run_id, runtime="kubernetes", llmd_version="v0.9.0", vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate(params))

    def load(w: db.Writer) -> None:
        for config, (tps, latency_x, suspects) in CELLS.items():
            cell = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config=config, trial=1, status="ok",
                            replicas=2, tensor_parallel_size=1)
            w.store_cell(run, cell, levels_at(real_report, tps, latency_x), suspects=suspects)

    db.in_transaction(load, "test", db_url)


@pytest.fixture(scope="module")
def with_slo(module_db_url, real_report, tmp_path_factory):
    """The SLO run's report, made once for the tests that read it (a report takes seconds)."""
    _store(module_db_url, real_report, "with-slo", SLO)
    out = tmp_path_factory.mktemp("with-slo") / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMD_BENCH_DB_URL", module_db_url)
        return generate_report("with-slo", out, campaign="slo", store=True), out, module_db_url


def test_goodput_is_the_best_level_meeting_every_slo_judged_against_the_baseline(with_slo):
    report, _, _ = with_slo
    g = report.peaks.set_index("config")
    assert (g.at["no-offload", "optimal_concurrency"], g.at["no-offload", "goodput_concurrency"]) == (8, 4)
    assert g.at["no-offload", "goodput_output_tps"] == pytest.approx(300.0)
    assert g.at["no-offload", "goodput_judgement"] == "baseline"
    assert g.at["no-offload", "goodput_reason"] == "c=8: TTFT p95 267.5 ms > 200 ms"
    # one percentile missed excludes the higher level
    assert (g.at["native-offload", "optimal_concurrency"], g.at["native-offload", "goodput_concurrency"]) == (4, 2)
    assert g.at["native-offload", "goodput_reason"] == "c=4: ITL p99 12.8 ms > 10 ms"
    assert g.at["native-offload", "goodput_vs_baseline_pct"] == pytest.approx((170 - 300) / 300 * 100)
    assert g.at["native-offload", "goodput_judgement"] == "lower"
    assert g.at["native-offload", "goodput_basis"] == "1 trial; campaign noise_floor_pct 5 % (no history)"
    assert g.at["native-offload", "judgement"] == "within noise"  # its peak, +3.1 %, is not what its goodput is
    # a suspect level never counts, even meeting the SLO with the most throughput
    assert (g.at["llm-d-redis", "optimal_concurrency"], g.at["llm-d-redis", "goodput_concurrency"]) == (8, 4)
    assert g.at["llm-d-redis", "goodput_judgement"] == "within noise"
    assert g.at["llm-d-redis", "goodput_reason"].startswith("c=8: suspect: the load generator was saturated")
    assert g.at["llm-d-valkey", "goodput_judgement"] == goodput.NO_GOODPUT
    assert g.at["llm-d-valkey", "goodput_output_tps"] != g.at["llm-d-valkey", "goodput_output_tps"]  # NaN, never 0
    assert g.at["llm-d-valkey", "goodput_reason"] == "no level meets every SLO; the lowest, c=1: TTFT p95 267.5 ms > 200 ms"
    # the request latency percentile is GuideLLM's seconds in ms
    checks = goodput.level_checks(report.data.levels, report.data.latency, goodput.targets_of(report.data.params)[0])
    valkey_2 = checks[(checks["config"] == "llm-d-valkey") & (checks["concurrency"] == 2)].iloc[0]
    assert (valkey_2["counts"], valkey_2["why"]) == (False, "request latency p95 717.9 ms > 500 ms")
    assert set(g["goodput_slo"]) == {"itl_ms.p99<=10,request_latency_ms.p95<=500,ttft_ms.p95<=200"}
    busy = g.loc["native-offload-20k"]
    assert (busy["goodput_concurrency"], busy["goodput_judgement"]) == (2, "no verdict")
    assert "at concurrency 4: busy host: 97 % busy" in busy["goodput_basis"]


def test_goodput_is_in_the_csv_the_stored_report_and_both_formats(with_slo):
    _, out, db_url = with_slo
    with open(out / "all_peak_metrics.csv") as f:
        rows = {r["config"]: r for r in csv.DictReader(f)}
    assert {k: rows["native-offload"][k] for k in ("goodput_output_tps", "goodput_concurrency", "goodput_judgement")} \
        == {"goodput_output_tps": "170.000", "goodput_concurrency": "2", "goodput_judgement": "lower"}
    assert (rows["llm-d-valkey"]["goodput_output_tps"], rows["llm-d-valkey"]["goodput_judgement"]) == ("", "no goodput")
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT peak_table FROM reports WHERE campaign = 'slo' AND dag_run_id = 'with-slo'")
            (table,) = cur.fetchone()
    finally:
        conn.close()
    stored = {c["config"]: c for c in table["cells"]}
    assert {k: stored["no-offload"][k] for k in ("goodput_output_tps", "goodput_concurrency", "goodput_judgement",
                                                  "goodput_vs_baseline_pct", "goodput_slo")} == {
        "goodput_output_tps": 300.0, "goodput_concurrency": 4, "goodput_judgement": "baseline",
        "goodput_vs_baseline_pct": None, "goodput_slo": "itl_ms.p99<=10,request_latency_ms.p95<=500,ttft_ms.p95<=200"}
    assert stored["native-offload"]["goodput_vs_baseline_pct"] == pytest.approx(-43.333, abs=1e-3)
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Goodput" in md and "SLOs: **TTFT p95 <= 200 ms; ITL p99 <= 10 ms; request latency p95 <= 500 ms**" in md
    line = next(r for r in md.splitlines() if r.startswith("| Qwen3-8B | native-offload | 330.0 (c=4)"))
    assert "| 170.0 [" in line
    assert "| 2 | 52% | -43.3% | lower (weak: 1 trial, no history) | c=4: ITL p99 12.8 ms > 10 ms |" in line
    assert ">Goodput</h2>" in html and "c=4: ITL p99 12.8 ms &gt; 10 ms" in html
    # each plot once, in the Goodput section, written beside the report
    assert md.count("(latency_vs_throughput.png)") == 1 and md.count("(goodput_vs_peak.png)") == 1
    for name in ("latency_vs_throughput.png", "goodput_vs_peak.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000


def test_the_latency_plot_draws_the_slo_where_set(with_slo, db_url, real_report, monkeypatch):
    report, _, _ = with_slo
    fig = goodput_section.latency_figure(report)
    ttft, itl = fig.axes[0], fig.axes[1]
    limits = {ax.get_title(): {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines() if "SLO" in ln.get_label()}
              for ax in (ttft, itl)}
    assert limits == {"Qwen3-8B: p95 TTFT": {"SLO p95 <= 200 ms": [200.0, 200.0]},
                      "Qwen3-8B: p95 ITL": {"SLO p99 <= 10 ms": [10.0, 10.0]}}
    configs = {ln.get_label() for ln in ttft.get_lines()}
    assert set(CELLS) <= configs  # a line per configuration
    # no SLO: the same lines, no SLO line
    _store(db_url, real_report, "no-slo", None)
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    engine = db.make_engine(db_url)
    try:
        from llmd_bench.report.analysis import build

        plain = build(from_store(engine, "no-slo", "slo"))
    finally:
        engine.dispose()
    fig = goodput_section.latency_figure(plain)
    assert [ln.get_label() for ax in fig.axes for ln in ax.get_lines() if "SLO" in ln.get_label()] == []
    assert set(CELLS) <= {ln.get_label() for ln in fig.axes[0].get_lines()}


def test_without_an_slo_the_section_says_so_and_nothing_is_computed(db_url, real_report, tmp_path, monkeypatch):
    _store(db_url, real_report, "no-slo", None)
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    out = tmp_path / "report"
    report = generate_report("no-slo", out, campaign="slo")
    md = (out / "report.md").read_text()
    section = md.split("## Goodput", 1)[1].split("\n## ", 1)[0]
    assert "No SLO set: goodput is not computed (set `slo:` in the campaign or the trigger param)." in section
    assert "(latency_vs_throughput.png)" in section and not (out / "goodput_vs_peak.png").exists()
    assert report.peaks["goodput_output_tps"].isna().all() and report.peaks["goodput_judgement"].isna().all()
    assert set(report.peaks["goodput_reason"]) == {"no SLO set"}
    with open(out / "all_peak_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["goodput_output_tps"] == "" and r["goodput_reason"] == "no SLO set" for r in rows)
