"""Performance Co-Pilot: pmcd on demand (local runtime), pmlogger per cell or per node, per-level summaries.

pmcd is host infrastructure (a DaemonSet in Kubernetes): started when absent (listening on 127.0.0.1
and its Unix socket only) and left running. Each cell's pmlogger records from deploy to collect_pcp;
its archive is summarised per concurrency level (windows from the GuideLLM report) and xz-compressed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_bench.measure import processes
from llmd_bench.model.names import dns_label

PCP_BIN = Path("/usr/lib/pcp/bin")
PMCD_SOCKET = Path("/run/pcp/pmcd.socket")
LOG_INTERVAL = "1sec"
# kernel.all.cpu.steal: CPU time the hypervisor gave to other guests (host_load.py judges it from /proc/stat too)
HOST_METRICS = ["kernel.all.cpu.idle", "kernel.all.cpu.user", "kernel.all.cpu.sys", "kernel.all.cpu.steal",
                "hinv.ncpu", "mem.util.used",
                "mem.physmem", "network.interface.in.bytes", "network.interface.out.bytes",
                "disk.all.read_bytes", "disk.all.write_bytes"]
GPU_METRICS = ["nvidia.gpuactive", "nvidia.memused", "nvidia.power"]


class PcpUnavailable(Exception):
    """PCP cannot record here; the message says why (it becomes the cell's `not measured` reason)."""


@dataclass
class Tools:
    pmcd: str
    pmlogger: str
    pminfo: str
    pmrep: str


def tools() -> Tools:
    found = {}
    for name in ("pmcd", "pmlogger", "pminfo", "pmrep"):
        path = shutil.which(name) or (str(PCP_BIN / name) if (PCP_BIN / name).exists() else None)
        if not path:
            raise PcpUnavailable("PCP is not installed (Debian package `pcp`; `make setup` installs it as root)")
        found[name] = path
    return Tools(**found)


def _env() -> dict[str, str]:
    # pmrep is a Python program of the system's Python, not of our virtualenv.
    return {**os.environ, "PCP_PYTHON_PROG": "/usr/bin/python3"}


def pmcd_running(t: Tools) -> bool:
    return subprocess.run([t.pminfo, "-f", "hinv.ncpu"], capture_output=True, env=_env(), timeout=10).returncode == 0


def ensure_pmcd(log_dir: Path, timeout_s: float = 15.0) -> Tools:
    """pmcd answering on this host, started if needed."""
    t = tools()
    if pmcd_running(t):
        return t
    if os.geteuid() != 0:
        raise PcpUnavailable("pmcd is not running and only root can start it here")
    PMCD_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(PMCD_SOCKET.parent, "pcp", "pcp")
    log_dir.mkdir(parents=True, exist_ok=True)
    # The PMDAs pmcd starts write their logs into its working directory.
    subprocess.Popen([t.pmcd, "-f", "-A", "-i", "127.0.0.1", "-l", str(log_dir / "pmcd.log")], cwd=log_dir,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pmcd_running(t):
            return t
        time.sleep(0.3)
    log = (log_dir / "pmcd.log").read_text(errors="replace")[-800:] if (log_dir / "pmcd.log").exists() else ""
    raise PcpUnavailable(f"pmcd did not start: {log.strip()}")


def available_metrics(t: Tools, names: list[str], host: str | None = None) -> list[str]:
    """The metrics the pmcd (this host's, or `host:port`'s) can give."""
    out = subprocess.run([t.pminfo, *(["-h", host] if host else []), *names], capture_output=True, text=True,
                         env=_env(), timeout=10)
    if host and out.returncode != 0 and not out.stdout.strip():
        raise PcpUnavailable(f"no pmcd answers at {host}: {out.stderr.strip()[-300:]}")
    present = {line.strip() for line in out.stdout.splitlines()}
    return [n for n in names if any(p == n or p.startswith(n + ".") for p in present)]


def logger_config(metrics: list[str]) -> str:
    body = "\n".join(f"    {m}" for m in metrics)
    return f"log mandatory on every {LOG_INTERVAL.replace('sec', ' sec')} {{\n{body}\n}}\n"


def pmlogger_command(t: Tools, config: Path, archive: Path, host: str | None = None) -> list[str]:
    return [t.pmlogger, *(["-h", host] if host else []), "-c", str(config), "-t", LOG_INTERVAL,
            "-l", str(archive.parent / "pmlogger.log"), str(archive)]


def start_logger(t: Tools, folder: Path, name: str, host: str | None = None,
                 on_start: Callable[[Any], Any] = lambda proc: proc) -> tuple[Any, list[str], Path]:
    """pmlogger recording what `host`'s pmcd (or this host's) offers into folder/host.*; `on_start` gets
    the process as soon as it exists (so a caller can always stop it). Raises PcpUnavailable if it dies."""

    metrics = available_metrics(t, HOST_METRICS + GPU_METRICS, host=host)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "pmlogger.config"
    config.write_text(logger_config(metrics))
    archive = folder / "host"
    proc = on_start(processes.start(name, pmlogger_command(t, config, archive, host=host), 0, folder / "pmlogger.out"))
    time.sleep(0.5)
    if not processes.pid_alive(proc.pid):
        raise PcpUnavailable(f"pmlogger exited at start: {processes.tail(proc.log)}")
    return proc, metrics, archive


def archive_files(archive: Path) -> list[Path]:
    return sorted(archive.parent.glob(archive.name + ".*"))


def compress(archive: Path) -> list[Path]:
    """xz the data volumes (PCP 6 reads them compressed); index and metadata stay as they are."""
    done = []
    for f in archive_files(archive):
        if f.suffix.lstrip(".").isdigit():
            subprocess.run(["xz", "-f", str(f)], check=True)
            done.append(f.with_name(f.name + ".xz"))
        elif f.suffix in (".index", ".meta") or f.name.endswith(".xz"):
            done.append(f)  # .xz: compressed by an earlier attempt of the step
    return done


def samples(t: Tools, archive: Path, metrics: list[str]) -> list[dict[str, Any]]:
    """Per-second rows from the archive: counters as rates, instances as separate columns."""
    out = subprocess.run([t.pmrep, "-a", str(archive), "-o", "csv", "-t", "1s", "-f", "%s", *metrics],
                         capture_output=True, text=True, env=_env(), timeout=120)
    if out.returncode != 0:
        raise PcpUnavailable(f"pmrep could not read {archive}: {out.stderr.strip()[-400:]}")
    rows = []
    for rec in csv.DictReader(io.StringIO(out.stdout)):
        row: dict[str, Any] = {"time": float(rec.pop("Time"))}
        for k, v in rec.items():
            row[k.strip('"')] = float(v) if v not in ("", None) else None
        rows.append(row)
    return rows


def host_row(row: dict[str, Any]) -> dict[str, float | None]:
    """One sample as host metrics: CPU %, memory bytes, network and disk bytes/s, GPU when present."""
    def total(prefix: str, skip_lo: bool) -> float | None:
        vals = [v for k, v in row.items() if k.startswith(prefix) and v is not None
                and not (skip_lo and k.endswith("-lo"))]
        return sum(vals) if vals else None

    ncpu, idle = row.get("hinv.ncpu"), row.get("kernel.all.cpu.idle")
    cpu = None if not ncpu or idle is None else max(0.0, min(100.0, 100.0 * (1 - idle / (ncpu * 1000.0))))
    steal = row.get("kernel.all.cpu.steal")  # ms of CPU time per second, like idle
    mem = row.get("mem.util.used")
    disk_r, disk_w = row.get("disk.all.read_bytes"), row.get("disk.all.write_bytes")
    return {
        "cpu_util_pct": cpu,
        "cpu_steal_pct": None if not ncpu or steal is None else max(0.0, min(100.0, 100.0 * steal / (ncpu * 1000.0))),
        "mem_used_bytes": None if mem is None else mem * 1024,
        "net_in_bytes_per_s": total("network.interface.in.bytes-", skip_lo=True),
        "net_out_bytes_per_s": total("network.interface.out.bytes-", skip_lo=True),
        "net_loopback_bytes_per_s": row.get("network.interface.in.bytes-lo"),
        "disk_read_bytes_per_s": None if disk_r is None else disk_r * 1024,
        "disk_write_bytes_per_s": None if disk_w is None else disk_w * 1024,
        "gpu_busy_pct": _mean_of(row, "nvidia.gpuactive"),
        "gpu_mem_used_bytes": _sum_of(row, "nvidia.memused"),
        "gpu_power_w": _sum_of(row, "nvidia.power"),
    }


def _mean_of(row: dict[str, Any], prefix: str) -> float | None:
    vals = [v for k, v in row.items() if k.startswith(prefix) and v is not None]
    return sum(vals) / len(vals) if vals else None


def _sum_of(row: dict[str, Any], prefix: str) -> float | None:
    vals = [v for k, v in row.items() if k.startswith(prefix) and v is not None]
    return sum(vals) if vals else None


def per_level(rows: list[dict[str, Any]], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average each host metric over each level's window [start, end]."""
    host = [(r["time"], host_row(r)) for r in rows]
    out = []
    for w in windows:
        inside = [h for ts, h in host if w["start"] <= ts <= w["end"]]
        summary: dict[str, Any] = {"concurrency": w["concurrency"], "trial": w.get("trial", 1), "samples": len(inside)}
        for key in (host[0][1] if host else {}):
            vals = [v for h in inside if (v := h[key]) is not None]
            summary[key] = sum(vals) / len(vals) if vals else None
        out.append(summary)
    return out


# How one level's host metrics combine across the nodes serving a cell: shares average, amounts add up.
_AVERAGED = {"cpu_util_pct", "gpu_busy_pct"}


def combine_nodes(per_node: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per level over the nodes that have data for it (a node whose pmlogger recorded nothing in
    the window does not blank out the others); `nodes` says how many contributed."""
    if len(per_node) <= 1:
        return next(iter(per_node.values()), [])
    combined = []
    for rows in zip(*per_node.values()):
        out: dict[str, Any] = {"concurrency": rows[0]["concurrency"], "trial": rows[0]["trial"],
                               "samples": sum(r["samples"] for r in rows),
                               "nodes": sum(1 for r in rows if r["samples"])}
        keys = dict.fromkeys(k for r in rows for k in r if k not in ("concurrency", "trial", "samples"))
        for key in keys:
            vals = [r[key] for r in rows if r.get(key) is not None]
            out[key] = None if not vals else (sum(vals) / len(vals) if key in _AVERAGED else sum(vals))
        combined.append(out)
    return combined


@contextlib.contextmanager
def recording(hosts: dict[str, str], out_dir: Path, base_dir: Path,
              role: str = "the model servers' nodes") -> Iterator[dict[str, Any]]:
    """One pmlogger per remote pmcd (`host:port`) for the duration of the block (the Kubernetes sweep pod
    records each GPU node's PCP DaemonSet). Yields the record: {"nodes": {node: {archive, metrics, host}}}
    or {"unavailable": why}; archive paths are relative to `base_dir`, so they travel with the results."""

    state: dict[str, Any] = {"nodes": {}}
    started: list[Any] = []

    def keep(proc: Any) -> Any:
        started.append(proc)
        return proc

    try:
        t = tools()
        errors = {}
        if not hosts:
            errors["-"] = "no node runs a model server of this cell"
        for node, host in sorted(hosts.items()):
            try:
                _, metrics, archive = start_logger(t, out_dir / dns_label(node), f"pmlogger-{node}", host=host,
                                                   on_start=keep)
            except (PcpUnavailable, OSError, subprocess.TimeoutExpired) as exc:
                errors[node] = str(exc)
                continue
            state["nodes"][node] = {"archive": str(archive.relative_to(base_dir)), "metrics": metrics, "host": host}
        if errors:
            state["errors"] = errors
        if not state["nodes"]:
            state["unavailable"] = (f"no pmcd answered on {role} (is the PCP DaemonSet installed there? "
                                    "`llmd-bench render` writes it to pcp/): "
                                    + "; ".join(f"{n}: {e}" for n, e in errors.items()))
    except PcpUnavailable as exc:
        state["unavailable"] = str(exc)
    except BaseException:
        for proc in started:  # started in their own sessions: nothing else would stop them
            processes.stop(proc, grace_s=10)
        raise
    try:
        yield state
    finally:
        for proc in started:
            processes.stop(proc, grace_s=10)
