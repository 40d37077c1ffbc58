"""Print the numbers behind the performance targets (not a test: numbers, not pass/fail asserts).

- DAG file parse time for the reference campaign, beyond importing Airflow (target <= 0.5 s)
- `make demo` wall time after set-up (target <= 5 min) and peak memory of its process tree (<= 3 GiB)
- orchestration overhead per cell: cell wall time minus GuideLLM's time (target <= 10 s)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

PARSE_SNIPPET = """
import time, runpy
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
runpy.run_path("{dag}")
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def parse_time(runs: int = 5) -> None:
    beyond, imports = [], []
    for _ in range(runs):
        out = subprocess.run([PY, "-c", PARSE_SNIPPET.format(dag=ROOT / "dags" / "llmd_campaigns.py")],
                             capture_output=True, text=True, check=True)
        a, b = map(float, out.stdout.split()[-2:])
        imports.append(a)
        beyond.append(b)
    print(f"DAG parse (16 cells): {statistics.median(beyond):.3f} s beyond importing Airflow "
          f"(median of {runs}; importing airflow.sdk took {statistics.median(imports):.2f} s)  target <= 0.5 s")


def demo() -> None:
    started = time.monotonic()
    proc = psutil.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.25)
    wall = time.monotonic() - started
    print(proc.stdout.read().decode()[-2500:])
    print(f"make demo (after set-up): {wall:.0f} s wall  target <= 300 s; exit code {proc.returncode}")
    print(f"peak memory of the demo's process tree (sum of RSS, sampled every 0.25 s): {peak / 2**30:.2f} GiB  target <= 3 GiB")
    overhead(latest_run())


def latest_run() -> Path:
    runs = [p for p in (ROOT / "results").iterdir() if (p / "summary.json").exists()]
    return max(runs, key=lambda p: p.stat().st_mtime)


def overhead(run: Path) -> None:
    print(f"orchestration overhead per cell in {run.name} (target <= 10 s):")
    for record_path in sorted(run.glob("*/*/cell.json")):
        r = json.loads(record_path.read_text())
        steps = r.get("steps", {})
        if "deploy" not in steps or "teardown" not in steps:
            continue
        t0 = datetime.fromisoformat(steps["deploy"]["started"])
        ends = [datetime.fromisoformat(s["ended"]) for s in steps.values()]
        wall = (max(ends) - t0).total_seconds()
        trials = r.get("sweep", {}).get("trials", [])
        guidellm = sum(t.get("guidellm_wall_s", 0) for t in trials)
        bench = sum(t.get("benchmark_s", 0) for t in trials)
        print(f"  {r['short_model']}/{r['config']:<15} cell {wall:6.1f} s; GuideLLM process {guidellm:5.1f} s "
              f"(of which measuring {bench:4.1f} s); overhead vs GuideLLM process {wall - guidellm:5.1f} s, "
              f"vs measured time {wall - bench:5.1f} s")


if __name__ == "__main__":
    parse_time()
    if "--no-demo" not in sys.argv:
        demo()
