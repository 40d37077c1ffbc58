"""Busy-host targets on the local runtime (prints numbers; not a test).

The demo's campaign (scripts/demo.sh: the reference campaign at demo size, Qwen3-0.6B x the four configurations,
native-offload simulated 10 % slower, design auto = aba on this runtime, so the baseline runs again last) is run
twice with the pipeline's own step code (deploy, warmup, sweep, collect_pcp, teardown, load_results) into a private
results server and judged by the report's own code (report.data.from_store + report.build):

(quiet)  as the machine is;
(loaded) while BURNERS processes (`python -c 'while True: pass'`, each in its own session, so each gets the
         scheduler's share of a session) keep the cores busy from before the first cell to after the last.

Printed per run: each configuration's % vs the baseline and its verdict with the basis, the baseline's drift, every
suspect level and why, and each level's host CPU (busy %, % of it outside the cell's servers and GuideLLM, steal %).
Target: native-offload is never called "higher", in either run. What else ran on the machine is printed before
each run (load average, the busiest processes).
`python benchmarks/busy_host_targets.py [DURATION_S] [LEVELS] [BURNERS]` (default 4 s, 1,8,16, 2: the demo's)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-busy-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_RESULTS": str(WORK / "results"), "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench import report  # noqa: E402 - after the environment above
from llmd_bench.measure.processes import free_port  # noqa: E402
from llmd_bench.model import catalog, design  # noqa: E402
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params, selected_cells  # noqa: E402
from llmd_bench.report.analysis import is_missing  # noqa: E402
from llmd_bench.report.data import from_store  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import collect_pcp, deploy, load_results, sweep, teardown, warmup  # noqa: E402
from llmd_bench.store import db, read  # noqa: E402
from llmd_bench.store.rows import StoredRun  # noqa: E402
from llmd_bench.store.server import server_at  # noqa: E402

REFERENCE = ROOT / "include" / "campaigns" / "kv_cache_eval.yaml"
# scripts/demo.sh's DEMO_SIZED params
DEMO = {"models": ["Qwen/Qwen3-0.6B"], "configs": ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"],
        "concurrency": [1, 8, 16], "duration_s": 4, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
        "turns": 2}


def machine() -> str:
    """What else runs here: the load average and the five busiest processes (ps's lifetime %CPU)."""
    top = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    lines = [line[:150] for line in top.splitlines()[1:6]]
    return f"load average {Path('/proc/loadavg').read_text().split()[:3]}; busiest:\n    " + "\n    ".join(lines)


def run_demo(run_id: str, params_conf: dict) -> tuple[report.Report, StoredRun]:
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, params_conf, catalog.known_versions())
    cells = selected_cells(campaign, params_conf, catalog.known_versions())
    repeats = design.chosen_repeats(campaign, cells, params.baseline, params.design, simulated=True)
    for cell in [*cells, *repeats]:
        ctx = StepContext(campaign, params, run_id, "local", cell)
        started = time.monotonic()
        deploy.run(ctx)
        try:
            warmup.run(ctx)
            sweep.run(ctx)
            collect_pcp.run(ctx)
        finally:
            teardown.run(ctx)
        load_results.run(ctx)
        print(f"[{run_id}] {cell}: {time.monotonic() - started:.0f} s", flush=True)
    engine = db.make_engine(os.environ["LLMD_BENCH_DB_URL"])
    try:
        return report.build(from_store(engine, run_id, campaign.dag_id)), read.stored_run(engine, run_id, campaign.dag_id)
    finally:
        engine.dispose()


def print_run(name: str, r: report.Report, stored: StoredRun) -> bool:
    """The run's verdicts, drift, suspects and each stored level's host CPU; whether native-offload was called
    higher."""
    for c in r.comparisons.itertuples():
        print(f"({name}) {c.config:<15} {c.vs_baseline_pct:+7.2f} % vs baseline  {c.judgement:<13} {c.basis}", flush=True)
    peaks = r.peaks.set_index("config")
    base = peaks.loc["no-offload"] if "no-offload" in peaks.index else None
    if base is not None and not is_missing(base.get("drift_pct")):
        print(f"({name}) baseline drift: first {base['baseline_first_tps']:.1f} tok/s, last "
              f"{base['baseline_last_tps']:.1f} tok/s, {base['drift_pct']:+.2f} %", flush=True)
    trials = int(r.data.params.get("trials") or 1)
    for entry in stored.cells:
        cell = entry.cell
        which = " (repeat)" if design.is_repeat_trial(cell.trial, trials) else ""
        for lv in entry.levels:
            host = {o.metric: o.value for o in entry.observations_at(lv.concurrency) if o.source == "generator"}
            print(f"({name}) {cell.config + which:<24} c={lv.concurrency:<3} {lv.output_tps_mean or 0:7.1f} tok/s  "
                  f"host {host.get('host_busy_pct', float('nan')):5.1f} % busy, "
                  f"{host.get('host_outside_pct', float('nan')):5.1f} % of it outside, "
                  f"steal {host.get('host_steal_pct', float('nan')):4.1f} %, GuideLLM "
                  f"{host.get('cpu_cores', float('nan')):.2f} cores, servers {host.get('servers_cores', float('nan')):.2f}; "
                  f"suspect: {lv.suspect_reason or '-'}", flush=True)
    native = r.comparisons[r.comparisons["config"] == "native-offload"]
    return bool((native["judgement"] == "higher").any())


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else DEMO["duration_s"]
    levels = [int(c) for c in sys.argv[2].split(",")] if len(sys.argv) > 2 else DEMO["concurrency"]
    burners = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    conf = dict(DEMO, duration_s=duration, concurrency=levels)
    server = server_at(WORK / "pg", free_port())
    url = server.start()
    os.environ["LLMD_BENCH_DB_URL"] = url
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    higher: dict[str, bool] = {}
    procs: list[subprocess.Popen] = []
    try:
        for name in ("quiet", "loaded"):
            if name == "loaded":
                procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                         for _ in range(burners)]
                time.sleep(2)
                print(f"(loaded) {burners} CPU burners running: pids {[p.pid for p in procs]}", flush=True)
            print(f"({name}) before the run: {machine()}", flush=True)
            started = time.monotonic()
            r, stored = run_demo(f"busy-{name}", conf)
            print(f"({name}) {time.monotonic() - started:.0f} s; after the run: {machine()}", flush=True)
            higher[name] = print_run(name, r, stored)
            for p in procs:
                p.kill()
                p.wait()
            procs = []
        print("native-offload (simulated 10 % slower) called higher: "
              + ", ".join(f"{k}: {'YES' if v else 'no'}" for k, v in higher.items())
              + f" (target: no in both); levels {levels}, {duration:g} s each", flush=True)
    finally:
        for p in procs:
            p.kill()
        server.stop(mode="immediate")
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
