"""Judgement targets on the local runtime (prints numbers; not a test):

(a) a campaign whose four configurations are identical (the same mock-server profile), run REPS_A times:
    how many of the 3 x REPS_A comparisons against the baseline were judged "higher" or "lower"
    (target: at most 1 of 30);
(b) a campaign with a 10 % inter-token-latency difference and `trials: 3` (redeployed), run REPS_B times
    at 8 streams for 20 s: how often the slower configuration was called "lower" (target: 5 of 5).

Each run goes through the pipeline's own step code (deploy, warmup, sweep, collect_pcp, teardown,
load_results) with the demo's workload, into a private results server, and is judged by the report's own
code (report.data.from_store + report.build): runs after the first see the earlier ones as history.
`python benchmarks/noise_targets.py [REPS_A] [REPS_B]`
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-noise-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench import report  # noqa: E402 - after the environment above
from llmd_bench.measure.processes import free_port  # noqa: E402
from llmd_bench.model import catalog  # noqa: E402
from llmd_bench.model.campaign import Cell  # noqa: E402
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params  # noqa: E402
from llmd_bench.report.data import from_store  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import collect_pcp, deploy, load_results, sweep, teardown, warmup  # noqa: E402
from llmd_bench.store import db  # noqa: E402
from llmd_bench.store.server import server_at  # noqa: E402

# the demo's workload (scripts/demo.sh) at levels that leave this 2-core machine below saturation (at 16
# streams the host is >= 95 % busy and those levels are suspect: no verdict, nothing for the noise model to judge)
DEMO = {"concurrency": [1, 4, 8], "duration_s": 4, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
        "turns": 2, "seed": 889, "warmup_requests": 2}
PROFILE = {"ttft_ms": 40, "itl_ms": 8.0, "max_concurrent_requests": 64}
CONFIGS = ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"]
B_DURATION_S = 20


def campaign_file(name: str, configs: list[str], profiles: dict[str, dict], trials: int, **workload) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": f"noise_{name}", "schedule": None, "trials": trials,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": configs,
                "workload": {**DEMO, **workload}, "local_simulation": profiles})
    path = WORK / "campaigns" / f"noise_{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_campaign(path: Path, run_id: str, url: str) -> report.Report:
    campaign = load_campaign(path)
    params = resolve_params(campaign, {}, catalog.known_versions())
    for cell in campaign.cells():
        ctx = StepContext(campaign, params, run_id, "local", Cell(cell.model, cell.config))
        deploy.run(ctx)
        try:
            warmup.run(ctx)
            sweep.run(ctx)
            collect_pcp.run(ctx)
        finally:
            teardown.run(ctx)
        load_results.run(ctx)
    engine = db.make_engine(url)
    try:
        return report.build(from_store(engine, run_id, campaign.dag_id))
    finally:
        engine.dispose()


def main() -> None:
    reps_a = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    reps_b = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    server = server_at(WORK / "pg", free_port())
    url = server.start()
    os.environ["LLMD_BENCH_DB_URL"] = url
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    try:
        identical = campaign_file("identical", CONFIGS, dict.fromkeys(CONFIGS, PROFILE), trials=1)
        false_calls, total, spreads = 0, 0, [0.0]
        started = time.monotonic()
        for i in range(1, reps_a + 1):
            r = run_campaign(identical, f"identical-{i}", url)
            for c in r.comparisons.itertuples():
                total += 1
                called = c.judgement in ("higher", "lower")
                false_calls += called
                spreads.append(abs(c.vs_baseline_pct))
                print(f"(a) run {i:2d} {c.config:<15} {c.vs_baseline_pct:+6.2f} %  {c.judgement:<12} {c.basis}", flush=True)
        if reps_a:
            spreads = spreads[1:]
            print(f"(a) identical configurations: {false_calls} of {total} comparisons judged higher/lower "
                  f"(target <= 1 of 30); |difference| median {sorted(spreads)[len(spreads) // 2]:.2f} %, "
                  f"max {max(spreads):.2f} %; {time.monotonic() - started:.0f} s", flush=True)

        slower = dict(PROFILE, itl_ms=PROFILE["itl_ms"] * 1.10)
        # 20 s at 8 streams: a level's window edges (one request per stream) are then ~1.7 % of its output, so
        # three trials can resolve the 8 % throughput difference; at 4 s they are ~9 %
        ten_pct = campaign_file("itl10", ["no-offload", "native-offload"],
                                {"no-offload": PROFILE, "native-offload": slower}, trials=3, concurrency=[8],
                                duration_s=B_DURATION_S)
        called_lower = 0
        started = time.monotonic()
        for i in range(1, reps_b + 1):
            r = run_campaign(ten_pct, f"itl10-{i}", url)
            c = r.comparisons.set_index("config").loc["native-offload"]
            called_lower += c["judgement"] == "lower"
            print(f"(b) run {i} native-offload {c['vs_baseline_pct']:+6.2f} %  {c['judgement']:<12} {c['basis']}", flush=True)
            for config, g in r.data.levels.groupby("config"):
                print(f"(b) run {i} {config:<15} trials: "
                      + ", ".join(f"{v:.1f}" for v in g.sort_values("trial")["output_tps_mean"]) + " tok/s", flush=True)
        if reps_b:
            print(f"(b) 10 % slower inter-token latency, 3 redeployed trials: called lower in {called_lower} of "
                  f"{reps_b} runs (target {reps_b} of {reps_b}); {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
