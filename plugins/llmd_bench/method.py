"""The measurement method as data: the GuideLLM command of every run, and the plan of a whole campaign run.

The sweep step runs exactly the commands built here, and `llmd-bench plan` prints them without running
anything, so what a user reviews before spending GPU hours is what runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmd_bench.campaign import Campaign, Cell, RunParams, per_level

# Where plan shows values that exist only once the cell is deployed.
PLAN_TARGET = "<cell endpoint>"


def guidellm_argv(*, guidellm: str, campaign: Campaign, params: RunParams, cell: Cell, levels: list[int], run_id: str,
                  trial: int, target: str, output: Path | str, tokenizer: str) -> list[str]:
    """One GuideLLM 0.8.1 run over `levels`: all of a cell's levels (runs: per-cell, the February method) or
    one (runs: per-level, where 'Nx' prefix counts and request caps resolve at that level). Constraint kinds
    and their args: guidellm/schemas/scheduler/constraints/request.py (max_duration `seconds`, max_requests
    `count`), GuideLLM v0.8.1; synthetic_text's prefix_count: guidellm/schemas/data/deserializers/synthetic.py,
    v0.8.1."""
    level = levels[0] if len(levels) == 1 else None
    prefix_count = _resolved(params.prefix_count, level, 1, "prefix_count")
    data = (f"kind=synthetic_text,prompt_tokens={params.prompt_tokens},output_tokens={params.output_tokens},"
            f"prefix_tokens={params.prefix_tokens},prefix_count={prefix_count},turns={params.turns}")
    constraints = ["--constraint", f"kind=max_duration,seconds={params.duration_s:g}"]
    max_requests = _resolved(params.max_requests, level, params.turns, "max_requests")
    if max_requests is not None:
        constraints += ["--constraint", f"kind=max_requests,count={max_requests}"]
    if params.sweep == "adaptive":
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
    # the same choice as sweep.tokenizer_spec, without requiring the local tokenizer to exist yet
    if runtime == "local":
        from llmd_bench import paths

        return f"kind=hf_auto,model={paths.tokenizer_dir()}"
    return f"kind=hf_auto,model={model}"


def plan(campaign: Campaign, params: RunParams, runtime: str, run_id: str = "<run id>") -> dict[str, Any]:
    """Every selected cell with its configuration, levels, the GuideLLM runs (argv) per trial, the model loads
    and the seconds of measurement it will spend. Nothing is started or contacted."""
    cells = []
    for cell in campaign.cells():
        if not params.selects(cell):
            continue
        cell_params = params.for_cell(cell)
        spec = campaign.model(cell.model)
        levels = params.levels_for(spec)
        runs = []
        for trial in range(1, params.trials + 1):
            for run_levels in runs_of(params, levels):
                output = report_name(trial, run_levels, params)
                runs.append({"trial": trial, "levels": run_levels, "argv": guidellm_argv(
                    guidellm="guidellm", campaign=campaign, params=cell_params, cell=cell, levels=run_levels, run_id=run_id,
                    trial=trial, target=PLAN_TARGET, output=f"<cell folder>/{output}",
                    tokenizer=plan_tokenizer(runtime, cell.model))})
        refine = campaign.adaptive.refine if params.sweep == "adaptive" else 0
        loads = model_loads(params, len(levels) + refine)
        config = campaign.cell_configuration(cell)
        cells.append({
            "model": cell.model, "config": cell.config, "group_id": cell.group_id,
            "factors": {"tensor_parallel_size": cell_params.tensor_parallel_size, "replicas": cell_params.replicas,
                        "llmd_version": params.llmd_version, **dict(cell.factors)},
            "configuration": config.model_dump(mode="json"),
            "levels": levels,
            "guidellm_runs": runs,
            "isolation": {"between_levels": params.level_isolation, "between_trials": params.trial_isolation},
            "model_loads": loads,
            "gpus": cell_params.tensor_parallel_size * cell_params.replicas,
            # an upper bound when max_requests may end a level sooner or an adaptive sweep stops early
            "benchmark_s": round((len(levels) + refine) * params.duration_s * params.trials, 3),
        })
    totals = {
        "cells": len(cells),
        "guidellm_runs": sum(len(c["guidellm_runs"]) for c in cells),
        "levels": sum(len(r["levels"]) for c in cells for r in c["guidellm_runs"]),
        "model_loads": sum(c["model_loads"] for c in cells),
        "benchmark_s": round(sum(c["benchmark_s"] for c in cells), 3),
        "gpu_benchmark_hours": round(sum(c["benchmark_s"] * c["gpus"] for c in cells) / 3600, 3),
    }
    return {"campaign": campaign.dag_id, "runtime": runtime, "baseline": params.baseline,
            "method": {"runs": params.runs, "sweep": params.sweep, "prefix_count": params.prefix_count,
                       "max_requests": params.max_requests,
                       "level_isolation": params.level_isolation, "trials": params.trials,
                       "trial_isolation": params.trial_isolation},
            "cells": cells,
            "totals": totals}


def model_loads(params: RunParams, levels: int) -> int:
    """Deploys of one cell: the first; with trial_isolation redeploy one per later trial; with level_isolation
    restart one per level after the first in every trial."""
    per_trial_restarts = levels - 1 if params.level_isolation == "restart" else 0
    redeploys = params.trials - 1 if params.trial_isolation == "redeploy" else 0
    return 1 + redeploys + params.trials * per_trial_restarts


def report_name(trial: int, levels: list[int], params: RunParams) -> str:
    """Where a run writes its report, relative to the cell folder. Per-level runs are merged into the trial's
    report afterwards, so everything downstream reads one report per trial either way."""
    if one_run_per_level(params):
        return f"trial-{trial}/level-{levels[0]}/guidellm_report.json"
    return f"trial-{trial}/guidellm_report.json"


def format_plan(found: dict[str, Any]) -> str:
    """The plan as text: a line per cell, the totals, and the first cell's GuideLLM command in full."""
    lines = [f"campaign {found['campaign']} ({found['runtime']} runtime), baseline {found['baseline']}"]
    width = max([40, *(len(c["group_id"]) for c in found["cells"])])
    for c in found["cells"]:
        lines.append(f"  {c['group_id']:<{width}} levels {','.join(map(str, c['levels']))}  runs {len(c['guidellm_runs'])}  "
                     f"model loads {c['model_loads']}  benchmark {c['benchmark_s']:g} s  GPUs {c['gpus']}")
    t = found["totals"]
    lines.append(f"totals: {t['cells']} cells, {t['guidellm_runs']} GuideLLM runs, {t['levels']} levels, "
                 f"{t['model_loads']} model loads, {t['benchmark_s']:g} s of measurement "
                 f"({t['gpu_benchmark_hours']:g} GPU-hours, model loads and warm-up not included"
                 + ("; at most: max_requests may end levels sooner" if found["method"]["max_requests"] is not None else "")
                 + ("; at most: the adaptive sweep stops past saturation" if found["method"]["sweep"] == "adaptive" else "")
                 + ")")
    if found["cells"]:
        first = found["cells"][0]["guidellm_runs"][0]["argv"]
        lines.append("first run: " + " ".join(_quoted(a) for a in first))
    return "\n".join(lines)


def _quoted(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
