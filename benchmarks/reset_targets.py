"""level_isolation: reset vs restart on the local runtime (prints numbers; not a test).

One cell of the revised method (one GuideLLM run per level, prefix_count 2x) with CPU offload at llm-d v0.8.0,
served by a mock server behind the simulated vLLM prefix cache (GPU and offload tiers), swept once with
`level_isolation: restart` and once with `reset`, with the pipeline's own step code. Printed per mode: the
seconds spent isolating levels (model loads and warm-ups, or resets, their checks and warm-ups), the sweep's wall
and GPU-seconds (2 simulated GPUs), and per level the output throughput and the prefix-cache hit rate the
simulated servers counted, which must agree between the modes (every level starts from empty caches in both).
Local model loads take about a second (mock servers), so the time saved here is small; on a cluster each
restart is a model load of minutes (`llmd-bench plan` estimates it).
`python benchmarks/reset_targets.py [DURATION_S]`
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
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-reset-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench.measure.guidellm_report import parse_report_file  # noqa: E402
from llmd_bench.measure.observe import prometheus  # noqa: E402
from llmd_bench.measure.observe.sampler import read as read_samples  # noqa: E402
from llmd_bench.model import catalog  # noqa: E402 - after the environment above
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import deploy, sweep, teardown, warmup  # noqa: E402

LEVELS = [1, 4, 8, 16]
CACHE = {"gpu_blocks": 2000, "block_tokens": 16, "offload_blocks": 20000}


def campaign_file(duration_s: float) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": "reset_target", "schedule": None, "trials": 1,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": ["no-offload", "native-offload"],
                "workload": {"concurrency": LEVELS, "duration_s": duration_s, "prompt_tokens": 64, "output_tokens": 32,
                             "prefix_tokens": 256, "turns": 1, "seed": 889, "warmup_requests": 2,
                             "runs": "per-level", "prefix_count": "2x"},
                "local_simulation": {"no-offload": {"ttft_ms": 40, "itl_ms": 8.0},
                                     "native-offload": {"ttft_ms": 44, "itl_ms": 8.8, "prefix_cache": CACHE}}})
    path = WORK / "campaigns" / "reset_target.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_cell(campaign, cell, isolation: str) -> dict:
    params = resolve_params(campaign, {"level_isolation": isolation, "llmd_version": "v0.8.0",
                                       "configs": ["native-offload"]}, catalog.known_versions())
    ctx = StepContext(campaign, params, f"reset-target-{isolation}", "local", cell)
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
    samples = [s for s in read_samples(ctx.folder.serving_samples(1)) if s.get("source") == "vllm"]
    serving = {row["concurrency"]: row for row in prometheus.per_level(samples, trial["level_windows"])}
    isolating = sum((r.get("redeploy_s") or 0) + (r.get("reset_s") or 0) + (r.get("warmup_s") or 0) for r in trial["runs"])
    gpus = ctx.params.tensor_parallel_size * ctx.params.replicas
    return {"tps": {lv.concurrency: lv.value("output_tps") for lv in levels},
            "hit_rate": {c: serving.get(c, {}).get("prefix_cache_hit_rate") for c in LEVELS},
            "isolating_s": isolating, "wall_s": wall, "gpu_s": wall * gpus,
            "loads": sum(1 for r in trial["runs"] if r.get("isolation") == "redeployed")}


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    campaign = load_campaign(campaign_file(duration))
    (cell,) = [c for c in campaign.cells() if c.config == "native-offload"]
    try:
        found = {mode: sweep_cell(campaign, cell, mode) for mode in ("restart", "reset")}
        for mode, r in found.items():
            print(f"{mode:<8} model loads in the sweep {r['loads']}  isolating levels {r['isolating_s']:6.1f} s  "
                  f"sweep wall {r['wall_s']:6.1f} s  GPU-s {r['gpu_s']:7.1f}", flush=True)
            for c in LEVELS:
                rate = r["hit_rate"][c]
                print(f"    level {c:>3}: {r['tps'][c]:8.1f} tok/s  prefix-cache hit rate "
                      f"{'n/a' if rate is None else f'{100 * rate:5.1f} %'}", flush=True)
        a, b = found["restart"], found["reset"]
        diffs = [100 * (b["tps"][c] / a["tps"][c] - 1) for c in LEVELS]
        print(f"reset vs restart: throughput per level {', '.join(f'{d:+.1f} %' for d in diffs)}; "
              f"hit rate per level {', '.join(_pp(a['hit_rate'][c], b['hit_rate'][c]) for c in LEVELS)}; "
              f"GPU-seconds {100 * b['gpu_s'] / a['gpu_s']:.0f} % of restart's", flush=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


def _pp(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{100 * (b - a):+.1f} pp"


if __name__ == "__main__":
    main()
