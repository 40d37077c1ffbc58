"""Goodput under SLOs, the pure part: the run's latency targets (campaign.Slo, stored with the run's params), each
level's latency percentiles as a frame, and which levels count: valid, not suspect, measured in every trial of the
cell, and meeting every SLO in every trial. analysis.goodput_table picks each cell's goodput among the levels that
count and judges it against the baseline like the peak; goodput_section.py writes the section and its plots.

Percentiles are GuideLLM's of the level's successful requests (store/latency.py reads them from the stored summary).
The SLO's metrics map to GuideLLM's: ttft_ms -> time_to_first_token_ms (ms), itl_ms -> inter_token_latency_ms (ms),
request_latency_ms -> request_latency (seconds in GuideLLM: converted to ms here), GenerativeMetrics in
guidellm/benchmark/schemas/metrics.py @v0.8.1 (tests/fixtures/guidellm/0.8.1/report.json holds all three).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
from pydantic import ValidationError

from llmd_bench.model.campaign import Slo
from llmd_bench.store.latency import PERCENTILES, LevelLatencyRow

# the SLO's metric -> (the stored percentile's metric, factor to ms, as the report names it)
SLO_METRICS = {"ttft_ms": ("ttft_ms", 1.0, "TTFT"), "itl_ms": ("itl_ms", 1.0, "ITL"),
               "request_latency_ms": ("request_latency_s", 1000.0, "request latency")}
LATENCY_KEYS = ["model", "config", "trial", "concurrency"]
LATENCY_COLUMNS = LATENCY_KEYS + [f"{metric}_{pct}" for metric in SLO_METRICS for pct in PERCENTILES]

NO_SLO = "No SLO set: goodput is not computed (set `slo:` in the campaign or the trigger param)."
NO_SLO_REASON = "no SLO set"
NOT_RECORDED = "the levels' latency percentiles were not read (a report made from metrics CSVs has none)"
# goodput_judgement beside analysis's judgements (higher, lower, within noise, no verdict, ...)
NO_GOODPUT = "no goodput"  # no level of the cell meets every SLO
NO_BASELINE_GOODPUT = "no baseline goodput"


def targets_of(params: dict[str, Any] | None) -> tuple[dict[str, dict[str, float]], str | None]:
    """The run's SLO as stored with its params: metric -> percentile -> ms (empty: none set), and why it could not be
    read (a stored value this version does not understand), else None."""
    raw = (params or {}).get("slo")
    if raw is None or raw == {}:
        return {}, None
    try:
        return Slo.model_validate(raw).targets(), None
    except ValidationError as exc:
        first = exc.errors()[0]
        return {}, (f"the run's stored `slo` is not understood ({'.'.join(map(str, first['loc'])) or 'slo'}: "
                    f"{first['msg']}); allowed: {{ttft_ms|itl_ms|request_latency_ms: {{p50|p90|p95|p99: ms}}}}")


def slo_text(targets: dict[str, dict[str, float]]) -> str:
    """'TTFT p95 <= 500 ms; ITL p99 <= 20 ms', in the order of campaign.Slo."""
    return "; ".join(f"{SLO_METRICS[m][2]} {p} <= {v:g} ms" for m, limits in targets.items() for p, v in limits.items())


def slo_key(targets: dict[str, dict[str, float]]) -> str | None:
    """The SLO as one comparable string (stored with each cell's goodput: goodput of runs under other SLOs differ):
    'itl_ms.p99<=20,ttft_ms.p95<=500', sorted; None when no SLO is set."""
    parts = sorted(f"{m}.{p}<={v:g}" for m, limits in targets.items() for p, v in limits.items())
    return ",".join(parts) or None


def latency_frame(rows: Iterable[LevelLatencyRow]) -> pd.DataFrame:
    """Each level's percentiles under the SLO's names, in ms (request latency converted from GuideLLM's seconds)."""
    out = []
    for r in rows:
        row: dict[str, Any] = {"model": r.model_label, "config": r.config_label, "trial": r.trial,
                               "concurrency": r.concurrency}
        for slo_metric, (stored, factor, _) in SLO_METRICS.items():
            for pct in PERCENTILES:
                value = r.percentile(stored, pct)
                row[f"{slo_metric}_{pct}"] = None if value is None else value * factor
        out.append(row)
    return pd.DataFrame(out, columns=LATENCY_COLUMNS)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _misses(row: pd.Series, targets: dict[str, dict[str, float]]) -> list[str]:
    """The SLO targets one level of one trial misses, each with its value; a percentile not recorded misses."""
    misses = []
    for metric, limits in targets.items():
        name = SLO_METRICS[metric][2]
        for pct, limit in limits.items():
            value = row.get(f"{metric}_{pct}")
            if _missing(value):
                misses.append(f"{name} {pct} not recorded")
            elif float(value) > limit:
                misses.append(f"{name} {pct} {float(value):,.1f} ms > {limit:g} ms")
    return misses


CHECK_COLUMNS = ["model", "config", "concurrency", "counts", "why"]


def level_checks(levels: pd.DataFrame, latency: pd.DataFrame, targets: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per model x config x concurrency: whether the level counts for goodput and, when not, why (its first trial
    that does not). A level counts when in every trial of the cell it is valid, not suspect and meets every SLO."""
    if levels.empty:
        return pd.DataFrame(columns=CHECK_COLUMNS)
    merged = levels.merge(latency, on=LATENCY_KEYS, how="left")
    trials = levels.groupby(["model", "config"])["trial"].nunique().to_dict()
    out = []
    for (model, config, concurrency), g in merged.groupby(["model", "config", "concurrency"], sort=False):
        why = None
        for r in g.sort_values("trial").itertuples():
            row = pd.Series(r._asdict())
            where = f" (trial {r.trial})" if trials[(model, config)] > 1 else ""
            if not bool(r.valid):
                why = f"invalid{where}: {r.invalid_reason or 'no reason recorded'}"
            elif isinstance(r.suspect_reason, str) and r.suspect_reason:
                why = f"suspect{where}: {r.suspect_reason}"
            else:
                misses = _misses(row, targets)
                why = "; ".join(misses) + where if misses else None
            if why:
                break
        if why is None and g["trial"].nunique() < trials[(model, config)]:
            why = f"measured in {g['trial'].nunique()} of {trials[(model, config)]} trials"
        out.append({"model": model, "config": config, "concurrency": int(concurrency), "counts": why is None,
                    "why": why})
    return pd.DataFrame(out, columns=CHECK_COLUMNS)


def counting_levels(levels: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """The levels frame with only the levels that count left valid (analysis.cell_peaks then picks the goodput the
    way it picks the peak: the highest mean output tokens/s, ties to the lower concurrency)."""
    counts = {(r.model, r.config, int(r.concurrency)) for r in checks.itertuples() if r.counts}
    out = levels.copy()
    keys = zip(out["model"], out["config"], out["concurrency"].astype(int))
    out["valid"] = out["valid"].astype(bool) & pd.Series([k in counts for k in keys], index=out.index)
    return out


def reason(checks: pd.DataFrame, model: str, config: str, concurrency: int | None,
           tps: dict[int, float] | None = None) -> str:
    """Why the cell's goodput is where it is: the level above it that does not count (what limits it), or that
    every level up to the highest measured meets the SLO; with no goodput, why the lowest level does not count."""
    mine = checks[(checks["model"] == model) & (checks["config"] == config)].sort_values("concurrency")
    if mine.empty:
        return "no level measured"
    if concurrency is None:
        first = mine.iloc[0]
        return f"no level meets every SLO; the lowest, c={int(first['concurrency'])}: {first['why']}"
    above = mine[mine["concurrency"] > concurrency]
    if above.empty:
        return f"the highest level measured (c={concurrency}) meets every SLO"
    nxt = above.iloc[0]
    if nxt["counts"]:
        at = f" ({tps[int(nxt['concurrency'])]:,.1f} tok/s)" if tps and int(nxt["concurrency"]) in tps else ""
        return f"c={int(nxt['concurrency'])} meets every SLO too, with fewer output tokens/s{at}"
    failing = int((~above["counts"].astype(bool)).sum())
    more = f" ({failing - 1} more above it do not count)" if failing > 1 else ""
    return f"c={int(nxt['concurrency'])}: {nxt['why']}{more}"
