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

PHASES = ("model_load", "warmup", "measurement", "idle", "teardown")


def _ts(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def phases(record: dict[str, Any]) -> dict[str, Any]:
    """{"gpus", "wall_s", "seconds": {phase: s}, "gpu_hours": {phase: h}, "gpu_hours_total"}; {} when the cell
    never deployed."""
    steps = record.get("steps") or {}
    deploy, teardown = steps.get("deploy") or {}, steps.get("teardown") or {}
    if not deploy:
        return {}
    params = record.get("params") or {}
    gpus = int(params.get("tensor_parallel_size") or 1) * int(params.get("replicas") or 1)
    trials = (record.get("sweep") or {}).get("trials") or []
    isolations = [t for t in trials if t.get("isolation") == "redeployed"]
    isolations += [r for t in trials for r in t.get("runs") or [] if r.get("isolation") == "redeployed"]
    resets = [r for t in trials for r in t.get("runs") or [] if r.get("isolation") == "reset"]
    seconds = {
        "model_load": (deploy.get("elapsed_s") or 0.0) + sum(i.get("redeploy_s") or 0.0 for i in isolations),
        "warmup": ((steps.get("warmup") or {}).get("elapsed_s") or 0.0)
        + sum(i.get("warmup_s") or 0.0 for i in isolations + resets),
        "measurement": sum(t.get("benchmark_s") or 0.0 for t in trials),
        "teardown": teardown.get("elapsed_s") or 0.0,
    }
    start, end = _ts(deploy.get("started")), _ts(teardown.get("ended"))
    busy = sum(seconds.values())
    wall = (end - start) if start is not None and end is not None and end > start else busy
    seconds["idle"] = max(0.0, wall - busy)
    seconds = {k: round(seconds[k], 3) for k in PHASES}
    hours = {k: round(v * gpus / 3600, 6) for k, v in seconds.items()}
    return {"gpus": gpus, "wall_s": round(max(wall, busy), 3), "seconds": seconds, "gpu_hours": hours,
            "gpu_hours_total": round(sum(hours.values()), 6), "complete": bool(teardown.get("ended"))}


def cost_per_million_tokens(gpu_hour_cost: float, gpus: int, peak_output_tps: float) -> float | None:
    """What a million output tokens cost at the cell's peak: the GPUs' hourly cost over its tokens per hour."""
    if not peak_output_tps or peak_output_tps <= 0:
        return None
    return gpu_hour_cost * gpus / (peak_output_tps * 3600 / 1e6)
