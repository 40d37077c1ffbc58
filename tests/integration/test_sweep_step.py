"""The sweep step executing the core's actions against real local servers, with a stand-in GuideLLM that writes a
real GuideLLM 0.8.1 report (the committed one, levels 1 and 4) in seconds: resume of a whole trial, same-server
trials, and what cell.json records. Real GuideLLM runs are in test_trials.py, test_adaptive.py and
test_level_reset.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import COMMITTED_REPORT, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local
from llmd_bench.steps import sweep

# `guidellm run`: writes the committed report's benchmarks of the levels asked (--profile streams) where --output
# points, and the run's argv beside it; anything else (the local runtime's `guidellm mock-server`) is the real one.
STAND_IN = f"""#!{sys.executable}
import json, os, sys
argv = sys.argv[1:]
if argv[:1] != ["run"]:
    os.execv({str(Path(sys.executable).with_name("guidellm"))!r}, ["guidellm", *argv])
streams = json.loads(argv[argv.index("--profile") + 1])["streams"]
out = argv[argv.index("--output") + 1].split("path=", 1)[1]
doc = json.load(open({str(COMMITTED_REPORT)!r}))
doc["benchmarks"] = [b for b in doc["benchmarks"] if b["config"]["strategy"]["streams"] in streams]
json.dump(doc, open(out, "w"))
with open(out + ".argv", "w") as f:
    json.dump(argv, f)
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    script = tmp_path / "guidellm"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    monkeypatch.setenv("LLMD_BENCH_GUIDELLM", str(script))
    return script


def _deployed(campaigns_dir, **conf):
    doc = tiny_campaign(configs=["no-offload"], trial_isolation="same-server")
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    params = resolve_params(campaign, conf, catalog.known_versions())
    ctx = StepContext(campaign, params, "sweep-step", "local", Cell("Qwen/Qwen3-0.6B", "no-offload"))
    local.deploy(ctx)
    return ctx


def _servers(ctx):
    return {p.name: p.pid for p in local.load_state(ctx).processes if p.name != "pmlogger"}


def test_a_cleared_sweep_resumes_a_complete_trial_and_runs_the_next_on_the_same_servers(
        campaigns_dir, results_dir, stand_in):
    ctx = _deployed(campaigns_dir, trials=2)
    try:
        earlier = sweep.report_path(ctx, 1)  # an earlier attempt's complete trial 1
        earlier.parent.mkdir(parents=True)
        shutil.copyfile(COMMITTED_REPORT, earlier)
        kept = earlier.stat().st_mtime_ns
        servers = _servers(ctx)
        sweep.run(ctx)
        trials = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
        assert earlier.stat().st_mtime_ns == kept and not earlier.with_name(earlier.name + ".argv").exists()
        assert trials[0]["resumed"] is True and trials[0]["report"] == "trial-1/guidellm_report.json"
        assert trials[0]["guidellm_version"] == "0.8.1"
        # the resumed trial's level windows are still there for collect_pcp
        assert [w["concurrency"] for t in trials for w in t["level_windows"]] == [1, 4, 1, 4]
        second = sweep.report_path(ctx, 2)
        ran = json.loads(second.with_name(second.name + ".argv").read_text())
        assert "resumed" not in trials[1] and trials[1]["argv"][1:] == ran
        assert trials[1]["isolation"] == "same-server" and _servers(ctx) == servers  # same-server: no redeploy
        assert trials[1]["target"] == local.endpoint(ctx) and sweep.complete_report(ctx, second)
        # every trial complete: the sweep runs nothing more
        second_kept = second.stat().st_mtime_ns
        sweep.run(ctx)
        again = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
        assert [t.get("resumed") for t in again] == [True, True] and second.stat().st_mtime_ns == second_kept
    finally:
        local.teardown(ctx)
