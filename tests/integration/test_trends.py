"""Trends over runs against PostgreSQL, on runs stored from a real GuideLLM 0.8.1 report (tests/stored_levels.py): the
campaign's runs up to a run that measured the same thing, read in SQL (store/read.py campaign_trends), and the rule
(report/trends.py) in the report built from them: a step flagged, noise within the band not, this run marked."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from llmd_bench.report import build, trends
from llmd_bench.report.data import from_store
from llmd_bench.report.generate import generate_report
from llmd_bench.report.render import markdown
from llmd_bench.report.sections import document
from llmd_bench.store import db
from llmd_bench.store.read import campaign_run, campaign_trends, read_stored_run
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1, "llmd_version": "v0.9.0"}
# ten weekly runs: no-offload steps down 12 % at w09 and stays; native-offload moves by noise only (< 1.2 %);
# llm-d-redis rises by 0.6-0.9 % a run from w04 on (4.5 % over 7 runs)
NO_OFFLOAD = [1000, 1012, 995, 1006, 990, 1003, 1010, 998, 880, 874]
NATIVE = [900, 905, 893, 911, 897, 902, 896, 908, 899, 903]
REDIS = [950, 948, 955, 951, 960, 966, 973, 979, 986, 994]
FIRST_WEEK = datetime(2026, 9, 7, 3, tzinfo=UTC)


def store_run(db_url, real_report, run_id: str, peaks: dict[str, float], version: str = "v0.9.0",
              params: dict | None = None, goodput: dict[str, float] | None = None, campaign: str = "weekly",
              week: float = 0.0, latency_x: dict[int, dict[str, float]] | None = None) -> None:
    """One run of the campaign, started `week` weeks after FIRST_WEEK: a cell per configuration whose peak (concurrency 2)
    is `peaks[config]` tok/s, and a stored report whose peak table records `goodput` where given."""
    start = (FIRST_WEEK + timedelta(weeks=week)).timestamp()
    run = RunInfo(campaign=campaign, dag_run_id=run_id, runtime="kubernetes", llmd_version=version, vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate(params or PARAMS))

    def load(w: db.Writer) -> None:
        for config, tps in peaks.items():
            cell = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config=config, trial=1, status="ok",
                            replicas=1, tensor_parallel_size=1)
            levels = [dataclasses.replace(lv, start=start + 60 * i, end=start + 60 * i + 30)
                      for i, lv in enumerate(levels_at(real_report, {1: tps * 0.6, 2: tps}, latency_x))]
            w.store_cell(run, cell, levels)
        w.finish_run(campaign, run_id, "ok")  # started_at: the first level's start
        if goodput:
            w.store_report(campaign, run_id, "md", "<html></html>", [
                {"model": "Qwen3-8B", "config": c, "peak_output_tps": peaks[c], "goodput_output_tps": g,
                 "goodput_slo": "ttft_ms p95 <= 500"} for c, g in goodput.items()])

    db.in_transaction(load, "test", db_url)


def store_weeks(db_url, real_report, weeks: int = 10, campaign: str = "weekly") -> None:
    for i in range(weeks):
        store_run(db_url, real_report, f"w{i + 1:02d}", {"no-offload": NO_OFFLOAD[i], "native-offload": NATIVE[i],
                                                         "llm-d-redis": REDIS[i]},
                  version="v0.8.0" if i < 3 else "v0.9.0", goodput={"no-offload": NO_OFFLOAD[i] * 0.8},
                  campaign=campaign, week=i)
        if i == 4:  # a run of another workload in between: not in the trends, counted as the campaign's
            store_run(db_url, real_report, "long-levels", {"no-offload": 2000.0}, params={**PARAMS, "duration_s": 60},
                      campaign=campaign, week=i + 0.5)


def test_the_campaigns_runs_up_to_a_run_that_measured_the_same_thing_are_read_in_sql(db_url, real_report):
    store_weeks(db_url, real_report)
    store_run(db_url, real_report, "other-campaign", {"no-offload": 5.0}, campaign="other", week=3)
    store_run(db_url, real_report, "w11", {"no-offload": 870.0, "native-offload": 901.0}, week=10)
    engine = db.make_engine(db_url)
    try:
        run = read_stored_run("w10", url=db_url).run
        rows = campaign_trends(engine, run)
        latest = campaign_run(engine, "weekly")
        assert campaign_run(engine, "weekly", "w03").dag_run_id == "w03" and campaign_run(engine, "nope") is None
    finally:
        engine.dispose()
    assert latest is not None and latest.dag_run_id == "w11"
    no_offload = [r for r in rows if r.config == "no-offload"]
    # oldest first, up to w10 (w11 came later), every llm-d version, without the other workload's or campaign's run
    assert [r.dag_run_id for r in no_offload] == [f"w{i:02d}" for i in range(1, 11)]
    assert [r.peak_output_tps for r in no_offload] == pytest.approx(NO_OFFLOAD)
    assert [r.is_current for r in no_offload] == [False] * 9 + [True]
    assert {r.llmd_version for r in no_offload} == {"v0.8.0", "v0.9.0"}
    # the goodput the runs' stored reports recorded, with its SLO; native-offload's reports had none
    assert [r.goodput_output_tps for r in no_offload] == pytest.approx([x * 0.8 for x in NO_OFFLOAD])
    assert {r.goodput_slo for r in no_offload} == {"ttft_ms p95 <= 500"}
    assert all(r.goodput_output_tps is None for r in rows if r.config == "native-offload")
    # 11 runs of the campaign up to w10: the long-levels run is counted, not shown
    assert {r.campaign_runs for r in rows} == {11}


def test_a_step_is_flagged_noise_within_the_band_is_not_and_this_run_is_marked(db_url, real_report, artifacts):
    store_weeks(db_url, real_report)
    engine = db.make_engine(db_url)
    try:
        data = from_store(engine, "w10")
    finally:
        engine.dispose()
    report = build(data)
    # this run's report measured no goodput (its params set no SLO)
    cells = {(c.config, c.series): c for c in trends.cell_trends(data.trends, 5.0, current_goodput={})}
    step = cells[("no-offload", "peak")]
    assert step.judgement.verdict == trends.STEP
    assert [step.runs["dag_run_id"].iloc[s.index] for s in step.judgement.steps] == ["w09"]
    assert step.judgement.steps[0].pct == pytest.approx((877 / 1001.75 - 1) * 100, abs=0.05)
    drift = cells[("llm-d-redis", "peak")]
    assert drift.judgement.verdict == trends.DRIFT and not drift.judgement.steps
    assert [(d.first, d.last) for d in drift.judgement.drifts] == [(3, 9)]  # w04 to w10
    steady = cells[("native-offload", "peak")]
    assert steady.judgement.verdict == trends.WITHIN
    assert not (steady.judgement.steps or steady.judgement.drifts or steady.judgement.outliers)
    assert steady.judgement.band_pct is not None and 1.0 < steady.judgement.band_pct < 5.0  # from the history, not 5 %
    # this run has no SLO: the stored goodput of runs under another SLO is not a trend of it; without this run's
    # report (the Trends page) its stored goodput is
    assert ("no-offload", "goodput") not in cells
    stored = {(c.config, c.series): c for c in trends.cell_trends(data.trends, 5.0)}
    assert stored[("no-offload", "goodput")].judgement.verdict == trends.STEP

    images = trends.report_plots(report)
    assert set(images) == {"trends_Qwen3-8B.png"} and images["trends_Qwen3-8B.png"].startswith(b"\x89PNG")
    (artifacts / "trends_Qwen3-8B.png").write_bytes(images["trends_Qwen3-8B.png"])
    fig = trends.figure([step, steady], "Qwen3-8B")
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert {"this run: step", "this run: within the band"} <= set(labels)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(n.startswith("step -12.") for n in notes) and "llm-d v0.9.0" in notes

    text = markdown.render(document(report, images))
    section = text.split("## Trends over runs")[1].split("\n## ")[0]
    rows = {line.split("|")[2].strip(): line for line in section.splitlines() if line.startswith("| Qwen3-8B")}
    assert "**step**" in rows["no-offload"] and "step -12.5% at w09" in rows["no-offload"]
    assert "| within the band |" in rows["native-offload"] and rows["native-offload"].count("| - |") == 1
    assert "**drift**" in rows["llm-d-redis"] and "drift +4.5% over 7 runs, w04 to w10" in rows["llm-d-redis"]
    assert "| drifting since w04 |" in rows["llm-d-redis"]
    assert "10 run(s) of this campaign up to run **w10**" in section
    assert "1 other run(s)" in section and "trends_Qwen3-8B.png" in section
    assert text.count("(trends_Qwen3-8B.png)") == 1  # in its section only, not again in Plots


def test_the_goodput_each_runs_report_stored_is_trended_in_the_next_runs_report(db_url, real_report, tmp_path,
                                                                                monkeypatch):
    """As compare does, each run's report is generated and stored after the run: its peak table carries the goodput
    under the run's SLO (concurrency 2 misses TTFT p95 <= 200 ms, so the goodput is concurrency 1's, 60 % of the
    peak); the sixth run's report trends it, a step down at w05."""
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    slo = {"ttft_ms": {"p95": 200.0}}
    peaks = [1000, 1010, 995, 1005, 800, 805]
    for i, peak in enumerate(peaks):
        run_id = f"w{i + 1:02d}"
        store_run(db_url, real_report, run_id, {"no-offload": peak}, params={**PARAMS, "slo": slo}, week=i,
                  latency_x={2: {"ttft_ms": 10.0}})
        report = generate_report(run_id, tmp_path / run_id, campaign="weekly", store=True)
    goodput = report.peaks.set_index("config").loc["no-offload"]
    assert goodput["goodput_output_tps"] == pytest.approx(805 * 0.6) and goodput["goodput_concurrency"] == 1
    cells = {c.series: c for c in trends.cell_trends(report.data.trends, 5.0, *trends.current_goodput(report))}
    assert [v for v in cells["goodput"].values] == pytest.approx([p * 0.6 for p in peaks])
    assert cells["goodput"].judgement.verdict == trends.STEP
    assert [cells["goodput"].runs["dag_run_id"].iloc[s.index] for s in cells["goodput"].judgement.steps] == ["w05"]
    section = (tmp_path / "w06" / "report.md").read_text().split("## Trends over runs")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if "| goodput |" in line)
    assert "| 483.0 | **step** |" in row and "step -20.0% at w05" in row


def test_the_trends_page_says_why_when_the_store_cannot_be_read(db_url):
    import pytest

    from llmd_bench.measure.processes import free_port
    from llmd_bench.report import trends

    with pytest.raises(trends.TrendsUnavailable, match=r"the results store 127.0.0.1:\d+/x could not be read"):
        trends.page("weekly", url=f"postgresql://u:p@127.0.0.1:{free_port()}/x")
    # a store no run was ever loaded into: no schema, said the same way (never a traceback, never a server started)
    with pytest.raises(trends.TrendsUnavailable, match="could not be read: .*runs"):
        trends.page("weekly", url=db_url)
