"""design: aba: the baseline cell again after the others (model/design.py), in the DAG (orchestration/airflow_dag.py),
in the steps (its own folder, stored as the baseline's later trials) and in the report (report/drift.py)."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench import report as rpt
from llmd_bench.model import design
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import ParamsError
from llmd_bench.report import analysis
from llmd_bench.report.data import from_csv_dir

STEPS = ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")


def test_auto_is_aba_on_the_simulated_runtime_and_single_on_a_cluster():
    assert design.resolve("auto", simulated=True) == "aba" and design.resolve("auto", simulated=False) == "single"
    assert design.resolve("aba", simulated=False) == "aba" and design.resolve("single", simulated=True) == "single"
    assert design.resolve(None, simulated=True) == "single"  # a run stored before the field ran each cell once
    with pytest.raises(ParamsError, match="design 'abab': expected auto, single or aba"):
        design.resolve("abab", simulated=True)


def test_the_repeat_has_its_own_folder_group_and_record_and_is_stored_after_the_baselines_trials(tmp_path, monkeypatch):
    from llmd_bench.model import catalog
    from llmd_bench.model.params import resolve_params
    from llmd_bench.stack.context import StepContext

    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(tmp_path / "results"))
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {"trials": 2}, catalog.known_versions())
    base = Cell("Qwen/Qwen3-8B", "no-offload")
    repeat = design.repeat_of(base, params.baseline)
    first, last = (StepContext(campaign, params, "run-1", "local", c) for c in (base, repeat))
    assert last.cell_dir == first.cell_dir.with_name("no-offload__repeat")
    assert repeat.group_id == "Qwen3-8B__no-offload__repeat" and repeat.baseline == base
    assert params.selects(repeat)  # the run's params select it as they select the baseline
    assert [design.stored_trial(t, 2, repeat) for t in (1, 2)] == [3, 4]
    assert [design.stored_trial(t, 2, base) for t in (1, 2)] == [1, 2]
    with last.update_record() as record:
        assert record["repeat"] == {"of": "Qwen3-8B__no-offload", "position": "last", "design": "aba",
                                    "stored_as_trials": [3, 4]}
    with first.update_record() as record:
        assert "repeat" not in record
    with pytest.raises(ParamsError, match="only the baseline cell repeats.*'llm-d-redis' is not the run's baseline"):
        design.repeat_of(Cell("Qwen/Qwen3-8B", "llm-d-redis"), "no-offload")


def test_the_step_cli_runs_the_repeat_with_repeat(monkeypatch):
    from llmd_bench import cli

    args = cli.build_parser().parse_args(["sweep", "--campaign", str(REFERENCE), "--run-id", "r", "--model",
                                          "Qwen/Qwen3-8B", "--config", "no-offload", "--repeat"])
    ctx = cli._context(args, with_cell=True)
    assert isinstance(ctx.cell, design.RepeatCell) and ctx.cell_dir.name == "no-offload__repeat"
    args.config = "llm-d-redis"
    with pytest.raises(ParamsError, match="not the run's baseline"):
        cli._context(args, with_cell=True)


def test_aba_adds_the_baseline_repeat_last_and_single_skips_it(campaigns_dir):
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    from llmd_bench.orchestration.airflow_dag import build_dag, select_cells

    doc = tiny_campaign(configs=["no-offload", "native-offload", "llm-d-redis"], design="aba")
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    dag = build_dag(campaign, runtime="local")
    groups = [g for g in dag.task_group.children if g not in ("select_cells", "compare")]
    assert groups == ["Qwen3-0_6B__no-offload", "Qwen3-0_6B__native-offload", "Qwen3-0_6B__llm-d-redis",
                      "Qwen3-0_6B__no-offload__repeat"]
    repeat = "Qwen3-0_6B__no-offload__repeat"
    assert dag.get_task(f"{repeat}.deploy").upstream_task_ids == {
        "Qwen3-0_6B__llm-d-redis.teardown", "Qwen3-0_6B__llm-d-redis.load_results", "Qwen3-0_6B__no-offload.teardown",
        "Qwen3-0_6B__no-offload.load_results", "Qwen3-0_6B__native-offload.teardown",
        "Qwen3-0_6B__native-offload.load_results", "select_cells"}
    assert dag.get_task(f"{repeat}.deploy").trigger_rule == "all_done"
    assert dag.get_task(f"{repeat}.sweep").arguments[-5:] == ["--model", "Qwen/Qwen3-0.6B", "--config", "no-offload",
                                                             "--repeat"]
    assert {f"{repeat}.teardown", f"{repeat}.load_results"} <= dag.get_task("compare").upstream_task_ids
    # the run's design decides: aba runs the repeat, single skips it with every step
    assert select_cells(campaign, {}, runtime="local")[-1] == repeat
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        select_cells(campaign, {"design": "single"}, runtime="local")
    assert sorted(skipped.value.tasks) == sorted(f"{repeat}.{s}" for s in STEPS)
    # auto: aba on the local runtime, single on a cluster
    assert select_cells(campaign, {"design": "auto"}, runtime="local")[-1] == repeat
    with pytest.raises(DownstreamTasksSkipped):
        select_cells(campaign, {"design": "auto"}, runtime="kubernetes")
    # a run without the baseline has nothing to repeat
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        select_cells(campaign, {"configs": ["native-offload"]}, runtime="local")
    assert f"{repeat}.deploy" in skipped.value.tasks


def test_with_lanes_the_repeat_waits_for_every_cell_of_its_model(campaigns_dir):
    from llmd_bench.orchestration.airflow_dag import build_dag

    doc = tiny_campaign(configs=["no-offload", "native-offload", "llm-d-redis"], lanes=2)
    dag = build_dag(load_campaign(write_campaign(campaigns_dir, doc)), runtime="local")
    upstream = dag.get_task("Qwen3-0_6B__no-offload__repeat.deploy").upstream_task_ids
    for g in ("Qwen3-0_6B__no-offload", "Qwen3-0_6B__native-offload", "Qwen3-0_6B__llm-d-redis"):
        assert {f"{g}.teardown", f"{g}.load_results"} <= upstream


# -- the report -------------------------------------------------------------------------------------------------------
def write_levels(directory, config, peaks_by_trial: dict[int, float], suspect: str | None = None):
    """A cell's metrics CSV: levels 1 and 8 per trial, the peak at 8, with GuideLLM's latency spread."""
    with open(directory / f"M_{config}_metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "config", "trial", "concurrency", "output_tps_mean", "ttft_mean_ms",
                                          "tpot_mean_ms", "requests_successful", "requests_errored",
                                          "request_latency_mean_s", "request_latency_std_s", "suspect_reason"])
        w.writeheader()
        for trial, peak in peaks_by_trial.items():
            for c, tps in ((1, peak / 6), (8, peak)):
                w.writerow({"model": "M", "config": config, "trial": trial, "concurrency": c, "output_tps_mean": tps,
                            "ttft_mean_ms": 40, "tpot_mean_ms": 8, "requests_successful": 2000, "requests_errored": 0,
                            "request_latency_mean_s": 0.3, "request_latency_std_s": 0.01,
                            "suspect_reason": suspect if c == 8 else ""})


def aba_report(tmp_path, first: float, last: float | None, others: dict[str, float], trials: int = 1,
               design_param: str = "auto") -> rpt.Report:
    d = tmp_path / "cells"
    d.mkdir(exist_ok=True)
    baseline = {t: first for t in range(1, trials + 1)}
    if last is not None:  # the repeat: the baseline's trials after the run's trials
        baseline |= {trials + t: last for t in range(1, trials + 1)}
    write_levels(d, "no-offload", baseline)
    for config, peak in others.items():
        write_levels(d, config, {t: peak * (1 + 0.002 * t) for t in range(1, trials + 1)})
    data = dataclasses.replace(from_csv_dir(d), runtime="local",
                               params={"design": design_param, "trials": trials, "noise_floor_pct": 5.0})
    return rpt.build(data)


def test_the_baselines_drift_widens_the_floor_of_its_models_comparisons_and_is_shown(tmp_path):
    r = aba_report(tmp_path, first=412.0, last=398.0, others={"native-offload": 378.0, "llm-d-redis": 360.0})
    base = r.peaks.set_index("config").loc["no-offload"]
    # the baseline's peak is its first run's: the repeat is not one more trial of this run's table
    assert base["peak_output_tps"] == 412.0 and base["trials"] == 1
    assert base["drift_pct"] == pytest.approx(-3.398, abs=1e-3)
    c = r.comparisons.set_index("config")
    # -8.3 % is beyond 5 % but not beyond 5 % + 3.4 %; -12.6 % is beyond both
    assert c.loc["native-offload", "judgement"] == "within noise"
    assert c.loc["native-offload", "basis"] == ("1 trial; campaign noise_floor_pct 5 % (no history); + 3.4 % baseline "
                                                "drift (design: aba): 8.4 %")
    assert c.loc["llm-d-redis", "judgement"] == "lower"
    md = rpt.render_report(r, {})[0]
    assert ("Baseline drift: M's no-offload first 412.0 tok/s, last 398.0 tok/s, -3.4 %: the floor for M's "
            "comparisons is 5 % -> 8.4 %.") in md
    # the same numbers under design: single: the trials above `trials` are the run's own, no drift
    single = aba_report(tmp_path, first=412.0, last=None, others={"native-offload": 378.0}, design_param="single")
    assert single.comparisons.set_index("config").loc["native-offload", "judgement"] == "lower"
    assert "Baseline drift" not in rpt.render_report(single, {})[0]


def test_a_repeat_that_stored_nothing_is_said_and_the_floor_stays(tmp_path):
    r = aba_report(tmp_path, first=412.0, last=None, others={"native-offload": 378.0})
    assert r.comparisons.set_index("config").loc["native-offload", "judgement"] == "lower"
    md = rpt.render_report(r, {})[0]
    assert ("Baseline drift: not measured for M: its no-offload repeat (run last under design: aba) stored no valid "
            "level, so its comparisons use the floor alone.") in md


def test_with_trials_the_drift_widens_the_welch_bound(tmp_path):
    r = aba_report(tmp_path, first=1000.0, last=950.0, others={"llm-d-redis": 1040.0}, trials=3)
    c = r.comparisons.set_index("config").loc["llm-d-redis"]
    # the trials alone call +4 % higher (their spread is 0.2 %); with the baseline's 5 % drift it is within noise
    assert c["judgement"] == "within noise" and c["basis"].endswith("+ 5.0 % baseline drift (design: aba)")
    assert "M's comparisons need a difference beyond their Welch bound + 5.0 %" in rpt.render_report(r, {})[0]


def test_the_demo_case_a_baseline_hit_by_a_busy_host_in_its_first_run_calls_nothing_higher(tmp_path):
    """The issue's case without any suspect mark: the first baseline run 25 % low, native-offload (10 % slower than the
    baseline really is) looks +20 %; the repeat shows the drift and the comparison stays within noise."""
    r = aba_report(tmp_path, first=750.0, last=1000.0, others={"native-offload": 900.0})
    c = r.comparisons.set_index("config").loc["native-offload"]
    assert c["vs_baseline_pct"] == pytest.approx(20.0, abs=0.5) and c["judgement"] == "within noise"
    assert analysis.NO_VERDICT not in set(r.comparisons["judgement"])
