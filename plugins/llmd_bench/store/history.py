"""What a seeded sweep reads of a cell's history (seeded.SeedSources): its stored runs with their peak level, how
each was swept and the stack it served, read in SQL with the peak found per cell (never every level row).

The runs that count measured the same thing: the same campaign, model and configuration, the same workload and
method params (read.WORKLOAD_PARAMS, read.METHOD_PARAMS with the February defaults), the same runtime kind (simulated
or not), trial 1. Same factors and llm-d version: the cell's own history; an earlier llm-d version: a backfill's seed;
other factor values at this version: the configuration's other cells."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from llmd_bench.measure.seeded import PastSweep, SeedSources, StackFingerprint
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import simulated_runtimes
from llmd_bench.store.db import configured_or_local_url, make_engine, with_retries
from llmd_bench.store.read import METHOD_PARAMS, WORKLOAD_PARAMS
from llmd_bench.store.rows import factors_suffix


class StoreReadFailed(LlmdBenchError):
    """The store answered, but the history could not be read from it."""


# How many stored runs of the configuration a seed looks at (newest first)
MAX_ROWS = 200

SEED_HISTORY_SQL = """
SELECT r.dag_run_id, r.llmd_version, coalesce(r.started_at, r.created_at) AS at, r.params ->> 'sweep' AS policy,
       c.short_model, c.stack_factors, c.config, c.config_factors, c.sweep, c.stack, c.replicas,
       c.tensor_parallel_size,
       pk.concurrency AS peak, pk.output_tps_mean AS peak_output_tps
FROM runs r
JOIN cells c ON c.run_id = r.id
LEFT JOIN LATERAL (
    SELECT l.concurrency, l.output_tps_mean FROM level_results l
    WHERE l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
    ORDER BY l.output_tps_mean DESC, l.concurrency LIMIT 1
) pk ON true
WHERE r.campaign = :campaign AND c.model = :model AND c.config = :config AND c.trial = 1 AND c.status <> 'skipped'
  AND r.dag_run_id <> :exclude_run
  AND (r.runtime = ANY(CAST(:simulated_runtimes AS text[]))) = :simulated
  AND {same_params}
ORDER BY at DESC, r.id DESC
LIMIT :max_rows
"""


# compared per cell instead (a run's params are its first cell's, whose factors may set them)
CELL_PARAMS = ("replicas", "tensor_parallel_size")


def _same_params_sql() -> str:
    workload = [f"(r.params -> '{k}') IS NOT DISTINCT FROM CAST(:p_{k} AS jsonb)" for k in WORKLOAD_PARAMS
                if k not in CELL_PARAMS]
    method = [f"coalesce(r.params -> '{k}', '{v}'::jsonb) = CAST(:m_{k} AS jsonb)" for k, v in METHOD_PARAMS.items()]
    return " AND ".join(workload + method)


class SeedQuery(BaseModel):
    """The cell a seed is looked up for, and the run asking (left out of its own history)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign: str
    model: str
    config: str
    stack_factors: str
    config_factors: str
    llmd_version: str
    simulated: bool
    params: dict[str, Any]  # the run's params as stored (context.stored_params): the workload and method compared
    exclude_run: str
    versions: tuple[str, ...]  # the catalog's llm-d versions, oldest first: which stored versions are earlier


def _bind(query: SeedQuery) -> dict[str, Any]:
    binds: dict[str, Any] = {"campaign": query.campaign, "model": query.model, "config": query.config,
                             "exclude_run": query.exclude_run, "simulated_runtimes": simulated_runtimes(),
                             "simulated": query.simulated, "max_rows": MAX_ROWS}
    for k in (k for k in WORKLOAD_PARAMS if k not in CELL_PARAMS):
        binds[f"p_{k}"] = json.dumps(query.params[k]) if query.params.get(k) is not None else None
    for k, default in METHOD_PARAMS.items():
        binds[f"m_{k}"] = json.dumps(query.params[k]) if query.params.get(k) is not None else default
    return binds


def _mode(policy: str | None, sweep: Mapping[str, Any]) -> str:
    if policy == "seeded" and sweep.get("mode") in ("bracket", "full-grid", "adaptive"):
        return str(sweep["mode"])
    return "adaptive" if policy in ("adaptive", "seeded") else "grid"


def _past(row: Mapping[str, Any]) -> tuple[tuple[str, str], PastSweep]:
    at = row["at"]
    cell = (f"{row['short_model']}{factors_suffix(row['stack_factors'])} / "
            f"{row['config']}{factors_suffix(row['config_factors'])}")
    past = PastSweep(dag_run_id=row["dag_run_id"], llmd_version=row["llmd_version"], cell=cell,
                     at=at if isinstance(at, datetime) else datetime.fromisoformat(str(at)),
                     mode=_mode(row["policy"], row["sweep"] or {}),  # type: ignore[arg-type]
                     peak=row["peak"], peak_output_tps=row["peak_output_tps"],
                     stack=StackFingerprint.of(row["stack"]))
    return (row["stack_factors"], row["config_factors"]), past


def sources_from_rows(query: SeedQuery, rows: Sequence[Mapping[str, Any]]) -> SeedSources:
    """The rows (newest first) sorted into the cell's own runs, its newest earlier llm-d version's newest run, and
    the configuration's other cells at this version."""
    order = {v: i for i, v in enumerate(query.versions)}
    here = order.get(query.llmd_version)
    mine = (query.stack_factors, query.config_factors)
    same: list[PastSweep] = []
    others: list[PastSweep] = []
    earlier: list[PastSweep] = []
    for row in rows:
        factors, past = _past(row)
        if factors == mine and any(row[k] is not None and row[k] != query.params.get(k) for k in CELL_PARAMS):
            continue  # the same cell served by another number of replicas or GPUs per replica
        if past.llmd_version == query.llmd_version:
            (same if factors == mine else others).append(past)
        elif factors == mine and here is not None and order.get(past.llmd_version, here) < here:
            earlier.append(past)
    # the newest earlier version, then its newest run (the rows are newest first, so the first of that version)
    previous = max(earlier, key=lambda p: order[p.llmd_version], default=None)
    seen: set[str] = set()
    other_cells = []
    for past in others:
        if past.cell not in seen:  # the newest run of each other cell
            seen.add(past.cell)
            other_cells.append(past)
    return SeedSources(same_cell=tuple(same), previous_version=previous, other_cells=tuple(other_cells))


def seed_sources_from(engine: Engine, query: SeedQuery) -> SeedSources:
    sql = SEED_HISTORY_SQL.format(same_params=_same_params_sql())
    try:
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(text(sql), _bind(query)).mappings()]
    except ProgrammingError as exc:
        if "does not exist" in str(exc.orig):  # a store no run was ever loaded into: no history
            return SeedSources()
        raise StoreReadFailed(f"reading the history of {query.model} / {query.config}: {exc.orig}") from None
    return sources_from_rows(query, rows)


def seed_sources(query: SeedQuery, url: str | None = None, attempts: int = 3) -> SeedSources:
    """The seed sources of a cell from the results store, retried `attempts` times while it is unreachable (a sweep
    does not wait long for its seed: without one it sweeps adaptively; DatabaseUnavailable says why)."""
    url = url or configured_or_local_url()
    engine = make_engine(url)
    try:
        return with_retries(lambda: seed_sources_from(engine, query), f"reading the history of {query.model} / "
                            f"{query.config}", url, attempts=attempts, first_delay_s=1.0)
    finally:
        engine.dispose()
