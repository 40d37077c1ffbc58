"""The report's CSV outputs, as file name -> text: all_peak_metrics.csv (one row per cell),
performance_comparisons.csv (every configuration vs the baseline of its model), one <model>_<config>_metrics.csv
per cell (every level; levels an adaptive or seeded sweep did not run named as such, with the sweep's reason), and
cross_version.csv / previous_run.csv when the run has those comparisons."""

from __future__ import annotations

import pandas as pd

from llmd_bench.measure import adaptive
from llmd_bench.report.analysis import Report

CELL_METRIC_COLUMNS = ["model", "config", "concurrency", "output_tps_mean", "ttft_mean_ms", "tpot_mean_ms",
                       "requests_successful", "requests_errored", "trial", "output_tps_std", "requests_incomplete",
                       "itl_mean_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p90_ms", "tpot_p99_ms",
                       "request_latency_mean_s", "request_latency_std_s", "valid", "invalid_reason"]
PEAKS_CSV = "all_peak_metrics.csv"
COMPARISONS_CSV = "performance_comparisons.csv"


def peak_records(report: Report) -> pd.DataFrame:
    """The peak table as published (all_peak_metrics.csv and the store's copy): without the bulky per-cell columns."""
    return report.peaks.drop(columns=["full_model", "observability"], errors="ignore")


def cell_metrics(report: Report) -> dict[tuple[str, str], pd.DataFrame]:
    """Every level of each cell, by (model, config), in the order the levels came."""
    levels = report.data.levels
    sweeps = {(r.model, r.config): r.sweep for r in report.peaks.itertuples()
              if isinstance(getattr(r, "sweep", None), dict) and r.sweep.get("not_run")}
    out = {}
    for (model, config), g in levels.groupby(["model", "config"], sort=False):
        rows = g.sort_values(["trial", "concurrency"])[CELL_METRIC_COLUMNS]
        sweep = sweeps.get((model, config), {})
        not_run = sweep.get("not_run", [])
        # a seeded sweep names its own reason ("not run (seeded bracket)"; past saturation in its adaptive mode);
        # an adaptive sweep's record has none
        reason = sweep.get("not_run_reason") or adaptive.NOT_RUN
        if not_run:  # named, never a zero or a silently missing row
            rows = pd.concat([rows, pd.DataFrame([{"model": model, "config": config, "concurrency": c, "valid": False,
                                                   "invalid_reason": reason} for c in not_run],
                                                 columns=CELL_METRIC_COLUMNS)], ignore_index=True)
        out[(model, config)] = rows
    return out


def csv_files(report: Report) -> dict[str, str]:
    """File name -> CSV text of every CSV output."""
    files = {PEAKS_CSV: peak_records(report).to_csv(index=False, float_format="%.3f"),
             COMPARISONS_CSV: report.comparisons.to_csv(index=False, float_format="%.3f")}
    for (model, config), rows in cell_metrics(report).items():
        files[f"{model}_{config}_metrics.csv"] = rows.to_csv(index=False, float_format="%.4f")
    if report.cross_version is not None:
        files["cross_version.csv"] = report.cross_version.to_csv(index=False, float_format="%.3f")
    if report.previous_run is not None:
        files["previous_run.csv"] = report.previous_run.to_csv(index=False, float_format="%.3f")
    return files
