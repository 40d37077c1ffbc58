"""Goodput under SLOs, the rules that need no store: which levels count over several trials, a percentile GuideLLM did
not record, a stored SLO this version cannot read, and why a goodput sits where it does. The stored-data tests are
tests/integration/test_goodput.py."""

from __future__ import annotations

import pandas as pd
import pytest

from llmd_bench.report import goodput
from llmd_bench.report.analysis import build, normalize_levels
from llmd_bench.report.data import ReportInput


def _input(levels: list[dict], latency: list[dict], slo: dict | None) -> ReportInput:
    frame = normalize_levels(pd.DataFrame([{"model": "M", "requests_successful": 1000, "requests_errored": 0,
                                            "request_latency_mean_s": 1.0, "request_latency_std_s": 0.1,
                                            "ttft_mean_ms": 50.0, "tpot_mean_ms": 10.0} | lv for lv in levels]))
    lat = pd.DataFrame([{"model": "M"} | r for r in latency], columns=goodput.LATENCY_COLUMNS)
    cells = pd.DataFrame([{"model": "M", "full_model": "M", "config": c, "status": "ok", "reason": None, "replicas": 2,
                           "config_effect": "not measured", "config_effect_evidence": "", "configuration": c}
                          for c in dict.fromkeys(lv["config"] for lv in levels)])
    return ReportInput(campaign="c", run_id="r", runtime="kubernetes", levels=frame, cells=cells,
                       params={"baseline": "no-offload", "noise_floor_pct": 5} | ({"slo": slo} if slo else {}),
                       latency=lat)


def test_a_level_counts_only_when_every_trial_meets_every_slo():
    levels = [{"config": "no-offload", "trial": t, "concurrency": c, "output_tps_mean": tps}
              for t in (1, 2) for c, tps in ((1, 100.0), (2, 190.0 + t), (4, 300.0))]
    # c=4 meets in trial 1 only; c=2 meets in both
    latency = [{"config": "no-offload", "trial": t, "concurrency": c, "ttft_ms_p95": 400.0 if (c, t) == (4, 2) else 90.0}
               for t in (1, 2) for c in (1, 2, 4)]
    report = build(_input(levels, latency, {"ttft_ms": {"p95": 200}}))
    row = report.peaks.iloc[0]
    assert (row["optimal_concurrency"], row["goodput_concurrency"], row["goodput_output_tps"]) == (4, 2, 191.5)
    assert row["goodput_noise_basis"] == "2 trials"
    assert row["goodput_reason"] == "c=4: TTFT p95 400.0 ms > 200 ms (trial 2)"


def test_a_percentile_not_recorded_never_meets_the_slo():
    levels = [{"config": "no-offload", "trial": 1, "concurrency": c, "output_tps_mean": tps}
              for c, tps in ((1, 100.0), (2, 190.0))]
    latency = [{"config": "no-offload", "trial": 1, "concurrency": 1, "itl_ms_p99": 5.0},
               {"config": "no-offload", "trial": 1, "concurrency": 2}]
    report = build(_input(levels, latency, {"itl_ms": {"p99": 10}}))
    row = report.peaks.iloc[0]
    assert (row["goodput_concurrency"], row["goodput_reason"]) == (1, "c=2: ITL p99 not recorded")


def test_a_higher_level_that_meets_the_slo_with_less_throughput_is_not_the_goodput():
    levels = [{"config": "no-offload", "trial": 1, "concurrency": c, "output_tps_mean": tps}
              for c, tps in ((1, 100.0), (2, 250.0), (4, 240.0))]
    latency = [{"config": "no-offload", "trial": 1, "concurrency": c, "request_latency_ms_p50": 100.0} for c in (1, 2, 4)]
    row = build(_input(levels, latency, {"request_latency_ms": {"p50": 1000}})).peaks.iloc[0]
    assert row["goodput_concurrency"] == 2
    assert row["goodput_reason"] == "c=4 meets every SLO too, with fewer output tokens/s (240.0 tok/s)"


@pytest.mark.parametrize("stored, targets, unread", [
    (None, {}, None),
    ({}, {}, None),
    ({"ttft_ms": {"p50": None, "p90": None, "p95": 500, "p99": None}, "itl_ms": None, "request_latency_ms": None},
     {"ttft_ms": {"p95": 500.0}}, None),
    ({"ttft_ms": {"p999": 5}}, {}, "ttft_ms.p999"),
    ({"e2e_ms": {"p95": 5}}, {}, "e2e_ms"),
])
def test_the_stored_slo_is_read_or_named_when_it_cannot_be(stored, targets, unread):
    found, why = goodput.targets_of({"slo": stored} if stored is not None else {})
    assert found == targets
    if unread is None:
        assert why is None
    else:
        assert unread in why and "{ttft_ms|itl_ms|request_latency_ms: {p50|p90|p95|p99: ms}}" in why


def test_an_unreadable_slo_computes_no_goodput_and_says_why():
    levels = [{"config": "no-offload", "trial": 1, "concurrency": 1, "output_tps_mean": 100.0}]
    row = build(_input(levels, [], {"ttft_ms": {"p999": 5}})).peaks.iloc[0]
    assert pd.isna(row["goodput_output_tps"]) and "ttft_ms.p999" in row["goodput_reason"]


def test_the_slo_key_is_the_same_for_the_same_targets_in_any_order():
    a = goodput.slo_key({"ttft_ms": {"p95": 500.0}, "itl_ms": {"p99": 20.0}})
    b = goodput.slo_key({"itl_ms": {"p99": 20.0}, "ttft_ms": {"p95": 500.0}})
    assert a == b == "itl_ms.p99<=20,ttft_ms.p95<=500" and goodput.slo_key({}) is None
