"""Cells side by side on the local runtime (prints numbers; not a test): the wall time of a local rehearsal of the
demo's four configurations with `lanes: 1` (one cell after another) and `lanes: 2` (two cells at once, each lane
taking the next cell when its last one is torn down, as the DAG chains them), with the pipeline's own step code.

On this 2-core machine the simulated servers and GuideLLM of two lanes share the CPU, so the speed-up says what the
rehearsal gains in wall time, not what a cluster's lanes (each on its own GPUs) gain; the levels' host CPU is
recorded and the report judges levels whose host was saturated as suspect.
`python benchmarks/lanes_targets.py [DURATION_S]`
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-lanes-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

CONFIGS = ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"]
DEMO = {"concurrency": [1, 4, 8], "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256, "turns": 2,
        "seed": 889, "warmup_requests": 2}


def campaign_file(lanes: int, duration_s: float) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": f"lanes_{lanes}", "schedule": None, "trials": 1, "lanes": lanes,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": CONFIGS,
                "workload": {**DEMO, "duration_s": duration_s}})
    path = WORK / "campaigns" / f"lanes_{lanes}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_lane(path: Path, run_id: str, configs: list[str]) -> None:
    """One lane: its cells one after another (deploy, warmup, sweep, teardown)."""
    from llmd_bench.model import catalog
    from llmd_bench.model.campaign import Cell
    from llmd_bench.model.campaign_files import load_campaign
    from llmd_bench.model.params import resolve_params
    from llmd_bench.stack.context import StepContext
    from llmd_bench.steps import deploy, sweep, teardown, warmup

    campaign = load_campaign(path)
    params = resolve_params(campaign, {}, catalog.known_versions())
    for config in configs:
        ctx = StepContext(campaign, params, run_id, "local", Cell("Qwen/Qwen3-0.6B", config))
        deploy.run(ctx)
        try:
            warmup.run(ctx)
            sweep.run(ctx)
        finally:
            teardown.run(ctx)


def rehearse(lanes: int, duration_s: float) -> float:
    path = campaign_file(lanes, duration_s)
    # cell i goes to lane i % lanes, as airflow_dag.build_dag assigns them
    plan = [[c for i, c in enumerate(CONFIGS) if i % lanes == lane] for lane in range(lanes)]
    started = time.monotonic()
    workers = [multiprocessing.Process(target=run_lane, args=(path, f"lanes-{lanes}", cells)) for cells in plan]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"a lane of the {lanes}-lane rehearsal failed (exit {w.exitcode})")
    return time.monotonic() - started


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    try:
        one = rehearse(1, duration)
        print(f"lanes: 1  {len(CONFIGS)} cells one after another: {one:6.1f} s wall", flush=True)
        two = rehearse(2, duration)
        print(f"lanes: 2  two cells at once:                {two:6.1f} s wall ({100 * two / one:.0f} % of one lane; "
              f"both lanes share this host's {os.cpu_count()} cores)", flush=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
