"""Read side of the results store: every query the package runs, each returning store/rows.py's typed rows.
Aggregations over many runs (peaks per version, per earlier run, the noise model's history) run in SQL, never by
pulling every level row into Python."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from llmd_bench.model.campaign import METHOD_DEFAULTS
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import simulated_runtimes
from llmd_bench.store.db import make_engine, redacted, with_engine
from llmd_bench.store.rows import (
    CellRow,
    GpuTimeHistoryRow,
    LatestPeakRow,
    LevelRow,
    ObservationRow,
    PeakRow,
    RunPeakRow,
    RunRow,
    StoredCell,
    StoredReportRow,
    StoredRun,
    TrialPeakRow,
)
from llmd_bench.store.trend_rows import GOODPUT_KEY, GOODPUT_SLO_KEY, TrendPeakRow

T = TypeVar("T")

# -- one run, as stored ------------------------------------------------------------------------------------------
RUN_COLUMNS = [name for name in RunRow.model_fields]
CELL_COLUMNS = [name for name in CellRow.model_fields]
# request_latency_s_std and summary are read from the summary JSONB (the summary only when asked: ~7 KiB a level)
LEVEL_COLUMNS = [name for name in LevelRow.model_fields if name not in ("request_latency_s_std", "summary")]
REQUEST_LATENCY_STD = "(summary #>> '{metrics,request_latency,successful,std_dev}')::float"

RUNS_SQL = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE dag_run_id = :run_id"
CELLS_SQL = f"""
SELECT {', '.join(CELL_COLUMNS)} FROM cells WHERE run_id = :run_pk
ORDER BY model, config, stack_factors, config_factors, trial
"""
LEVELS_SQL = """
SELECT {columns}, {std} AS request_latency_s_std, {summary} AS summary
FROM level_results WHERE cell_id IN (SELECT id FROM cells WHERE run_id = :run_pk) ORDER BY cell_id, concurrency
"""
OBSERVATIONS_SQL = """
SELECT cell_id, concurrency, source, metric, value
FROM level_observations WHERE cell_id IN (SELECT id FROM cells WHERE run_id = :run_pk)
ORDER BY cell_id, concurrency, source, metric
"""
REPORT_SQL = "SELECT markdown, html FROM reports WHERE campaign = :campaign AND dag_run_id = :run_id"


def the_run(runs: Sequence[T], run_id: str, campaign: str | None, campaign_of: Callable[[T], str],
            error: type[LlmdBenchError] = LlmdBenchError) -> T:
    """The one stored run with this id (in this campaign): backfills of two campaigns share run ids, so
    several is an error that says to pass --campaign, as is none."""
    if not runs:
        raise error(f"run {run_id!r} is not in the results store" + (f" for campaign {campaign}" if campaign else ""))
    if len(runs) > 1:
        raise error(f"run id {run_id!r} exists in several campaigns {sorted(campaign_of(r) for r in runs)}: pass --campaign")
    return runs[0]


def stored_run(engine: Engine, run_id: str, campaign: str | None = None, error: type[LlmdBenchError] = LlmdBenchError,
               summaries: bool = True) -> StoredRun:
    """The run `run_id` (of `campaign`, which several campaigns sharing the id need) with its cells, their levels and
    observations and its stored report. summaries: also each level's GuideLLM summary (LevelRow.summary, else None).
    A run that is missing, or whose id several campaigns share when none is named, is `error`."""
    with engine.connect() as conn:
        found = conn.execute(text(RUNS_SQL + (" AND campaign = :campaign" if campaign else "")),
                             {"run_id": run_id, "campaign": campaign}).mappings().all()
        run = RunRow.model_validate(dict(the_run(found, run_id, campaign, lambda r: str(r["campaign"]), error)))
        cells = [CellRow.model_validate(dict(r)) for r in conn.execute(text(CELLS_SQL), {"run_pk": run.id}).mappings()]
        levels_sql = LEVELS_SQL.format(columns=", ".join(LEVEL_COLUMNS), std=REQUEST_LATENCY_STD,
                                       summary="summary" if summaries else "NULL::jsonb")
        levels: dict[int, list[LevelRow]] = {c.id: [] for c in cells}
        for r in conn.execute(text(levels_sql), {"run_pk": run.id}).mappings():
            level = LevelRow.model_validate(dict(r))
            levels[level.cell_id].append(level)
        observations: dict[int, list[ObservationRow]] = {c.id: [] for c in cells}
        for r in conn.execute(text(OBSERVATIONS_SQL), {"run_pk": run.id}).mappings():
            observation = ObservationRow.model_validate(dict(r))
            observations[observation.cell_id].append(observation)
        report = conn.execute(text(REPORT_SQL), {"campaign": run.campaign, "run_id": run.dag_run_id}).mappings().first()
    return StoredRun(run=run, cells=tuple(StoredCell(cell=c, levels=tuple(levels[c.id]),
                                                     observations=tuple(observations[c.id])) for c in cells),
                     report=StoredReportRow.model_validate(dict(report)) if report else None)


def read_stored_run(run_id: str, campaign: str | None = None, url: str | None = None,
                    error: type[LlmdBenchError] = LlmdBenchError, summaries: bool = True) -> StoredRun:
    """stored_run against the configured results store (or `url`), retried while it is unreachable."""
    return with_engine(lambda engine: stored_run(engine, run_id, campaign, error, summaries), f"reading run {run_id}", url)


# -- the peaks a run is compared with ----------------------------------------------------------------------------
# Peaks per run and cell for every llm-d version of a campaign, aggregated in SQL: the peak level of each cell (with
# its dispersion), then per version x cell the mean over runs and trials.
CELL_KEY = "c.short_model, c.stack_factors, c.config, c.config_factors"
PEAK_KEY = "short_model, stack_factors, config, config_factors"
# the single-run standard error, as in the peak table (analysis._interval): the relative SE of the mean request
# latency and the window's edge (one request per stream), read from the JSONB summary of the peak rows only
WITHIN_LEVEL_SE = """p.output_tps_mean * sqrt(
               coalesce(power((l.summary #>> '{metrics,request_latency,successful,std_dev}')::float
                              / nullif(l.request_latency_s_mean, 0), 2) / greatest(l.requests_successful, 1), 0)
               + power(l.concurrency::float / greatest(l.requests_successful, 1) / 1.96, 2))"""


# The params that say what a run measured: an earlier run is compared with this one (the previous-run comparison,
# the noise model's history) only when they are equal, and simulated runs only with simulated ones (the local
# runtime's numbers say nothing about a cluster's). The method's params (campaign.Method) count with their defaults
# (METHOD_DEFAULTS, the February method's) for runs stored before they were params.
WORKLOAD_PARAMS = ("concurrency", "duration_s", "prompt_tokens", "output_tokens", "prefix_tokens", "turns",
                   "tensor_parallel_size", "replicas")
# The method params' defaults, as JSON
METHOD_PARAMS = {k: json.dumps(v) for k, v in METHOD_DEFAULTS.model_dump().items()}


# A run's placement kind (rows.Placement: alone, shared, lane): its cells share the campaign's lanes; cells stored
# before placement was (no kind) ran as the campaign's lanes did then, counted as alone
PLACEMENT_KIND = ("(SELECT coalesce(max(c.placement ->> 'kind'), 'alone') FROM cells c WHERE c.run_id = {run})")


# `cur`: run :run_pk with its time and placement kind
CUR_CTE = """
WITH cur AS (
    SELECT id, campaign, llmd_version, runtime, params, coalesce(started_at, created_at) AS t,
           """ + PLACEMENT_KIND.format(run="runs.id") + """ AS placement_kind
    FROM runs WHERE id = :run_pk
)"""


def _measured_like_cur() -> str:
    """The condition that run `r` measured what `cur` did: the same kind of runtime (the runtimes whose serving is
    simulated are bound as :simulated), placement kind, workload and method params."""
    same_kind = "(r.runtime = ANY(CAST(:simulated AS text[]))) = (cur.runtime = ANY(CAST(:simulated AS text[])))"
    return (same_kind + """
      AND """ + PLACEMENT_KIND.format(run="r.id") + """ = cur.placement_kind
      AND """ + " AND ".join(f"(r.params -> '{k}') IS NOT DISTINCT FROM (cur.params -> '{k}')" for k in WORKLOAD_PARAMS) + """
      AND """ + " AND ".join(f"coalesce(r.params -> '{k}', '{v}'::jsonb) = coalesce(cur.params -> '{k}', '{v}'::jsonb)"
                            for k, v in METHOD_PARAMS.items()))


def _earlier_runs_cte() -> str:
    """`cur` (run :run_pk) and `earlier`: the latest :max_runs runs before it that measured the same thing (the
    runtimes whose serving is simulated are bound as :simulated)."""
    return CUR_CTE + """, earlier AS (
    SELECT r.id, r.dag_run_id, coalesce(r.started_at, r.created_at) AS t
    FROM runs r, cur
    WHERE r.campaign = cur.campaign AND r.llmd_version = cur.llmd_version AND r.id <> cur.id
      AND (coalesce(r.started_at, r.created_at), r.id) < (cur.t, cur.id)
      AND """ + _measured_like_cur() + """
    ORDER BY t DESC, r.id DESC
    LIMIT :max_runs
)"""


# Per llm-d version x cell: the peaks of the campaign's runs that measured what run :run_pk did (the same runtime kind,
# placement, workload and method params: a simulated run's numbers never average with a cluster's)
CROSS_VERSION_SQL = CUR_CTE + f""", peak_levels AS (
    SELECT DISTINCT ON (l.cell_id)
           l.id AS level_id, r.llmd_version, r.id AS run_pk, {CELL_KEY}, l.output_tps_mean
    FROM runs r
    JOIN cur ON r.campaign = cur.campaign
    JOIN cells c ON c.run_id = r.id
    JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    WHERE """ + _measured_like_cur() + f"""
    ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
), with_se AS (
    SELECT p.*, {WITHIN_LEVEL_SE} AS within_level_se
    FROM peak_levels p JOIN level_results l ON l.id = p.level_id
)
SELECT llmd_version, {PEAK_KEY}, count(*)::int AS samples, count(DISTINCT run_pk)::int AS runs,
       avg(output_tps_mean) AS peak_output_tps, stddev_samp(output_tps_mean) AS peak_std,
       avg(within_level_se) AS within_level_se
FROM with_se
GROUP BY llmd_version, {PEAK_KEY}
"""


PREVIOUS_RUNS_SQL = _earlier_runs_cte() + f""", candidates AS (
    SELECT id, dag_run_id, t, false AS is_current FROM earlier
    UNION ALL
    SELECT r.id, r.dag_run_id, cur.t, true FROM runs r JOIN cur ON cur.id = r.id
), peak_levels AS (
    SELECT DISTINCT ON (l.cell_id)
           l.id AS level_id, r.id AS run_pk, r.dag_run_id, r.t, r.is_current, {CELL_KEY}, l.output_tps_mean
    FROM candidates r
    JOIN cells c ON c.run_id = r.id
    JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
), with_se AS (
    SELECT p.*, {WITHIN_LEVEL_SE} AS within_level_se
    FROM peak_levels p JOIN level_results l ON l.id = p.level_id
)
SELECT run_pk, dag_run_id, t, is_current, {PEAK_KEY}, count(*)::int AS samples,
       avg(output_tps_mean) AS peak_output_tps, stddev_samp(output_tps_mean) AS peak_std,
       avg(within_level_se) AS within_level_se
FROM with_se
GROUP BY run_pk, dag_run_id, t, is_current, {PEAK_KEY}
"""

HISTORY_SQL = _earlier_runs_cte() + f"""
SELECT DISTINCT ON (l.cell_id) {CELL_KEY}, e.t, e.id AS run_pk, c.trial, l.output_tps_mean AS peak_output_tps
FROM earlier e
JOIN cells c ON c.run_id = e.id
JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
"""


def version_peaks(engine: Engine, run: RunRow) -> list[PeakRow]:
    """Per llm-d version x cell of `run`'s campaign: the peaks of the runs and trials that measured what `run` did
    (the cross-version comparison, the effect by version)."""
    with engine.connect() as conn:
        rows = conn.execute(text(CROSS_VERSION_SQL), {"run_pk": run.id, "simulated": simulated_runtimes()}).mappings()
        return [PeakRow.model_validate(dict(r)) for r in rows]


def run_peaks(engine: Engine, run: RunRow, max_runs: int) -> list[RunPeakRow]:
    """Per cell: the peaks of `run` (is_current) and of the latest `max_runs` earlier runs of its campaign at its llm-d
    version that measured the same thing (the previous-run comparison)."""
    with engine.connect() as conn:
        rows = conn.execute(text(PREVIOUS_RUNS_SQL),
                            {"run_pk": run.id, "max_runs": max_runs, "simulated": simulated_runtimes()}).mappings()
        return [RunPeakRow.model_validate(dict(r)) for r in rows]


def trial_peaks(engine: Engine, run: RunRow, max_runs: int) -> list[TrialPeakRow]:
    """Every trial's peak of the latest `max_runs` earlier runs that measured the same thing as `run` (the same
    filter as run_peaks): the noise model's history."""
    with engine.connect() as conn:
        rows = conn.execute(text(HISTORY_SQL),
                            {"run_pk": run.id, "max_runs": max_runs, "simulated": simulated_runtimes()}).mappings()
        return [TrialPeakRow.model_validate(dict(r)) for r in rows]


# -- a campaign's latest run ---------------------------------------------------------------------------------------
LATEST_RUN_PEAKS = """
WITH latest AS (
    SELECT id FROM runs WHERE campaign = :campaign ORDER BY created_at DESC, id DESC LIMIT 1
)
SELECT DISTINCT ON (c.id)
       c.model, c.short_model, c.config, c.trial, c.status,
       l.concurrency AS optimal_concurrency, l.output_tps_mean AS peak_output_tps,
       l.ttft_ms_mean, l.tpot_ms_mean, l.output_tps_std
FROM cells c
JOIN latest ON c.run_id = latest.id
LEFT JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
ORDER BY c.id, l.output_tps_mean DESC NULLS LAST, l.concurrency ASC
"""


def latest_run_peaks(engine: Engine, campaign: str) -> list[LatestPeakRow]:
    """Per cell of the campaign's latest run: the valid level with the highest mean output tokens/s."""
    with engine.connect() as conn:
        return [LatestPeakRow.model_validate(dict(r))
                for r in conn.execute(text(LATEST_RUN_PEAKS), {"campaign": campaign}).mappings()]


# -- measured GPU time (plan's estimate) ---------------------------------------------------------------------------
GPU_TIME_HISTORY_SQL = """
SELECT r.id AS run_pk, r.runtime, r.llmd_version, r.params, c.model, c.config, c.stack_factors, c.config_factors,
       c.trial, c.status, c.tensor_parallel_size, c.gpu_time,
       (SELECT count(*) FROM level_results l WHERE l.cell_id = c.id)::int AS levels
FROM cells c JOIN runs r ON r.id = c.run_id
WHERE c.model = ANY(%(models)s) AND r.runtime = %(runtime)s AND c.gpu_time <> '{}'::jsonb
ORDER BY r.created_at DESC, c.id
LIMIT %(limit)s
"""


def gpu_time_history(url: str, models: list[str], runtime: str, limit: int, connect_timeout_s: int,
                     statement_timeout_ms: int) -> list[GpuTimeHistoryRow]:
    """The newest `limit` cell x trial rows of these models on this runtime that have a GPU time, read once in a
    read-only session with these timeouts (no retries, no migration, never a server started): plan must stay fast
    and falls back to defaults on any error, which this raises."""
    import psycopg2  # deferred: loads psycopg2
    import psycopg2.extras

    dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    conn = psycopg2.connect(dsn, connect_timeout=connect_timeout_s, options=f"-c statement_timeout={statement_timeout_ms}")
    try:
        conn.set_session(readonly=True)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(GPU_TIME_HISTORY_SQL, {"models": list(models), "runtime": runtime, "limit": limit})
            return [GpuTimeHistoryRow.model_validate(dict(r)) for r in cur.fetchall()]
    finally:
        conn.close()


# -- trends over a campaign's runs ---------------------------------------------------------------------------------
# Per run x cell, the campaign's runs up to run :run_pk that measured what it measured (the same filter as the noise
# history, _measured_like_cur, over every llm-d version: a release is one of the things a trend shows), the latest
# :max_runs of them: the peak over trials, the goodput the run's stored report recorded in its peak table (the
# :goodput_key of the cell's row, when a number, with the SLO it met) and whether a trial's peak level was suspect.
MODEL_LABEL = "p.short_model || CASE WHEN p.stack_factors <> '' THEN ' [' || p.stack_factors || ']' ELSE '' END"
CONFIG_LABEL = "p.config || CASE WHEN p.config_factors <> '' THEN ' [' || p.config_factors || ']' ELSE '' END"
TRENDS_SQL = CUR_CTE + """, trend_runs AS (
    SELECT r.id, r.dag_run_id, r.llmd_version, coalesce(r.started_at, r.created_at) AS t, r.id = cur.id AS is_current
    FROM runs r, cur
    WHERE r.campaign = cur.campaign
      AND (coalesce(r.started_at, r.created_at), r.id) <= (cur.t, cur.id)
      AND """ + _measured_like_cur() + f"""
    ORDER BY t DESC, r.id DESC
    LIMIT :max_runs
), peak_levels AS (
    SELECT DISTINCT ON (l.cell_id)
           r.id AS run_pk, r.dag_run_id, r.llmd_version, r.t, r.is_current, {CELL_KEY}, l.output_tps_mean,
           l.suspect_reason IS NOT NULL AS suspect
    FROM trend_runs r
    JOIN cells c ON c.run_id = r.id
    JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    ORDER BY l.cell_id, l.output_tps_mean DESC, l.concurrency
), goodput AS (
    SELECT rep.dag_run_id, cell_row ->> 'model' AS model, cell_row ->> 'config' AS config,
           CASE WHEN jsonb_typeof(cell_row -> :goodput_key) = 'number' THEN (cell_row ->> :goodput_key)::float END AS goodput,
           cell_row ->> :goodput_slo_key AS goodput_slo
    FROM reports rep
    JOIN trend_runs r ON r.dag_run_id = rep.dag_run_id
    JOIN cur ON cur.campaign = rep.campaign
    CROSS JOIN LATERAL jsonb_array_elements(coalesce(rep.peak_table -> 'cells', '[]'::jsonb)) AS cell_row
), campaign_runs AS (
    SELECT count(*)::int AS n FROM runs r, cur
    WHERE r.campaign = cur.campaign AND (coalesce(r.started_at, r.created_at), r.id) <= (cur.t, cur.id)
)
SELECT p.run_pk, p.dag_run_id, p.llmd_version, p.t, p.is_current, p.short_model, p.stack_factors, p.config,
       p.config_factors, count(*)::int AS samples, avg(p.output_tps_mean) AS peak_output_tps,
       stddev_samp(p.output_tps_mean) AS peak_std, max(g.goodput) AS goodput_output_tps,
       max(g.goodput_slo) AS goodput_slo, bool_or(p.suspect) AS suspect,
       (SELECT n FROM campaign_runs) AS campaign_runs
FROM peak_levels p
LEFT JOIN goodput g ON g.dag_run_id = p.dag_run_id AND g.model = {MODEL_LABEL} AND g.config = {CONFIG_LABEL}
GROUP BY p.run_pk, p.dag_run_id, p.llmd_version, p.t, p.is_current, p.short_model, p.stack_factors, p.config,
         p.config_factors
ORDER BY p.t, p.run_pk, p.short_model, p.stack_factors, p.config, p.config_factors
"""
# A year of weekly runs
MAX_TREND_RUNS = 52


def campaign_trends(engine: Engine, run: RunRow, max_runs: int = MAX_TREND_RUNS) -> list[TrendPeakRow]:
    """Per run x cell, oldest first: the peaks (and stored goodput) of `run` (is_current) and of the latest earlier
    runs of its campaign that measured the same thing, at any llm-d version, `max_runs` runs in all."""
    with engine.connect() as conn:
        rows = conn.execute(text(TRENDS_SQL), {"run_pk": run.id, "max_runs": max_runs, "simulated": simulated_runtimes(),
                                               "goodput_key": GOODPUT_KEY, "goodput_slo_key": GOODPUT_SLO_KEY}).mappings()
        return [TrendPeakRow.model_validate(dict(r)) for r in rows]


CAMPAIGN_RUN_SQL = f"""
SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE campaign = :campaign AND (CAST(:run_id AS text) IS NULL OR dag_run_id = :run_id)
ORDER BY coalesce(started_at, created_at) DESC, id DESC LIMIT 1
"""


class StoreUnreadable(LlmdBenchError):
    """The results store did not answer, or could not be read (no schema yet): said in one line with where."""


def read_campaign_trends(url: str, campaign: str, run_id: str | None = None
                         ) -> tuple[RunRow | None, list[TrendPeakRow]]:
    """The campaign's run `run_id` (its latest when None) and its trends, read once from the store at `url` (no retry,
    no migration, never a server started: a page must answer); StoreUnreadable when the store cannot be read."""
    engine = make_engine(url)
    try:
        run = campaign_run(engine, campaign, run_id)
        return run, (campaign_trends(engine, run) if run is not None else [])
    except (OperationalError, ProgrammingError) as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise StoreUnreadable(f"the results store {redacted(url)} could not be read: "
                              f"{first[0] if first else type(exc).__name__}") from None
    finally:
        engine.dispose()


def campaign_run(engine: Engine, campaign: str, run_id: str | None = None) -> RunRow | None:
    """The campaign's run `run_id`, or its latest run (by start, else creation) when None; None when there is none."""
    with engine.connect() as conn:
        found = conn.execute(text(CAMPAIGN_RUN_SQL), {"campaign": campaign, "run_id": run_id}).mappings().first()
    return RunRow.model_validate(dict(found)) if found else None
