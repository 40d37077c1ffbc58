"""The report's numbers, computed from per-level data (never copied from anywhere).

Published method: per model x config, the valid level with the highest mean successful output tokens/s
is the peak; TTFT and TPOT means at that level; % vs the campaign's baseline configuration of the same model.
On top of it: with 2+ trials a 95 % confidence interval per cell from the trials, and a difference is
"within noise" unless the two intervals separate. With one trial the difference must also exceed the
noise floor of noise.py (the cells' own run-to-run history, else the campaign's noise_floor_pct). A peak
measured while the load generator was saturated gets no verdict.

`build` turns a run's data (data.py) into a `Report`: the peak table, the comparisons with the baseline,
Redis vs Valkey, the per-model spread, and the cross-version and previous-run comparisons, judged the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsFloat

import pandas as pd

from llmd_bench.measure import noise
from llmd_bench.measure.noise import Z95, t95
from llmd_bench.model import configurations
from llmd_bench.model.campaign import DEFAULT_BASELINE, DEFAULT_NOISE_FLOOR_PCT
from llmd_bench.model.campaign_files import campaign_configurations
from llmd_bench.report import drift, goodput, suspects

if TYPE_CHECKING:
    from llmd_bench.report.data import ReportInput

LEVEL_COLUMNS = ["model", "config", "trial", "concurrency", "output_tps_mean", "output_tps_std", "ttft_mean_ms",
                 "tpot_mean_ms", "itl_mean_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p90_ms", "tpot_p99_ms",
                 "requests_successful", "requests_errored", "requests_incomplete", "request_latency_mean_s",
                 "request_latency_std_s", "valid", "invalid_reason", "suspect_reason"]
_NUMERIC = ["output_tps_mean", "output_tps_std", "ttft_mean_ms", "tpot_mean_ms", "itl_mean_ms", "ttft_p90_ms",
            "ttft_p99_ms", "tpot_p90_ms", "tpot_p99_ms", "requests_successful", "requests_errored",
            "requests_incomplete", "request_latency_mean_s", "request_latency_std_s"]

WEAK_BASIS = "1 trial (weak: spread of request latency within the level, and its window's edges)"
WEAK_BASIS_RATE = "1 trial (weak: spread of the token rate within the level, and its window's edges)"
NO_VERDICT = "no verdict"


def config_order(config: str) -> int:
    """The catalog's order (the published four first); a campaign's own configurations after it."""
    known = list(configurations.catalog())
    name = config.split(" [", 1)[0]  # a label with configuration factors: 'native-offload [offload_size=20k]'
    return known.index(name) if name in known else len(known)


SCALING_FACTORS = ("replicas", "tensor_parallel_size")


def scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Peak throughput against replicas or tensor_parallel_size, for each factor that varies in the run: per
    model, configuration and the other factors' values, the peak at every value of the factor and the scaling
    efficiency vs the smallest value (peak_n / (peak_min x n / min); 1.0 is linear)."""
    columns = ["factor", "model", "config", "others", "value", "peak_output_tps", "efficiency"]
    if table.empty or "factors" not in table.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    ok = table[(table["status"] == "ok") & table["peak_output_tps"].notna()]
    for factor in SCALING_FACTORS:
        values = {f.get(factor) for f in ok["factors"] if isinstance(f, dict)} - {None}
        if len(values) < 2:
            continue
        groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        for r in ok.itertuples():
            f = r.factors if isinstance(r.factors, dict) else {}
            if factor not in f:
                continue
            others = ",".join(f"{k}={v}" for k, v in f.items() if k != factor)
            base_model = str(r.model).split(" [", 1)[0]
            groups.setdefault((base_model, str(r.config), others), []).append((int(f[factor]), float(r.peak_output_tps)))
        for (model, config, others), points in groups.items():
            points.sort()
            smallest, base_peak = points[0]
            for value, peak in points:
                rows.append({"factor": factor, "model": model, "config": config, "others": others, "value": value,
                             "peak_output_tps": peak,
                             "efficiency": peak / (base_peak * value / smallest) if base_peak > 0 else None})
    return pd.DataFrame(rows, columns=columns)


def normalize_levels(levels: pd.DataFrame) -> pd.DataFrame:
    """Fill optional columns; a level without output tokens/s is invalid (never a zero)."""
    df = levels.copy()
    for col in LEVEL_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df["trial"] = df["trial"].fillna(1).astype(int)
    df["concurrency"] = df["concurrency"].astype(int)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    missing = df["output_tps_mean"].isna()
    df["valid"] = df["valid"].map(lambda v: True if v is None or (isinstance(v, float) and math.isnan(v)) else _truthy(v))
    df.loc[missing, "invalid_reason"] = df.loc[missing, "invalid_reason"].fillna("no output tokens/s")
    df.loc[missing, "valid"] = False
    # physically impossible: a negative rate, latency or count (a CSV written by hand or by another tool)
    negative = df[_NUMERIC].lt(0)
    for i in df.index[negative.any(axis=1)]:
        df.at[i, "valid"] = False
        df.at[i, "invalid_reason"] = "impossible negative values: " + ", ".join(c for c in _NUMERIC if negative.at[i, c])
    return df[LEVEL_COLUMNS]


def _truthy(v: object) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "t", "1", "yes")
    return bool(v)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    basis: str  # "N trials" | "1 trial (weak: ...)" | "none"

    def separates_from(self, other: Interval) -> bool:
        return self.low > other.high or self.high < other.low


def cell_peaks(levels: pd.DataFrame) -> pd.DataFrame:
    """One row per model x config that has at least one valid level: the peak and its interval."""
    valid = levels[levels["valid"]]
    rows = []
    for (model, config), cell in valid.groupby(["model", "config"], sort=False):
        trials = sorted(cell["trial"].unique())
        per_level = cell.groupby("concurrency").agg(
            output_tps_mean=("output_tps_mean", "mean"), ttft_mean_ms=("ttft_mean_ms", "mean"),
            tpot_mean_ms=("tpot_mean_ms", "mean"), n=("trial", "nunique")).reset_index()
        # Only levels measured in every trial compete when there are several trials.
        complete = per_level[per_level["n"] == len(trials)]
        candidates = complete if not complete.empty else per_level
        best = candidates.sort_values(["output_tps_mean", "concurrency"], ascending=[False, True]).iloc[0]
        at_peak = cell[cell["concurrency"] == best["concurrency"]]
        interval = _interval(at_peak, len(trials))
        trial_values = at_peak["output_tps_mean"].astype(float)
        suspect = suspects.peak_reasons(cell, int(best["concurrency"]))  # a busy host's levels count anywhere
        rows.append({
            "model": model, "config": config, "peak_output_tps": float(best["output_tps_mean"]),
            "optimal_concurrency": int(best["concurrency"]), "ttft_mean_ms": _f(best["ttft_mean_ms"]),
            "tpot_mean_ms": _f(best["tpot_mean_ms"]), "trials": len(trials),
            "peak_ci_low": interval.low, "peak_ci_high": interval.high, "noise_basis": interval.basis,
            "valid_levels": int(cell["concurrency"].nunique()),
            # the trials' own run-to-run spread (noise.py), used against a single-trial cell
            "trial_sd_rel": (float(trial_values.std(ddof=1) / trial_values.mean())
                             if len(trial_values) >= 2 and trial_values.mean() > 0 else None),
            "peak_suspect": "; ".join(suspect) or None,
            "history_sd": None, "history_n": 0, "history_mean": None,
        })
    return pd.DataFrame(rows, columns=PEAK_FRAME_COLUMNS)


PEAK_FRAME_COLUMNS = ["model", "config", "peak_output_tps", "optimal_concurrency", "ttft_mean_ms", "tpot_mean_ms",
                      "trials", "peak_ci_low", "peak_ci_high", "noise_basis", "valid_levels", "trial_sd_rel",
                      "peak_suspect", "history_sd", "history_n", "history_mean"]


def _f(v: SupportsFloat | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _interval(at_peak: pd.DataFrame, trials: int) -> Interval:
    values = at_peak["output_tps_mean"].astype(float)
    mean = float(values.mean())
    if trials >= 2 and len(values) >= 2:
        half = t95(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
        return Interval(mean - half, mean + half, f"{len(values)} trials")
    row = at_peak.iloc[0]
    n = row["requests_successful"]
    if pd.isna(n) or n <= 0:
        return Interval(math.nan, math.nan, "none (no dispersion data)")
    n = float(n)
    # GuideLLM counts the output of requests completed inside the level's window: at each edge every stream
    # may have one request more or fewer, so identical runs differ by up to streams / n (9 % for 8 streams
    # completing 88 requests in 4 s; 0.3 % over 120 s).
    edge = mean * float(row["concurrency"]) / n
    lat_mean, lat_std = row["request_latency_mean_s"], row["request_latency_std_s"]
    if pd.notna(lat_mean) and pd.notna(lat_std) and lat_mean > 0:
        # With a fixed number of streams, throughput = streams x tokens / mean request latency, so its
        # relative standard error is that of the mean latency over the level's requests.
        spread = Z95 * mean * (float(lat_std) / float(lat_mean)) / math.sqrt(n)
        half = math.hypot(spread, edge)
        return Interval(mean - half, mean + half, WEAK_BASIS)
    std = row["output_tps_std"]
    if pd.notna(std):
        # Without latency data: GuideLLM's spread of the token rate over the level, per request.
        half = math.hypot(Z95 * float(std) / math.sqrt(n), edge)
        return Interval(mean - half, mean + half, WEAK_BASIS_RATE)
    return Interval(math.nan, math.nan, "none (no dispersion data)")


def interval_of(row: pd.Series) -> Interval:
    return Interval(row["peak_ci_low"], row["peak_ci_high"], row["noise_basis"])


def cell_noise_of(row: pd.Series) -> noise.CellNoise | None:
    """A cell's run-to-run spread: from its history in the store, or from this run's trials, whichever
    has more peaks."""
    candidates = []
    n_hist = row.get("history_n")
    if not _missing(row.get("history_sd")) and not _missing(n_hist) and int(n_hist) >= noise.MIN_HISTORY:
        mean = row.get("history_mean")
        candidates.append(noise.CellNoise(float(row["history_sd"]), int(n_hist), None if _missing(mean) else float(mean)))
    trials = row.get("trials")
    if not _missing(row.get("trial_sd_rel")) and not _missing(trials) and int(trials) >= noise.MIN_HISTORY:
        candidates.append(noise.CellNoise(float(row["trial_sd_rel"]), int(trials)))
    return max(candidates, key=lambda n: n.samples) if candidates else None


def _missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def reference_moved(reference: pd.Series) -> str | None:
    """A reference (the baseline) whose peak left its own run-to-run range cannot anchor a verdict: the run
    differs (a loaded machine, a moved node), and every configuration would seem better or worse with it."""
    own = cell_noise_of(reference)
    if own is None or own.mean is None:
        return None
    off = own.off_by_pct(float(reference["peak_output_tps"]))
    if off is None:
        return None
    return (f"{reference['config']}'s peak is {off:+.1f} % off its {own.samples} earlier runs (their 95 % range is "
            f"+/-{own.prediction_pct():.1f} %): the run, not the configuration, differs")


def judge(value: pd.Series, reference: pd.Series,
          noise_floor_pct: float = DEFAULT_NOISE_FLOOR_PCT) -> tuple[str, str]:
    """('higher' | 'lower' | 'within noise' | 'no noise basis' | 'no verdict', basis) for value vs reference.
    Both cells with 2+ trials: their 95 % intervals must separate. Otherwise the difference must exceed the
    noise floor (noise.py) and, where GuideLLM gave dispersion data, the within-level intervals too."""
    for row in (value, reference):
        reason = row.get("peak_suspect")
        if isinstance(reason, str) and reason:
            return NO_VERDICT, f"{row['config']}'s peak level is suspect: {reason}"
    moved = reference_moved(reference)
    if moved:
        return NO_VERDICT, moved
    a, b = interval_of(value), interval_of(reference)
    have_intervals = not any(math.isnan(x) for x in (a.low, a.high, b.low, b.high))
    direction = "higher" if value["peak_output_tps"] > reference["peak_output_tps"] else "lower"
    if int(value["trials"]) >= 2 and int(reference["trials"]) >= 2:
        if _missing(value.get("trial_sd_rel")) or _missing(reference.get("trial_sd_rel")):
            return "no noise basis", "none"
        va, vb = float(value["peak_output_tps"]), float(reference["peak_output_tps"])
        diff, half = noise.welch(va, float(value["trial_sd_rel"]) * va, int(value["trials"]),
                                 vb, float(reference["trial_sd_rel"]) * vb, int(reference["trials"]))
        basis = (f"{int(value['trials'])} and {int(reference['trials'])} trials (Welch t: "
                 f"{diff / vb * 100:+.1f} % +/- {half / vb * 100:.1f} %)")
        extra = drift.allowance_pct(value, reference)  # design: aba: the baseline's drift widens the bound
        if extra:
            half += extra / 100.0 * vb
            basis += f"; + {extra:.1f} % baseline drift (design: aba)"
        return (direction if abs(diff) > half else "within noise"), basis
    floor = drift.widened(noise.floor_between(cell_noise_of(value), cell_noise_of(reference), noise_floor_pct),
                          value, reference)
    change = pct(value["peak_output_tps"], reference["peak_output_tps"])
    if change is None:
        return "no noise basis", "none"
    if not noise.beyond(change, floor):
        return "within noise", floor.basis
    if have_intervals and not a.separates_from(b):
        return "within noise", f"{floor.basis}; the within-level intervals overlap"
    return direction, floor.basis


def pct(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0 or (isinstance(old, float) and math.isnan(old)):
        return None
    return (new - old) / old * 100.0


def _versus(value: pd.Series, reference: pd.Series, noise_floor_pct: float) -> dict[str, object]:
    """value relative to reference: throughput, TTFT and TPOT in %, and the noise judgement."""
    verdict, basis = judge(value, reference, noise_floor_pct)
    return {"tps_pct": pct(value["peak_output_tps"], reference["peak_output_tps"]),
            "ttft_pct": pct(value["ttft_mean_ms"], reference["ttft_mean_ms"]),
            "tpot_pct": pct(value["tpot_mean_ms"], reference["tpot_mean_ms"]), "judgement": verdict, "basis": basis}


def versus_baseline(peaks: pd.DataFrame, noise_floor_pct: float = DEFAULT_NOISE_FLOOR_PCT,
                    baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Every config vs the campaign's baseline configuration of the same model (the published % vs baseline)."""
    rows = []
    for _, row in peaks.iterrows():
        base = peaks[(peaks["model"] == row["model"]) & (peaks["config"] == baseline)]
        if row["config"] == baseline:
            continue
        if base.empty:
            rows.append({"model": row["model"], "config": row["config"], "baseline_peak_output_tps": None,
                         "peak_output_tps": row["peak_output_tps"], "vs_baseline_pct": None,
                         "ttft_vs_baseline_pct": None, "tpot_vs_baseline_pct": None,
                         "judgement": "no baseline", "basis": "none"})
            continue
        b = base.iloc[0]
        d = _versus(row, b, noise_floor_pct)
        rows.append({"model": row["model"], "config": row["config"], "baseline_peak_output_tps": b["peak_output_tps"],
                     "peak_output_tps": row["peak_output_tps"], "vs_baseline_pct": d["tps_pct"],
                     "ttft_vs_baseline_pct": d["ttft_pct"], "tpot_vs_baseline_pct": d["tpot_pct"],
                     "judgement": d["judgement"], "basis": d["basis"]})
    return pd.DataFrame(rows, columns=["model", "config", "baseline_peak_output_tps", "peak_output_tps",
                                       "vs_baseline_pct", "ttft_vs_baseline_pct", "tpot_vs_baseline_pct",
                                       "judgement", "basis"])


def redis_vs_valkey(peaks: pd.DataFrame, noise_floor_pct: float = DEFAULT_NOISE_FLOOR_PCT) -> pd.DataFrame:
    rows = []
    for model in peaks["model"].unique():
        r = peaks[(peaks["model"] == model) & (peaks["config"] == "llm-d-redis")]
        v = peaks[(peaks["model"] == model) & (peaks["config"] == "llm-d-valkey")]
        if r.empty or v.empty:
            continue
        r, v = r.iloc[0], v.iloc[0]
        d = _versus(v, r, noise_floor_pct)
        rows.append({"model": model, "redis_peak_output_tps": r["peak_output_tps"],
                     "valkey_peak_output_tps": v["peak_output_tps"],
                     "valkey_vs_redis_tps": v["peak_output_tps"] - r["peak_output_tps"], "valkey_vs_redis_pct": d["tps_pct"],
                     "ttft_valkey_vs_redis_pct": d["ttft_pct"], "tpot_valkey_vs_redis_pct": d["tpot_pct"],
                     "judgement": d["judgement"], "basis": d["basis"]})
    return pd.DataFrame(rows, columns=["model", "redis_peak_output_tps", "valkey_peak_output_tps", "valkey_vs_redis_tps",
                                       "valkey_vs_redis_pct", "ttft_valkey_vs_redis_pct", "tpot_valkey_vs_redis_pct",
                                       "judgement", "basis"])


def model_spread(peaks: pd.DataFrame) -> pd.DataFrame:
    """Per model: how far apart the configurations' peaks are, (max - min) / min."""
    rows = []
    for model, g in peaks.groupby("model", sort=False):
        if len(g) < 2:
            continue
        hi, lo = g.loc[g["peak_output_tps"].idxmax()], g.loc[g["peak_output_tps"].idxmin()]
        rows.append({"model": model, "configs": len(g), "best_config": hi["config"], "worst_config": lo["config"],
                     "spread_pct": pct(hi["peak_output_tps"], lo["peak_output_tps"])})
    return pd.DataFrame(rows, columns=["model", "configs", "best_config", "worst_config", "spread_pct"])


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


# -- the report: peaks, comparisons, cross-version and previous-run ----------------------------------------
PEAK_COLUMNS = ["model", "config", "peak_output_tps", "optimal_concurrency", "vs_baseline_pct", "ttft_mean_ms",
                "tpot_mean_ms", "status"]
REGRESSION_THRESHOLD_PCT = 0.0  # any drop beyond noise is flagged; the noise test decides


@dataclass
class Report:
    data: ReportInput
    peaks: pd.DataFrame            # one row per cell, every cell (failed ones with empty numbers)
    comparisons: pd.DataFrame
    redis_valkey: pd.DataFrame
    spread: pd.DataFrame
    cross_version: pd.DataFrame | None
    warnings: list[str]
    previous_run: pd.DataFrame | None = None  # against the previous run of the same llm-d version

    @property
    def failed_cells(self) -> list[str]:
        return [f"{r.model}/{r.config}" for r in self.peaks.itertuples() if r.status in ("failed", "invalid")]

    @property
    def regressions(self) -> list[dict[str, Any]]:
        """Every peak lower beyond noise than an OLDER llm-d version's or than the previous run's (JSON-ready): the
        one list the summary, the cross-version and previous-run sections, the stored report and notify count."""
        found = []
        for kind, table, other in (("llm-d version", self.cross_version, "other_version"),
                                   ("previous run", self.previous_run, "other_run")):
            if table is None:
                continue
            for r in table[table["judgement"] == "REGRESSION"].itertuples():
                if kind == "llm-d version" and version_key(r.other_version) >= version_key(r.version):
                    continue  # a backfilled older version being slower than a newer one is not a regression
                found.append({"kind": kind, "model": r.model, "config": r.config, "version": r.version,
                              "other": getattr(r, other), "peak_output_tps": _rounded(r.peak_output_tps, 3),
                              "other_peak_output_tps": _rounded(r.other_peak_output_tps, 3),
                              "change_pct": _rounded(r.change_pct, 2), "judgement": r.judgement})
        return found


def noise_floor_pct(data: ReportInput) -> float:
    """The campaign's floor for single-trial judgements, as stored with the run (older runs: the default)."""
    value = (data.params or {}).get("noise_floor_pct")
    return DEFAULT_NOISE_FLOOR_PCT if value is None or is_missing(value) else float(value)


def baseline_of(data: ReportInput) -> str:
    """The configuration the run compared against, as stored with the run (older runs: no-offload)."""
    value = (data.params or {}).get("baseline")
    return DEFAULT_BASELINE if is_missing(value) or not value else str(value)


def with_history(peaks: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """Each cell's run-to-run spread from its earlier peaks in the store (noise.py)."""
    peaks = peaks.copy()
    if history is None or history.empty or peaks.empty:
        return peaks
    for i, row in peaks.iterrows():
        mine = history[(history["model"] == row["model"]) & (history["config"] == row["config"])]
        values = [float(v) for v in mine["peak_output_tps"]]
        peaks.at[i, "history_n"] = len(values)
        found = noise.cell_noise(values)
        if found is not None:
            peaks.at[i, "history_n"] = found.samples
            peaks.at[i, "history_sd"] = found.relative_sd
            peaks.at[i, "history_mean"] = found.mean
    return peaks


def build(data: ReportInput) -> Report:
    data, repeat = drift.split_repeat(data, baseline_of(data))  # design: aba: the baseline's last run, apart
    floor = noise_floor_pct(data)
    peaks = drift.with_drift(with_history(cell_peaks(data.levels), data.history), cell_peaks(repeat), baseline_of(data))
    baseline = baseline_of(data)
    comparisons = versus_baseline(peaks, floor, baseline)
    table = _peak_table(data, peaks, comparisons, baseline)
    table = table.merge(goodput_table(data, peaks, baseline, floor), on=["model", "config"], how="left")
    warnings = []
    own = campaign_configurations(data.campaign)
    for r in table.itertuples():
        name = r.configuration if isinstance(getattr(r, "configuration", None), str) else str(r.config).split(" [")[0]
        config = configurations.lookup(name, own) if not is_missing(r.replicas) and r.replicas == 1 else None
        if config is not None and config.needs_replicas and r.status == "ok":
            warnings.append(f"{r.model}/{r.config} ran with one replica: a router with one endpoint has no choice "
                            "to make, so cache-aware routing cannot differ from the baseline by construction.")
    return Report(data, table, comparisons, redis_vs_valkey(peaks, floor), model_spread(peaks),
                  _cross_version(data, peaks, floor), warnings, _previous_run(data, peaks, floor))


def _peak_table(data: ReportInput, peaks: pd.DataFrame, comparisons: pd.DataFrame, baseline: str) -> pd.DataFrame:
    cells = data.cells.copy()
    known = set(zip(cells["model"], cells["config"])) if not cells.empty else set()
    extra = [{"model": m, "config": c, "full_model": m, "status": "ok", "reason": None, "replicas": None,
              "config_effect": "not measured", "config_effect_evidence": ""}
             for m, c in zip(peaks["model"], peaks["config"]) if (m, c) not in known]
    if extra:
        cells = pd.concat([cells, pd.DataFrame(extra)], ignore_index=True)
    table = cells.merge(peaks, on=["model", "config"], how="left")
    table = table.merge(comparisons[["model", "config", "vs_baseline_pct", "judgement", "basis"]],
                        on=["model", "config"], how="left")
    # A cell marked ok with no valid level is invalid: never shown as a number it did not produce.
    no_peak = table["peak_output_tps"].isna() & (table["status"] == "ok")
    table.loc[no_peak, "status"] = "invalid"
    table.loc[no_peak, "reason"] = table.loc[no_peak, "reason"].fillna("no valid level")
    table.loc[(table["config"] == baseline) & (table["status"] == "ok"), "judgement"] = "baseline"
    for col in ("optimal_concurrency", "trials", "valid_levels", "replicas"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    table["config_effect"] = table["config_effect"].fillna("not measured")
    model_order = {m: i for i, m in enumerate(sorted(dict.fromkeys(table["model"]), key=natural_key))}
    table["_m"] = table["model"].map(model_order)
    table["_c"] = table["config"].map(config_order)
    table = table.sort_values(["_m", "_c"]).drop(columns=["_m", "_c"]).reset_index(drop=True)
    rest = [c for c in table.columns if c not in PEAK_COLUMNS]
    return table[PEAK_COLUMNS + rest]


def natural_key(name: str) -> list:
    """Qwen3-0.6B < Qwen3-8B < Qwen3-14B: numbers compare as numbers."""
    return [float(part) if part.replace(".", "", 1).isdigit() else part for part in re.split(r"(\d+(?:\.\d+)?)", name)]


def _cell_row(peaks: pd.DataFrame, model: str, config: str) -> pd.Series | None:
    found = peaks[(peaks["model"] == model) & (peaks["config"] == config)]
    return None if found.empty else found.iloc[0]


def _cross_version(data: ReportInput, peaks: pd.DataFrame, floor_pct: float) -> pd.DataFrame | None:
    """This run's llm-d version against every other version of the campaign in the store, per cell. Only an OLDER
    version is a reference: a drop beyond noise against it is a REGRESSION. A newer version is context, shown with
    'lower' or 'higher' (context: newer version) and never a regression, so the report of a backfilled older release
    does not call it being slower than its successors a regression (Report.regressions counts the same rows)."""
    cv = data.cross_version
    if cv is None or cv.empty or not data.llmd_version:
        return None
    current = cv[cv["llmd_version"] == data.llmd_version]
    rows = []
    for _, cur in current.iterrows():
        others = cv[(cv["model"] == cur["model"]) & (cv["config"] == cur["config"]) & (cv["llmd_version"] != data.llmd_version)]
        for _, old in others.iterrows():
            verdict, basis = _judge_peaks(cur, old, _cell_row(peaks, cur["model"], cur["config"]), floor_pct)
            relation = version_relation(str(old["llmd_version"]), data.llmd_version)
            rows.append({"model": cur["model"], "config": cur["config"], "version": data.llmd_version,
                         "other_version": old["llmd_version"], "relation": relation,
                         "peak_output_tps": cur["peak_output_tps"], "other_peak_output_tps": old["peak_output_tps"],
                         "change_pct": pct(cur["peak_output_tps"], old["peak_output_tps"]),
                         "samples": int(cur["samples"]), "other_samples": int(old["samples"]),
                         "judgement": verdict if relation == "older" else as_context(verdict, relation),
                         "basis": basis})
    if not rows:
        return None
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(sorted(dict.fromkeys(out["model"]), key=natural_key))}
    out = out.assign(_m=out["model"].map(order), _c=out["config"].map(config_order),
                     _v=out["other_version"].map(version_key))
    return out.sort_values(["_m", "_c", "_v"], kind="stable").drop(columns=["_m", "_c", "_v"]).reset_index(drop=True)


def version_relation(other: str, version: str) -> str:
    """'older', 'newer' or 'same release' (another spelling of it): what `other` is to `version`."""
    a, b = version_key(other), version_key(version)
    return "older" if a < b else "newer" if a > b else "same release"


def as_context(verdict: str, relation: str) -> str:
    """A judgement against a version that is no reference (newer, or the same release): its direction as context,
    never improvement or REGRESSION."""
    word = {"REGRESSION": "lower", "improvement": "higher"}.get(verdict)
    return f"{word} (context: {relation} version)" if word else verdict


def _previous_run(data: ReportInput, peaks: pd.DataFrame, floor_pct: float) -> pd.DataFrame | None:
    """Each cell's peak against the latest earlier run of the campaign at the same llm-d version that has a
    valid peak for the cell (store/read.py run_peaks), judged like the cross-version table."""
    prev = data.previous_runs
    if prev is None or prev.empty:
        return None
    current, earlier = prev[prev["is_current"].astype(bool)], prev[~prev["is_current"].astype(bool)]
    rows = []
    for _, cur in current.iterrows():
        same = earlier[(earlier["model"] == cur["model"]) & (earlier["config"] == cur["config"])]
        if same.empty:
            continue
        old = same.sort_values(["t", "run_pk"]).iloc[-1]
        verdict, basis = _judge_peaks(cur, old, _cell_row(peaks, cur["model"], cur["config"]), floor_pct)
        rows.append({"model": cur["model"], "config": cur["config"], "version": data.llmd_version,
                     "other_run": old["dag_run_id"], "peak_output_tps": cur["peak_output_tps"],
                     "other_peak_output_tps": old["peak_output_tps"],
                     "change_pct": pct(cur["peak_output_tps"], old["peak_output_tps"]),
                     "samples": int(cur["samples"]), "other_samples": int(old["samples"]),
                     "judgement": verdict, "basis": basis})
    if not rows:
        return None
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(sorted(dict.fromkeys(out["model"]), key=natural_key))}
    out = out.assign(_m=out["model"].map(order), _c=out["config"].map(config_order))
    return out.sort_values(["_m", "_c"]).drop(columns=["_m", "_c"]).reset_index(drop=True)


def version_key(version: object) -> tuple[int, ...]:
    """An llm-d version's order: its numbers (v0.10.0 after v0.9.0); text without numbers first."""
    return tuple(int(n) for n in re.findall(r"\d+", str(version)))


def _rounded(v: Any, digits: int) -> float | None:
    return None if is_missing(v) else round(float(v), digits)


def _judge_peaks(cur: pd.Series, old: pd.Series, cell: pd.Series | None, floor_pct: float) -> tuple[str, str]:
    """A peak against the same cell's peak in another run or llm-d version, with the noise model of the
    comparisons (noise.py): 2+ samples on both sides, their 95 % intervals must separate; otherwise the
    change must exceed the noise floor (the cell's own history, else the campaign's) and, where known, the
    within-level intervals. A drop beyond noise is a REGRESSION."""
    if cell is not None and isinstance(cell.get("peak_suspect"), str) and cell["peak_suspect"]:
        return NO_VERDICT, f"this run's peak level is suspect: {cell['peak_suspect']}"
    a, b = _version_interval(cur), _version_interval(old)
    have_intervals = not any(math.isnan(x) for x in (*a, *b))
    direction = "improvement" if cur["peak_output_tps"] > old["peak_output_tps"] else "REGRESSION"
    if int(cur["samples"]) >= 2 and int(old["samples"]) >= 2:
        if is_missing(cur["peak_std"]) or is_missing(old["peak_std"]):
            return "no noise basis", "none"
        diff, half = noise.welch(float(cur["peak_output_tps"]), float(cur["peak_std"]), int(cur["samples"]),
                                 float(old["peak_output_tps"]), float(old["peak_std"]), int(old["samples"]))
        basis = f"{int(cur['samples'])} and {int(old['samples'])} peaks (Welch t: +/- {half:.1f} tok/s)"
        return (direction if abs(diff) > half else "within noise"), basis
    own = cell_noise_of(cell) if cell is not None else None
    floor = noise.floor_between(own, own, floor_pct)
    change = pct(cur["peak_output_tps"], old["peak_output_tps"])
    if change is None:
        return "no noise basis", "none"
    if not noise.beyond(change, floor):
        return "within noise", floor.basis
    if have_intervals and not (a[0] > b[1] or a[1] < b[0]):
        return "within noise", f"{floor.basis}; the within-level intervals overlap"
    return direction, floor.basis


def _version_interval(row: pd.Series) -> tuple[float, float]:
    mean, n = float(row["peak_output_tps"]), int(row["samples"])
    if n >= 2 and not is_missing(row["peak_std"]):
        half = t95(n - 1) * float(row["peak_std"]) / math.sqrt(n)
    elif not is_missing(row["within_level_se"]):
        half = Z95 * float(row["within_level_se"])
    else:
        return (math.nan, math.nan)
    return (mean - half, mean + half)


# -- goodput under SLOs (goodput.py: the run's SLO and which levels count) -----------------------------------------
GOODPUT_COLUMNS = ["goodput_output_tps", "goodput_concurrency", "goodput_ci_low", "goodput_ci_high",
                   "goodput_noise_basis", "goodput_vs_baseline_pct", "goodput_judgement", "goodput_basis", "goodput_slo",
                   "goodput_reason"]


def goodput_table(data: ReportInput, peaks: pd.DataFrame, baseline: str, floor_pct: float) -> pd.DataFrame:
    """Per cell with a valid level: its goodput under the run's SLO (the level with the highest mean output tokens/s
    among those that count: valid, not suspect, meeting every SLO in every trial; goodput.py), its interval as the
    peak's, and its judgement against the baseline's goodput with the peak's noise rules (judge: the trials' Welch
    test, else the noise floor from the cell's run-to-run spread of its peak or the campaign's, and the within-level
    intervals). No SLO: only goodput_reason says so."""
    out = pd.DataFrame({"model": peaks["model"], "config": peaks["config"]})
    for col in GOODPUT_COLUMNS:
        out[col] = None
    targets, unread = goodput.targets_of(data.params)
    if not targets or out.empty:
        out["goodput_reason"] = unread or goodput.NO_SLO_REASON
        return out
    out["goodput_slo"] = goodput.slo_key(targets)
    if data.latency is None:
        out["goodput_reason"] = goodput.NOT_RECORDED
        return out
    checks = goodput.level_checks(data.levels, data.latency, targets)
    found = cell_peaks(goodput.counting_levels(data.levels, checks))
    # a busy host at any level of the cell might have pushed a level over the SLO: no verdict, as for the peak
    # (suspects.py; the goodput's own level is never suspect, so only the busy host's reasons of other levels remain)
    valid = data.levels[data.levels["valid"].astype(bool)]
    found["peak_suspect"] = ["; ".join(suspects.peak_reasons(valid[(valid["model"] == m) & (valid["config"] == c)],
                                                             int(at))) or None
                             for m, c, at in zip(found["model"], found["config"], found["optimal_concurrency"])]
    # the peak's noise rules: the cell's run-to-run spread from its peaks' history and, under design: aba, its
    # model's baseline drift (never the peaks' mean, which is no goodput: reference_moved asks the baseline's peak)
    keyed = peaks.set_index(["model", "config"])
    for col in ("history_sd", "history_n", "drift_pct"):
        if col in keyed.columns:
            found[col] = [keyed[col].get((m, c)) for m, c in zip(found["model"], found["config"])]
    level_tps = valid.groupby(["model", "config", "concurrency"])["output_tps_mean"].mean().to_dict()
    for i, cell in out.iterrows():
        model, config = cell["model"], cell["config"]
        mine, base = _cell_row(found, model, config), _cell_row(found, model, baseline)
        tps = {int(c): float(v) for (m, k, c), v in level_tps.items() if (m, k) == (model, config)}
        conc = None if mine is None else int(mine["optimal_concurrency"])
        out.at[i, "goodput_reason"] = goodput.reason(checks, model, config, conc, tps)
        if mine is None:
            out.at[i, "goodput_judgement"] = goodput.NO_GOODPUT
            continue
        out.at[i, "goodput_output_tps"] = float(mine["peak_output_tps"])
        out.at[i, "goodput_concurrency"] = conc
        out.at[i, "goodput_ci_low"], out.at[i, "goodput_ci_high"] = mine["peak_ci_low"], mine["peak_ci_high"]
        out.at[i, "goodput_noise_basis"] = mine["noise_basis"]
        base_peak = _cell_row(peaks, model, baseline)
        if config == baseline:
            out.at[i, "goodput_judgement"] = "baseline"
        elif base is None:
            out.at[i, "goodput_judgement"] = "no baseline" if base_peak is None else goodput.NO_BASELINE_GOODPUT
        else:
            moved = reference_moved(base_peak) if base_peak is not None else None
            d = _versus(mine, base, floor_pct)
            out.at[i, "goodput_vs_baseline_pct"] = d["tps_pct"]
            out.at[i, "goodput_judgement"], out.at[i, "goodput_basis"] = (NO_VERDICT, moved) if moved else \
                (d["judgement"], d["basis"])
    out["goodput_concurrency"] = pd.to_numeric(out["goodput_concurrency"], errors="coerce").astype("Int64")
    for col in ("goodput_output_tps", "goodput_ci_low", "goodput_ci_high", "goodput_vs_baseline_pct"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out
