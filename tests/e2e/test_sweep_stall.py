"""A GuideLLM that stalls (it can, between levels: vllm-project/guidellm issues 431 and 1152; in a fresh clone's
`make demo` at the start of its first level) must not hang a campaign: the sweep step's progress watch stops a run
whose progress log goes silent past what its level needs, its deadline stops any run that is too long, both with
its workers, and the step stops them when it is itself terminated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench.measure import guidellm_watch, processes
from llmd_bench.measure.guidellm_watch import LogTail, ProgressWatch, WatchPlan, parse_line
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local
from llmd_bench.steps import sweep

STEP = ["--campaign", "tiny", "--run-id", "stall-run", "--model", "Qwen/Qwen3-0.6B", "--config", "no-offload"]


def _ctx(campaigns_dir, **conf):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign()))
    params = resolve_params(campaign, conf, catalog.known_versions())
    return StepContext(campaign, params, "stall-run", "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))


@pytest.fixture
def stalling_guidellm(tmp_path):
    """A `guidellm` that starts a worker and then both wait forever, writing their pids down."""
    pids = tmp_path / "pids"
    script = tmp_path / "guidellm"
    script.write_text(f"#!/bin/sh\nsleep 100000 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    script.chmod(0o755)
    return script, pids


def _pids(pids: Path, expected: int = 2, timeout_s: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pids.exists() and len(pids.read_text().split()) >= expected:
            return [int(p) for p in pids.read_text().split()]
        time.sleep(0.1)
    raise AssertionError("the stand-in guidellm did not start")


@pytest.fixture
def deployed(campaigns_dir, results_dir):
    ctx = _ctx(campaigns_dir)
    local.deploy(ctx)
    yield ctx
    local.teardown(ctx)


def test_a_stalled_guidellm_is_stopped_at_the_deadline_with_its_workers_and_run_once_more(deployed, stalling_guidellm):
    script, pids = stalling_guidellm
    started = time.monotonic()
    out = subprocess.run([str(BIN / "llmd-bench"), "sweep", *STEP], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LLMD_BENCH_GUIDELLM": str(script), sweep.DEADLINE_ENV: "3"})
    assert out.returncode != 0
    assert time.monotonic() - started < 60
    assert "running the trial again (retry 1 of 1)" in out.stdout
    assert ("trial 1: guidellm did not finish within 3 s and was stopped (GuideLLM can stall between levels), "
            "2 time(s)") in out.stderr
    assert "Clear the sweep task" in out.stderr and "Traceback" not in out.stderr
    both_attempts = _pids(pids, expected=4)
    assert not any(processes.pid_alive(pid) for pid in both_attempts)
    trial_dir = sweep.report_path(deployed, 1).parent
    stalled = sorted(f.name for f in trial_dir.glob("guidellm.stalled-*.log"))
    assert stalled == ["guidellm.stalled-1.log", "guidellm.stalled-2.log"]
    # nothing was recorded as a trial
    assert not sweep.complete_report(deployed, sweep.report_path(deployed, 1))


def test_terminating_the_sweep_step_stops_guidellm_and_its_workers(deployed, stalling_guidellm):
    script, pids = stalling_guidellm
    step = subprocess.Popen([str(BIN / "llmd-bench"), "sweep", *STEP], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "LLMD_BENCH_GUIDELLM": str(script)})
    try:
        started = _pids(pids)
        step.send_signal(signal.SIGTERM)  # what Airflow's on_kill and a deleted pod do
        _, err = step.communicate(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
    assert step.returncode != 0 and "the sweep was terminated" in err
    assert not any(processes.pid_alive(pid) for pid in started)


def test_a_sigterm_while_guidellm_starts_still_stops_it_and_says_so(tmp_path, monkeypatch):
    """SIGTERM in the instant GuideLLM has started, before the step waits for it (here: while its pid is recorded):
    the step still stops GuideLLM's group and says why. The handler was once installed only after that: the step
    died by the signal and left GuideLLM running in its own session (seen with 4 test workers on 2 cores)."""
    pids = tmp_path / "pids"
    script = tmp_path / "guidellm"
    script.write_text(f"#!/bin/sh\nsleep 100000 &\necho $! >> {pids}\necho $$ >> {pids}\nwait\n")
    script.chmod(0o755)
    record_group = processes.record_group

    def record_then_terminated(*args, **kwargs):
        record_group(*args, **kwargs)
        _pids(pids)
        os.kill(os.getpid(), signal.SIGTERM)  # what Airflow's on_kill and a deleted pod send

    monkeypatch.setattr(processes, "record_group", record_then_terminated)
    # the step's handler, not this one, must take the signal: without it the run below waits out its deadline
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with pytest.raises(RuntimeStepError, match="the sweep was terminated; GuideLLM was stopped"):
            sweep.run_guidellm([str(script)], tmp_path / "guidellm.log", None, deadline_s=5)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not any(processes.pid_alive(pid) for pid in _pids(pids))


def test_the_deadline_follows_the_levels_and_can_be_set(campaigns_dir, results_dir, monkeypatch):
    monkeypatch.delenv(sweep.DEADLINE_ENV, raising=False)
    short = _ctx(campaigns_dir, concurrency=[1, 4], duration_s=10)
    long = _ctx(campaigns_dir, concurrency=[1, 4, 8, 16], duration_s=120)
    assert sweep.trial_deadline_s(short) == 300 + 2 * (2 * 10 + 60)
    assert sweep.trial_deadline_s(long) == 300 + 4 * (2 * 120 + 60)
    monkeypatch.setenv(sweep.DEADLINE_ENV, "7200")
    assert sweep.trial_deadline_s(long) == 7200
    monkeypatch.setenv(sweep.STALL_RETRIES_ENV, "2")
    assert sweep.stall_retries() == 2
    monkeypatch.setenv(sweep.STALL_RETRIES_ENV, "twice")
    with pytest.raises(RuntimeStepError, match="LLMD_BENCH_SWEEP_STALL_RETRIES='twice': expected a whole number"):
        sweep.stall_retries()
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv(sweep.DEADLINE_ENV, bad)
        with pytest.raises(RuntimeStepError, match=f"{sweep.DEADLINE_ENV}='{bad}': expected a positive number"):
            sweep.trial_deadline_s(long)


# GuideLLM 0.8.1's progress log (INFO on stderr), as a real run prints it
STARTED = ("26-12-07 04:11:29|INFO     |guidellm.benchmark.progress:_log_update:420 - Benchmark 1 (concurrent@1): "
           "started | elapsed=0.0s | successful=0 errored=0 incomplete=0 | requests/s=0.00 output_tokens/s=0.00")


def test_a_run_that_stalls_between_levels_is_stopped_by_the_watch_in_seconds_and_run_again(
        deployed, tmp_path, monkeypatch, capsys):
    """A run whose level 1 completed and whose level 2 never starts (upstream issue 1152's stall): the watch, not
    the 428 s deadline, stops it with its worker 10 s (between levels) plus the grace after its last progress,
    keeps its log with the processes it stopped, and the trial runs again and is recorded with the stalled
    attempt. The default allowances apply, so the retry (the real GuideLLM) runs under the same watch."""
    marker, pids = tmp_path / "stalled-once", tmp_path / "pids"
    lines = [STARTED, STARTED.replace("started", "compile"), STARTED.replace("started", "completed")]
    script = tmp_path / "guidellm"
    script.write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then\n  touch {marker}\n  sleep 100000 &\n"
                      f"  echo $! >> {pids}\n  echo $$ >> {pids}\n  echo 'Setup complete, starting benchmarks...'\n"
                      + "".join(f"  echo '{line}' >&2\n" for line in lines)
                      + f"  wait\nfi\nexec {BIN / 'guidellm'} \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("LLMD_BENCH_GUIDELLM", str(script))
    monkeypatch.delenv(sweep.DEADLINE_ENV, raising=False)
    monkeypatch.setenv(sweep.STALL_GRACE_ENV, "5")
    assert sweep.trial_deadline_s(deployed) > 400
    sweep.run(deployed)
    printed = capsys.readouterr().out
    assert ("trial 1: guidellm made no progress for 15 s after level 1 (concurrency 1), before the next level and was "
            "stopped after ") in printed
    assert "(its next progress was due within 10 s to start the next level, and 5 s more passed)" in printed
    assert "running the trial again (retry 1 of 1)" in printed
    assert not any(processes.pid_alive(pid) for pid in _pids(pids))
    trial_dir = sweep.report_path(deployed, 1).parent
    kept = (trial_dir / "guidellm.stalled-1.log").read_text()
    assert STARTED in kept and "the stalled GuideLLM's processes" in kept
    assert sweep.complete_report(deployed, sweep.report_path(deployed, 1))
    (trial,) = json.loads(deployed.record_path.read_text())["sweep"]["trials"]
    (stall,) = trial["stalled"]
    assert stall["by"] == "watch" and stall["attempt"] == 1 and stall["log"] == "trial-1/guidellm.stalled-1.log"
    assert 15 <= stall["silent_s"] < 18 and stall["after_s"] < 25


# -- the watch's decisions, fed progress lines and times ----------------------------------------------------------

def _line(index: int, strategy: str, status: str, successful: int = 0) -> str:
    return (f"26-12-07 04:11:29|INFO     |guidellm.benchmark.progress:_log_update:420 - Benchmark {index} "
            f"({strategy}): {status} | elapsed=0.0s | successful={successful} errored=0 incomplete=0 | "
            f"requests/s=0.00 output_tokens/s=0.00")


# a healthy GuideLLM 0.8.1 run of the demo's levels (1, 8, 16; 4 s each) on 2 cores: seconds since launch, line
HEALTHY = [(9.0, "Setup complete, starting benchmarks..."),
           (15.0, "26-12-07 04:11:29|INFO     |guidellm.benchmark.benchmarker:run:116 - Starting benchmark for "
                  "strategy: concurrent@1"),
           (15.0, _line(1, "concurrent@1", "started")), (24.6, _line(1, "concurrent@1", "compile")),
           (24.6, _line(1, "concurrent@1", "completed", 15)), (24.6, _line(2, "concurrent@8", "started")),
           (36.2, _line(2, "concurrent@8", "pending")), (44.0, _line(2, "concurrent@8", "compile")),
           (44.3, _line(2, "concurrent@8", "completed", 120)), (44.3, _line(3, "concurrent@16", "started")),
           (60.8, _line(3, "concurrent@16", "pending")), (70.3, _line(3, "concurrent@16", "compile")),
           (70.4, _line(3, "concurrent@16", "completed", 208)),
           (70.4, "26-12-07 04:12:24|INFO     |guidellm.benchmark.benchmarker:run:199 - All benchmarks finalized"),
           (71.0, "Run Summary Info")]
DEMO = WatchPlan(levels=[1, 8, 16], duration_s=4.0, grace_s=30.0)


def _fed(plan: WatchPlan, lines: list[tuple[float, str]], slower: float = 1.0) -> ProgressWatch:
    watch = ProgressWatch(plan, 0.0)
    for at, line in lines:
        assert not watch.decide(at * slower).stop, (at, line)
        watch.observe(line, at * slower)
    return watch


def test_a_healthy_run_is_never_stopped_even_twice_as_slow():
    for slower in (1.0, 2.0):
        watch = _fed(DEMO, HEALTHY, slower)
        assert not watch.decide(71.0 * slower + 120).stop  # writing a large report


def test_the_demo_stall_at_the_start_of_level_1_is_stopped_30_s_past_what_the_level_needs():
    watch = _fed(DEMO, HEALTHY[:3])  # `started` at 15 s, then nothing
    needs = 10 + 2.5 * 1 + 4 + 10  # workers' start-up, the level, the drain
    assert not watch.decide(15 + needs + 30).stop
    verdict = watch.decide(15 + needs + 31)
    assert verdict.stop and verdict.phase == "at the start of level 1 (concurrency 1)"
    assert verdict.silent_s == needs + 31
    assert verdict.reason == ("its next progress was due within 26 s for the level (10 s + 2.5 s per worker x 1 to "
                              "start its workers, 4 s of level, 10 s to drain), and 30 s more passed")


def test_a_larger_level_gets_more_start_up_up_to_guidellms_worker_count():
    plan = WatchPlan(levels=[1, 650], duration_s=120.0, grace_s=30.0)
    assert plan.level_allowance_s(650) == 10 + 2.5 * 10 + 120 + 10  # GuideLLM runs at most 10 workers
    assert WatchPlan(levels=[650], duration_s=120.0, grace_s=30.0, max_workers=2).level_allowance_s(650) == 145.0
    watch = _fed(plan, [(5.0, _line(1, "concurrent@1", "completed")), (6.0, _line(2, "concurrent@650", "started"))])
    assert not watch.decide(6 + 165 + 30).stop and watch.decide(6 + 165 + 31).stop


def test_a_stall_between_levels_is_stopped_40_s_after_the_last_level_completed():
    watch = _fed(DEMO, HEALTHY[:5])  # level 1 completed at 24.6 s; level 2 never starts
    assert not watch.decide(24.6 + 40).stop
    verdict = watch.decide(24.6 + 41)
    assert verdict.stop and verdict.phase == "after level 1 (concurrency 1), before the next level"


def test_a_long_level_that_keeps_logging_progress_runs_on_and_a_silent_one_is_stopped_after_its_duration():
    plan = WatchPlan(levels=[50], duration_s=120.0, grace_s=30.0)
    lines = [(0.0, _line(1, "concurrent@50", "started"))]
    lines += [(20.0 + 10 * i, _line(1, "concurrent@50", "active", 40 * i)) for i in range(12)]
    watch = _fed(plan, lines)  # requests seen flowing from 20 s, the last line at 130 s
    assert not watch.decide(20 + 120 + 10 + 30).stop  # the level ends 120 s after 20 s, then drains
    assert watch.decide(20 + 120 + 10 + 31).stop
    # past its end, a level still logging is given another interval each time
    watch = _fed(plan, lines + [(150.0, _line(1, "concurrent@50", "cooldown"))])
    assert not watch.decide(150 + 10 + 10 + 30).stop and watch.decide(150 + 10 + 10 + 31).stop


def test_lines_that_are_not_progress_do_not_keep_a_stalled_run_alive():
    watch = _fed(DEMO, HEALTHY[:3])
    for at in range(20, 80, 5):
        watch.observe("/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: leaked", at)
    assert watch.decide(15 + 26.5 + 31).stop


def test_set_up_that_goes_silent_is_stopped_and_set_up_lines_count_as_progress():
    watch = ProgressWatch(DEMO, 0.0)
    assert not watch.decide(90).stop and watch.decide(91).stop
    watch.observe("✔ Tokenizer resolved, Using tokenizer", 50.0)
    assert not watch.decide(140).stop and watch.decide(141).stop
    assert watch.decide(141).phase == "setting up (before its first level)"


def test_progress_lines_are_read_with_colours_and_other_lines_are_not_progress():
    coloured = f"\x1b[32m26-12-07 04:11:29\x1b[0m|\x1b[1mINFO\x1b[0m - {_line(2, 'concurrent@8', 'active', 7)[70:]}"
    parsed = parse_line(coloured)
    assert (parsed.kind, parsed.index, parsed.status, parsed.successful) == ("level", 2, "active", 7)
    assert parse_line("Starting benchmark for strategy: concurrent@1").kind == "other"
    assert parse_line(HEALTHY[-2][1]).kind == "finalized"


def test_the_log_tail_returns_whole_new_lines_only(tmp_path):
    log = tmp_path / "guidellm.log"
    tail = LogTail(log)
    assert tail.new_lines() == []
    log.write_text("one\ntw")
    assert tail.new_lines() == ["one"]
    with open(log, "a") as f:
        f.write("o\r\nthree\n")
    assert tail.new_lines() == ["two", "three"]


def test_guidellm_runs_with_its_progress_lines_on():
    env = {"PATH": "/bin"}
    assert guidellm_watch.progress_logging_env(env)[guidellm_watch.LOG_LEVEL_ENV] == "INFO"
    for kept in ("DEBUG", "info"):
        assert guidellm_watch.progress_logging_env({guidellm_watch.LOG_LEVEL_ENV: kept}) == {
            guidellm_watch.LOG_LEVEL_ENV: kept}
    for off in ("WARNING", ""):
        assert guidellm_watch.progress_logging_env({guidellm_watch.LOG_LEVEL_ENV: off})[
            guidellm_watch.LOG_LEVEL_ENV] == "INFO"


def test_the_watch_follows_the_workload_and_its_setting(campaigns_dir, results_dir, monkeypatch):
    ctx = _ctx(campaigns_dir, concurrency=[1, 4], duration_s=10)
    monkeypatch.delenv(sweep.STALL_GRACE_ENV, raising=False)
    plan = sweep.watch_plan(ctx, [1, 4], {guidellm_watch.MAX_WORKERS_ENV: "2"})
    assert plan is not None and plan.grace_s == 30 and plan.duration_s == 10 and plan.max_workers == 2
    assert sweep.watch_plan(ctx, [4], {})
    monkeypatch.setenv(sweep.STALL_GRACE_ENV, "0")
    assert sweep.watch_plan(ctx, [4], {}) is None  # off: only the deadline
    for bad in ("soon", "-1"):
        monkeypatch.setenv(sweep.STALL_GRACE_ENV, bad)
        with pytest.raises(RuntimeStepError, match=f"{sweep.STALL_GRACE_ENV}='{bad}': expected a number of seconds"):
            sweep.watch_plan(ctx, [4], {})
