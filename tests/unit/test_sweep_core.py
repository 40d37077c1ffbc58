"""The sweep core's policies, fed observations: which levels each trial measures and in which order, isolation
between trials and levels, resume of what exists, and the adaptive sweep's decisions (the same as AdaptiveSweep's).
No file, process or server: the step that executes these actions is tested end to end in test_trials.py,
test_adaptive.py, test_level_reset.py, test_sweep_stall.py and test_faults.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from llmd_bench.measure import sweep_core
from llmd_bench.measure.adaptive import AdaptiveSweep, LevelOutcome
from llmd_bench.measure.sweep_core import (
    AdaptiveDecisions,
    CompleteTrial,
    Isolate,
    Isolated,
    LevelResult,
    Measured,
    Refine,
    ReportFound,
    Resume,
    ResumeTrial,
    RunLevels,
    Stop,
    SweepCoreError,
    SweepPlan,
    SweepPolicy,
    TrialDone,
    TrialOneLevels,
    next_action,
)
from llmd_bench.model import campaign
from llmd_bench.model.campaign import AdaptiveSettings

GRID = (1, 50, 100, 150, 300, 400, 500, 650)
Curve = Callable[[int], float | None]


def _plan(**overrides) -> SweepPlan:
    fields = {"sweep": "grid", "levels": (1, 4, 8), "trials": 1, "trial_isolation": "same-server",
              "level_isolation": "none", "one_run_per_level": False, "noise_floor_pct": 5.0}
    fields.update(overrides)
    if fields["sweep"] == "adaptive":
        fields["one_run_per_level"] = True
    return SweepPlan(**fields)


def _drive(plan: SweepPlan, curve: Curve = float, found: tuple[ReportFound, ...] = (),
           saturated: tuple[int, ...] = ()) -> list[sweep_core.Action]:
    """Execute the core's actions as the step would, measuring each level on `curve` (tokens/s, None: invalid)."""
    observations: list[sweep_core.Observation] = list(found)
    actions: list[sweep_core.Action] = []
    while True:
        action = next_action(plan, observations)
        actions.append(action)
        assert len(actions) < 200, actions
        if isinstance(action, Stop):
            return actions
        if isinstance(action, Isolate):
            observations.append(Isolated(isolation=action.isolation, trial=action.trial,
                                         before_level=action.before_level))
        elif isinstance(action, RunLevels | Resume):
            results = tuple(LevelResult(concurrency=c, valid=curve(c) is not None, output_tps=curve(c),
                                        over_saturated=c in saturated) for c in action.levels)
            observations.append(Measured(trial=action.trial, levels=action.levels, report=action.report,
                                         resumed=isinstance(action, Resume), results=results if action.observe else ()))
        elif isinstance(action, CompleteTrial | ResumeTrial):
            observations.append(TrialDone(trial=action.trial, levels=action.levels))


def _trial(actions: list[sweep_core.Action], trial: int) -> list[sweep_core.Action]:
    return [a for a in actions if not isinstance(a, Stop) and a.trial == trial]


def _short(actions: list[sweep_core.Action]) -> list[str]:
    """Actions as short strings: run 4, refine 350, resume 1, restart@4, reset@1*, redeploy, complete, stop."""
    out = []
    for a in actions:
        if isinstance(a, Refine):
            out.append(f"refine {a.level}")
        elif isinstance(a, RunLevels):
            out.append("run " + ",".join(map(str, a.levels)))
        elif isinstance(a, Resume):
            out.append("resume " + ",".join(map(str, a.levels)))
        elif isinstance(a, ResumeTrial):
            out.append(f"resume trial {a.trial}")
        elif isinstance(a, Isolate):
            out.append(a.isolation + (f"@{a.before_level}" if a.before_level is not None else "")
                       + ("*" if a.reference else ""))
        elif isinstance(a, CompleteTrial):
            out.append("complete")
        else:
            out.append("stop")
    return out


# -- grid -------------------------------------------------------------------------------------------------------------

def test_a_grid_sweep_runs_every_level_in_one_run_per_trial_and_stops():
    actions = _drive(_plan(trials=2))
    assert _short(actions) == ["run 1,4,8", "complete", "run 1,4,8", "complete", "stop"]
    run, complete = actions[0], actions[1]
    assert run == RunLevels(trial=1, levels=(1, 4, 8), report="trial-1/guidellm_report.json")
    assert complete == CompleteTrial(trial=1, report="trial-1/guidellm_report.json", levels=(1, 4, 8))
    assert actions[2].report == "trial-2/guidellm_report.json"


def test_a_per_level_grid_runs_the_levels_in_order_each_to_its_own_report_then_merges_them():
    actions = _drive(_plan(one_run_per_level=True))
    assert _short(actions) == ["run 1", "run 4", "run 8", "complete", "stop"]
    assert [a.report for a in actions[:3]] == [f"trial-1/level-{c}/guidellm_report.json" for c in (1, 4, 8)]
    assert not any(a.observe for a in actions[:3])  # the grid decides nothing from a level's outcome
    assert actions[3].merge == tuple(a.report for a in actions[:3]) and actions[3].decisions is None


# -- isolation ----------------------------------------------------------------------------------------------------------

def test_redeploy_comes_before_every_trial_but_the_first_and_same_server_never_redeploys():
    redeployed = _drive(_plan(trials=3, trial_isolation="redeploy"))
    assert _short(redeployed) == ["run 1,4,8", "complete", "redeploy", "run 1,4,8", "complete",
                                  "redeploy", "run 1,4,8", "complete", "stop"]
    assert [a.trial for a in redeployed if isinstance(a, Isolate)] == [2, 3]
    assert not any(isinstance(a, Isolate) for a in _drive(_plan(trials=3)))


def test_restart_comes_before_every_level_but_the_first_of_every_trial():
    actions = _drive(_plan(trials=2, one_run_per_level=True, level_isolation="restart"))
    per_trial = ["run 1", "restart@4", "run 4", "restart@8", "run 8", "complete"]
    assert _short(actions) == per_trial + per_trial + ["stop"]
    # with redeploy between trials too: the redeploy starts trial 2, its first level is not restarted again
    both = _drive(_plan(trials=2, one_run_per_level=True, level_isolation="restart", trial_isolation="redeploy"))
    assert _short(_trial(both, 2)) == ["redeploy", *per_trial]


def test_reset_comes_before_every_level_the_first_of_each_trial_with_the_fresh_server_reference():
    actions = _drive(_plan(trials=2, one_run_per_level=True, level_isolation="reset"))
    per_trial = ["reset@1*", "run 1", "reset@4", "run 4", "reset@8", "run 8", "complete"]
    assert _short(actions) == per_trial + per_trial + ["stop"]


# -- adaptive -----------------------------------------------------------------------------------------------------------

def _rising_then_falling(peak: int) -> Curve:
    # tests/test_adaptive.py's curve: rises linearly to the peak, falls 10 % per 100 streams past it
    return lambda c: 1000.0 * min(c, peak) / peak if c <= peak else 1000.0 * (1 - (c - peak) / 1000)


def test_adaptive_stops_one_level_past_the_peak_and_refines_towards_the_better_neighbour():
    actions = _drive(_plan(sweep="adaptive", levels=GRID), _rising_then_falling(300))
    assert _short(actions) == ["run 1", "run 50", "run 100", "run 150", "run 300", "run 400", "refine 350",
                               "complete", "stop"]
    assert all(a.observe for a in actions if isinstance(a, RunLevels))
    complete = actions[-2]
    assert complete.levels == (1, 50, 100, 150, 300, 350, 400)
    assert complete.merge[-1] == "trial-1/level-350/guidellm_report.json"  # merged in the order measured
    decided = complete.decisions
    assert isinstance(decided, AdaptiveDecisions)
    assert (decided.stopped_after, decided.not_run, decided.refined) == (400, [500, 650], [350])
    assert decided.describe().startswith("adaptive sweep stopped after level 400 (throughput fell 10.0 % below")


def _curves() -> dict[str, tuple[Curve, tuple[int, ...], AdaptiveSettings]]:
    flat: Curve = lambda c: min(c, 120) * 10.0  # noqa: E731
    return {"falls past 300": (_rising_then_falling(300), (), AdaptiveSettings()),
            "falls past 50, refine 2": (_rising_then_falling(50), (), AdaptiveSettings(refine=2)),
            "plateau, patience 1": (flat, (), AdaptiveSettings(refine=0)),
            "plateau, patience 2": (flat, (), AdaptiveSettings(patience=2)),
            "rising": (float, (), AdaptiveSettings()),
            "over-saturated at 150": (float, (150,), AdaptiveSettings(refine=0)),
            "invalid at 300": (lambda c: None if c == 300 else float(c), (), AdaptiveSettings()),
            "invalid first level": (lambda c: None if c == 1 else float(c), (), AdaptiveSettings()),
            "all invalid": (lambda c: None, (), AdaptiveSettings())}


@pytest.mark.parametrize("name", list(_curves()))
def test_the_core_decides_exactly_as_the_adaptive_sweep_fed_level_by_level(name):
    curve, saturated, settings = _curves()[name]
    direct = AdaptiveSweep(list(GRID), 5.0, settings)
    order = []
    while (level := direct.next_level()) is not None:
        order.append(level)
        direct.observe(LevelOutcome(level, curve(level), level in saturated))
    actions = _drive(_plan(sweep="adaptive", levels=GRID, adaptive=settings), curve, saturated=saturated)
    assert [a.levels[0] for a in actions if isinstance(a, RunLevels)] == order
    assert actions[-2].decisions.model_dump() == direct.summary()


def test_trials_after_the_first_measure_trial_1s_levels_in_order_without_deciding_again():
    actions = _drive(_plan(sweep="adaptive", levels=GRID, trials=3, trial_isolation="redeploy"),
                     _rising_then_falling(300))
    levels_of_1 = (1, 50, 100, 150, 300, 350, 400)
    for trial in (2, 3):
        later = _trial(actions, trial)
        assert _short(later) == ["redeploy", *(f"run {c}" for c in levels_of_1), "complete"]
        assert not any(isinstance(a, Refine) or getattr(a, "observe", False) for a in later)
        assert later[-1].levels == levels_of_1
        assert later[-1].decisions == TrialOneLevels(levels_of_trial_1=list(levels_of_1))


def test_an_adaptive_observation_of_another_level_than_asked_is_refused():
    plan = _plan(sweep="adaptive", levels=GRID)
    wrong = Measured(trial=1, levels=(50,), report="trial-1/level-50/guidellm_report.json",
                     results=(LevelResult(concurrency=50, valid=True, output_tps=1.0),))
    with pytest.raises(SweepCoreError, match="asked for level 1, the observation is of \\[50\\]"):
        next_action(plan, [wrong])
    with pytest.raises(SweepCoreError, match="needs one GuideLLM run per level"):
        next_action(_plan(sweep="adaptive").model_copy(update={"one_run_per_level": False}), [])


# -- resume ---------------------------------------------------------------------------------------------------------------

def _found(report: str, *levels: int) -> ReportFound:
    return ReportFound(report=report, levels=levels)


def test_a_complete_trial_report_is_resumed_not_run_and_the_next_trial_runs():
    plan = _plan(trials=2, trial_isolation="redeploy")
    actions = _drive(plan, found=(_found("trial-1/guidellm_report.json", 1, 4, 8),))
    assert _short(actions) == ["resume trial 1", "redeploy", "run 1,4,8", "complete", "stop"]
    assert actions[0] == ResumeTrial(trial=1, levels=(1, 4, 8), report="trial-1/guidellm_report.json")
    # every trial complete: nothing runs, nothing is redeployed
    done = _drive(plan, found=tuple(_found(f"trial-{t}/guidellm_report.json", 1, 4, 8) for t in (1, 2)))
    assert _short(done) == ["resume trial 1", "resume trial 2", "stop"]


def test_a_partial_trial_report_is_run_again():
    # GuideLLM cut short after level 4: the report parses but lacks level 8
    actions = _drive(_plan(), found=(_found("trial-1/guidellm_report.json", 1, 4),))
    assert _short(actions) == ["run 1,4,8", "complete", "stop"]


def test_complete_level_reports_are_resumed_without_isolation_and_the_missing_level_is_run_after_a_restart():
    plan = _plan(one_run_per_level=True, level_isolation="restart")
    found = (_found("trial-1/level-1/guidellm_report.json", 1), _found("trial-1/level-4/guidellm_report.json", 4),
             # a merged report of an earlier attempt with levels missing does not count
             _found("trial-1/guidellm_report.json", 1, 4))
    actions = _drive(plan, found=found)
    assert _short(actions) == ["resume 1", "resume 4", "restart@8", "run 8", "complete", "stop"]
    assert actions[-2].merge == tuple(f"trial-1/level-{c}/guidellm_report.json" for c in (1, 4, 8))
    # reset: a resumed level is not reset; the trial's first reset measured is the one with the reference
    reset = _drive(plan.model_copy(update={"level_isolation": "reset"}), found=found[:1])
    assert _short(reset) == ["resume 1", "reset@4*", "run 4", "reset@8", "run 8", "complete", "stop"]


def test_a_resumed_trial_1_gives_later_trials_its_levels():
    # an adaptive trial 1 that measured every grid level (no refinement) and was kept: trial 2 measures the same
    plan = _plan(sweep="adaptive", levels=(1, 4), trials=2)
    actions = _drive(plan, found=(_found("trial-1/guidellm_report.json", 1, 4),))
    assert _short(actions) == ["resume trial 1", "run 1", "run 4", "complete", "stop"]
    assert actions[-2].decisions == TrialOneLevels(levels_of_trial_1=[1, 4])


def test_an_adaptive_sweep_resumes_measured_levels_and_decides_from_their_outcomes():
    curve = _rising_then_falling(300)
    plan = _plan(sweep="adaptive", levels=GRID)
    found = tuple(_found(f"trial-1/level-{c}/guidellm_report.json", c) for c in (1, 50, 100, 500))
    actions = _drive(plan, curve, found=found)
    assert _short(actions) == ["resume 1", "resume 50", "resume 100", "run 150", "run 300", "run 400", "refine 350",
                               "complete", "stop"]
    assert all(a.observe for a in actions if isinstance(a, Resume))  # the step reads their outcomes back
    assert actions[-2].decisions == _drive(plan, curve)[-2].decisions


# -- the plan and the registry --------------------------------------------------------------------------------------------

def test_every_sweep_a_campaign_allows_has_a_policy_and_an_unknown_one_is_refused_by_name():
    assert set(campaign.SWEEPS) <= set(SweepPolicy.registry)
    with pytest.raises(SweepCoreError, match="sweep: 'bisect' has no policy; allowed: adaptive, grid, seeded"):
        next_action(_plan(sweep="bisect"), [])
    with pytest.raises(ValidationError, match="levels must be unique and ascending"):
        _plan(levels=(4, 1))
    with pytest.raises(ValidationError):
        _plan(level_isolation="sometimes")


def test_a_new_policy_is_a_registered_class_and_gets_the_shared_rules(monkeypatch):
    monkeypatch.setattr(SweepPolicy, "registry", dict(SweepPolicy.registry))

    @SweepPolicy.register("top-two")
    class TopTwo(SweepPolicy):
        """Measures only the two highest levels."""

        def next_run(self, measured):
            return sweep_core._next_planned(self.plan, self.plan.levels[-2:], measured)

    actions = _drive(_plan(sweep="top-two", trials=2, trial_isolation="redeploy", one_run_per_level=True,
                           level_isolation="restart"))
    assert _short(actions) == ["run 4", "restart@8", "run 8", "complete",
                               "redeploy", "run 4", "restart@8", "run 8", "complete", "stop"]
    # one run for the trial (runs: per-cell): its report is resumed only as a whole trial of every grid level, never
    # as a run (the record's argv comes from the trial's one run)
    per_cell = _plan(sweep="top-two")
    assert _short(_drive(per_cell, found=(_found("trial-1/guidellm_report.json", 4, 8),))) == [
        "run 4,8", "complete", "stop"]
    with pytest.raises(SweepCoreError, match="registered twice"):
        SweepPolicy.register("top-two")(TopTwo)
