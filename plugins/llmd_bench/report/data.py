"""Where a report's data comes from: the results store (a run, with the earlier runs and other llm-d versions
the cross-version and previous-run analysis compare it with) or a folder of per-cell metrics CSVs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmd_bench.campaign import METHOD_DEFAULTS
from llmd_bench.errors import LlmdBenchError
from llmd_bench.noise import MAX_HISTORY
from llmd_bench.report.analysis import is_missing, normalize_levels

__all__ = ["CELL_COLUMNS", "CROSS_VERSION_SQL", "CSV_REQUIRED", "HISTORY_SQL", "OBSERVATION_COLUMNS",
           "PREVIOUS_RUNS_SQL", "ReportInput", "from_csv_dir", "from_store", "is_missing"]

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
    # (PREVIOUS_RUNS_SQL), for the comparison with the previous run.
    previous_runs: pd.DataFrame | None = None
    # Each cell's earlier peaks (one per run and trial, oldest first) that measured the same thing:
    # the noise model's history (noise.py, HISTORY_SQL).
    history: pd.DataFrame | None = None

    @property
    def simulated(self) -> bool:
        return self.runtime == "local"


# -- from the results store ---------------------------------------------------------------------------
# A cell's labels in the report: the stack factors go with the model ('Qwen3-8B [replicas=2]'), so every
# configuration is compared with the baseline under the same replicas, TP and memory regime; configuration
# factors go with the configuration ('native-offload [offload_size=20k]').
MODEL_LABEL = "(c.short_model || CASE WHEN c.stack_factors <> '' THEN ' [' || c.stack_factors || ']' ELSE '' END)"
CONFIG_LABEL = "(c.config || CASE WHEN c.config_factors <> '' THEN ' [' || c.config_factors || ']' ELSE '' END)"

LEVELS_SQL = f"""
SELECT {MODEL_LABEL} AS model, {CONFIG_LABEL} AS config, c.trial, l.concurrency, l.output_tps_mean,
       l.output_tps_std, l.ttft_ms_mean AS ttft_mean_ms, l.tpot_ms_mean AS tpot_mean_ms, l.itl_ms_mean AS itl_mean_ms,
       l.ttft_ms_p90 AS ttft_p90_ms, l.ttft_ms_p99 AS ttft_p99_ms, l.tpot_ms_p90 AS tpot_p90_ms,
       l.tpot_ms_p99 AS tpot_p99_ms, l.requests_successful, l.requests_errored, l.requests_incomplete,
       l.request_latency_s_mean AS request_latency_mean_s,
       (l.summary #>> '{{metrics,request_latency,successful,std_dev}}')::float AS request_latency_std_s,
       l.valid, l.invalid_reason, l.suspect_reason
FROM level_results l JOIN cells c ON c.id = l.cell_id
WHERE c.run_id = :run_pk
ORDER BY 1, 2, c.trial, l.concurrency
"""

CELLS_SQL = f"""
SELECT {MODEL_LABEL} AS model, c.model AS full_model, {CONFIG_LABEL} AS config, c.config AS configuration,
       -- a cell's status is its worst trial's
       CASE WHEN bool_or(c.status = 'failed') THEN 'failed' WHEN bool_and(c.status = 'skipped') THEN 'skipped'
            WHEN bool_or(c.status = 'ok') THEN 'ok' ELSE 'invalid' END AS status,
       string_agg(DISTINCT c.reason, '; ') AS reason, max(c.replicas) AS replicas,
       ((array_agg(c.factors ORDER BY c.trial))[1])::text AS factors_json,
       ((array_agg(c.sweep ORDER BY c.trial))[1])::text AS sweep_json,
       ((array_agg(c.gpu_time ORDER BY c.trial))[1])::text AS gpu_time_json,
       ((array_agg(c.config_effect ORDER BY c.trial))[1])::text AS config_effect_json,
       ((array_agg(c.observability ORDER BY c.trial))[1])::text AS observability_json,
       ((array_agg(c.stack ORDER BY c.trial))[1])::text AS stack_json,
       -- the served-configuration proof of every trial (a differing trial makes the cell's status 'differs')
       json_agg(c.served ORDER BY c.trial)::text AS served_json
FROM cells c WHERE c.run_id = :run_pk GROUP BY 1, c.model, 3, c.config
"""

OBSERVATIONS_SQL = f"""
SELECT {MODEL_LABEL} AS model, {CONFIG_LABEL} AS config, o.concurrency, o.source, o.metric, avg(o.value) AS value
FROM level_observations o JOIN cells c ON c.id = o.cell_id
WHERE c.run_id = :run_pk
GROUP BY 1, 2, o.concurrency, o.source, o.metric
"""

# Peaks per run and cell for every llm-d version of a campaign, aggregated in SQL: the peak level of
# each cell (with its dispersion), then per version x model x config the mean over runs and trials.
CROSS_VERSION_SQL = f"""
WITH peak_levels AS (
    SELECT DISTINCT ON (l.cell_id)
           l.id AS level_id, r.llmd_version, r.id AS run_pk, {MODEL_LABEL} AS short_model, {CONFIG_LABEL} AS config,
           l.output_tps_mean
    FROM runs r
    JOIN cells c ON c.run_id = r.id
    JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    WHERE r.campaign = :campaign
    ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
), with_se AS (
    -- the single-run standard error, as in the peak table (analysis._interval): the relative SE of the mean
    -- request latency and the window's edge (one request per stream), read from the JSONB summary of the
    -- peak rows only, never of every level
    SELECT p.*, p.output_tps_mean * sqrt(
               coalesce(power((l.summary #>> '{{metrics,request_latency,successful,std_dev}}')::float
                              / nullif(l.request_latency_s_mean, 0), 2) / greatest(l.requests_successful, 1), 0)
               + power(l.concurrency::float / greatest(l.requests_successful, 1) / 1.96, 2)) AS within_level_se
    FROM peak_levels p JOIN level_results l ON l.id = p.level_id
)
SELECT llmd_version, short_model AS model, config, count(*) AS samples, count(DISTINCT run_pk) AS runs,
       avg(output_tps_mean) AS peak_output_tps, stddev_samp(output_tps_mean) AS peak_std,
       avg(within_level_se) AS within_level_se
FROM with_se
GROUP BY llmd_version, short_model, config
"""

# Weekly drift: peaks per cell of this run and of the earlier runs of the same campaign at the same llm-d
# version, computed as in CROSS_VERSION_SQL but per run. Earlier = started (first level) before this run,
# ties broken by insertion order. Only runs that measured the same thing are candidates: the same
# workload params (levels, durations, tokens, turns, TP, replicas) and simulated only against simulated
# (the local runtime's numbers say nothing about a cluster's). The last 10 such runs are enough to find,
# per cell, the latest one that has a valid peak.
WORKLOAD_PARAMS = ("concurrency", "duration_s", "prompt_tokens", "output_tokens", "prefix_tokens", "turns",
                   "tensor_parallel_size", "replicas")
# The method, as JSON defaults for runs stored before it was a setting (the February method's).
METHOD_PARAMS = {k: json.dumps(v) for k, v in METHOD_DEFAULTS.model_dump().items()}
# The runs that measured the same thing as run :run_pk, before it (the latest :max_runs): `cur`, `earlier`.
EARLIER_RUNS_CTE = """
WITH cur AS (
    SELECT id, campaign, llmd_version, runtime, params, coalesce(started_at, created_at) AS t FROM runs WHERE id = :run_pk
), earlier AS (
    SELECT r.id, r.dag_run_id, coalesce(r.started_at, r.created_at) AS t
    FROM runs r, cur
    WHERE r.campaign = cur.campaign AND r.llmd_version = cur.llmd_version AND r.id <> cur.id
      AND (r.runtime = 'local') = (cur.runtime = 'local')
      AND (coalesce(r.started_at, r.created_at), r.id) < (cur.t, cur.id)
      AND """ + " AND ".join(f"(r.params -> '{k}') IS NOT DISTINCT FROM (cur.params -> '{k}')" for k in WORKLOAD_PARAMS) + """
      AND """ + " AND ".join(f"coalesce(r.params -> '{k}', '{v}'::jsonb) = coalesce(cur.params -> '{k}', '{v}'::jsonb)"
                            for k, v in METHOD_PARAMS.items()) + """
    ORDER BY t DESC, r.id DESC
    LIMIT :max_runs
)"""
PREVIOUS_RUNS = 10
PREVIOUS_RUNS_SQL = EARLIER_RUNS_CTE + f""", candidates AS (
    SELECT id, dag_run_id, t, false AS is_current FROM earlier
    UNION ALL
    SELECT r.id, r.dag_run_id, cur.t, true FROM runs r JOIN cur ON cur.id = r.id
), peak_levels AS (
    SELECT DISTINCT ON (l.cell_id)
           l.id AS level_id, r.id AS run_pk, r.dag_run_id, r.t, r.is_current, {MODEL_LABEL} AS short_model,
           {CONFIG_LABEL} AS config, l.output_tps_mean
    FROM candidates r
    JOIN cells c ON c.run_id = r.id
    JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
), with_se AS (
    SELECT p.*, p.output_tps_mean * sqrt(
               coalesce(power((l.summary #>> '{{metrics,request_latency,successful,std_dev}}')::float
                              / nullif(l.request_latency_s_mean, 0), 2) / greatest(l.requests_successful, 1), 0)
               + power(l.concurrency::float / greatest(l.requests_successful, 1) / 1.96, 2)) AS within_level_se
    FROM peak_levels p JOIN level_results l ON l.id = p.level_id
)
SELECT run_pk, dag_run_id, t, is_current, short_model AS model, config, count(*) AS samples,
       avg(output_tps_mean) AS peak_output_tps, stddev_samp(output_tps_mean) AS peak_std,
       avg(within_level_se) AS within_level_se
FROM with_se
GROUP BY run_pk, dag_run_id, t, is_current, short_model, config
"""


# The noise model's history: every trial's peak of the earlier runs that measured the same thing as this
# run (the same filter as PREVIOUS_RUNS_SQL), the latest noise.MAX_HISTORY runs.
HISTORY_SQL = EARLIER_RUNS_CTE + f"""
SELECT DISTINCT ON (l.cell_id) {MODEL_LABEL} AS model, {CONFIG_LABEL} AS config, e.t, e.id AS run_pk, c.trial,
       l.output_tps_mean AS peak_output_tps
FROM earlier e
JOIN cells c ON c.run_id = e.id
JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
"""


def from_store(engine: Any, run_id: str, campaign: str | None = None) -> ReportInput:
    from sqlalchemy import text

    from llmd_bench.db.store import the_run

    with engine.connect() as conn:
        q = "SELECT id, campaign, dag_run_id, runtime, llmd_version, vllm_version, guidellm_version, llmd_bench_version, " \
            "images, params FROM runs WHERE dag_run_id = :run_id" + (" AND campaign = :campaign" if campaign else "")
        run = the_run(conn.execute(text(q), {"run_id": run_id, "campaign": campaign}).mappings().all(), run_id, campaign,
                      lambda r: r["campaign"])
        levels = pd.DataFrame(conn.execute(text(LEVELS_SQL), {"run_pk": run["id"]}).mappings().all())
        cells = pd.DataFrame(conn.execute(text(CELLS_SQL), {"run_pk": run["id"]}).mappings().all())
        observations = pd.DataFrame(conn.execute(text(OBSERVATIONS_SQL), {"run_pk": run["id"]}).mappings().all())
        cross = pd.DataFrame(conn.execute(text(CROSS_VERSION_SQL), {"campaign": run["campaign"]}).mappings().all())
        previous = pd.DataFrame(conn.execute(text(PREVIOUS_RUNS_SQL), {"run_pk": run["id"],
                                                                       "max_runs": PREVIOUS_RUNS}).mappings().all())
        history = pd.DataFrame(conn.execute(text(HISTORY_SQL), {"run_pk": run["id"],
                                                                "max_runs": MAX_HISTORY}).mappings().all())
    if levels.empty:
        levels = pd.DataFrame(columns=["model", "config", "trial", "concurrency", "output_tps_mean"])
    cells = _cells_frame(cells)
    versions = {"llm-d": run["llmd_version"], "vLLM": run["vllm_version"], "GuideLLM": run["guidellm_version"],
                "llmd-bench": run["llmd_bench_version"], **{f"image {k}": v for k, v in (run["images"] or {}).items()}}
    return ReportInput(campaign=run["campaign"], run_id=run["dag_run_id"], runtime=run["runtime"],
                       levels=normalize_levels(levels), cells=cells, versions=versions, params=run["params"] or {},
                       source=f"results store, run {run['dag_run_id']}",
                       cross_version=cross if len(cross["llmd_version"].unique() if not cross.empty else []) > 1 else None,
                       llmd_version=run["llmd_version"],
                       previous_runs=previous if not previous.empty and (~previous["is_current"]).any() else None,
                       observations=observations if not observations.empty else pd.DataFrame(columns=OBSERVATION_COLUMNS),
                       history=history.sort_values(["t", "run_pk", "trial"]) if not history.empty else None)


def _cells_frame(cells: pd.DataFrame) -> pd.DataFrame:
    if cells.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    import json

    effects = [json.loads(v) if v else {} for v in cells["config_effect_json"]]
    observability = [json.loads(v) if v else {} for v in cells["observability_json"]]
    factors = [json.loads(v) if v else {} for v in cells["factors_json"]]
    sweeps = [json.loads(v) if v else {} for v in cells["sweep_json"]]
    gpu_times = [json.loads(v) if v else {} for v in cells["gpu_time_json"]]
    stacks = [json.loads(v) if v else {} for v in cells["stack_json"]] if "stack_json" in cells else [{}] * len(cells)
    served = ([[t for t in json.loads(v) if t] if v else [] for v in cells["served_json"]] if "served_json" in cells
              else [[]] * len(cells))
    cells = cells.assign(config_effect=[e.get("verdict", "not measured") for e in effects],
                         config_effect_evidence=[e.get("evidence", "") for e in effects],
                         observability=observability, factors=factors, sweep=sweeps, gpu_time=gpu_times, stack=stacks,
                         served=served)
    # `stack` (Runtime.stack_metadata as stored; {} when not captured) and `served` (served.ServedHistory per trial;
    # [] when not proven) are optional like `observability`
    return cells[[c for c in CELL_COLUMNS + ["observability", "stack", "served"] if c in cells.columns]]


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

