"""Seeded-sweep targets on the local runtime (prints numbers; not a test).

A cell whose simulated server saturates and then degrades: one replica serves `capacity` requests at once and each
admitted request loses `overload_ms` per request still queued (local_simulation.overload_ms), so throughput peaks
near capacity and falls past it. Swept over the published grid scaled by 1/10 (1 .. 65 streams) with the pipeline's
own step code (deploy, warmup, sweep, teardown, load_results) into a private results server.

(a) stable: run 1 has no history (adaptive), runs 2-4 are seeded brackets, run 5 is the full grid (full_grid_every:
    4). Target: runs 2-4 find peaks within the noise floor of the grid's and use at most 40 % of its benchmark seconds
    and at most 50 % of its GPU-seconds (simulated GPUs x the sweep's wall time; the cell's whole GPU time, deploy and
    teardown included, is printed beside it).
(b) the capacity changes before run 3 (4 -> 16 requests at once): run 3 still finds the new peak, within the noise
    floor of a full grid at the new capacity, and says it widened.
The grid references run in a campaign of their own, so they never seed the seeded runs; every run id is unique
(results/<run id>/ is one run's folder).
`python benchmarks/seeded_targets.py [DURATION_S] [PARTS]` (PARTS: ab, a or b; default ab)
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
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-seeded-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench.measure.guidellm_report import parse_report_file  # noqa: E402 - after the environment above
from llmd_bench.measure.processes import free_port  # noqa: E402
from llmd_bench.model import catalog  # noqa: E402
from llmd_bench.model.campaign import Cell  # noqa: E402
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import deploy, load_results, sweep, teardown, warmup  # noqa: E402
from llmd_bench.store import db  # noqa: E402
from llmd_bench.store.server import server_at  # noqa: E402

GRID = [1, 5, 10, 15, 30, 40, 50, 65]  # the published 1, 50, ..., 650 scaled by 1/10
NOISE_FLOOR_PCT = 5.0
SMALL, LARGE = 4, 16  # requests one replica serves at once, before and after the change


def profile(capacity: int) -> dict:
    return {"ttft_ms": 40, "itl_ms": 16.0, "capacity": capacity, "overload_ms": 40}


def campaign_file(name: str, capacity: int, sweep_mode: str, duration_s: float) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": f"seeded_{name}", "schedule": None, "trials": 1, "noise_floor_pct": NOISE_FLOOR_PCT,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": ["no-offload"], "sweep": sweep_mode,
                "workload": {"concurrency": GRID, "duration_s": duration_s, "prompt_tokens": 64, "output_tokens": 32,
                             "prefix_tokens": 256, "turns": 1, "seed": 889, "warmup_requests": 2},
                "local_simulation": {"no-offload": profile(capacity)}})
    path = WORK / "campaigns" / f"seeded_{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cell(path: Path, run_id: str) -> dict:
    campaign = load_campaign(path)
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, run_id, "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))
    held = time.monotonic()
    deploy.run(ctx)
    try:
        warmup.run(ctx)
        started = time.monotonic()
        sweep.run(ctx)
        wall = time.monotonic() - started
    finally:
        teardown.run(ctx)
    cell_wall = time.monotonic() - held
    load_results.run(ctx)
    (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
    levels = parse_report_file(sweep.report_path(ctx, 1)).levels
    valid = [lv for lv in levels if lv.valid]
    peak = max(valid, key=lambda lv: lv.value("output_tps"))
    gpus = ctx.params.tensor_parallel_size * ctx.params.replicas
    decided = trial.get("seeded") or {}
    return {"run": run_id, "mode": decided.get("mode", "grid"), "levels": sorted(lv.concurrency for lv in levels),
            "peak": peak.value("output_tps"), "at": peak.concurrency, "benchmark_s": trial["benchmark_s"],
            "wall_s": wall, "gpu_s": wall * gpus, "cell_gpu_s": cell_wall * gpus, "decided": decided}


def show(r: dict, grid: dict | None = None) -> None:
    d = r["decided"]
    said = ""
    if d:
        said = f"  [{d['mode']}: {d['reason']}]"
        if d.get("widened_up") or d.get("widened_down"):
            said += f" widened up {d['widened_up']} down {d['widened_down']};"
        if d.get("refined"):
            said += f" refined {d['refined']};"
    vs = ""
    if grid is not None:
        vs = (f"  peak {100 * (r['peak'] / grid['peak'] - 1):+5.1f} % vs grid; benchmark s "
              f"{100 * r['benchmark_s'] / grid['benchmark_s']:3.0f} %; GPU-s {100 * r['gpu_s'] / grid['gpu_s']:3.0f} %")
    print(f"{r['run']:<14} {r['mode']:<9} levels {r['levels']}  peak {r['peak']:7.1f} tok/s at {r['at']:>2}  "
          f"benchmark {r['benchmark_s']:6.1f} s  sweep GPU-s {r['gpu_s']:6.1f}  cell GPU-s {r['cell_gpu_s']:6.1f}"
          f"{vs}{said}", flush=True)


def within(r: dict, grid: dict) -> bool:
    return r["peak"] >= grid["peak"] * (1 - NOISE_FLOOR_PCT / 100)


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    parts = sys.argv[2] if len(sys.argv) > 2 else "ab"
    server = server_at(WORK / "pg", free_port())
    url = server.start()
    os.environ["LLMD_BENCH_DB_URL"] = url
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    started = time.monotonic()
    try:
        print(f"grid {GRID}, levels of {duration:g} s, noise floor {NOISE_FLOOR_PCT:g} %; "
              f"capacity {SMALL} then {LARGE}, overload 40 ms per queued request", flush=True)
        grid_small = run_cell(campaign_file("grid_small", SMALL, "grid", duration), "grid-small")
        show(grid_small)
        if "a" in parts:
            part_a(duration, grid_small)
        if "b" in parts:
            part_b(duration, grid_small)
        print(f"total wall {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(WORK, ignore_errors=True)


def part_a(duration: float, grid_small: dict) -> None:
    print("(a) stable system", flush=True)
    stable = campaign_file("stable", SMALL, "seeded", duration)
    runs = [run_cell(stable, f"stable-week-{i}") for i in range(1, 6)]
    for r in runs:
        show(r, grid_small)
    seeded = runs[1:4]
    bench = sum(r["benchmark_s"] for r in seeded) / (3 * grid_small["benchmark_s"])
    gpu = sum(r["gpu_s"] for r in seeded) / (3 * grid_small["gpu_s"])
    cell_gpu = sum(r["cell_gpu_s"] for r in seeded) / (3 * grid_small["cell_gpu_s"])
    peaks_ok = all(within(r, grid_small) for r in seeded)
    print(f"(a) runs 2-4: modes {[r['mode'] for r in seeded]}; benchmark seconds {100 * bench:.0f} % of the grid's "
          f"(target <= 40 %); sweep GPU-seconds {100 * gpu:.0f} % (target <= 50 %); the cell's whole GPU-seconds "
          f"{100 * cell_gpu:.0f} %; every peak within {NOISE_FLOOR_PCT:g} % of the grid's: {peaks_ok}; run 5: "
          f"{runs[4]['mode']}", flush=True)



def part_b(duration: float, grid_small: dict) -> None:
    print(f"(b) capacity {SMALL} -> {LARGE} before run 3", flush=True)
    grid_large = run_cell(campaign_file("grid_large", LARGE, "grid", duration), "grid-large")
    show(grid_large)
    changing = campaign_file("change", SMALL, "seeded", duration)
    before = [run_cell(changing, f"change-week-{i}") for i in (1, 2)]
    for r in before:
        show(r, grid_small)
    changing = campaign_file("change", LARGE, "seeded", duration)
    third = run_cell(changing, "change-week-3")
    show(third, grid_large)
    d = third["decided"]
    widened = bool(d.get("widened_up") or d.get("widened_down"))
    print(f"(b) run 3: peak {third['peak']:.1f} tok/s at {third['at']} vs the grid's {grid_large['peak']:.1f} at "
          f"{grid_large['at']} ({100 * (third['peak'] / grid_large['peak'] - 1):+.1f} %, within "
          f"{NOISE_FLOOR_PCT:g} %: {within(third, grid_large)}); says it widened: {widened} "
          f"(up {d.get('widened_up')}, down {d.get('widened_down')}); benchmark seconds "
          f"{100 * third['benchmark_s'] / grid_large['benchmark_s']:.0f} % of the grid's", flush=True)


if __name__ == "__main__":
    main()
