"""The measurement method as data: the GuideLLM command of every run, and the plan of a whole campaign run.

The sweep step runs exactly the commands built here, and `llmd-bench plan` prints them without running
anything, so what a user reviews before spending GPU hours is what runs.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

from llmd_bench.measure import cell_folder
from llmd_bench.measure.gpu_time import PHASES
from llmd_bench.model import paths
from llmd_bench.model.campaign import Campaign, Cell, per_level
from llmd_bench.model.errors import CampaignError
from llmd_bench.model.params import RunParams
from llmd_bench.model.runtimes import cluster_runtime, simulated_runtime
from llmd_bench.plan import plan_estimate, seeding
from llmd_bench.plan.plan_estimate import History
from llmd_bench.plan.seeding import SeedHistory

# Where plan shows values that exist only once the cell is deployed.
PLAN_TARGET = "<cell endpoint>"


def guidellm_argv(*, guidellm: str, campaign: Campaign, params: RunParams, cell: Cell, levels: list[int], run_id: str,
                  trial: int, target: str, output: Path | str, tokenizer: str,
                  adaptive: bool | None = None) -> list[str]:
    """One GuideLLM 0.8.1 run over `levels`: all of a cell's levels (runs: per-cell, the February method) or
    one (runs: per-level, where 'Nx' prefix counts and request caps resolve at that level). Constraint kinds
    and their args: guidellm/schemas/scheduler/constraints/request.py (max_duration `seconds`, max_requests
    `count`), GuideLLM v0.8.1; synthetic_text's prefix_count: guidellm/schemas/data/deserializers/synthetic.py,
    v0.8.1. `adaptive`: the sweep decides adaptively (default: sweep: adaptive; a seeded sweep without history too)."""
    level = levels[0] if len(levels) == 1 else None
    prefix_count = _resolved(params.prefix_count, level, 1, "prefix_count")
    data = (f"kind=synthetic_text,prompt_tokens={params.prompt_tokens},output_tokens={params.output_tokens},"
            f"prefix_tokens={params.prefix_tokens},prefix_count={prefix_count},turns={params.turns}")
    constraints = ["--constraint", f"kind=max_duration,seconds={params.duration_s:g}"]
    max_requests = _resolved(params.max_requests, level, params.turns, "max_requests")
    if max_requests is not None:
        constraints += ["--constraint", f"kind=max_requests,count={max_requests}"]
    if params.sweep == "adaptive" if adaptive is None else adaptive:
        # GuideLLM's over-saturation detection stops a level whose queue and TTFT keep growing; the adaptive sweep
        # then stops the cell (guidellm/schemas/scheduler/constraints/saturation.py, GuideLLM v0.8.1: mode enforce)
        constraints += ["--constraint", "kind=over_saturation,mode=enforce"]
    return [
        guidellm, "run",
        "--backend", f"kind=openai_http,target={target},model={cell.model}",
        "--profile", json.dumps({"kind": "concurrent", "streams": levels}),
        *constraints,
        "--seed", f"kind=static,value={params.seed}",
        "--data", data,
        "--tokenizer", tokenizer,
        "--output", f"kind=json,path={output}",
        "--label", f"campaign={campaign.dag_id}",
        "--label", f"run_id={run_id}",
        "--label", f"cell={cell.group_id}",
        "--label", f"trial={trial}",
        "--disable-progress",
    ]


def _resolved(value: int | str | None, level: int | None, turns: int, name: str) -> int | None:
    if isinstance(value, str) and level is None:
        raise ValueError(f"{name} {value!r} is per level: it needs runs: per-level")
    return per_level(value, level or 0, turns)


def runs_of(params: RunParams, levels: list[int]) -> list[list[int]]:
    """The levels of each GuideLLM run of one trial (an adaptive sweep: at most these, one run each)."""
    return [[c] for c in levels] if one_run_per_level(params) else [levels]


def one_run_per_level(params: RunParams) -> bool:
    """An adaptive sweep decides each next level from the last one, so it runs one level per GuideLLM run, on the
    same servers unless level_isolation restarts them."""
    return params.runs == "per-level" or params.sweep == "adaptive"


def plan_tokenizer(runtime: str, model: str) -> str:
    # the same choice as sweep.tokenizer_spec (the simulated runtime's offline tokenizer, else the model's own),
    # without requiring the local tokenizer to exist yet
    if simulated_runtime(runtime):
        return f"kind=hf_auto,model={paths.tokenizer_dir()}"
    return f"kind=hf_auto,model={model}"


def plan(campaign: Campaign, params: RunParams, runtime: str, run_id: str = "<run id>",
         history: History | None = None, seeds: SeedHistory | None = None) -> dict[str, Any]:
    """Every selected cell with its configuration, levels, the GuideLLM runs (argv) per trial, the model loads,
    the seconds of measurement and the estimated GPU time per phase (plan_estimate.py: from `history`, the store's
    measured cells, where it has the model, else documented defaults). sweep: seeded: each cell's mode decided from
    `seeds` (the store's seed sources per cell, as the sweep decides it: seeding.py), its levels, and its measurement
    from the seconds a level measured in `history`; a cell without seed sources is undecided and counted at its bound.
    Nothing is started or contacted here."""
    cost = campaign.gpu_hour_cost
    isolation = str(params.level_isolation)
    bounds = upper_bounds(params)
    cells = []
    for cell in campaign.cells():
        if not params.selects(cell):
            continue
        cell_params = params.for_cell(cell)
        spec = campaign.model(cell.model)
        levels = params.levels_for(spec)
        seeded_plan = seeding.cell_plan(
            seeding.decide(seeds, cell, campaign.seeded.full_grid_every), levels, campaign.adaptive.refine,
            one_run_per_level(params)) if params.sweep == "seeded" else None
        runs = []
        for trial in range(1, params.trials + 1):
            trial_runs = runs_of(params, levels) if seeded_plan is None else _seeded_runs(seeded_plan, trial, params)
            for run_levels in trial_runs:
                output = report_name(trial, run_levels, params) if seeded_plan is None else \
                    _seeded_report_name(trial, run_levels, levels, params)
                runs.append({"trial": trial, "levels": run_levels, "argv": guidellm_argv(
                    guidellm="guidellm", campaign=campaign, params=cell_params, cell=cell, levels=run_levels, run_id=run_id,
                    trial=trial, target=PLAN_TARGET, output=f"<cell folder>/{output}",
                    tokenizer=plan_tokenizer(runtime, cell.model))})
        refine = campaign.adaptive.refine if params.sweep == "adaptive" else 0
        n_levels = len(levels) + refine
        guidellm_runs = params.trials * (n_levels if one_run_per_level(params) else 1)
        # an upper bound when max_requests may end a level sooner or an adaptive sweep stops early
        benchmark_s = round(n_levels * params.duration_s * params.trials, 3)
        measurement_rule = "plan: levels x duration_s x trials" + (f" ({'; '.join(bounds)})" if bounds else "")
        measurement_counts = (f"{n_levels} x {params.duration_s:g} s x {params.trials}"
                              + (f" (the grid's {len(levels)} + {refine} refinement)" if refine else ""))
        seeded_info: dict[str, Any] = {}
        if seeded_plan is not None:
            n_levels = seeded_plan.counted_levels
            per_level_s, per_level_rule = plan_estimate.level_seconds(
                history, runtime=runtime, model=cell.model, config=cell.config, llmd_version=params.llmd_version,
                tensor_parallel_size=cell_params.tensor_parallel_size, duration_s=params.duration_s)
            # later trials measure the levels trial 1 decided: one run, or one per level
            guidellm_runs = seeded_plan.guidellm_runs + (params.trials - 1) * (
                n_levels if one_run_per_level(params) else 1)
            benchmark_s = round(n_levels * per_level_s * params.trials, 3)
            what = {"bracket": "the bracket", "full-grid": f"the grid's {len(levels)} + {seeded_plan.refine} refinement",
                    "adaptive": f"at most: the grid's {len(levels)} + {seeded_plan.refine} refinement",
                    "undecided": f"at most: the grid's {len(levels)} + {seeded_plan.refine} refinement"}[seeded_plan.mode]
            measurement_rule = f"plan: seeded {seeded_plan.mode} levels x seconds per level x trials"
            measurement_counts = f"{n_levels} ({what}) x {per_level_rule} x {params.trials}"
            seeded_info = {"seeded": {
                **seeded_plan.model_dump(mode="json", exclude={"first_runs"}), "said": seeded_plan.describe(),
                "seconds_per_level": round(per_level_s, 3),
                "benchmark_s_at_most": round(seeded_plan.at_most_levels * per_level_s * params.trials, 3)}}
        loads = model_loads(params, n_levels)
        resets = level_resets(params, n_levels)
        gpus = cell_params.tensor_parallel_size * cell_params.replicas
        # the estimate of this cell, given its model loads and resets
        estimate_cell = functools.partial(
            plan_estimate.estimate_cell,
            runtime=runtime, model=cell.model, size_gb=spec.size_gb, config=cell.config,
            llmd_version=params.llmd_version, tensor_parallel_size=cell_params.tensor_parallel_size,
            gpus=gpus, guidellm_runs=guidellm_runs,
            one_run_per_level=one_run_per_level(params) or (seeded_plan is not None
                                                            and seeded_plan.mode in ("adaptive", "undecided")),
            measurement_s=benchmark_s, measurement_rule=measurement_rule, measurement_counts=measurement_counts,
            history=history)
        config = campaign.cell_configuration(cell)
        # what the deploy would refuse, found the same way (rendering the cell): a release piece that could not be
        # read, a connector the release's image lacks, a setting its vLLM does not have, a pod that cannot fit
        refused = cell_refusal(campaign, params, cell) if cluster_runtime(runtime) else None
        # an EPP keeping its index in memory is rolled at every reset (runtime/kubernetes.py restart_epp)
        router_restarts = resets if cluster_runtime(runtime) and config.store_kind is None else 0
        estimate = estimate_cell(model_loads=loads, resets=resets, router_restarts=router_restarts)
        if cost is not None:
            estimate["cost"] = round(estimate["gpu_hours_total"] * cost, 2)
        saved = {}
        if isolation in ("restart", "reset"):
            restart_loads = model_loads(params, n_levels, level_isolation="restart")
            restart = estimate_cell(model_loads=restart_loads, resets=0)
            saved = {"model_loads_saved": restart_loads - loads,
                     "gpu_hours_saved": round(restart["gpu_hours_total"] - estimate["gpu_hours_total"], 4)}
        cells.append({
            "model": cell.model, "config": cell.config, "group_id": cell.group_id,
            "factors": {"tensor_parallel_size": cell_params.tensor_parallel_size, "replicas": cell_params.replicas,
                        "llmd_version": params.llmd_version, **dict(cell.factors)},
            "configuration": config.model_dump(mode="json"),
            **({"refused": refused} if refused else {}),
            "levels": levels if seeded_plan is None else seeded_plan.levels,
            **seeded_info,
            "guidellm_runs": runs,
            "isolation": {"between_levels": params.level_isolation, "between_trials": params.trial_isolation},
            "model_loads": loads,
            "resets": resets,
            **saved,
            "gpus": gpus,
            "benchmark_s": benchmark_s,
            "gpu_time_estimate": estimate,
        })
    totals: dict[str, Any] = {
        "cells": len(cells),
        **({"refused": sum(1 for c in cells if "refused" in c)} if any("refused" in c for c in cells) else {}),
        "guidellm_runs": sum(len(c["guidellm_runs"]) for c in cells),
        "levels": sum(len(r["levels"]) for c in cells for r in c["guidellm_runs"]),
        "model_loads": sum(c["model_loads"] for c in cells),
        "resets": sum(c["resets"] for c in cells),
        "benchmark_s": round(sum(c["benchmark_s"] for c in cells), 3),
        "gpu_benchmark_hours": round(sum(c["benchmark_s"] * c["gpus"] for c in cells) / 3600, 3),
        "gpu_hours": {p: round(sum(c["gpu_time_estimate"]["gpu_hours"][p] for c in cells), 4) for p in PHASES},
        "gpu_hours_total": round(sum(c["gpu_time_estimate"]["gpu_hours_total"] for c in cells), 4),
    }
    if cost is not None:
        totals["cost"] = round(totals["gpu_hours_total"] * cost, 2)
    if isolation in ("restart", "reset"):
        totals["model_loads_saved"] = sum(c["model_loads_saved"] for c in cells)
        totals["gpu_hours_saved"] = round(sum(c["gpu_hours_saved"] for c in cells), 4)
    estimate_info: dict[str, Any] = {"history": history.status if history else "history not read: defaults only",
                                     "upper_bound": bounds}
    if params.sweep == "seeded":
        estimate_info["seeded"] = seeded_totals(cells, seeds)
        if any(c["seeded"]["bound"] for c in cells):
            bounds.append("at most: seeded cells swept adaptively or not yet decided count the grid plus refinement")
    if cost is not None:
        estimate_info["gpu_hour_cost"] = cost
    return {"campaign": campaign.dag_id, "runtime": runtime, "baseline": params.baseline,
            "method": {"runs": params.runs, "sweep": params.sweep, "prefix_count": params.prefix_count,
                       "max_requests": params.max_requests,
                       "level_isolation": params.level_isolation, "trials": params.trials,
                       "trial_isolation": params.trial_isolation},
            "estimate": estimate_info,
            "cells": cells,
            "totals": totals}


def cell_refusal(campaign: Campaign, params: RunParams, cell: Cell) -> str | None:
    """Why the cell's deploy would be refused at params.llmd_version (manifests.render_cell's CampaignError), or None."""
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    try:
        manifests.render_cell(campaign, params.for_cell(cell), cell, "<plan>", "plan")
    except CampaignError as err:
        return str(err)
    return None


def model_loads(params: RunParams, levels: int, level_isolation: str | None = None) -> int:
    """Deploys of one cell: the first; with trial_isolation redeploy one per later trial; with level_isolation
    restart one per level after the first in every trial (reset and none: no reload between levels).
    `level_isolation` overrides the params' (what restart would load, for the loads reset saves)."""
    isolation = str(params.level_isolation) if level_isolation is None else level_isolation
    per_trial_restarts = levels - 1 if isolation == "restart" else 0
    redeploys = params.trials - 1 if params.trial_isolation == "redeploy" else 0
    return 1 + redeploys + params.trials * per_trial_restarts


def level_resets(params: RunParams, levels: int) -> int:
    """level_isolation reset: the model servers' caches and the index are emptied through their reset endpoints
    before every level of every trial (the first too, after the fresh-server reference, so every level starts
    alike: level_reset.py), with no model reload."""
    return params.trials * levels if str(params.level_isolation) == "reset" else 0


def _seeded_runs(seeded_plan: seeding.SeededCellPlan, trial: int, params: RunParams) -> list[list[int]]:
    """A seeded cell's GuideLLM runs known before the run: trial 1's first runs (a bracket's widening and a
    refinement follow from its results); a later trial measures trial 1's levels (shown: the planned ones)."""
    if trial == 1:
        return seeded_plan.first_runs
    return runs_of(params, seeded_plan.levels)


def _seeded_report_name(trial: int, levels: list[int], grid: list[int], params: RunParams) -> str:
    """The sweep core's name: a run of the whole grid writes the trial's report, any other its own (sweep_core)."""
    whole = not one_run_per_level(params) and levels == grid
    return cell_folder.report_name(trial, None if whole else levels[0])


def seeded_totals(cells: list[dict[str, Any]], seeds: SeedHistory | None) -> dict[str, Any]:
    """How many seeded cells run each mode, where their seeds were read from, and the measurement if every bracket
    widened to the whole grid."""
    modes = [c["seeded"]["mode"] for c in cells]
    return {"history": seeds.status if seeds is not None else SeedHistory().status,
            "modes": {m: modes.count(m) for m in ("bracket", "full-grid", "adaptive", "undecided")},
            "benchmark_s_at_most": round(sum(c["seeded"]["benchmark_s_at_most"] for c in cells), 3)}


def upper_bounds(params: RunParams) -> list[str]:
    """Why the plan's measurement (and, adaptive, its loads and runs) may be more than the run spends."""
    bounds = []
    if params.max_requests is not None:
        bounds.append("at most: max_requests may end levels sooner")
    if params.sweep == "adaptive":
        bounds.append("at most: the adaptive sweep stops past saturation; counted: the grid plus its refinement levels")
    return bounds


def report_name(trial: int, levels: list[int], params: RunParams) -> str:
    """Where a run writes its report, relative to the cell folder. Per-level runs are merged into the trial's
    report afterwards, so everything downstream reads one report per trial either way."""

    return cell_folder.report_name(trial, levels[0] if one_run_per_level(params) else None)


def format_plan(found: dict[str, Any]) -> str:
    """The plan as text: a line per cell, the totals, the estimated GPU-hours per phase with their sources (and the
    cost, and the loads level isolation saves, where they apply), and the first cell's GuideLLM command in full."""
    lines = [f"campaign {found['campaign']} ({found['runtime']} runtime), baseline {found['baseline']}"]
    width = max([40, *(len(c["group_id"]) for c in found["cells"])])
    estimate = found.get("estimate") or {}
    cost = estimate.get("gpu_hour_cost")
    for c in found["cells"]:
        e = c["gpu_time_estimate"]
        lines.append(f"  {c['group_id']:<{width}} levels {','.join(map(str, c['levels']))}  runs {len(c['guidellm_runs'])}  "
                     f"model loads {c['model_loads']}" + (f"  resets {c['resets']}" if c["resets"] else "")
                     + f"  benchmark {c['benchmark_s']:g} s  GPUs {c['gpus']}  est. {_hours(e['gpu_hours_total'])} GPU-h"
                     + (f"  cost {e['cost']:,.2f}" if "cost" in e else ""))
        if c.get("seeded"):
            lines.append(f"    {c['seeded']['said']}")
        if c.get("refused"):
            lines.append(f"    REFUSED (the deploy would fail): {c['refused']}")
    t = found["totals"]
    bounds = estimate.get("upper_bound") or []
    lines.append(f"totals: {t['cells']} cells" + (f" ({t['refused']} refused)" if t.get("refused") else "")
                 + f", {t['guidellm_runs']} GuideLLM runs, {t['levels']} levels, "
                 f"{t['model_loads']} model loads" + (f", {t['resets']} resets" if t.get("resets") else "")
                 + f", {t['benchmark_s']:g} s of measurement ({t['gpu_benchmark_hours']:g} GPU-hours of measurement"
                 + "".join(f"; {b}" for b in bounds) + ")")
    seeded = estimate.get("seeded")
    if seeded:
        modes = seeded["modes"]
        lines.append(f"seeded sweep ({seeded['history']}): {modes['bracket']} bracket, {modes['full-grid']} full grid, "
                     f"{modes['adaptive']} adaptive" + (f", {modes['undecided']} undecided" if modes["undecided"] else "")
                     + f"; at most {seeded['benchmark_s_at_most']:g} s of measurement if every bracket widened to the "
                     "whole grid")
    if "gpu_hours" in t:
        simulated = f", GPUs simulated on the {found['runtime']} runtime" if simulated_runtime(found["runtime"]) else ""
        lines.append(f"estimated GPU-hours (GPUs x seconds per phase{simulated}; {estimate.get('history')}):")
        for phase in PHASES:
            by_basis: dict[str, int] = {}
            for c in found["cells"]:
                basis = c["gpu_time_estimate"]["basis"][phase]
                by_basis[basis] = by_basis.get(basis, 0) + 1
            where = "; ".join(f"{b} [{n} cell{'s' if n != 1 else ''}]" for b, n in by_basis.items())
            lines.append(f"  {phase.replace('_', ' '):<12} {_hours(t['gpu_hours'][phase]):>10} GPU-h  {where}")
        lines.append(f"  {'total':<12} {_hours(t['gpu_hours_total']):>10} GPU-h"
                     + (f", cost {t['cost']:,.2f} at {cost:g} per GPU-hour" if "cost" in t else "")
                     + (" (at most)" if bounds else ""))
    isolation = found["method"]["level_isolation"]
    if "model_loads_saved" in t:
        if isolation == "reset":
            lines.append(f"level isolation reset: {t['model_loads_saved']} model loads and {_hours(t['gpu_hours_saved'])} "
                         f"GPU-hours saved compared with restart ({t['resets']} resets before levels instead, each "
                         "followed by a warm-up)")
        else:
            lines.append(f"level isolation {isolation}: 0 model loads saved (reset would empty caches and index "
                         "without reloading the model)")
    if found["cells"]:
        first = found["cells"][0]["guidellm_runs"][0]["argv"]
        lines.append("first run: " + " ".join(_quoted(a) for a in first))
    return "\n".join(lines)


def _hours(h: float) -> str:
    return f"{h:,.2f}" if abs(h) >= 1 else f"{h:.3g}"


def _quoted(arg: str) -> str:

    return shlex.quote(arg)
