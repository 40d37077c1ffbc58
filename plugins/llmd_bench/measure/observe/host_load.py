"""Was the host busy with something other than the cell while a level ran? Then the level is suspect.

The load generator's CPU sampler (generator.CpuSampler) reads, every second, beside GuideLLM's own processes:

- the host's CPU time from /proc/stat (busy = user + nice + system + irq + softirq, and steal; the counters PCP
  calls kernel.all.cpu.user, .nice, .sys, .intr, .steal); in a pod, /proc/stat is the node's;
- the CPU time of the cell's servers: every process group the local runtime started for the cell (mock servers,
  the simulated vLLM replicas, the router, the Redis/Valkey index, the cell's pmlogger), whose leaders' pids the
  cell's runtime.json holds (each runs in its own session, so its pid is its group's id);
- the CPU time of the sampling step's own process group (the sweep step that drives GuideLLM) and of the process
  that started it (Airflow's task runner, which relays the step's output).

Per level, "outside" is the host's busy CPU minus what GuideLLM, the sweep step and the cell's servers used: other
cells, other users' work, the test suite of a colleague on the same machine. On a cluster the sweep pod's node is
judged the same way (the model servers run on their own nodes: nothing of theirs is subtracted there).

A level is suspect (no verdict on a peak or comparison built on it) when

- the host was saturated (busy >= HOST_BUSY_LIMIT_PCT of its CPU time) and at least OUTSIDE_LIMIT_PCT of that busy
  time was outside the cell: the cell's processes then waited for CPU that something else held, by an amount
  nobody measured; a host saturated by the cell's own processes is what the cell measures, not suspect;
- or the hypervisor took at least STEAL_LIMIT_PCT of the CPU time (steal): the whole guest ran slower by that much.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

# Saturated: at 90 % busy on average over a level the run queue is rarely empty; below it, a process that wants a
# CPU mostly finds an idle one, so what else ran took little from the cell.
HOST_BUSY_LIMIT_PCT = 90.0
# The judgements this tool makes are about 5-10 % differences (the default noise floor is 5 %): a saturated host
# that gave 10 % of its busy time to other work took about that much CPU from a cell that wanted all of it, enough
# to move a CPU-bound peak past the floor. The cell's own background (pmcd, the Airflow task runner) stays below it.
OUTSIDE_LIMIT_PCT = 10.0
# Steal is CPU time the guest wanted and the hypervisor gave to someone else; 5 % of it is the default noise floor.
STEAL_LIMIT_PCT = 5.0
# Every reason this module gives starts so: report/suspects.py tells a busy host's suspect from the load generator's.
REASON_PREFIX = "busy host: "

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest and guest_nice are inside user, nice)
_BUSY_FIELDS = (0, 1, 2, 5, 6)
_STEAL_FIELD = 7


class HostCpu(BaseModel):
    """The host's cumulative CPU seconds (all CPUs) at one instant, from /proc/stat."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    busy_s: float
    steal_s: float
    total_s: float


class HostLoad(BaseModel):
    """One level's host CPU: how busy, how much of the busy time was outside the cell, how much was stolen."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    busy_pct: float            # of the host's CPU time
    steal_pct: float           # of the host's CPU time
    outside_pct: float         # of the busy time: not GuideLLM, the sweep step or the cell's servers
    cell_cores: float          # GuideLLM + the sweep step + the cell's servers, in cores
    servers_cores: float
    host_cores: float          # the host's CPUs (CPU seconds per second)

    def as_level(self) -> dict[str, float]:
        """The level's observations (stored as source `generator`, where the sampler ran)."""
        return {"host_busy_pct": round(self.busy_pct, 1), "host_steal_pct": round(self.steal_pct, 2),
                "host_outside_pct": round(self.outside_pct, 1), "cell_cores": round(self.cell_cores, 3),
                "servers_cores": round(self.servers_cores, 3), "host_cores": round(self.host_cores, 2)}


def read_host_cpu(proc_root: Path = Path("/proc")) -> HostCpu | None:
    """The host's CPU seconds now; None where /proc/stat cannot be read (then nothing is judged)."""
    try:
        first = (proc_root / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu" or len(first) < 9:
        return None
    ticks = [int(v) for v in first[1:9]]
    return HostCpu(busy_s=sum(ticks[i] for i in _BUSY_FIELDS) / _TICKS, steal_s=ticks[_STEAL_FIELD] / _TICKS,
                   total_s=sum(ticks) / _TICKS)


def process_cpu(proc_root: Path = Path("/proc")) -> list[tuple[str, int, float]]:
    """(pid, process group, user + system CPU seconds) of every live process."""
    out = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: split after its last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 13:
            continue
        # fields[2] is pgrp (field 5 of stat); utime, stime are fields 14, 15
        out.append((entry.name, int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICKS))
    return out


def in_groups(processes: list[tuple[str, int, float]], groups: set[int]) -> dict[str, float]:
    """CPU seconds by pid of the processes in any of `groups`."""
    return {pid: cpu for pid, group, cpu in processes if group in groups}


def cell_server_groups(samples_file: Path) -> set[int]:
    """The process groups the local runtime started for the cell whose trial folder holds `samples_file`
    (trial-<n>/generator_cpu.jsonl; the cell's runtime.json lists them); empty elsewhere (a cluster's sweep pod)."""
    from llmd_bench.measure.cell_folder import CellFolder, read_runtime_state  # deferred: pydantic models of the folder

    folder = CellFolder(samples_file.parent.parent)
    if not folder.runtime_state.exists():
        return set()
    try:
        return {p.pid for p in read_runtime_state(folder).processes}
    except Exception:  # noqa: BLE001 - a state this version cannot read: nothing subtracted, said by servers_cores 0
        return set()


def used(first: dict[str, float], last: dict[str, float]) -> float:
    """CPU seconds used between two samples by pid; a process that appeared after the first used all of its CPU in
    between."""
    return sum(max(0.0, cpu - first.get(pid, 0.0)) for pid, cpu in last.items())


def level_load(first: dict[str, Any], last: dict[str, Any], generator_s: float) -> HostLoad | None:
    """The host's load between two samples of the sampler (their `host`, `servers_cpu_s`, `step_cpu_s`), given what
    GuideLLM used in between; None when a sample has no host reading."""
    a, b = first.get("host"), last.get("host")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return None
    elapsed = float(last["time"]) - float(first["time"])
    total = float(b["total_s"]) - float(a["total_s"])
    if elapsed <= 0 or total <= 0:
        return None
    busy = max(0.0, float(b["busy_s"]) - float(a["busy_s"]))
    steal = max(0.0, float(b["steal_s"]) - float(a["steal_s"]))
    servers = used(first.get("servers_cpu_s") or {}, last.get("servers_cpu_s") or {})
    step = used(first.get("step_cpu_s") or {}, last.get("step_cpu_s") or {})
    cell = generator_s + step + servers
    outside = max(0.0, busy - cell)
    return HostLoad(busy_pct=min(100.0, busy / total * 100.0), steal_pct=steal / total * 100.0,
                    outside_pct=outside / busy * 100.0 if busy > 0 else 0.0, cell_cores=cell / elapsed,
                    servers_cores=servers / elapsed, host_cores=total / elapsed)


def suspect_reason(level: dict[str, Any]) -> str | None:
    """Why a level's numbers describe a busy host rather than the cell; None if they do not. `level` holds the
    observations of HostLoad.as_level (missing ones: nothing judged)."""
    busy, outside, steal = (level.get(k) for k in ("host_busy_pct", "host_outside_pct", "host_steal_pct"))
    reasons = []
    if isinstance(busy, (int, float)) and isinstance(outside, (int, float)) \
            and busy >= HOST_BUSY_LIMIT_PCT and outside >= OUTSIDE_LIMIT_PCT:
        reasons.append(f"host CPU {busy:.0f} % busy, {outside:.0f} % of it outside the cell's servers and GuideLLM "
                       f"(limits {HOST_BUSY_LIMIT_PCT:.0f} % busy, {OUTSIDE_LIMIT_PCT:.0f} % outside)")
    if isinstance(steal, (int, float)) and steal >= STEAL_LIMIT_PCT:
        reasons.append(f"CPU steal {steal:.0f} % of the host's CPU time (limit {STEAL_LIMIT_PCT:.0f} %): the "
                       "hypervisor ran something else on its CPUs")
    return REASON_PREFIX + "; ".join(reasons) if reasons else None


def is_busy_host(reason: str | None) -> bool:
    return isinstance(reason, str) and REASON_PREFIX.strip() in reason
