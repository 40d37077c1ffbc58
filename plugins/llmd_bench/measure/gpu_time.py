"""GPU time of a cell: the GPUs it holds (tensor parallel size x replicas) from the start of deploy to the end
of teardown, split into phases from the steps' own timings in cell.json:

- model_load: deploy, and every redeploy or restart inside the sweep (trial or level isolation);
- warmup: the warm-up step and the warm-ups after redeploys and level resets;
- measurement: the levels' measured durations (GuideLLM's own, all trials);
- teardown: the teardown step;
- idle: the rest of the wall time (GuideLLM start-up between levels, level resets and their checks, sample
  collection, the scheduler's gaps).

On the local runtime the GPUs are simulated; the numbers rehearse what a cluster run will hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmd_bench.measure.cell_folder import CellRecord

PHASES = ("model_load", "warmup", "measurement", "idle", "teardown")


def _ts(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def phases(record: CellRecord | None) -> dict[str, Any]:
    """{"gpus", "wall_s", "seconds": {phase: s}, "gpu_hours": {phase: h}, "gpu_hours_total"}; {} when the cell
    never deployed (no record, or no deploy step in it)."""
    if record is None:
        return {}
    steps = record.steps
    deploy, warmup, teardown = steps.get("deploy"), steps.get("warmup"), steps.get("teardown")
    if deploy is None:
        return {}
    gpus = record.params.tensor_parallel_size * record.params.replicas
    trials = record.sweep.trials if record.sweep else []
    runs = [r for t in trials for r in t.runs or []]
    isolations = [t for t in trials if t.isolation == "redeployed"] + [r for r in runs if r.isolation == "redeployed"]
    resets = [r for r in runs if r.isolation == "reset"]
    seconds = {
        "model_load": deploy.elapsed_s + sum(i.redeploy_s or 0.0 for i in isolations),
        "warmup": (warmup.elapsed_s if warmup else 0.0) + sum(i.warmup_s or 0.0 for i in isolations + resets),
        "measurement": sum(t.benchmark_s or 0.0 for t in trials),
        "teardown": teardown.elapsed_s if teardown else 0.0,
    }
    start, end = _ts(deploy.started), _ts(teardown.ended if teardown else None)
    busy = sum(seconds.values())
    wall = (end - start) if start is not None and end is not None and end > start else busy
    seconds["idle"] = max(0.0, wall - busy)
    seconds = {k: round(seconds[k], 3) for k in PHASES}
    hours = {k: round(v * gpus / 3600, 6) for k, v in seconds.items()}
    return {"gpus": gpus, "wall_s": round(max(wall, busy), 3), "seconds": seconds, "gpu_hours": hours,
            "gpu_hours_total": round(sum(hours.values()), 6), "complete": teardown is not None}


def cost_per_million_tokens(gpu_hour_cost: float, gpus: int, peak_output_tps: float) -> float | None:
    """What a million output tokens cost at the cell's peak: the GPUs' hourly cost over its tokens per hour."""
    if not peak_output_tps or peak_output_tps <= 0:
        return None
    return gpu_hour_cost * gpus / (peak_output_tps * 3600 / 1e6)
