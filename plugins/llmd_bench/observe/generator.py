"""The load generator's own CPU use per level, and when a level measured the generator instead of the server.

GuideLLM runs in its own process group (steps/sweep.py); every second the CPU time of each process in the
group is read from /proc, so each level gets the generator's total cores and its busiest process.

A level is suspect when:
- the busiest GuideLLM process used >= BUSIEST_PROCESS_LIMIT_PCT of a core: GuideLLM's scheduler and each
  worker are single asyncio event loops, and a loop that is busy this share of the time delays sending
  requests and reading tokens, which shows up as latency the server never had (queueing theory: at 90 %
  utilisation the mean wait of an M/M/1 queue is 9x the service time);
- or, where the generator shares the host with what it measures (the local runtime), the host was
  >= HOST_BUSY_LIMIT_PCT CPU-busy over the level (PCP): the mock servers and the generator were then
  competing for the same cores, so the numbers measured the machine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

SAMPLES_FILE = "generator_cpu.jsonl"
INTERVAL_S = 1.0
BUSIEST_PROCESS_LIMIT_PCT = 90.0
HOST_BUSY_LIMIT_PCT = 95.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int, proc_root: Path = Path("/proc")) -> dict[str, float]:
    """user + system CPU seconds of every live process in the process group, by pid."""
    out: dict[str, float] = {}
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: split after its last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 13 or int(fields[2]) != pgid:  # fields[2] is pgrp (field 5 of stat)
            continue
        out[entry.name] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    return out


class CpuSampler:
    """A background thread appending {"time": t, "cpu_s": {pid: seconds}} lines for a process group."""

    def __init__(self, out: Path, pgid: int, interval_s: float = INTERVAL_S) -> None:
        self.out, self.pgid, self.interval_s = out, pgid, interval_s
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
            cpu = group_cpu_seconds(self.pgid)
            if cpu:
                with open(self.out, "a") as f:
                    f.write(json.dumps({"time": time.time(), "cpu_s": cpu}) + "\n")
            self._stop.wait(self.interval_s)


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
    core, from the first to the last sample inside the window. Levels with fewer than 2 samples are left out."""
    out = []
    for w in windows:
        inside = sorted((s for s in samples if w["start"] <= s["time"] <= w["end"]), key=lambda s: s["time"])
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        elapsed = last["time"] - first["time"]
        if elapsed <= 0:
            continue
        used = {pid: max(0.0, cpu - first["cpu_s"].get(pid, cpu)) for pid, cpu in last["cpu_s"].items()
                if pid in first["cpu_s"]}
        if not used:
            continue
        out.append({"concurrency": w["concurrency"], "trial": w.get("trial", 1),
                    "cpu_cores": round(sum(used.values()) / elapsed, 3),
                    "busiest_process_pct": round(max(used.values()) / elapsed * 100.0, 1),
                    "processes": len(used)})
    return out


def suspect_reason(generator: dict[str, Any] | None, host: dict[str, Any] | None, shares_host: bool) -> str | None:
    """Why a level's numbers describe the load generator or the machine rather than the server; None if fine."""
    reasons = []
    if generator and (generator.get("busiest_process_pct") or 0) >= BUSIEST_PROCESS_LIMIT_PCT:
        reasons.append(f"load generator saturated (its busiest process used "
                       f"{generator['busiest_process_pct']:.0f} % of a core; limit {BUSIEST_PROCESS_LIMIT_PCT:.0f} %)")
    if shares_host and host and (host.get("cpu_util_pct") or 0) >= HOST_BUSY_LIMIT_PCT:
        reasons.append(f"host CPU {host['cpu_util_pct']:.0f} % busy while the generator shared it with the "
                       f"servers (limit {HOST_BUSY_LIMIT_PCT:.0f} %)")
    return "; ".join(reasons) or None
