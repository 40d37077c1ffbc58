"""`sweep: seeded` before the run: the store query a cell's seed is looked up with (one builder, for the sweep step
and for `llmd-bench plan`), what plan reads of the store, and which levels each cell will measure.

The decision is measure/seeded.py's decide_seed on store/history.py's SeedSources, as the sweep step makes it. Plan
knows no served stack yet (deploy captures it), so a bracket it shows becomes the full grid when the served stack
changed since the run it is seeded from; plan says so. The store read is at the edge (read_seed_history): short
timeouts, only a configured store (never the local server), and on any failure the cells are left undecided and
counted at their bound (the grid plus refinement), with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from llmd_bench.measure import seeded
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Campaign, Cell
from llmd_bench.model.params import RunParams, stored_params
from llmd_bench.model.runtimes import simulated_runtime
from llmd_bench.model.settings import results_store_url

if TYPE_CHECKING:
    from llmd_bench.store.history import SeedQuery

# plan stays fast: a statement may take this long, and the first failure ends the read (plan_estimate's bounds)
STATEMENT_TIMEOUT_MS = 5000


def seed_query(campaign: Campaign, params: RunParams, cell: Cell, *, runtime: str, run_id: str,
               versions: Sequence[str] | None = None) -> SeedQuery:
    """The store query of `cell`'s seed: the cell, the run's llm-d version and kind of runtime, its params as stored
    (StepContext.stored_params: the cell's params plus the warm-up and GPU-hour cost) and the catalog's versions.
    `run_id`'s own rows are left out (a retried sweep does not seed from itself)."""
    from llmd_bench.store.history import SeedQuery  # deferred: loads sqlalchemy

    cell_params = params.for_cell(cell)
    stored = stored_params(campaign, cell_params)
    return SeedQuery(campaign=campaign.dag_id, model=cell.model, config=cell.config, stack_factors=cell.stack_factors,
                     config_factors=cell.config_factors, llmd_version=cell_params.llmd_version,
                     simulated=simulated_runtime(runtime), params=stored, exclude_run=run_id,
                     versions=tuple(catalog.known_versions() if versions is None else versions))


@dataclass(frozen=True)
class SeedHistory:
    """What plan read of the store for seeded cells: each cell's SeedSources by its group id (a cell missing: not
    read), and where they came from or why not."""

    sources: Mapping[str, seeded.SeedSources] = field(default_factory=dict)
    status: str = "seed history not read: the cells are undecided and counted at their bound"


def _read_only(url: str) -> str:
    """The URL with a statement timeout and read-only transactions added to libpq's `options`."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    ours = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c default_transaction_read_only=on"
    query["options"] = f"{query['options']} {ours}" if query.get("options") else ours
    return urlunsplit(parts._replace(query=urlencode(query)))


def read_seed_history(campaign: Campaign, params: RunParams, runtime: str, url: str | None = None,
                      run_id: str = "<run id>") -> SeedHistory:
    """The seed sources of every selected cell from the configured store (else the local server when it is running),
    one query per cell, read-only with short timeouts; the first failure ends the read (the cells left undecided).
    Never raises, never starts a server."""
    from llmd_bench.store import db, history  # deferred: loads sqlalchemy
    from llmd_bench.store.server import running_local_url  # deferred: loads the server's helpers

    # the configured store; else on the local runtime, whose steps fall back to it, this checkout's local server if
    # it is running
    url = url or results_store_url() or (running_local_url() if simulated_runtime(runtime) else None)
    if not url:
        return SeedHistory(status="no results store configured (LLMD_BENCH_DB_URL, AIRFLOW_CONN_LLMD_RESULTS) and the "
                           "local one is not running: seeded cells undecided, counted at their bound")
    try:
        where = db.redacted(url)
    except ValueError:
        where = "the configured store"
    cells = [c for c in campaign.cells() if params.selects(c)]
    sources: dict[str, seeded.SeedSources] = {}
    engine = db.make_engine(_read_only(url))
    try:
        for cell in cells:
            query = seed_query(campaign, params, cell, runtime=runtime, run_id=run_id)
            sources[cell.group_id] = history.seed_sources_from(engine, query)
    except Exception as exc:  # noqa: BLE001 - plan must never fail for the store: the cells fall back to the bound
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return SeedHistory(status=f"results store {where} not read ({first[:160]}): seeded cells undecided, counted "
                           "at their bound")
    finally:
        engine.dispose()
    return SeedHistory(sources=sources, status=f"results store {where}: the seed history of {len(sources)} cell(s)")


PlannedMode = Literal["bracket", "full-grid", "adaptive", "undecided"]


class SeededCellPlan(BaseModel):
    """Which levels a seeded cell will measure, as plan counts them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: PlannedMode
    reason: str
    seeded_from: seeded.SeedSource | None = None
    levels: list[int]  # trial 1's levels known before the run (a bracket; else the grid)
    first_runs: list[list[int]]  # trial 1's GuideLLM runs known before the run
    refine: int  # refinement levels at most
    counted_levels: int  # levels per trial the estimate counts
    at_most_levels: int  # levels per trial at most (the grid plus refinement)
    guidellm_runs: int  # trial 1's GuideLLM runs the estimate counts
    bound: bool  # counted_levels is an upper bound, not an expectation
    notes: list[str]

    def describe(self) -> str:
        """One line for plan's text."""
        said = {"bracket": f"bracket {','.join(map(str, self.levels))}",
                "full-grid": "full grid", "adaptive": "adaptive", "undecided": "undecided"}[self.mode]
        return f"seeded: {said} ({self.reason})" + "".join(f"; {n}" for n in self.notes)


def decide(history: SeedHistory | None, cell: Cell, full_grid_every: int) -> seeded.SeedDecision | str:
    """The cell's decision as the sweep will make it (no served stack known yet), or why there is none."""
    if history is None:
        return SeedHistory().status
    sources = history.sources.get(cell.group_id)
    if sources is None:
        return history.status
    return seeded.decide_seed(sources, None, full_grid_every)


def cell_plan(decision: seeded.SeedDecision | str, grid: Sequence[int], refine: int, one_run_per_level: bool,
              ) -> SeededCellPlan:
    """The levels and runs of a seeded cell: a bracket (one GuideLLM run, or one per level) that may widen and
    refines only when the peak moved; the full grid and its refinement; adaptive (one run per level, at most the grid
    and its refinement); undecided (the decision was not read): counted as the adaptive bound."""
    grid = list(grid)
    at_most = len(grid) + refine
    runs = [[c] for c in grid] if one_run_per_level else [grid]
    if isinstance(decision, str):
        return SeededCellPlan(mode="undecided", reason=decision, levels=grid, first_runs=[[c] for c in grid],
                              refine=refine, counted_levels=at_most, at_most_levels=at_most, guidellm_runs=at_most,
                              bound=True, notes=["the sweep decides at run time; counted as at most the grid plus "
                                                 f"{refine} refinement"])
    if decision.mode == "bracket":
        assert decision.source is not None, "a bracket has a source"
        levels = seeded.bracket(grid, decision.source.peak)
        notes = ["may widen one grid level at a time while the peak sits at an edge (at most the grid's "
                 f"{len(grid)} + {refine} refinement)", "refines only if the peak moved"]
        if decision.source.kind == "history":
            notes.append(f"the full grid instead if the served stack changed since run {decision.source.dag_run_id}")
        return SeededCellPlan(mode="bracket", reason=decision.reason, seeded_from=decision.source, levels=levels,
                              first_runs=[[c] for c in levels] if one_run_per_level else [levels], refine=refine,
                              counted_levels=len(levels), at_most_levels=at_most,
                              guidellm_runs=len(levels) if one_run_per_level else 1, bound=False, notes=notes)
    if decision.mode == "full-grid":
        return SeededCellPlan(mode="full-grid", reason=decision.reason, levels=grid, first_runs=runs, refine=refine,
                              counted_levels=at_most, at_most_levels=at_most,
                              guidellm_runs=len(runs) + refine, bound=False,
                              notes=[f"then up to {refine} refinement level(s)"] if refine else [])
    return SeededCellPlan(mode="adaptive", reason=decision.reason, levels=grid, first_runs=[[c] for c in grid],
                          refine=refine, counted_levels=at_most, at_most_levels=at_most, guidellm_runs=at_most,
                          bound=True, notes=[f"at most the grid plus {refine} refinement: stops past saturation"])
