"""What a planned cell will hold its GPUs for, per phase, before it runs (`llmd-bench plan`).

The phases are gpu_time.py's: model_load, warmup, measurement, idle, teardown. Each phase's estimate states its
source:

- measurement: the plan itself (levels x duration_s x trials; an upper bound when max_requests may end a level
  sooner or an adaptive sweep stops past saturation); a seeded sweep's levels (plan/seeding.py) x the seconds a level
  measured in the history (as a share of its run's duration_s; median, narrowed like the phases below), else
  duration_s;
- model_load, warmup, teardown, idle: the results store's measured history (`cells.gpu_time`, written by
  compare) of the same model on the same runtime, narrowed to the same llm-d version, tensor parallel size and
  configuration where such cells exist: the median seconds per model load, per warm-up (one after every load and
  every reset), per cell (teardown) and per GuideLLM run (idle, from cells that ran one GuideLLM run per level or
  one per trial as the plan does); else the documented defaults below (`DEFAULTS`);
- a reset between levels (level_isolation: reset) is a few seconds of idle (`DEFAULTS`) and a warm-up, no model
  load.

The store is read only when its URL is configured (LLMD_BENCH_DB_URL or AIRFLOW_CONN_LLMD_RESULTS): never the
local server, which `make_engine()` would start. One read-only connection attempt with a short timeout; any
failure means the defaults, never an error.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from llmd_bench.measure.gpu_time import PHASES
from llmd_bench.model.settings import results_store_url
from llmd_bench.store.rows import GpuTimeHistoryRow

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000
HISTORY_ROWS = 5000  # the newest cell rows of the planned models; plenty for medians


@dataclass(frozen=True)
class Defaults:
    """Seconds a phase takes when the store has no history of the model on this runtime."""

    startup_s: float  # per model load, besides reading the weights
    load_gb_per_s: float | None  # weights read rate (ModelSpec.size_gb); None: no weights are loaded
    warmup_s: float  # per warm-up: one after every model load and every reset between levels
    teardown_s: float  # per cell
    idle_per_run_s: float  # per GuideLLM run: its start-up and sample collection
    idle_per_cell_s: float  # per cell: the gaps between its steps, loading its results
    reset_s: float  # per reset between levels (level_isolation: reset)
    router_restart_s: float = 0.0  # per reset that rolls an EPP keeping its index in memory (a new pod, no GPU)

    def load_rule(self) -> str:
        if self.load_gb_per_s is None:
            return f"{self.startup_s:g} s per load (simulated servers, no weights)"
        return f"{self.startup_s:g} s start-up + size_gb at {self.load_gb_per_s:g} GB/s per load"


# kubernetes: vLLM's start-up (container, CUDA, torch.compile, CUDA graphs) plus reading the weights from the
# node's cache or a volume; local: the simulated servers start in about 5 s (measured: deploy 4.3-4.8 s,
# warm-up 0.2-0.6 s, teardown 0.8-2.0 s) and GuideLLM starts in about 10 s (README, Adaptive sweeps).
DEFAULTS: dict[str, Defaults] = {
    "kubernetes": Defaults(startup_s=120.0, load_gb_per_s=0.5, warmup_s=30.0, teardown_s=30.0, idle_per_run_s=15.0,
                           idle_per_cell_s=60.0, reset_s=5.0, router_restart_s=30.0),
    "local": Defaults(startup_s=5.0, load_gb_per_s=None, warmup_s=1.0, teardown_s=1.0, idle_per_run_s=10.0,
                      idle_per_cell_s=5.0, reset_s=2.0),
}


@dataclass(frozen=True)
class HistoryCell:
    """One measured cell reduced to the per-unit seconds an estimate needs."""

    model: str
    config: str
    runtime: str
    llmd_version: str
    tensor_parallel_size: int | None
    one_run_per_level: bool
    load_s: float  # model_load seconds per model load
    warmup_s: float  # seconds per warm-up: one after every model load and every reset between levels
    teardown_s: float
    idle_per_run_s: float  # idle seconds per GuideLLM run, resets taken out
    # measured seconds per level as a share of the run's duration_s (None: the run's duration_s is not stored)
    level_share: float | None = None


@dataclass
class History:
    cells: list[HistoryCell] = field(default_factory=list)
    status: str = "history not read: defaults only"


def defaults_for(runtime: str) -> Defaults:
    return DEFAULTS.get(runtime, DEFAULTS["kubernetes"])


def history_cells(rows: list[GpuTimeHistoryRow]) -> list[HistoryCell]:
    """Measured cells from the store's rows (one per cell and trial, with the run's params and the number of levels
    the trial ran), each reduced to per-load, per-cell and per-run seconds. Cells with a failed trial or without a
    complete GPU time (teardown not ended) are left out: their timings are partial."""
    groups: dict[tuple, list[GpuTimeHistoryRow]] = defaultdict(list)
    for row in rows:
        groups[(row.run_pk, row.model, row.config, row.stack_factors, row.config_factors)].append(row)
    out = []
    for trials in groups.values():
        first = trials[0]
        seconds = first.gpu_time.seconds
        if (not first.gpu_time.complete or any(t.status not in ("ok", "invalid") for t in trials)
                or not all(p in seconds for p in PHASES)):
            continue
        levels = [t.levels for t in trials]
        if not any(levels):
            continue
        levels = [n for n in levels if n > 0]
        params = first.params
        per_level = params.runs == "per-level" or params.sweep == "adaptive"
        isolation = params.level_isolation or "none"
        between = sum(n - 1 for n in levels)
        loads = (1 + (len(levels) - 1 if (params.trial_isolation or "redeploy") == "redeploy" else 0)
                 + (between if isolation == "restart" else 0))
        resets = between if isolation == "reset" else 0
        runs = sum(levels) if per_level else len(levels)
        runtime = first.runtime
        idle = max(0.0, float(seconds["idle"]) - resets * defaults_for(runtime).reset_s)
        warmups = loads + resets
        duration = params.duration_s
        share = float(seconds["measurement"]) / sum(levels) / float(duration) if duration else None
        out.append(HistoryCell(
            model=first.model, config=first.config, runtime=runtime,
            llmd_version=first.llmd_version, tensor_parallel_size=first.tensor_parallel_size,
            one_run_per_level=per_level, load_s=float(seconds["model_load"]) / loads,
            warmup_s=float(seconds["warmup"]) / warmups, teardown_s=float(seconds["teardown"]), idle_per_run_s=idle / runs,
            level_share=share))
    return out


def read_history(models: list[str], runtime: str, url: str | None = None) -> History:
    """The measured cells of these models on this runtime; on no configured store, an unreachable one or one
    without the results schema, no cells and a status that says why. Never raises, never starts a server."""
    from llmd_bench.store import db, read  # deferred: loads sqlalchemy

    url = url or results_store_url()  # the configured store; never the local server
    if not url:
        return History(status="no results store configured (LLMD_BENCH_DB_URL, AIRFLOW_CONN_LLMD_RESULTS): defaults only")
    try:
        where = db.redacted(url)
    except ValueError:
        where = "the configured store"
    try:
        rows = read.gpu_time_history(url, list(models), runtime, HISTORY_ROWS, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS)
    except Exception as exc:  # noqa: BLE001 - plan must never fail for the store: it falls back to defaults
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return History(status=f"results store {where} not read ({first[:160]}): defaults only")
    cells = history_cells(rows)
    return History(cells=cells, status=f"results store {where}: {len(cells)} measured cell(s) of these models on the "
                                       f"{runtime} runtime")


def _narrowed(cells: list[HistoryCell], model: str, runtime: str, llmd_version: str, tp: int, config: str,
              ) -> tuple[list[HistoryCell], str]:
    """The model's cells on this runtime, narrowed by each further key that still leaves some; and what matched."""
    found = [c for c in cells if c.model == model and c.runtime == runtime]
    what = [model, runtime]
    for key, value, label in (("llmd_version", llmd_version, f"llm-d {llmd_version}"),
                              ("tensor_parallel_size", tp, f"TP {tp}"), ("config", config, config)):
        narrower = [c for c in found if getattr(c, key) == value]
        if narrower:
            found, what = narrower, [*what, label]
    return found, ", ".join(what)


def level_seconds(history: History | None, *, runtime: str, model: str, config: str, llmd_version: str,
                  tensor_parallel_size: int, duration_s: float) -> tuple[float, str]:
    """Seconds one level measures: duration_s x the median share of duration_s the history's levels measured (a
    level measures its window; max_requests may end it sooner), narrowed like the phases; else duration_s."""
    cells = [c for c in (history.cells if history else []) if c.level_share is not None]
    found, what = _narrowed(cells, model, runtime, llmd_version, tensor_parallel_size, config)
    if not found:
        return float(duration_s), f"{duration_s:g} s (duration_s) per level"
    share = statistics.median(c.level_share for c in found if c.level_share is not None)
    return float(duration_s) * share, (f"{float(duration_s) * share:.1f} s per level ({_basis(len(found), what)}, "
                                       f"median {share * 100:.0f} % of duration_s)")


def _basis(n: int, what: str) -> str:
    return f"history: {n} cell{'s' if n != 1 else ''} ({what})"


def estimate_cell(*, runtime: str, model: str, size_gb: float, config: str, llmd_version: str,
                  tensor_parallel_size: int, gpus: int, model_loads: int, resets: int, guidellm_runs: int,
                  router_restarts: int = 0,
                  one_run_per_level: bool, measurement_s: float, measurement_rule: str, measurement_counts: str,
                  history: History | None) -> dict[str, Any]:
    """{"gpus", "seconds": {phase}, "gpu_hours": {phase}, "gpu_hours_total", "sources": {phase}, "basis": {phase}}:
    seconds the cell holds its GPUs per phase, GPUs x seconds as GPU-hours, where each number comes from (sources:
    with this cell's counts; basis: the rule or history alone, the same for cells estimated alike)."""
    d = defaults_for(runtime)
    cells = history.cells if history else []
    found, what = _narrowed(cells, model, runtime, llmd_version, tensor_parallel_size, config)
    runs_like = [c for c in cells if c.one_run_per_level == one_run_per_level]
    idle_found, idle_what = _narrowed(runs_like, model, runtime, llmd_version, tensor_parallel_size, config)
    sources: dict[str, str] = {}
    bases: dict[str, str] = {}  # the source without this cell's counts, to group cells by
    per_load = d.startup_s + (size_gb / d.load_gb_per_s if d.load_gb_per_s else 0.0)
    warmups = model_loads + resets  # a reset is followed by the warm-up a restarted server gets (steps/sweep.py)
    if found:
        load_s = statistics.median(c.load_s for c in found)
        warmup_s = statistics.median(c.warmup_s for c in found)
        teardown_s = statistics.median(c.teardown_s for c in found)
        basis = _basis(len(found), what)
        sources["model_load"] = f"{basis}, median {load_s:.1f} s per load x {model_loads}"
        sources["warmup"] = f"{basis}, median {warmup_s:.1f} s per warm-up x {warmups}"
        sources["teardown"] = f"{basis}, median {teardown_s:.1f} s per cell"
        bases.update(model_load=basis, warmup=basis, teardown=basis)
    else:
        load_s, warmup_s, teardown_s = per_load, d.warmup_s, d.teardown_s
        bases.update(model_load=f"default: {d.load_rule()}", warmup=f"default: {d.warmup_s:g} s per warm-up",
                     teardown=f"default: {d.teardown_s:g} s per cell")
        sources["model_load"] = f"{bases['model_load']} = {load_s:.1f} s x {model_loads}"
        sources["warmup"] = f"{bases['warmup']} x {warmups}"
        sources["teardown"] = bases["teardown"]
    mode = "one GuideLLM run per level" if one_run_per_level else "one GuideLLM run per trial"
    if idle_found:
        per_run = statistics.median(c.idle_per_run_s for c in idle_found)
        idle = per_run * guidellm_runs
        bases["idle"] = _basis(len(idle_found), f"{idle_what}, {mode}")
        sources["idle"] = f"{bases['idle']}, median {per_run:.1f} s per GuideLLM run x {guidellm_runs}"
    else:
        idle = d.idle_per_cell_s + d.idle_per_run_s * guidellm_runs
        bases["idle"] = f"default: {d.idle_per_cell_s:g} s per cell + {d.idle_per_run_s:g} s per GuideLLM run"
        sources["idle"] = f"{bases['idle']} x {guidellm_runs}"
    if resets:
        idle += resets * d.reset_s
        bases["idle"] += f"; default: {d.reset_s:g} s per reset between levels"
        sources["idle"] += f"; + default: {d.reset_s:g} s per reset x {resets}"
    if router_restarts and d.router_restart_s:
        idle += router_restarts * d.router_restart_s
        bases["idle"] += f"; default: {d.router_restart_s:g} s per EPP rollout"
        sources["idle"] += f"; + default: {d.router_restart_s:g} s per EPP rollout (index in memory) x {router_restarts}"
    seconds = {"model_load": load_s * model_loads, "warmup": warmup_s * warmups, "measurement": measurement_s,
               "idle": idle, "teardown": teardown_s}
    bases["measurement"] = measurement_rule
    sources["measurement"] = f"{measurement_rule}: {measurement_counts}"
    seconds = {p: round(seconds[p], 1) for p in PHASES}
    hours = {p: round(seconds[p] * gpus / 3600, 4) for p in PHASES}
    return {"gpus": gpus, "seconds": seconds, "gpu_hours": hours,
            "gpu_hours_total": round(sum(seconds.values()) * gpus / 3600, 4),
            "sources": {p: sources[p] for p in PHASES}, "basis": {p: bases[p] for p in PHASES}}
