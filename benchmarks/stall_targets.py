"""GuideLLM stalls under CPU load, and how fast the sweep's progress watch finds them (prints numbers; not a test).

One cell on the local runtime (a mock server) is deployed once; then SWEEPS short sweeps, each one GuideLLM run of
the demo's levels (1, 8, 16; DURATION_S each) through the sweep step's own runner (steps/sweep.execute_run: the
progress watch, the deadline, the stop of the process group, the retry), while another process keeps both cores
busy. Printed per sweep: its wall time and each attempt the watch (or the deadline) stopped, with how long the run
had been silent when it was stopped (the detection time; target under 90 s each) and how long it had run. A stalled
attempt's log, with its processes' stacks (py-spy, a dev requirement), is kept and its folder printed: what the
processes wait for is the cause of the stall.
`python benchmarks/stall_targets.py [SWEEPS] [DURATION_S]` (default 30 sweeps of 4 s levels, about 30 minutes)
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="llmd-bench-stall-"))
os.environ.update({"LLMD_BENCH_HOME": str(ROOT), "LLMD_BENCH_RUNTIME": "local", "HF_HUB_OFFLINE": "1",
                   "LLMD_BENCH_CAMPAIGNS": str(WORK / "campaigns"), "LLMD_BENCH_RESULTS": str(WORK / "results"),
                   "LLMD_BENCH_REPORTS": str(WORK / "reports")})

from llmd_bench.measure import guidellm_watch  # noqa: E402 - after the environment above
from llmd_bench.model import catalog  # noqa: E402
from llmd_bench.model.campaign_files import load_campaign  # noqa: E402
from llmd_bench.model.params import resolve_params  # noqa: E402
from llmd_bench.model.settings import settings  # noqa: E402
from llmd_bench.stack.context import StepContext  # noqa: E402
from llmd_bench.steps import deploy, endpoint_for, sweep, teardown  # noqa: E402

LEVELS = [1, 8, 16]  # the demo's levels (scripts/demo.sh)
TARGET_S = 90.0
BUSY = "import multiprocessing as m\ndef f():\n    while True: pass\nif __name__ == '__main__':\n" \
       "    ps = [m.Process(target=f) for _ in range(2)]\n    [p.start() for p in ps]\n    [p.join() for p in ps]\n"


def campaign_file(duration_s: float) -> Path:
    doc = yaml.safe_load((ROOT / "include" / "campaigns" / "kv_cache_eval.yaml").read_text())
    doc.update({"dag_id": "stall_target", "schedule": None, "trials": 1,
                "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}], "configs": ["no-offload"],
                "workload": {"concurrency": LEVELS, "duration_s": duration_s, "prompt_tokens": 64, "output_tokens": 32,
                             "prefix_tokens": 256, "turns": 2, "seed": 889, "warmup_requests": 2}})
    path = WORK / "campaigns" / "stall_target.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def one_sweep(ctx: StepContext, n: int, target: str) -> tuple[float, list[dict], str]:
    """Sweep n (its own trial folder): its wall time, its stalled attempts, and how it ended."""
    started = time.monotonic()
    printed = io.StringIO()  # the runner prints GuideLLM's log tail; only the summary is wanted here
    try:
        with contextlib.redirect_stdout(printed):
            done = sweep.execute_run(ctx, n, LEVELS, target, sweep.report_path(ctx, n))
        return time.monotonic() - started, done.get("stalled", []), "completed"
    except sweep.TrialStalled as exc:
        return time.monotonic() - started, exc.stalled, "failed: every attempt stalled"
    except Exception as exc:  # noqa: BLE001 - a benchmark reports the failure and goes on
        return time.monotonic() - started, [], f"failed: {str(exc)[:200]}"


def closest_call(log: Path, plan: guidellm_watch.WatchPlan) -> tuple[float, float, str]:
    """A completed run's log replayed through the watch with its own timestamps (whole seconds): the wait for a
    progress line that used the most of what the watch allowed it (seconds waited, seconds allowed, the phase).
    Waiting longer than allowed is still fine within the grace; a healthy run near it would risk a false stop."""
    stamped = [(datetime.datetime.strptime(m[1], "%y-%m-%d %H:%M:%S").timestamp(), line)
               for line in log.read_text(errors="replace").splitlines()
               if (m := re.match(r"(\d\d-\d\d-\d\d \d\d:\d\d:\d\d)\|", line))]
    watch = guidellm_watch.ProgressWatch(plan, stamped[0][0] if stamped else 0.0)
    worst = (0.0, 1.0, "-")
    for at, line in stamped:
        waited, allowed = at - watch.last_progress, watch.due_at - watch.last_progress
        if guidellm_watch.parse_line(line).kind == "level" and waited / allowed > worst[0] / worst[1]:
            worst = (waited, allowed, watch.phase)
        watch.observe(line, at)
    return worst


def main() -> None:
    sweeps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    campaign = load_campaign(campaign_file(duration))
    (cell,) = campaign.cells()
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, "stall-target", "local", cell)
    deploy.run(ctx)
    busy = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
    print(f"{sweeps} sweeps of levels {LEVELS} x {duration:g} s through steps/sweep.execute_run, both cores kept "
          f"busy by another process (pid {busy.pid}); GuideLLM's deadline {sweep.trial_deadline_s(ctx):g} s, the "
          f"watch's grace {settings().sweep_stall_grace_s:g} s", flush=True)
    detections: list[float] = []  # seconds silent when stopped, by the watch or the deadline
    stalled_sweeps = failed = 0
    try:
        target = endpoint_for(ctx)
        plan = sweep.watch_plan(ctx, LEVELS, None)
        for n in range(1, sweeps + 1):
            wall, stalled, how = one_sweep(ctx, n, target)
            stalled_sweeps += bool(stalled)
            failed += how != "completed"
            detections += [s["silent_s"] for s in stalled]
            found = "; ".join(f"attempt {s['attempt']} stopped by the {s['by']} after {s['silent_s']:.0f} s silent "
                              f"({s['after_s']:.0f} s into the run)" for s in stalled)
            margin = ""
            if how == "completed" and plan is not None:
                waited, allowed, where = closest_call(ctx.folder.guidellm_log(n), plan)
                margin = f"; longest wait for progress: {waited:.0f} s of the {allowed:.0f} s allowed ({where})"
            print(f"sweep {n:>2}: {wall:6.1f} s  {how}{'; ' + found if found else ''}{margin}", flush=True)
    finally:
        os.killpg(busy.pid, 9)
        busy.wait()
        teardown.run(ctx)
    worst = max(detections, default=0.0)
    print(f"{stalled_sweeps} of {sweeps} sweeps stalled ({len(detections)} attempts stopped, "
          f"{failed} sweeps failed); "
          + (f"detected after {', '.join(f'{d:.0f}' for d in detections)} s of silence (target under {TARGET_S:g} s "
             f"each: {'met' if worst < TARGET_S else 'NOT met'})" if detections else "no stall to time"), flush=True)
    if stalled_sweeps:
        print(f"stalled logs, with their processes' stacks: {ctx.cell_dir}/trial-*/guidellm.stalled-*.log (kept)")
    else:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
