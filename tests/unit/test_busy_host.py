"""A host busy with other work (observe/host_load.py): the sampler's readings of /proc, the per-level rule on recorded
samples, the suspect reason as load_results stores it, and the report's no verdict for a peak built on such a level."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmd_bench.measure.observe import generator, host_load
from llmd_bench.report import analysis, suspects

TICKS = 100  # USER_HZ: /proc's CPU times are in 1/100 s on Linux


def fake_proc(root: Path, cpu_ticks: list[int], processes: dict[int, tuple[int, int, int]]) -> Path:
    """A /proc with a `stat` cpu line (user nice system idle iowait irq softirq steal guest guest_nice) and, per pid,
    a `stat` with its process group and utime, stime in ticks (pid -> (pgrp, utime, stime))."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("cpu  " + " ".join(map(str, cpu_ticks)) + "\ncpu0 1 2 3\n")
    for pid, (pgrp, utime, stime) in processes.items():
        (root / str(pid)).mkdir(exist_ok=True)
        # fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        (root / str(pid) / "stat").write_text(f"{pid} (python x) S 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 {utime} {stime} 0 0\n")
    (root / "self").mkdir(exist_ok=True)  # not a pid: skipped
    return root


def test_the_sampler_reads_the_hosts_the_servers_and_the_generators_cpu(tmp_path, monkeypatch):
    cell = tmp_path / "cell"
    (cell / "trial-1").mkdir(parents=True)
    # the local runtime's state: two servers, each its own session (pid = process group)
    (cell / "runtime.json").write_text(json.dumps({"processes": [
        {"name": "mock-server-0", "pid": 300, "port": 1, "cmd": ["x"], "log": "l"},
        {"name": "router", "pid": 400, "port": 2, "cmd": ["x"], "log": "l"}], "replicas": [], "endpoint": None,
        "kv_backend": None}))
    step_group = 600
    proc = fake_proc(tmp_path / "proc", [1000, 0, 200, 5000, 10, 5, 5, 40, 0, 0], {
        100: (100, 50, 10), 101: (100, 20, 5),   # GuideLLM and a worker
        300: (300, 30, 3), 301: (300, 7, 0),      # a mock server and its child
        400: (400, 11, 1),                        # the router
        500: (500, 90, 9),                        # something else
        step_group: (600, 4, 1),                  # the sweep step itself
        700: (700, 2, 0),                         # its parent
    })
    monkeypatch.setattr("os.getpgrp", lambda: step_group)
    monkeypatch.setattr("os.getppid", lambda: 700)  # Airflow's task runner that started the step
    sampler = generator.CpuSampler(cell / "trial-1" / "generator_cpu.jsonl", 100)
    line = sampler.sample(proc)
    assert line["cpu_s"] == {"100": 0.6, "101": 0.25}
    assert line["servers_cpu_s"] == {"300": 0.33, "301": 0.07, "400": 0.12}
    assert line["step_cpu_s"] == {"600": 0.05, "700": 0.02}
    # busy = user + nice + system + irq + softirq; steal apart; total of the eight fields
    assert line["host"] == {"busy_s": 12.1, "steal_s": 0.4, "total_s": 62.6}
    # a cluster's sweep pod has no runtime.json: nothing is subtracted as the servers'
    assert generator.CpuSampler(tmp_path / "pod" / "trial-1" / "generator_cpu.jsonl", 100).servers == set()


def recorded(busy_cores: float, generator_cores: float, servers_cores: float, steal_cores: float = 0.0,
             seconds: int = 5, cores: int = 2, start: float = 1000.0) -> list[dict]:
    """Sample lines as CpuSampler writes them, one a second, for a host whose CPUs did this at a steady rate."""
    lines = []
    for i in range(seconds):
        t = float(i)
        lines.append({"time": start + t, "cpu_s": {"100": 50.0 + generator_cores * t},
                      "servers_cpu_s": {"300": 20.0 + servers_cores * t}, "step_cpu_s": {"600": 3.0 + 0.02 * t},
                      "host": {"busy_s": 500.0 + busy_cores * t, "steal_s": 7.0 + steal_cores * t,
                               "total_s": 2000.0 + cores * t}})
    return lines


WINDOW = [{"concurrency": 16, "trial": 1, "start": 999.5, "end": 1004.5}]


def test_a_host_saturated_by_other_work_is_suspect_and_the_reason_names_the_numbers():
    (level,) = generator.per_level(recorded(busy_cores=1.96, generator_cores=0.5, servers_cores=0.2), WINDOW)
    assert level["host_busy_pct"] == 98.0 and level["host_outside_pct"] == pytest.approx(63.3, abs=0.1)
    assert level["cpu_cores"] == 0.5 and level["servers_cores"] == 0.2 and level["cell_cores"] == 0.72
    assert host_load.suspect_reason(level) == (
        "busy host: host CPU 98 % busy, 63 % of it outside the cell's servers and GuideLLM "
        "(limits 90 % busy, 10 % outside)")


def test_a_host_saturated_by_the_servers_under_test_and_guidellm_is_not_suspect():
    # the cell's own processes fill the 2 cores: what the cell measures, not a busy host
    (level,) = generator.per_level(recorded(busy_cores=1.96, generator_cores=1.1, servers_cores=0.8), WINDOW)
    assert level["host_busy_pct"] == 98.0 and level["host_outside_pct"] < host_load.OUTSIDE_LIMIT_PCT
    assert host_load.suspect_reason(level) is None
    # other work on a host with CPU to spare took nothing the cell wanted
    (idle,) = generator.per_level(recorded(busy_cores=1.2, generator_cores=0.3, servers_cores=0.1), WINDOW)
    assert idle["host_outside_pct"] > 50 and host_load.suspect_reason(idle) is None


def test_high_steal_is_suspect_even_on_a_host_with_cpu_to_spare():
    (level,) = generator.per_level(recorded(busy_cores=1.0, generator_cores=0.6, servers_cores=0.3,
                                            steal_cores=0.2), WINDOW)
    assert level["host_steal_pct"] == 10.0 and level["host_busy_pct"] == 50.0
    assert host_load.suspect_reason(level) == (
        "busy host: CPU steal 10 % of the host's CPU time (limit 5 %): the hypervisor ran something else on its CPUs")


RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "busy_host"


def recorded_level(name: str) -> dict:
    lines = generator.read(RECORDED / name)
    (level,) = generator.per_level(lines, [{"concurrency": 8, "trial": 1, "start": lines[0]["time"],
                                            "end": lines[-1]["time"]}])
    return level


def test_recorded_on_this_host_two_burners_beside_the_cell_are_suspect_the_cells_own_servers_are_not():
    """Samples CpuSampler recorded on the 2-core host (tests/fixtures/busy_host/record.py)."""
    others = recorded_level("saturated_by_others.jsonl")
    assert others["host_busy_pct"] >= 99 and others["host_outside_pct"] > 85 and others["cell_cores"] < 0.25
    assert host_load.suspect_reason(others) == (
        f"busy host: host CPU {others['host_busy_pct']:.0f} % busy, {others['host_outside_pct']:.0f} % of it outside "
        "the cell's servers and GuideLLM (limits 90 % busy, 10 % outside)")
    servers = recorded_level("saturated_by_servers.jsonl")
    assert servers["host_busy_pct"] >= 99 and servers["servers_cores"] > 1.7 and servers["host_outside_pct"] < 5
    assert host_load.suspect_reason(servers) is None


def test_samples_without_host_readings_are_not_judged():
    old = [{"time": 1000.0 + t, "cpu_s": {"100": 50.0 + 0.5 * t}} for t in range(5)]  # written before host readings
    (level,) = generator.per_level(old, WINDOW)
    assert "host_busy_pct" not in level and host_load.suspect_reason(level) is None


def test_load_results_joins_a_busy_host_to_the_generators_lag(real_report):
    from llmd_bench.measure.cell_folder import Observations
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.steps.load_results import suspect_levels

    report = parse_report_file(real_report)
    first, second = (lv.concurrency for lv in report.levels)
    busy = generator.per_level(recorded(1.96, 0.5, 0.2), [{"concurrency": second, "trial": 1, "start": 999.5,
                                                            "end": 1004.5}])
    observed = Observations(pcp={}, host_levels=[], serving_metrics={}, serving_levels=[], kv_index=None,
                            config_effect={"verdict": "n/a (baseline)", "evidence": ""}, generator_levels=busy)
    levels = {lv["concurrency"]: lv["reason"] for lv in suspect_levels([(1, report)], observed)}
    assert levels[first] is None
    assert levels[second].startswith("busy host: host CPU 98 % busy, 63 % of it outside")


def levels_frame(rows: list[tuple[str, int, float, str | None]]) -> pd.DataFrame:
    return analysis.normalize_levels(pd.DataFrame([
        {"model": "M", "config": config, "trial": 1, "concurrency": c, "output_tps_mean": tps, "requests_successful": 500,
         "requests_errored": 0, "request_latency_mean_s": 1.0, "request_latency_std_s": 0.05, "suspect_reason": why}
        for config, c, tps, why in rows]))


BUSY = "busy host: host CPU 98 % busy, 61 % of it outside the cell's servers and GuideLLM (limits 90 % busy, 10 % outside)"


def test_a_busy_hosts_level_anywhere_in_a_cell_leaves_its_peak_without_a_verdict():
    """The wrong-way verdict of the issue: the baseline's level 16 ran while other work held the CPUs, so its peak
    fell to level 8, and native-offload (10 % slower) looked higher. Any busy-host level may have been the peak."""
    levels = levels_frame([("no-offload", 1, 100.0, None), ("no-offload", 8, 700.0, None),
                           ("no-offload", 16, 520.0, BUSY),
                           ("native-offload", 1, 90.0, None), ("native-offload", 8, 700.0, None),
                           ("native-offload", 16, 760.0, None)])
    peaks = analysis.cell_peaks(levels).set_index("config")
    assert peaks.loc["no-offload", "optimal_concurrency"] == 8
    assert peaks.loc["no-offload", "peak_suspect"] == f"at concurrency 16: {BUSY}"
    comparisons = analysis.versus_baseline(peaks.reset_index(), 5.0, "no-offload").set_index("config")
    assert comparisons.loc["native-offload", "judgement"] == analysis.NO_VERDICT
    assert "no-offload's peak level is suspect: at concurrency 16: busy host: host CPU 98 % busy" in \
        comparisons.loc["native-offload", "basis"]
    # the load generator's lag counts where it was measured (unchanged): at another level it leaves the peak alone
    lag = "load generator saturated (it sent requests 30 % of a request's time late; limit 25 %)"
    assert suspects.peak_reasons(levels_frame([("x", 8, 700.0, None), ("x", 16, 520.0, lag)]), 8) == []
    assert suspects.peak_reasons(levels_frame([("x", 8, 700.0, lag + "; " + BUSY)]), 8) == [lag + "; " + BUSY]
