"""Trials and level isolation with real GuideLLM and real servers on the local runtime: the wiring of the sweep
core's actions. Which trial or level is isolated, run or resumed is decided by sweep_core and tested there
(test_sweep_core.py: same-server trials, resume of a complete or partial report); the step's resume of a whole trial
with a stand-in GuideLLM in test_sweep_step.py."""

from __future__ import annotations

import json

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure import processes
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local
from llmd_bench.steps import sweep, warmup


def _ctx(campaigns_dir, isolation):
    doc = tiny_campaign(configs=["llm-d-valkey"], trial_isolation=isolation)
    doc["workload"].update(concurrency=[2], duration_s=1.5)
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    params = resolve_params(campaign, {"trials": 2}, catalog.known_versions())
    return StepContext(campaign, params, f"trials-{isolation}", "local", Cell("Qwen/Qwen3-0.6B", "llm-d-valkey"))


def _serving_pids(ctx):
    return {p.name: p.pid for p in local.load_state(ctx).processes if p.name != "pmlogger"}


def test_a_grid_sweep_redeploys_and_warms_up_the_cell_before_trial_2(campaigns_dir, results_dir, fake_guidellm):
    """trial_isolation: redeploy (the default): new serving processes before trial 2, proven and warmed up, the
    trial measured against the new endpoint, the cell's host recording going on through the redeploy."""
    ctx = _ctx(campaigns_dir, "redeploy")
    assert ctx.params.trial_isolation == "redeploy"
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        first = _serving_pids(ctx)
        first_logger = [p.pid for p in local.load_state(ctx).processes if p.name == "pmlogger"]
        sweep.run(ctx)
        record = json.loads(ctx.record_path.read_text())
        trials = record["sweep"]["trials"]
        assert [t["trial"] for t in trials] == [1, 2]
        now = _serving_pids(ctx)
        assert trials[0]["isolation"] == "first"
        assert trials[1]["isolation"] == "redeployed" and trials[1]["warmup_requests"] == 2
        assert trials[1]["redeploy_s"] > 0
        assert set(now) == set(first) and not set(now.values()) & set(first.values())
        assert not any(processes.pid_alive(pid) for pid in first.values())  # the old servers are gone
        assert trials[0]["target"] != trials[1]["target"]
        assert [check["when"] for check in record["served"]["checks"]] == ["redeploy"]  # proven after the redeploy
        # the cell's host recording went on through the redeploy
        assert [p.pid for p in local.load_state(ctx).processes if p.name == "pmlogger"] == first_logger
        for t in (1, 2):
            assert sweep.complete_report(ctx, sweep.report_path(ctx, t))
            assert "argv" in trials[t - 1] and [w["concurrency"] for w in trials[t - 1]["level_windows"]] == [2]
    finally:
        local.teardown(ctx)


def test_the_revised_method_runs_one_guidellm_per_level_with_a_restart_before_each(campaigns_dir, results_dir,
                                                                                   fake_guidellm):
    """runs: per-level, prefix_count 2x, max_requests 6x, level_isolation: restart, with real servers and GuideLLM's
    stand-in (the argv is the point; test_e2e and test_adaptive run the real GuideLLM): one run per level with its
    own prefix count and request cap, fresh servers before every level after the first, the levels merged into the
    trial's report; a cleared sweep resumes at the missing level."""
    doc = tiny_campaign(configs=["llm-d-valkey"])
    doc["workload"].update(concurrency=[1, 2], duration_s=1.5, runs="per-level", prefix_count="2x", max_requests="6x",
                           level_isolation="restart")
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, "per-level", "local", Cell("Qwen/Qwen3-0.6B", "llm-d-valkey"))
    local.deploy(ctx)
    try:
        warmup.run(ctx)
        before = _serving_pids(ctx)
        sweep.run(ctx)
        (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
        runs = trial["runs"]
        assert [r["levels"] for r in runs] == [[1], [2]]
        for r, level in zip(runs, (1, 2)):
            argv = r["argv"]
            assert json.loads(argv[argv.index("--profile") + 1])["streams"] == [level]
            assert f"prefix_count={2 * level}," in argv[argv.index("--data") + 1]
            assert f"kind=max_requests,count={6 * level * 1}" in argv  # 6 x concurrency x 1 turn
        # a restart before level 2 only: new serving processes, the old ones gone
        assert "isolation" not in runs[0] and runs[1]["isolation"] == "redeployed"
        after = _serving_pids(ctx)
        assert not set(after.values()) & set(before.values())
        assert not any(processes.pid_alive(pid) for pid in before.values())
        merged = sweep.report_path(ctx, 1)
        assert sweep.complete_report(ctx, merged)
        from llmd_bench.measure.guidellm_report import parse_report_file

        # the request cap ended each level early, and that is valid: no duration rule applies then
        levels = parse_report_file(merged, expected_duration_s=ctx.params.expected_level_s).levels
        assert [lv.requests_total for lv in levels] == [6, 12] and all(lv.valid for lv in levels), levels
        assert [w["concurrency"] for w in trial["level_windows"]] == [1, 2]
        # level 2 was cut short: a cleared sweep runs only level 2 again
        level_1 = ctx.cell_dir / runs[0]["report"]
        kept = level_1.stat().st_mtime_ns
        (ctx.cell_dir / runs[1]["report"]).unlink()
        merged.unlink()
        sweep.run(ctx)
        (trial,) = json.loads(ctx.record_path.read_text())["sweep"]["trials"]
        assert trial["runs"][0]["resumed"] is True and "argv" in trial["runs"][1]
        assert level_1.stat().st_mtime_ns == kept and sweep.complete_report(ctx, merged)
    finally:
        local.teardown(ctx)
