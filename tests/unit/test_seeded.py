"""Seeded sweeps, fed observations through the sweep core: the bracket around the last peak, widening while the peak
sits at an edge, refinement only when the peak moved, the full grid every N runs or after a stack change, the
fallbacks (an earlier llm-d version, the configuration's other cells, adaptive), and resume. No file or server: the
step end to end is tests/e2e/test_seeded_sweep.py, the history's SQL tests/integration/test_seed_history.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmd_bench.measure import seeded
from llmd_bench.measure.seeded import PastSweep, SeedDecision, SeedSource, SeedSources, StackFingerprint, decide_seed
from llmd_bench.measure.sweep_core import (
    AdaptiveDecisions,
    CompleteTrial,
    Measured,
    ReportFound,
    RunLevels,
    SeededDecisions,
    SweepCoreError,
    SweepPlan,
    next_action,
)
from unit.test_sweep_core import GRID, _drive, _rising_then_falling, _short

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def _source(peak: int, kind: str = "history") -> SeedSource:
    return SeedSource(kind=kind, dag_run_id="scheduled__2026-11-30", llmd_version="v0.9.0", cell="Qwen3-8B / no-offload",
                      peak=peak, at=T0)


def _bracket(peak: int) -> SeedDecision:
    return SeedDecision(mode="bracket", reason="seeded from this cell's last run", source=_source(peak),
                        full_grid_every=4)


def _plan(seed: SeedDecision, **overrides) -> SweepPlan:
    fields = {"sweep": "seeded", "levels": GRID, "trials": 1, "trial_isolation": "same-server",
              "level_isolation": "none", "one_run_per_level": False, "noise_floor_pct": 5.0, "seed": seed}
    return SweepPlan(**(fields | overrides))


def _decided(actions) -> SeededDecisions:
    complete = next(a for a in actions if isinstance(a, CompleteTrial))
    assert isinstance(complete.decisions, SeededDecisions)
    return complete.decisions


# -- the bracket ----------------------------------------------------------------------------------------------------------

def test_an_unchanged_peak_measures_only_its_bracket_in_one_run_and_does_not_refine():
    actions = _drive(_plan(_bracket(300)), _rising_then_falling(300))
    assert _short(actions) == ["run 150,300,400", "complete", "stop"]
    assert actions[0].observe and actions[0].report == "trial-1/level-150/guidellm_report.json"
    assert actions[1].merge == ("trial-1/level-150/guidellm_report.json",)  # into the trial's report
    decided = _decided(actions)
    assert (decided.bracket, decided.not_run, decided.refined, decided.peak, decided.peak_moved) == (
        [150, 300, 400], [1, 50, 100, 500, 650], [], 300, False)
    assert decided.not_run_reason == seeded.NOT_RUN == "not run (seeded bracket)"
    assert decided.seeded_from == _source(300)
    said = decided.describe()
    assert "bracket [150, 300, 400]" in said and "not run (seeded bracket): [1, 50, 100, 500, 650]" in said


def test_a_refined_peak_off_the_grid_is_measured_with_the_grid_levels_either_side():
    actions = _drive(_plan(_bracket(350)), _rising_then_falling(350))
    assert _short(actions) == ["run 300,350,400", "complete", "stop"]


def test_a_peak_past_the_grid_keeps_the_edge_level_and_widens_inwards():
    # a seed from another grid (its peak above this grid's top): the top level, then down while it still rises there
    actions = _drive(_plan(_bracket(800)), _rising_then_falling(650))
    assert _short(actions) == ["run 650", "run 500", "refine 575", "complete", "stop"]
    assert _decided(actions).widened_down == [500]


def test_a_peak_that_moved_up_widens_until_a_level_falls_past_it_then_refines_and_says_so():
    # capacity grew: the last peak was at 150, now throughput rises to 400
    actions = _drive(_plan(_bracket(150)), _rising_then_falling(400))
    assert _short(actions) == ["run 100,150,300", "run 400", "run 500", "refine 450", "complete", "stop"]
    decided = _decided(actions)
    assert (decided.widened_up, decided.widened_down, decided.peak, decided.peak_moved, decided.refined) == (
        [400, 500], [], 400, True, [450])
    assert "widened up to 500" in decided.describe() and "(moved)" in decided.describe()
    assert decided.not_run == [1, 50, 650]


def test_a_peak_that_moved_down_widens_downwards():
    actions = _drive(_plan(_bracket(400)), _rising_then_falling(100))
    assert _short(actions) == ["run 300,400,500", "run 150", "run 100", "run 50", "refine 125", "complete", "stop"]
    decided = _decided(actions)
    assert (decided.widened_down, decided.peak, decided.refined) == ([150, 100, 50], 100, [125])


def test_a_plateau_within_the_noise_floor_does_not_widen():
    # a saturated server: throughput flat (within 2 %) from 150 on, the best of the bracket at its top edge
    def flat(c: int) -> float:
        return 1000.0 * min(c, 150) / 150 * (1 + 0.0001 * c)

    actions = _drive(_plan(_bracket(300)), flat)
    assert _short(actions) == ["run 150,300,400", "refine 350", "complete", "stop"]  # the best moved to 400: refined
    assert _decided(actions).widened_up == []


def test_a_bracket_without_a_valid_level_measures_the_rest_of_the_grid():
    actions = _drive(_plan(_bracket(300)), lambda c: None if c >= 150 else float(c))
    assert _short(actions)[:2] == ["run 150,300,400", "run 1,50,100,500,650"]
    assert _decided(actions).peak == 100


def test_one_run_per_level_runs_the_bracket_level_by_level_with_the_same_decisions():
    per_cell = _decided(_drive(_plan(_bracket(150)), _rising_then_falling(400)))
    actions = _drive(_plan(_bracket(150), one_run_per_level=True), _rising_then_falling(400))
    assert _short(actions) == ["run 100", "run 150", "run 300", "run 400", "run 500", "refine 450", "complete", "stop"]
    assert _decided(actions) == per_cell


def test_later_trials_measure_the_levels_trial_1_decided_in_one_run():
    actions = _drive(_plan(_bracket(150), trials=2), _rising_then_falling(400))
    later = [a for a in actions if getattr(a, "trial", 0) == 2]
    assert _short(later) == ["run 100,150,300,400,450,500", "complete"]
    assert later[0].report == "trial-2/level-100/guidellm_report.json" and later[1].merge == (later[0].report,)


def test_a_retried_sweep_resumes_the_bracket_report_and_decides_from_its_levels():
    found = (ReportFound(report="trial-1/level-100/guidellm_report.json", levels=(100, 150, 300)),)
    actions = _drive(_plan(_bracket(150)), _rising_then_falling(400), found=found)
    assert _short(actions) == ["resume 100,150,300", "run 400", "run 500", "refine 450", "complete", "stop"]
    assert actions[0].observe


def test_an_observation_without_every_levels_result_is_refused():
    plan = _plan(_bracket(300))
    run = next_action(plan, [])
    assert isinstance(run, RunLevels)
    partial = Measured(trial=1, levels=run.levels, report=run.report, results=())
    with pytest.raises(SweepCoreError, match=r"observation of \[150, 300, 400\] has results for \[\]"):
        next_action(plan, [partial])


def test_seeded_without_a_seed_is_refused():
    with pytest.raises(SweepCoreError, match="needs the seed"):
        next_action(_plan(None), [])


# -- full grid and adaptive modes ---------------------------------------------------------------------------------------

def test_a_full_grid_measures_every_level_in_one_run_then_refines():
    full = SeedDecision(mode="full-grid", reason="one run in 4 measures the full grid", full_grid_every=4,
                        bracket_runs_before=3)
    actions = _drive(_plan(full), _rising_then_falling(300))
    assert _short(actions) == ["run 1,50,100,150,300,400,500,650", "refine 350", "complete", "stop"]
    assert actions[0].report == "trial-1/guidellm_report.json"
    decided = _decided(actions)
    assert (decided.mode, decided.not_run, decided.bracket, decided.bracket_runs_before) == ("full-grid", [], [], 3)


def test_no_seed_sweeps_adaptively_exactly_as_the_adaptive_policy():
    none = SeedDecision(mode="adaptive", reason="no stored run", full_grid_every=4)
    actions = _drive(_plan(none), _rising_then_falling(300))
    adaptive = _drive(SweepPlan(sweep="adaptive", levels=GRID, trials=1, trial_isolation="same-server",
                                level_isolation="none", one_run_per_level=True, noise_floor_pct=5.0),
                      _rising_then_falling(300))
    assert _short(actions) == _short(adaptive)
    decided = _decided(actions)
    assert isinstance(decided.adaptive, AdaptiveDecisions) and decided.adaptive.not_run == [500, 650]
    assert decided.not_run_reason == "not run (past saturation)"


# -- the seed decision -------------------------------------------------------------------------------------------------

def _past(days_ago: int, mode: str = "bracket", peak: int | None = 300, version: str = "v0.9.0",
          stack: StackFingerprint | None = None, cell: str = "Qwen3-8B / no-offload") -> PastSweep:
    return PastSweep(dag_run_id=f"scheduled__{days_ago}", llmd_version=version, cell=cell, at=T0 - timedelta(days=days_ago),
                     mode=mode, peak=peak, stack=stack)


def test_a_cell_with_history_is_bracketed_from_its_newest_run():
    decision = decide_seed(SeedSources(same_cell=(_past(7, peak=150), _past(14, mode="adaptive"))), None, 4)
    assert (decision.mode, decision.source.peak, decision.source.kind, decision.bracket_runs_before) == (
        "bracket", 150, "history", 1)


def test_every_nth_run_is_a_full_grid_counting_bracket_runs_since_the_last_full_measurement():
    history = (_past(7), _past(14), _past(21), _past(28, mode="adaptive"))
    decision = decide_seed(SeedSources(same_cell=history), None, 4)
    assert decision.mode == "full-grid" and "3 seeded bracket run(s) since the last full one" in decision.reason
    assert decide_seed(SeedSources(same_cell=history[1:]), None, 4).mode == "bracket"
    assert decide_seed(SeedSources(same_cell=history[1:]), None, 1).mode == "full-grid"  # full_grid_every: 1


def test_a_changed_served_stack_runs_the_full_grid_and_names_what_changed():
    before = StackFingerprint(images=("sha256:aaa",), vllm_versions=("0.11.2",), gpu_products=("NVIDIA-H100",),
                              drivers=("570.1",))
    now = before.model_copy(update={"vllm_versions": ("0.12.0",), "drivers": ("580.2",)})
    decision = decide_seed(SeedSources(same_cell=(_past(7, stack=before),)), now, 4)
    assert decision.mode == "full-grid"
    assert "vLLM version 0.11.2 -> 0.12.0" in decision.reason and "driver 570.1 -> 580.2" in decision.reason
    assert decide_seed(SeedSources(same_cell=(_past(7, stack=before),)), before, 4).mode == "bracket"


def test_a_last_run_without_a_valid_level_runs_the_full_grid():
    assert decide_seed(SeedSources(same_cell=(_past(7, peak=None),)), None, 4).mode == "full-grid"


def test_without_history_a_backfill_seeds_from_the_previous_version_then_other_cells_then_adaptive():
    previous = _past(30, version="v0.8.0", peak=400)
    other = _past(7, cell="Qwen3-8B [replicas=2] / no-offload", peak=500)
    from_previous = decide_seed(SeedSources(previous_version=previous, other_cells=(other,)), None, 4)
    assert (from_previous.mode, from_previous.source.kind, from_previous.source.peak) == ("bracket", "previous-version", 400)
    assert "at llm-d v0.8.0" in from_previous.reason
    from_other = decide_seed(SeedSources(other_cells=(_past(3, peak=None, cell="x"), other)), None, 4)
    assert (from_other.source.kind, from_other.source.peak) == ("other-cell", 500)
    assert "Qwen3-8B [replicas=2] / no-offload" in from_other.reason
    scratch = decide_seed(SeedSources(), None, 4)
    assert scratch.mode == "adaptive" and scratch.source is None


def test_the_stack_fingerprint_reads_images_vllm_gpus_and_drivers_from_stack_metadata():
    stack = {"model_servers": [{"image": "ghcr.io/llm-d/llm-d:v0.9.0", "image_digest": "sha256:bbb",
                                "vllm_version": "0.11.2", "sidecars": [{"image": "routing-sidecar:v1", "image_digest": None}]}],
             "epp": {"image": "epp:v1", "image_digest": "sha256:ccc"},
             "nodes": {"n1": {"gpu_product": "NVIDIA-H100-80GB-HBM3", "driver_version": "570.133.20"}}}
    fp = StackFingerprint.of(stack)
    assert fp == StackFingerprint(images=("routing-sidecar:v1", "sha256:bbb", "sha256:ccc"), vllm_versions=("0.11.2",),
                                  gpu_products=("NVIDIA-H100-80GB-HBM3",), drivers=("570.133.20",))
    # the simulated runtime's metadata has none of these: its fingerprint never changes
    local = {"model_servers": [{"image": None, "image_digest": None, "vllm_version": None}], "epp": None,
             "nodes": {"host": {"gpu_product": None, "driver_version": None}}}
    assert StackFingerprint.of(local) == StackFingerprint() and StackFingerprint.of({}) is None
