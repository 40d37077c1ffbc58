"""design: aba in the report: the baseline's drift between its first and its last run, and how it widens the noise
bound of its model's comparisons (docs/noise.md, "design: aba").

The repeat of a baseline cell is stored as the baseline's trials after the run's `trials` (model/design.py). The
report keeps those trials out of this run's peaks and comparisons (split_repeat: the baseline's peak is its first
run's, as under design: single) and measures the drift from them:

    drift = (last run's peak - first run's peak) / first run's peak

Every comparison of that model (each configuration against the baseline, Redis against Valkey) then needs a
difference beyond its noise bound plus |drift| (widened): a configuration measured just before the repeat may carry
the whole drift, and its own run-to-run noise on top, which the bound covers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from llmd_bench.measure import noise
from llmd_bench.model import design

if TYPE_CHECKING:
    from llmd_bench.report.data import ReportInput

DRIFT_COLUMNS = ["baseline_first_tps", "baseline_last_tps", "drift_pct", "drift_suspect"]


def design_of(data: ReportInput) -> design.Resolved:
    """The design the run used, as stored with it (a run stored before the field ran single)."""
    return design.resolve((data.params or {}).get("design"), data.simulated)


def _base(config: Any) -> str:
    return str(config).split(" [", 1)[0]


def split_repeat(data: ReportInput, baseline: str) -> tuple[ReportInput, pd.DataFrame]:
    """(the run without the baseline's repeat, the repeat's levels with their trials counted from 1). Only a run whose
    design is aba has a repeat: a CSV folder's or an older run's trials are all its own."""
    levels = data.levels
    empty = levels.iloc[0:0]
    if design_of(data) != "aba" or levels.empty:
        return data, empty
    trials = int((data.params or {}).get("trials") or 1)
    repeat = levels["config"].map(_base).eq(baseline) & levels["trial"].map(lambda t: design.is_repeat_trial(int(t), trials))
    if not repeat.any():
        return data, empty
    last = levels[repeat].copy()
    last["trial"] = last["trial"] - trials
    return dataclasses.replace(data, levels=levels[~repeat].reset_index(drop=True)), last.reset_index(drop=True)


def with_drift(peaks: pd.DataFrame, last_peaks: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`peaks` with each model's baseline drift on every row of the model (DRIFT_COLUMNS): its first run's peak (this
    run's baseline peak), its repeat's, the drift in % and the repeat's peak-level suspect reason; NaN where the model
    has no repeat with a valid level."""
    peaks = peaks.copy()
    for col in DRIFT_COLUMNS:
        peaks[col] = None
    if peaks.empty:
        return peaks
    for model, rows in peaks.groupby("model", sort=False):
        first = rows[rows["config"] == baseline]
        last = last_peaks[(last_peaks["model"] == model) & (last_peaks["config"] == baseline)] \
            if not last_peaks.empty else last_peaks
        if first.empty or last.empty:
            continue
        a, b = float(first.iloc[0]["peak_output_tps"]), float(last.iloc[0]["peak_output_tps"])
        peaks.loc[rows.index, "baseline_first_tps"] = a
        peaks.loc[rows.index, "baseline_last_tps"] = b
        peaks.loc[rows.index, "drift_pct"] = (b - a) / a * 100.0 if a > 0 else None
        peaks.loc[rows.index, "drift_suspect"] = last.iloc[0].get("peak_suspect")
    return peaks


def allowance_pct(*rows: pd.Series) -> float:
    """How much the model's baseline drift widens a comparison of these rows: |drift| in % (0 without one)."""
    found = [abs(float(v)) for r in rows if (v := r.get("drift_pct")) is not None and not _nan(v)]
    return max(found, default=0.0)


def widened(floor: noise.Floor, *rows: pd.Series) -> noise.Floor:
    """The floor plus the model's |baseline drift| (design: aba), with the basis saying so."""
    extra = allowance_pct(*rows)
    if not extra:
        return floor
    return noise.Floor(floor.pct + extra, f"{floor.basis}; + {extra:.1f} % baseline drift (design: aba): "
                                          f"{floor.pct + extra:.1f} %")


def _nan(v: Any) -> bool:
    return v is pd.NA or (isinstance(v, float) and math.isnan(v))


def report_lines(peaks: pd.DataFrame, baseline: str, floor_pct: float, used: design.Resolved,
                 trials: int) -> list[str]:
    """The noise section's lines on the baseline's drift: one per model under aba (what it was, or why it is not
    known); none under single."""
    if used != "aba" or peaks.empty:
        return []
    lines = []
    for model, rows in peaks.groupby("model", sort=False):
        base = rows[rows["config"] == baseline]
        if base.empty:
            continue
        r = base.iloc[0]
        drift = r.get("drift_pct")
        if drift is None or _nan(drift):
            lines.append(f"Baseline drift: not measured for {model}: its {baseline} repeat (run last under design: "
                         "aba) stored no valid level, so its comparisons use the floor alone.")
            continue
        d = float(drift)
        how = (f"the floor for {model}'s comparisons is {floor_pct:g} % -> {floor_pct + abs(d):.1f} %" if trials < 2
               else f"{model}'s comparisons need a difference beyond their Welch bound + {abs(d):.1f} %")
        suspect = r.get("drift_suspect")
        note = f" (the last run's peak level was suspect: {suspect})" if isinstance(suspect, str) and suspect else ""
        lines.append(f"Baseline drift: {model}'s {baseline} first {float(r['baseline_first_tps']):.1f} tok/s, last "
                     f"{float(r['baseline_last_tps']):.1f} tok/s, {d:+.1f} %: {how}{note}.")
    return lines
