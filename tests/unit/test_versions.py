"""The noise rule of a change of a configuration's effect between llm-d versions (report/versions.py), and the order
of llm-d versions the cross-version judgement relies on (older = reference, newer = context)."""

from __future__ import annotations

import math

import pytest

from llmd_bench.measure import noise
from llmd_bench.report.analysis import as_context, version_key, version_relation
from llmd_bench.report.versions import effect_of, judged_change, peak_noise


def _effect(config: float, baseline: float, floor: float = 5.0, samples: int = 1, sd: float | None = None,
            within: float | None = None, fallback: noise.CellNoise | None = None):
    return effect_of(peak_noise(config, samples, sd, within, fallback, floor),
                     peak_noise(baseline, samples, sd, within, fallback, floor))


def test_from_the_campaign_floor_a_change_of_effect_needs_the_floor_times_root_two():
    """noise_floor_pct F is the 95 % bound of a difference of two single peaks; a change of effect is a difference
    of two such differences: its bound is F x sqrt(r1^2 + r2^2) (r: config / baseline), about 1.41 F."""
    before, after = _effect(93.5, 100.0), _effect(60.1, 100.0)
    change = judged_change(before, after, "v0.6.0", "v0.7.0")
    assert before.pct == pytest.approx(-6.5) and after.pct == pytest.approx(-39.9)
    assert change.bound_pp == pytest.approx(5.0 * math.hypot(0.935, 0.601))
    assert change.verdict == "beyond noise" and "campaign noise_floor_pct 5 %" in change.basis
    small = judged_change(_effect(100, 100), _effect(93.5, 100), "a", "b")  # -6.5 pp < 7.07 x 0.97
    assert small.verdict == "within noise" and small.bound_pp == pytest.approx(5.0 * math.hypot(1.0, 0.935))


def test_the_bound_uses_each_version_s_own_spread_and_never_less_than_the_within_level_spread():
    # three peaks per version with a 1 % spread: Student t at 2 df on standard errors of the means
    tight = judged_change(_effect(95, 100, samples=3, sd=1.0), _effect(92, 100, samples=3, sd=1.0), "a", "b")
    se = 100 * math.hypot(0.95 * math.hypot(1 / 95, 1 / 100), 0.92 * math.hypot(1 / 92, 1 / 100)) / math.sqrt(3)
    assert tight.bound_pp == pytest.approx(noise.t95(2) * se) and "Student t, 2 df" in tight.basis
    # a single peak whose level was noisy (10 % within-level standard error) is not judged on the floor alone
    noisy = judged_change(_effect(95, 100, within=10.0), _effect(80, 100, within=10.0), "a", "b")
    assert noisy.verdict == "within noise" and "within-level spread" in noisy.basis
    # the cell's run-to-run history, when it has one, replaces the floor
    history = noise.CellNoise(0.01, 6, 100.0)
    quiet = judged_change(_effect(95, 100, fallback=history), _effect(90, 100, fallback=history), "a", "b")
    assert quiet.verdict == "beyond noise" and "run-to-run spread of 6 peaks" in quiet.basis


def test_a_suspect_effect_gets_no_verdict_saying_why():
    bad = effect_of(peak_noise(50, 1, None, None, None, 5.0), peak_noise(100, 1, None, None, None, 5.0),
                    suspect="native-offload's peak level in this run is suspect: host busy")
    change = judged_change(_effect(95, 100), bad, "a", "b")
    assert change.verdict == "no verdict" and change.bound_pp is None and "host busy" in change.basis


def test_llm_d_versions_order_by_their_numbers_and_only_older_ones_are_references():
    assert version_key("v0.10.0") > version_key("v0.9.0") > version_key("v0.8.1") > version_key("v0.8.0")
    assert version_relation("v0.4.0", "v0.6.0") == "older" and version_relation("v0.10.0", "v0.9.0") == "newer"
    assert version_relation("0.7.0", "v0.7.0") == "same release"
    assert as_context("REGRESSION", "newer") == "lower (context: newer version)"
    assert as_context("improvement", "newer") == "higher (context: newer version)"
    assert as_context("within noise", "newer") == "within noise"
