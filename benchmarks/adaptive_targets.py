"""Adaptive-sweep target on the local runtime (prints numbers; not a test).

A campaign whose simulated servers saturate: each replica serves 4 requests at once (the local router queues
the rest, `local_simulation.capacity`), swept over the published grid scaled by 1/10 (1 .. 65 streams). Each
cell is swept as `grid` and as `adaptive` with the pipeline's own step code (deploy, warmup, sweep, teardown).
Printed per cell and mode: the levels measured, the peak and its level, benchmark seconds (the levels'
measured durations), the sweep's wall seconds, and GPU-seconds (GPUs held x the sweep's wall time; TP 2 x 1
replica = 2 simulated GPUs). Target: adaptive finds every cell's peak at least as high as the grid's within
the noise floor, with at most 60 % of the grid's benchmark seconds.
`python benchmarks/adaptive_targets.py [DURATION_S]`
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-adaptive-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench.measure.guidellm_report import parse_report_file  # noqa: E402
from llmd_bench.model import catalog  # noqa: E402 - after the environment above
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import deploy, sweep, teardown, warmup  # noqa: E402

GRID = [1, 5, 10, 15, 30, 40, 50, 65]  # the published 1, 50, ..., 650 scaled by 1/10
PROFILES = {"no-offload": {"ttft_ms": 40, "itl_ms": 8.0, "capacity": 4},
            "native-offload": {"ttft_ms": 44, "itl_ms": 8.8, "capacity": 4}}
NOISE_FLOOR_PCT = 5.0


def campaign_file(duration_s: float) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": "adaptive_target", "schedule": None, "trials": 1, "noise_floor_pct": NOISE_FLOOR_PCT,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": list(PROFILES),
                "workload": {"concurrency": GRID, "duration_s": duration_s, "prompt_tokens": 64, "output_tokens": 32,
                             "prefix_tokens": 256, "turns": 1, "seed": 889, "warmup_requests": 2},
                "local_simulation": PROFILES})
    path = WORK / "campaigns" / "adaptive_target.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_cell(campaign, cell, mode: str) -> dict:
    params = resolve_params(campaign, {"sweep": mode}, catalog.known_versions())
    ctx = StepContext(campaign, params, f"adaptive-target-{mode}", "local", cell)
    deploy.run(ctx)
    try:
        warmup.run(ctx)
        started = time.monotonic()
        sweep.run(ctx)
        wall = time.monotonic() - started
    finally:
        teardown.run(ctx)
    (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
    levels = parse_report_file(sweep.report_path(ctx, 1)).levels
    valid = [lv for lv in levels if lv.valid]
    peak = max(valid, key=lambda lv: lv.value("output_tps"))
    gpus = ctx.params.tensor_parallel_size * ctx.params.replicas
    return {"levels": sorted(lv.concurrency for lv in levels), "peak": peak.value("output_tps"), "at": peak.concurrency,
            "benchmark_s": trial["benchmark_s"], "wall_s": wall, "gpu_s": wall * gpus,
            "stop": (trial.get("adaptive") or {}).get("stop_reason")}


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    campaign = load_campaign(campaign_file(duration))
    totals = {"grid": [0.0, 0.0], "adaptive": [0.0, 0.0]}
    ok = True
    try:
        for cell in campaign.cells():
            found = {mode: sweep_cell(campaign, cell, mode) for mode in ("grid", "adaptive")}
            for mode, r in found.items():
                totals[mode][0] += r["benchmark_s"]
                totals[mode][1] += r["gpu_s"]
                print(f"{cell.config:<15} {mode:<8} levels {r['levels']}  peak {r['peak']:8.1f} tok/s at {r['at']:>2}  "
                      f"benchmark {r['benchmark_s']:6.1f} s  sweep wall {r['wall_s']:6.1f} s  GPU-s {r['gpu_s']:7.1f}"
                      + (f"  stopped: {r['stop']}" if r["stop"] else ""), flush=True)
            g, a = found["grid"], found["adaptive"]
            within = a["peak"] >= g["peak"] * (1 - NOISE_FLOOR_PCT / 100)
            ok &= within
            print(f"{cell.config:<15} adaptive peak {100 * (a['peak'] / g['peak'] - 1):+.1f} % vs grid "
                  f"({'within' if within else 'BELOW'} the {NOISE_FLOOR_PCT:g} % noise floor); benchmark seconds "
                  f"{100 * a['benchmark_s'] / g['benchmark_s']:.0f} % of the grid's", flush=True)
        ratio = totals["adaptive"][0] / totals["grid"][0]
        print(f"total benchmark seconds: grid {totals['grid'][0]:.1f}, adaptive {totals['adaptive'][0]:.1f} "
              f"({100 * ratio:.0f} %, target <= 60 %); GPU-seconds of the sweeps: grid {totals['grid'][1]:.0f}, "
              f"adaptive {totals['adaptive'][1]:.0f} ({100 * totals['adaptive'][1] / totals['grid'][1]:.0f} %; "
              "each adaptive level is its own GuideLLM run, whose start-up the local runtime's short levels magnify)")
        print(f"every adaptive peak within noise of the grid's: {ok}")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
