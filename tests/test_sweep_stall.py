"""A GuideLLM that stalls (it can, between levels: vllm-project/guidellm issues 431 and 1152) must not hang a
campaign: the sweep step stops it and its workers at a deadline, and also when the step itself is terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench import catalog
from llmd_bench.campaign import Cell, load_campaign, resolve_params
from llmd_bench.context import StepContext
from llmd_bench.errors import RuntimeStepError
from llmd_bench.runtime import local, processes
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


def test_a_trial_that_stalls_once_is_run_again_and_recorded(deployed, tmp_path):
    marker = tmp_path / "stalled-once"
    script = tmp_path / "guidellm"
    script.write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then touch {marker}; exec sleep 100000; fi\n"
                      f"exec {BIN / 'guidellm'} \"$@\"\n")
    script.chmod(0o755)
    out = subprocess.run([str(BIN / "llmd-bench"), "sweep", *STEP], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LLMD_BENCH_GUIDELLM": str(script), sweep.DEADLINE_ENV: "45"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "running the trial again (retry 1 of 1)" in out.stdout
    assert sweep.complete_report(deployed, sweep.report_path(deployed, 1))
