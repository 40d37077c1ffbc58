"""Adaptive sweeps: the decision rules on known curves, and a real sweep on the local runtime whose simulated
server saturates."""

from __future__ import annotations

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure.adaptive import AdaptiveSweep, LevelOutcome
from llmd_bench.model import catalog
from llmd_bench.model.campaign import AdaptiveSettings
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.plan import method

GRID = [1, 50, 100, 150, 300, 400, 500, 650]


def _drive(curve: dict[int, float | None], floor: float = 5.0, saturated: tuple[int, ...] = (), **settings) -> AdaptiveSweep:
    sweep = AdaptiveSweep(GRID, floor, AdaptiveSettings(**settings))
    ran = []
    while (level := sweep.next_level()) is not None:
        ran.append(level)
        sweep.observe(LevelOutcome(level, curve[level], level in saturated))
    return sweep


def _rising_then_falling(peak: int) -> dict[int, float]:
    curve = {c: 1000.0 * min(c, peak) / peak for c in range(1, 700)}
    for c in curve:
        if c > peak:
            curve[c] = 1000.0 * (1 - (c - peak) / 1000)  # falls 10 % per 100 streams past the peak
    return curve


def test_a_curve_that_falls_past_its_peak_stops_one_level_later_and_refines_towards_the_better_side():
    sweep = _drive(_rising_then_falling(300))
    s = sweep.summary()
    assert s["stopped_after"] == 400 and "fell" in s["stop_reason"]
    assert s["not_run"] == [500, 650]
    # best 300 (1000 tok/s): neighbours 150 (500) and 400 (900); the better one is 400, so 350 is measured
    assert s["refined"] == [350] and s["run"] == [1, 50, 100, 150, 300, 350, 400]


def test_a_plateau_stops_after_patience_levels_that_do_not_rise_beyond_noise():
    flat = {c: min(c, 120) * 10.0 for c in range(1, 700)}  # saturates at 120 streams: 150 still gains 20 %
    one = _drive(flat, patience=1, refine=0).summary()
    assert one["run"] == [1, 50, 100, 150, 300] and one["not_run"] == [400, 500, 650]
    two = _drive(flat, patience=2, refine=0).summary()
    assert two["run"] == [1, 50, 100, 150, 300, 400]


def test_noise_below_the_floor_does_not_stop_a_rising_curve_and_gains_above_it_continue():
    rising = {c: float(c) for c in range(1, 700)}
    s = _drive(rising).summary()
    assert s["not_run"] == [] and s["stop_reason"] == "every grid level measured"
    # the best (650) has one measured neighbour (500): the refinement lies between them
    assert s["refined"] == [575]


def test_over_saturation_or_an_invalid_level_after_the_peak_stops_at_once():
    rising = {c: float(c) for c in range(1, 700)}
    s = _drive(rising, saturated=(150,), refine=0).summary()
    assert s["stopped_after"] == 150 and "over_saturation" in s["stop_reason"]
    invalid = {**rising, 300: None}
    s = _drive(invalid, refine=0).summary()
    assert s["stopped_after"] == 300 and "invalid" in s["stop_reason"]
    # an invalid first level is not a peak to fall from: the sweep goes on
    s = _drive({**rising, 1: None}, refine=0).summary()
    assert s["stopped_after"] == 650


def test_plan_counts_adaptive_as_an_upper_bound_with_the_over_saturation_constraint(campaigns_dir):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(sweep="adaptive")))
    params = resolve_params(campaign, {}, catalog.known_versions())
    found = method.plan(campaign, params, "local")
    cell = found["cells"][0]
    assert [r["levels"] for r in cell["guidellm_runs"]] == [[1], [4]]  # one run per level, each decided in turn
    assert "kind=over_saturation,mode=enforce" in cell["guidellm_runs"][0]["argv"]
    assert cell["benchmark_s"] == (2 + 1) * 2  # grid + one refinement level, at most
    assert found["method"]["sweep"] == "adaptive"
    grid = method.plan(campaign, resolve_params(campaign, {"sweep": "grid"}, catalog.known_versions()), "local")
    assert grid["cells"][0]["guidellm_runs"][0]["levels"] == [1, 4]


def test_the_report_names_levels_an_adaptive_sweep_did_not_run(tmp_path):
    import pandas as pd

    from llmd_bench.report import build, render_report, write
    from llmd_bench.report.analysis import normalize_levels
    from llmd_bench.report.data import CELL_COLUMNS, ReportInput

    decided = {"grid": [1, 50, 100, 150], "run": [1, 50, 75, 100], "not_run": [150], "refined": [75],
               "stopped_after": 100, "stop_reason": "1 level(s) in a row did not raise throughput beyond the 5 % noise floor"}
    levels = normalize_levels(pd.DataFrame([
        {"model": "Qwen3-8B", "config": "no-offload", "trial": 1, "concurrency": c, "output_tps_mean": tps,
         "ttft_mean_ms": 40.0, "tpot_mean_ms": 8.0, "requests_successful": 400, "requests_errored": 0, "valid": True}
        for c, tps in ((1, 100.0), (50, 900.0), (75, 1000.0), (100, 980.0))]))
    cells = pd.DataFrame([{"model": "Qwen3-8B", "full_model": "Qwen/Qwen3-8B", "config": "no-offload", "status": "ok",
                           "reason": None, "replicas": 1, "config_effect": "n/a", "config_effect_evidence": "",
                           "configuration": "no-offload", "factors": {}, "sweep": decided}], columns=CELL_COLUMNS)
    report = build(ReportInput(campaign="c", run_id="r", runtime="local", levels=levels, cells=cells,
                               params={"concurrency": [1, 50, 100, 150], "sweep": "adaptive"}))
    md, _ = render_report(report, {})
    section = md.split("## Adaptive sweep")[1].split("\n## ")[0]
    assert "| Qwen3-8B | no-offload | 1, 50, 75, 100 | 75 | 150 (not run (past saturation)) |" in section
    assert report.peaks.iloc[0]["optimal_concurrency"] == 75  # the refinement level found the peak
    write(report, tmp_path)
    rows = pd.read_csv(tmp_path / "Qwen3-8B_no-offload_metrics.csv")
    last = rows[rows["concurrency"] == 150].iloc[0]
    assert last["invalid_reason"] == "not run (past saturation)" and pd.isna(last["output_tps_mean"])
