"""The noise model (noise.py) on synthetic histories, and the judgements built on it (analysis.judge)."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from llmd_bench.measure import noise
from llmd_bench.report import analysis


def _history(n, sd_rel, level=1000.0, seed=7, shift_at=None, shift_rel=0.0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = level * (1 + shift_rel) if shift_at is not None and i >= shift_at else level
        out.append(base * (1 + rng.gauss(0, sd_rel)))
    return out


def test_no_history_or_a_short_one_falls_back_to_the_campaign_floor():
    assert noise.cell_noise([]) is None
    assert noise.cell_noise([1000.0, 1010.0]) is None  # fewer than MIN_HISTORY peaks
    assert noise.cell_noise([1000.0, None, float("nan"), 0.0, 990.0]) is None  # unusable values do not count
    floor = noise.floor_between(None, None, 5.0)
    assert floor.pct == 5.0 and floor.basis == "1 trial; campaign noise_floor_pct 5 % (no history)"


def test_a_long_steady_history_estimates_the_spread_it_was_drawn_with():
    estimates = [noise.cell_noise(_history(20, 0.02, seed=s)).relative_sd for s in range(200)]
    mean = sum(estimates) / len(estimates)
    assert mean == pytest.approx(0.02, rel=0.1)
    n = noise.cell_noise(_history(20, 0.02))
    assert n.samples == 20 and n.df == 19
    floor = noise.floor_between(n, n, 5.0)
    # the 95 % bound of the difference of two runs: t(19) x sqrt(2) x sd
    assert floor.pct == pytest.approx(2.093 * math.sqrt(2) * n.relative_sd * 100, rel=1e-4)
    assert "run-to-run spread (20 and 20 peaks)" in floor.basis


# Two-sided 95 % Student t quantiles as statistics tables print them (3 decimals)
PRINTED_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
               11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
               20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
               29: 2.045, 30: 2.042, 31: 2.040, 40: 2.021, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df, printed", sorted(PRINTED_T95.items()))
def test_t_quantiles_are_exact_at_every_degree_of_freedom(df, printed):
    # every df, not only those a short table had: df 21-29 were read as the next lower entry (too wide) and
    # df > 30 as the normal 1.96 (too narrow: 40 trials were judged as if their spread were known)
    assert noise.t95(df) == pytest.approx(printed, abs=5e-4)
    assert math.isnan(noise.t95(0))
    assert noise.Z95 == pytest.approx(1.959964, abs=1e-6)


def test_welch_with_many_trials_uses_the_t_quantile_of_its_degrees_of_freedom():
    # 20 trials each with the same spread: Welch-Satterthwaite df 38, t = 2.024 (not the normal 1.960)
    diff, half = noise.welch(1000.0, 10.0, 20, 990.0, 10.0, 20)
    assert diff == 10.0 and half == pytest.approx(2.024 * math.sqrt(2 * 10.0 ** 2 / 20), rel=5e-4)


def test_only_the_latest_runs_count():
    old_noisy = _history(30, 0.10, seed=1)
    recent_quiet = _history(noise.MAX_HISTORY, 0.01, seed=2)
    n = noise.cell_noise(old_noisy + recent_quiet)
    assert n.samples == noise.MAX_HISTORY and n.relative_sd < 0.02


def test_a_short_history_gives_a_wide_floor():
    n = noise.cell_noise(_history(3, 0.02, seed=3))
    assert n.samples == 3
    # t(2) = 4.303: with 3 peaks the floor is about twice that of a long history with the same spread
    assert noise.floor_between(n, n, 5.0).pct == pytest.approx(4.303 * math.sqrt(2) * n.relative_sd * 100, rel=1e-4)


def test_a_step_in_the_history_widens_the_spread_far_less_than_a_standard_deviation_would():
    shifted = _history(16, 0.01, shift_at=8, shift_rel=0.10, seed=4)
    n = noise.cell_noise(shifted)
    mean = sum(shifted) / len(shifted)
    plain_sd = math.sqrt(sum((v - mean) ** 2 for v in shifted) / (len(shifted) - 1)) / mean
    assert plain_sd > 0.045  # the step dominates a plain standard deviation
    assert 0.008 < n.relative_sd < 0.03  # successive differences see one jump among 15


def test_one_cell_with_history_lends_its_spread_to_the_other():
    n = noise.cell_noise(_history(10, 0.02))
    floor = noise.floor_between(n, None, 5.0)
    assert floor.pct == pytest.approx(noise.t95(9) * math.sqrt(2) * n.relative_sd * 100)
    assert "one cell's run-to-run spread (10 peaks)" in floor.basis


def _peak(config, tps, trials=1, ci=None, history_sd=None, history_n=0, suspect=None, trial_sd=None, history_mean=None):
    low, high = ci if ci else (tps * 0.999, tps * 1.001)  # a tight within-level interval
    return pd.Series({"model": "M", "config": config, "peak_output_tps": tps, "ttft_mean_ms": 10.0, "tpot_mean_ms": 2.0,
                      "trials": trials, "peak_ci_low": low, "peak_ci_high": high,
                      "noise_basis": f"{trials} trials" if trials > 1 else analysis.WEAK_BASIS,
                      "history_sd": history_sd, "history_n": history_n, "peak_suspect": suspect,
                      "trial_sd_rel": trial_sd, "history_mean": history_mean})


def test_a_small_single_trial_difference_is_within_noise_without_history_and_real_with_a_quiet_one():
    base, other = _peak("no-offload", 1000.0), _peak("llm-d-redis", 1030.0)
    # +3 % with tight within-level intervals: the old rule called it higher; the 5 % floor does not
    assert analysis.judge(other, base, 5.0) == ("within noise", "1 trial; campaign noise_floor_pct 5 % (no history)")
    quiet = dict(history_sd=0.004, history_n=12)
    verdict, basis = analysis.judge(_peak("llm-d-redis", 1030.0, **quiet), _peak("no-offload", 1000.0, **quiet), 5.0)
    assert verdict == "higher" and "run-to-run spread (12 and 12 peaks)" in basis
    noisy = dict(history_sd=0.03, history_n=12)
    assert analysis.judge(_peak("llm-d-redis", 1030.0, **noisy), _peak("no-offload", 1000.0, **noisy), 5.0)[0] == "within noise"


def test_a_difference_beyond_the_floor_is_still_within_noise_when_the_level_intervals_overlap():
    base = _peak("no-offload", 1000.0, ci=(900.0, 1100.0))
    verdict, basis = analysis.judge(_peak("native-offload", 920.0, ci=(850.0, 990.0)), base, 5.0)
    assert verdict == "within noise" and basis.endswith("the within-level intervals overlap")


def test_a_peak_at_a_suspect_level_gets_no_verdict():
    reason = "load generator saturated (its busiest process used 97 % of a core; limit 90 %)"
    verdict, basis = analysis.judge(_peak("native-offload", 500.0, suspect=reason), _peak("no-offload", 1000.0), 5.0)
    assert verdict == analysis.NO_VERDICT and reason in basis and "native-offload" in basis


def test_a_baseline_that_left_its_own_range_anchors_no_verdict():
    """As measured by the noise benchmark: with another test suite loading the 2 cores, one run's baseline came
    out ~25 % below its earlier runs and every identical configuration looked 35-46 % 'higher'."""
    hist = dict(history_sd=0.05, history_n=7, history_mean=700.0)
    base = _peak("no-offload", 520.0, **hist)  # -25.7 %, outside t(6) x 5 % x sqrt(1 + 1/7) = 13.1 %
    verdict, basis = analysis.judge(_peak("llm-d-valkey", 760.0, **hist), base, 5.0)
    assert verdict == analysis.NO_VERDICT
    assert basis == ("no-offload's peak is -25.7 % off its 7 earlier runs (their 95 % range is +/-13.1 %): "
                     "the run, not the configuration, differs")
    # inside its range the baseline anchors verdicts as before
    assert analysis.judge(_peak("llm-d-valkey", 900.0, **hist), _peak("no-offload", 690.0, **hist), 5.0)[0] == "higher"
    # a configuration that left its own range is judged: that is a real change (and a regression vs the previous run)
    assert analysis.judge(_peak("native-offload", 500.0, **hist), _peak("no-offload", 700.0, **hist), 5.0)[0] == "lower"


def test_with_trials_on_both_sides_welchs_t_on_the_difference_decides():
    # 3 trials each with a 2 % trial-to-trial spread: 7 % lower. Each cell's own 95 % t interval is +/-5 %, so
    # the two intervals overlap, yet the difference itself is significant at 95 % (Welch, df 3: +/-5.0 %)
    a = _peak("native-offload", 930.0, trials=3, ci=(880.0, 980.0), trial_sd=0.02)
    b = _peak("no-offload", 1000.0, trials=3, ci=(950.0, 1050.0), trial_sd=0.02)
    verdict, basis = analysis.judge(a, b, 50.0)  # the campaign floor is not used with trials
    assert verdict == "lower" and basis == "3 and 3 trials (Welch t: -7.0 % +/- 5.0 %)"
    close = _peak("native-offload", 975.0, trials=3, trial_sd=0.02)
    assert analysis.judge(close, b, 0.0)[0] == "within noise"  # -2.5 % is not beyond +/-5 %
    unknown = _peak("native-offload", 930.0, trials=3)
    assert analysis.judge(unknown, b, 0.0) == ("no noise basis", "none")


def test_trials_of_this_run_serve_as_a_cells_spread_against_a_single_trial_cell():
    three = _peak("llm-d-redis", 1030.0, trials=3, trial_sd=0.004)
    one = _peak("no-offload", 1000.0)
    verdict, basis = analysis.judge(three, one, 5.0)
    assert verdict == "higher" and "one cell's run-to-run spread (3 peaks)" in basis


# -- from the results store ---------------------------------------------------------------------------
def _scaled(real_report, tmp_path, factor):
    import json

    doc = json.loads(real_report.read_text())
    for b in doc["benchmarks"]:
        b["metrics"]["output_tokens_per_second"]["successful"]["mean"] *= factor
        # as tight as a 120 s level's (the fixture's levels last 2 s): the floor, not the level, decides here
        b["metrics"]["request_latency"]["successful"]["std_dev"] *= 0.05
        b["metrics"]["request_totals"]["successful"] *= 60
        b["metrics"]["request_totals"]["total"] *= 60
    path = tmp_path / f"scaled-{factor}.json"
    path.write_text(json.dumps(doc))
    return path


def _seed(db_url, real_report, tmp_path, history_factors, current_redis_factor):
    from llmd_bench.integrations.importer import import_reports

    runs = [(f"week-{i}", f, f) for i, f in enumerate(history_factors, start=1)]
    runs.append(("now", 1.0, current_redis_factor))
    for run_id, base_factor, redis_factor in runs:
        for config, factor in (("no-offload", base_factor), ("llm-d-redis", redis_factor)):
            import_reports([_scaled(real_report, tmp_path, factor)], "Qwen/Qwen3-0.6B", config, "v0.4.0",
                           run_id=run_id, campaign="noisy", url=db_url)


QUIET = [1.0, 1.004, 0.997, 1.002, 0.998, 1.003, 0.999, 1.001]  # +/-0.3 % from run to run


