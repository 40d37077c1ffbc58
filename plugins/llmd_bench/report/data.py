"""Where a report's data comes from: the results store (a run, with the earlier runs and other llm-d versions
the cross-version and previous-run analysis compare it with) or a folder of per-cell metrics CSVs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmd_bench.measure.noise import MAX_HISTORY
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import simulated_runtime
from llmd_bench.report import timeseries, trends
from llmd_bench.report.analysis import is_missing, normalize_levels
from llmd_bench.report.goodput import latency_frame
from llmd_bench.store.rows import CellRow, LevelRow, PeakRow, RunPeakRow, StoredCell, StoredRun, TrialPeakRow

__all__ = ["CELL_COLUMNS", "CSV_REQUIRED", "LEVEL_COLUMNS", "OBSERVATION_COLUMNS", "ReportInput", "from_csv_dir",
           "from_store", "from_stored_run", "is_missing"]

CSV_REQUIRED = ["model", "config", "concurrency", "output_tps_mean", "ttft_mean_ms", "tpot_mean_ms",
                "requests_successful", "requests_errored"]
OBSERVATION_COLUMNS = ["model", "config", "concurrency", "source", "metric", "value"]
CELL_COLUMNS = ["model", "full_model", "config", "status", "reason", "replicas", "config_effect", "config_effect_evidence",
                "configuration", "factors", "sweep", "gpu_time"]


@dataclass
class ReportInput:
    campaign: str
    run_id: str
    runtime: str
    levels: pd.DataFrame
    cells: pd.DataFrame
    versions: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    cross_version: pd.DataFrame | None = None
    llmd_version: str | None = None
    observations: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=OBSERVATION_COLUMNS))
    # Peaks per cell of this run and of the earlier runs of the campaign at the same llm-d version
    # (store/read.py run_peaks), for the comparison with the previous run.
    previous_runs: pd.DataFrame | None = None
    # Each cell's earlier peaks (one per run and trial, oldest first) that measured the same thing:
    # the noise model's history (noise.py, store/read.py trial_peaks).
    history: pd.DataFrame | None = None
    # Each level's latency percentiles (goodput.LATENCY_COLUMNS, from GuideLLM's summaries: store/latency.py) for
    # goodput under SLOs and latency against throughput; None when not read (metrics CSVs have none).
    latency: pd.DataFrame | None = None
    # Per run x cell: the peaks (and stored goodput) of the campaign's runs up to this one that measured the same thing
    # (trends.TREND_COLUMNS, store/read.py campaign_trends); None when not read (metrics CSVs have no store).
    trends: pd.DataFrame | None = None
    # Per measured cell: its level windows, collect_pcp's record and the sampler's samples where on this machine
    # (timeseries.CellServer); None when not read.
    server: list[Any] | None = None

    @property
    def simulated(self) -> bool:
        return simulated_runtime(self.runtime)


# -- from the results store ---------------------------------------------------------------------------
# The report's level columns (also its CSV format: CSV_REQUIRED, the per-cell metrics CSVs) and the stored statistic
# each one is (store/rows.py LevelRow: `<metric>_<stat>`, the one name the store and MLflow use).
LEVEL_COLUMNS = {
    "output_tps_mean": "output_tps_mean", "output_tps_std": "output_tps_std", "ttft_mean_ms": "ttft_ms_mean",
    "tpot_mean_ms": "tpot_ms_mean", "itl_mean_ms": "itl_ms_mean", "ttft_p90_ms": "ttft_ms_p90",
    "ttft_p99_ms": "ttft_ms_p99", "tpot_p90_ms": "tpot_ms_p90", "tpot_p99_ms": "tpot_ms_p99",
    "requests_successful": "requests_successful", "requests_errored": "requests_errored",
    "requests_incomplete": "requests_incomplete", "request_latency_mean_s": "request_latency_s_mean",
    "request_latency_std_s": "request_latency_s_std", "valid": "valid", "invalid_reason": "invalid_reason",
    "suspect_reason": "suspect_reason",
}
# The earlier runs of the same campaign and llm-d version the previous-run comparison reads (store/read.py run_peaks).
PREVIOUS_RUNS = 10


def from_store(engine: Any, run_id: str, campaign: str | None = None) -> ReportInput:
    """The report's input for the stored run `run_id` (of `campaign`); engine: the store's (store/db.py)."""
    from llmd_bench.store import read  # deferred: loads sqlalchemy
    from llmd_bench.store.latency import level_latency

    stored = read.stored_run(engine, run_id, campaign, summaries=False)
    data = from_stored_run(stored, read.version_peaks(engine, stored.run),
                           read.run_peaks(engine, stored.run, PREVIOUS_RUNS),
                           read.trial_peaks(engine, stored.run, MAX_HISTORY))
    data.latency = latency_frame(level_latency(engine, stored.run.id))
    data.trends = trends.frame(read.campaign_trends(engine, stored.run))
    data.server = timeseries.collect(stored)
    return data


def from_stored_run(stored: StoredRun, versions: list[PeakRow], runs: list[RunPeakRow],
                    history: list[TrialPeakRow]) -> ReportInput:
    """The report's input from a stored run and the peaks it is compared with: every llm-d version's of its campaign
    (`versions`), its own and its earlier runs' (`runs`), and every earlier trial's (the noise model's `history`)."""
    run = stored.run
    levels = pd.DataFrame(_level_rows(stored), columns=["model", "config", "trial", "concurrency", *LEVEL_COLUMNS])
    cross = pd.DataFrame([{"llmd_version": p.llmd_version, "model": p.model_label, "config": p.config_label,
                           "samples": p.samples, "runs": p.runs, "peak_output_tps": p.peak_output_tps,
                           "peak_std": p.peak_std, "within_level_se": p.within_level_se} for p in versions])
    previous = pd.DataFrame([{"run_pk": p.run_pk, "dag_run_id": p.dag_run_id, "t": p.t, "is_current": p.is_current,
                              "model": p.model_label, "config": p.config_label, "samples": p.samples,
                              "peak_output_tps": p.peak_output_tps, "peak_std": p.peak_std,
                              "within_level_se": p.within_level_se} for p in runs])
    earlier = pd.DataFrame([{"model": p.model_label, "config": p.config_label, "t": p.t, "run_pk": p.run_pk,
                             "trial": p.trial, "peak_output_tps": p.peak_output_tps} for p in history])
    versions_shown = {"llm-d": run.llmd_version, "vLLM": run.vllm_version, "GuideLLM": run.guidellm_version,
                      "llmd-bench": run.llmd_bench_version, **{f"image {k}": v for k, v in run.images.items()}}
    return ReportInput(campaign=run.campaign, run_id=run.dag_run_id, runtime=run.runtime,
                       levels=normalize_levels(levels), cells=_cells_frame(stored.cells), versions=versions_shown,
                       params=run.params.as_stored(), source=f"results store, run {run.dag_run_id}",
                       cross_version=cross if not cross.empty and cross["llmd_version"].nunique() > 1 else None,
                       llmd_version=run.llmd_version,
                       previous_runs=previous if not previous.empty and (~previous["is_current"]).any() else None,
                       observations=pd.DataFrame(_observation_rows(stored.cells), columns=OBSERVATION_COLUMNS),
                       history=earlier.sort_values(["t", "run_pk", "trial"]) if not earlier.empty else None)


def _level_rows(stored: StoredRun) -> list[dict[str, Any]]:
    rows = [(entry.cell, level) for entry in stored.cells for level in entry.levels]
    rows.sort(key=lambda r: (r[0].model_label, r[0].config_label, r[0].trial, r[1].concurrency))
    return [_level_row(cell, level) for cell, level in rows]


def _level_row(cell: CellRow, level: LevelRow) -> dict[str, Any]:
    return {"model": cell.model_label, "config": cell.config_label, "trial": cell.trial,
            "concurrency": level.concurrency, **{ours: getattr(level, stored) for ours, stored in LEVEL_COLUMNS.items()}}


def _observation_rows(cells: Iterable[StoredCell]) -> list[dict[str, Any]]:
    """Each level's observations per cell label: the mean over the cell's trials."""
    values: dict[tuple[str, str, int, str, str], list[float]] = {}
    for entry in cells:
        for o in entry.observations:
            key = (entry.cell.model_label, entry.cell.config_label, o.concurrency, o.source, o.metric)
            values.setdefault(key, []).append(o.value)
    return [dict(zip(OBSERVATION_COLUMNS, (*key, sum(v) / len(v)))) for key, v in values.items()]


def _worst_status(statuses: list[str]) -> str:
    """A cell's status is its worst trial's."""
    if "failed" in statuses:
        return "failed"
    if all(s == "skipped" for s in statuses):
        return "skipped"
    return "ok" if "ok" in statuses else "invalid"


def _cells_frame(cells: Iterable[StoredCell]) -> pd.DataFrame:
    """One row per cell label (its trials together): what the peak table shows besides the numbers."""
    groups: dict[tuple[str, str, str, str], list[CellRow]] = {}
    for entry in cells:
        c = entry.cell
        groups.setdefault((c.model_label, c.model, c.config_label, c.config), []).append(c)
    if not groups:
        return pd.DataFrame(columns=CELL_COLUMNS)
    rows = []
    for (label, model, config_label, config), trials in groups.items():
        trials = sorted(trials, key=lambda c: c.trial)
        first = trials[0]
        reasons = sorted({c.reason for c in trials if c.reason is not None})
        replicas = [c.replicas for c in trials if c.replicas is not None]
        rows.append({"model": label, "full_model": model, "config": config_label, "configuration": config,
                     "status": _worst_status([c.status for c in trials]), "reason": "; ".join(reasons) or None,
                     "replicas": max(replicas) if replicas else None,
                     "config_effect": first.config_effect.get("verdict", "not measured"),
                     "config_effect_evidence": first.config_effect.get("evidence", ""),
                     "factors": first.factors, "sweep": first.sweep, "gpu_time": first.gpu_time.as_stored(),
                     # `stack` (Runtime.stack_metadata as stored; {} when not captured) and `served` (every trial's
                     # served.ServedHistory; [] when not proven) are optional like `observability`
                     "observability": first.observability, "stack": first.stack,
                     "served": [c.served for c in trials if c.served],
                     # where and beside what each trial ran (rows.Placement), the first trial's for the cell
                     "placement": first.placement})
    return pd.DataFrame(rows)[CELL_COLUMNS + ["observability", "stack", "served", "placement"]]


# -- from a folder of CSVs ----------------------------------------------------------------------------
def from_csv_dir(directory: Path) -> ReportInput:
    # all_peak_metrics.csv (a report's own output) matches the pattern but is not a cell's levels.
    files = sorted(f for f in directory.glob("*_metrics.csv") if f.name != "all_peak_metrics.csv")
    if not files:
        raise LlmdBenchError(f"{directory}: no <model>_<config>_metrics.csv files")
    frames = []
    for f in files:
        try:
            df = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise LlmdBenchError(f"{f}: not a readable CSV: {exc}") from None
        missing = [c for c in CSV_REQUIRED if c not in df.columns]
        if missing:
            raise LlmdBenchError(f"{f}: missing column(s) {missing}; required: {CSV_REQUIRED}")
        if df.empty:
            raise LlmdBenchError(f"{f}: no rows")
        bad = pd.to_numeric(df["concurrency"], errors="coerce")
        if bad.isna().any() or (bad <= 0).any():
            raise LlmdBenchError(f"{f}: column `concurrency` must hold integers >= 1")
        frames.append(df)
    levels = normalize_levels(pd.concat(frames, ignore_index=True))
    cells = []
    for (model, config), g in levels.groupby(["model", "config"], sort=False):
        ok = bool(g["valid"].any())
        reasons = "; ".join(sorted({f"c={c}: {r}" for c, r in zip(g["concurrency"], g["invalid_reason"]) if isinstance(r, str)}))
        cells.append({"model": model, "full_model": model, "config": config, "status": "ok" if ok else "invalid",
                      "reason": None if ok else f"no valid level ({reasons})", "replicas": None,
                      "config_effect": "not measured", "config_effect_evidence": "", "configuration": config,
                      "factors": {}, "sweep": {}, "gpu_time": {}})
    return ReportInput(campaign=directory.name, run_id=f"csv:{directory.name}", runtime="unknown", levels=levels,
                       cells=pd.DataFrame(cells, columns=CELL_COLUMNS), source=f"CSV files in {directory}")

