"""The trend rule (report/trends.py) on series of peaks: steps, outliers, drifts, this run's verdict, the band's basis,
and how often pure noise is flagged."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from llmd_bench.report import trends
from llmd_bench.report.trends import BEYOND, DRIFT, FIRST, STEP, SUSPECT, WITHIN, judge

STEADY = [1000, 1012, 995, 1006, 990, 1003, 1010, 998]


def test_two_runs_beyond_the_band_on_one_side_are_a_step_at_the_first():
    j = judge(STEADY + [880, 874], 5.0)
    assert j.verdict == STEP and [s.index for s in j.steps] == [8]
    assert j.steps[0].pct == pytest.approx((877 / (sum(STEADY) / 8) - 1) * 100)
    assert [(lv.first, lv.last) for lv in j.levels] == [(0, 7), (8, 9)]
    # the step stays flagged in the history once later runs sit at the new level
    later = judge(STEADY + [880, 874, 884, 879], 5.0)
    assert later.verdict == WITHIN and [s.index for s in later.steps] == [8]


def test_one_run_beyond_the_band_is_an_outlier_and_the_last_one_is_not_yet_a_step():
    j = judge(STEADY[:4] + [880] + STEADY[4:], 5.0)
    assert j.outliers == (4,) and not j.steps and j.verdict == WITHIN
    assert 4 not in j.levels[0].members  # left out of its level's mean
    pending = judge(STEADY + [880], 5.0)
    assert pending.verdict == BEYOND and pending.beyond == 8 and not pending.steps
    # back on the other side: not a step either
    assert not judge(STEADY + [880, 1120, 1001], 5.0).steps


def test_noise_within_the_band_is_not_flagged():
    j = judge(STEADY + [1004], 5.0)
    assert j.verdict == WITHIN and not (j.steps or j.drifts or j.outliers)
    assert j.band_pct == pytest.approx(j.levels[0].half_pct) and 2.0 < j.band_pct < 5.0
    assert "median successive difference of 8 earlier runs" in j.basis


def test_a_slow_monotone_rise_beyond_noise_is_a_drift_not_steps():
    j = judge([950, 948, 955, 951, 960, 966, 973, 979, 986, 994], 5.0)
    assert j.verdict == DRIFT and not j.steps
    assert [(d.first, d.last) for d in j.drifts] == [(3, 9)]
    assert j.drifts[0].pct == pytest.approx((994 / 951 - 1) * 100)
    # five runs in order are not enough (2/5! = 1.7 % of noise does that)
    assert not judge([950, 948, 955, 951, 960, 966, 973, 979], 5.0).drifts


def test_a_jump_inside_a_rise_is_a_step_not_a_drift():
    j = judge([1000, 1004, 998, 1003, 1006, 1009, 1012, 1140, 1145], 5.0)
    assert not j.drifts and [s.index for s in j.steps] == [7]


def test_a_suspect_run_is_shown_not_judged_and_the_first_runs_use_the_campaign_floor():
    j = judge(STEADY + [700], 5.0, judged=[True] * 8 + [False])
    assert j.verdict == SUSPECT and not j.steps and j.beyond is None
    few = judge([1000, 1080], 5.0)
    assert few.verdict == BEYOND and few.band_pct == 5.0 and "campaign noise_floor_pct 5 %" in few.basis
    assert judge([1000, 1030], 5.0).verdict == WITHIN
    assert judge([1000], 5.0).verdict == FIRST


def test_pure_noise_is_rarely_flagged_and_a_step_usually_is():
    """1,000 series of 12 weekly runs with 2 % Gaussian noise (seeded): a step is flagged somewhere in 2.9 %, a drift in
    0.5 %, this run is beyond the band 2.6 % of the time; a 10 % step (5 sd) confirmed by the next run is called a step
    80 % of the time, a 20 % step after only 4 runs 72 % (docs/report.md quotes these numbers)."""
    n, steps, drifts, beyond, found, early = 1000, 0, 0, 0, 0, 0
    for seed in range(n):
        r = random.Random(seed)
        series = [1000 * (1 + r.gauss(0, 0.02)) for _ in range(12)]
        j = judge(series, 5.0)
        steps += bool(j.steps)
        drifts += bool(j.drifts)
        beyond += j.verdict == BEYOND
        found += judge(series + [900 * (1 + r.gauss(0, 0.02)) for _ in range(2)], 5.0).verdict == STEP
        early += judge(series[:4] + [800 * (1 + r.gauss(0, 0.02)) for _ in range(2)], 5.0).verdict == STEP
    assert steps / n < 0.04 and drifts / n < 0.01 and beyond / n < 0.05
    assert found / n > 0.75 and early / n > 0.65


def _frame(goodput_slo: list[str | None], current: int = 9) -> pd.DataFrame:
    t0 = datetime(2026, 9, 7, tzinfo=UTC)
    rows = [{"run_pk": i, "dag_run_id": f"w{i + 1:02d}", "llmd_version": "v0.9.0", "t": t0 + timedelta(weeks=i),
             "is_current": i == current, "model": "Qwen3-8B", "config": "no-offload", "samples": 1,
             "peak_output_tps": float(v), "goodput_output_tps": float(v) * 0.8 if slo else None, "goodput_slo": slo,
             "suspect": False, "campaign_runs": 10}
            for i, (v, slo) in enumerate(zip(STEADY + [880, 874], goodput_slo, strict=True))]
    return pd.DataFrame(rows, columns=trends.TREND_COLUMNS)


def test_goodput_is_trended_only_under_this_runs_slo():
    data = _frame(["ttft p95 500"] * 5 + ["ttft p95 300"] * 5)
    cells = {c.series: c for c in trends.cell_trends(data, 5.0)}
    goodput = cells["goodput"]
    assert [v is not None for v in goodput.values] == [False] * 5 + [True] * 5  # the other SLO's runs left out
    assert "of 4 earlier runs" in goodput.judgement.basis  # the band from those runs only
    # this run's report, being built, has its own goodput under its SLO; the stored runs under another are left out
    mine = {c.series: c for c in trends.cell_trends(data, 5.0, {("Qwen3-8B", "no-offload"): 700.0}, "ttft p95 500")}
    assert [v is not None for v in mine["goodput"].values] == [True] * 5 + [False] * 4 + [True]
    # no goodput in this run's report: no goodput trend
    assert {c.series for c in trends.cell_trends(data, 5.0, {}, None)} == {"peak"}


def test_the_section_says_why_there_are_no_trends():
    from llmd_bench.report.document import DocumentBuilder
    from llmd_bench.report.render import markdown

    def said(frame, unavailable=None) -> str:
        doc = DocumentBuilder("r")
        doc.h(1, "r")
        trends.section(doc, frame, 5.0, {}, unavailable=unavailable)
        return markdown.render(doc.document)

    assert "Not available: this report was made from CSV files" in said(None, "this report was made from CSV files")
    empty = pd.DataFrame(columns=trends.TREND_COLUMNS)
    assert "no stored run of this campaign up to this one has a valid peak" in said(empty, "made from the store")
