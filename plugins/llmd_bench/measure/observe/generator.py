"""The load generator's own CPU use per level, and when a level measured the generator instead of the server.

GuideLLM runs in its own process group (steps/sweep.py); every second the CPU time of each process in the
group is read from /proc, so each level records the generator's cores in use and its busiest process.
Those are recorded, not judged: GuideLLM 0.8.1's scheduler and workers poll, so its busiest process sits
near 100 % of a core even at concurrency 1, and its polling workers keep a 2-core host 96 % busy at 4
streams while it keeps up (both measured here). A busy host alone is therefore no reason either; a host busy
with work outside the cell is (host_load.py: the same sampler reads the host's and the cell's servers' CPU).

What does show a generator that cannot keep up is GuideLLM's own scheduler timing (its report's
`scheduler_metrics`, guidellm/benchmark/schemas/accumulator.py at v0.8.1): `request_targeted_start_delay`
is how late each request was sent after its stream became free, `request_time` how long the request
took. With concurrent streams the measured throughput is streams / (request time + that lag), so a lag of
START_LAG_LIMIT_PCT of the request time under-measures the server by a fifth, more than the configuration
differences this tool is asked to judge (5-10 %): the level describes the generator and is suspect.
Measured here against the mock server (2 cores): 3 % at 1 stream, 8 % at 8, 11 % at 16, 24 % at 32,
43 % at 64, 83 % at 128, while the throughput kept rising by less and less (1,560, 2,235, 2,425 tok/s).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from llmd_bench.measure.observe import host_load

INTERVAL_S = 1.0
START_LAG_LIMIT_PCT = 25.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int, proc_root: Path = Path("/proc")) -> dict[str, float]:
    """user + system CPU seconds of every live process in the process group, by pid."""
    return host_load.in_groups(host_load.process_cpu(proc_root), {pgid})


class CpuSampler:
    """A background thread appending {"time": t, "cpu_s": {pid: seconds}} lines for a process group, with the
    host's CPU (`host`: host_load.HostCpu), the cell's servers' (`servers_cpu_s`, by pid) and the sampling
    step's (`step_cpu_s`: its process group and its parent), so a level can be judged for a busy host
    (host_load.py)."""

    def __init__(self, out: Path, pgid: int, interval_s: float = INTERVAL_S) -> None:
        self.out, self.pgid, self.interval_s = out, pgid, interval_s
        # the cell's servers as the local runtime started them for this trial (none in a cluster's sweep pod)
        self.servers = host_load.cell_server_groups(out)
        # the sweep step's process group, and the process that started the step (Airflow's task runner relaying its
        # output; PID 1 and 0 are no such process): the harness, not other work
        self.step_group, parent = os.getpgrp(), os.getppid()
        self.step_parent = {str(parent)} if parent > 1 else set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmd-bench-generator-cpu", daemon=True)

    def __enter__(self) -> CpuSampler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.sample()
            if sample["cpu_s"]:
                with open(self.out, "a") as f:
                    f.write(json.dumps(sample) + "\n")
            self._stop.wait(self.interval_s)

    def sample(self, proc_root: Path = Path("/proc")) -> dict[str, Any]:
        """One line: the time, GuideLLM's CPU by pid, and the host's, the servers' and the step's CPU."""
        now = time.time()
        procs = host_load.process_cpu(proc_root)
        host = host_load.read_host_cpu(proc_root)
        line: dict[str, Any] = {"time": now, "cpu_s": host_load.in_groups(procs, {self.pgid})}
        if host is not None:
            line["host"] = host.model_dump()
            line["servers_cpu_s"] = host_load.in_groups(procs, self.servers)
            line["step_cpu_s"] = {pid: cpu for pid, group, cpu in procs
                                  if (group == self.step_group and group != self.pgid) or pid in self.step_parent}
        return line


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed step
    return rows


def per_level(samples: list[dict[str, Any]], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level window: the generator's cores in use (all its processes) and its busiest process's % of a
    core, from the first to the last sample inside the window, and the host's load over the same samples where
    they read it (host_load.HostLoad.as_level). Levels with fewer than 2 samples are left out."""
    out = []
    for w in windows:
        inside = sorted((s for s in samples if w["start"] <= s["time"] <= w["end"]), key=lambda s: s["time"])
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        elapsed = last["time"] - first["time"]
        if elapsed <= 0:
            continue
        # a process that appeared after the first sample (a worker spawned for the level) used all its CPU inside
        used = {pid: max(0.0, cpu - first["cpu_s"].get(pid, 0.0)) for pid, cpu in last["cpu_s"].items()}
        if not used:
            continue
        level = {"concurrency": w["concurrency"], "trial": w.get("trial", 1),
                 "cpu_cores": round(sum(used.values()) / elapsed, 3),
                 "busiest_process_pct": round(max(used.values()) / elapsed * 100.0, 1),
                 "processes": len(used)}
        load = host_load.level_load(first, last, sum(used.values()))
        out.append(level | (load.as_level() if load is not None else {}))
    return out


def start_lag_pct(summary: dict[str, Any]) -> float | None:
    """How late GuideLLM sent requests after their stream became free, in % of the request time."""
    metrics = summary.get("scheduler_metrics") if isinstance(summary, dict) else None
    if not isinstance(metrics, dict):
        return None
    lag, took = metrics.get("request_targeted_start_delay_avg"), metrics.get("request_time_avg")
    # GuideLLM writes -1.0 when it has no estimate
    if not isinstance(lag, (int, float)) or not isinstance(took, (int, float)) or lag < 0 or took <= 0:
        return None
    return round(lag / took * 100.0, 2)


def suspect_reason(lag_pct: float | None) -> str | None:
    """Why a level's numbers describe the load generator rather than the server; None if they do not."""
    if lag_pct is not None and lag_pct >= START_LAG_LIMIT_PCT:
        return (f"load generator saturated (it sent requests {lag_pct:.0f} % of a request's time late; "
                f"limit {START_LAG_LIMIT_PCT:.0f} %)")
    return None
