"""The sweep's decisions as one pure function: `next_action(plan, observations)`.

Given a cell's plan (its levels, trials, isolation, method, the `sweep` policy's settings) and what has happened so
far (the complete reports an earlier attempt left, the isolations done, the levels measured with their outcome, the
trials completed), it returns what to do next: isolate (redeploy before a trial, restart or reset before a level),
run levels, refine, resume a report that exists, complete a trial, or stop. Nothing here reads a file, starts a
process or opens a connection: steps/sweep.py scans the cell folder, executes each action and feeds back what
happened, so every policy is tested by feeding observations (tests/unit/test_sweep_core.py).

The rules every policy shares, decided here:
- resume: a trial whose report holds every grid level is not run again; a run whose own report (runs: per-level) is
  complete is not run again either; a partial report is run again.
- trial_isolation redeploy: before every trial after the first that is run (not resumed).
- level_isolation restart: before every run of a trial but its first; reset: before every run that is measured,
  the trial's first reset with a fresh server's reference.
- trials after the first measure the levels trial 1 measured (comparable trials), one run each (per-level) or one.

A policy (`sweep:` in the campaign) decides only which levels trial 1 measures, in which order, from the outcomes of
those already measured: a SweepPolicy subclass registered under its `sweep` value with
`@SweepPolicy.register("name")` (the pattern of GuideLLM's RegistryMixin.register, guidellm/utils/registry.py in the
installed GuideLLM 0.8.1). A new policy (e.g. seeded) is a new class, in a module imported at the end of this one;
tests/unit/test_sweep_core.py checks every value campaign.SWEEPS allows has one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmd_bench.measure.adaptive import AdaptiveSweep, LevelOutcome
from llmd_bench.measure.cell_folder import report_name
from llmd_bench.measure.seeded import SeedDecision, SeededSweep, SeedMode, SeedSource
from llmd_bench.model.campaign import AdaptiveSettings, LevelIsolation, TrialIsolation
from llmd_bench.model.errors import LlmdBenchError


class SweepCoreError(LlmdBenchError):
    """A plan no policy serves, or observations that contradict the plan's policy."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Levels = tuple[int, ...]

# -- the plan --------------------------------------------------------------------------------------------------------


class SweepPlan(_Frozen):
    """What the sweep of one cell is asked to do (from the run's params and the cell's model: steps/sweep.sweep_plan)."""

    sweep: str = Field(description="the policy: a registered SweepPolicy name (the `sweep` param)")
    levels: Levels = Field(description="the grid: the cell's concurrency levels, ascending")
    trials: int = Field(ge=1)
    trial_isolation: TrialIsolation
    level_isolation: LevelIsolation
    one_run_per_level: bool = Field(description="one GuideLLM run per level (runs: per-level, or an adaptive sweep)")
    noise_floor_pct: float = Field(ge=0, le=100)
    adaptive: AdaptiveSettings = AdaptiveSettings()
    seed: SeedDecision | None = Field(None, description="sweep: seeded: how the cell is swept and from what "
                                      "(seeded.decide_seed, from the store's history before the sweep)")

    @field_validator("levels")
    @classmethod
    def _ascending(cls, levels: Levels) -> Levels:
        if not levels or list(levels) != sorted(set(levels)):
            raise ValueError(f"levels must be unique and ascending, got {list(levels)}")
        return levels


# -- observations: what the step saw or did --------------------------------------------------------------------------

IsolationKind = Literal["redeploy", "restart", "reset"]


class ReportFound(_Frozen):
    """A report that exists and parses when the sweep starts (an earlier attempt's), with the levels it holds."""

    report: str = Field(description="relative to the cell folder (cell_folder.report_name)")
    levels: Levels


class Isolated(_Frozen):
    """An Isolate action done."""

    isolation: IsolationKind
    trial: int
    before_level: int | None = None


class LevelResult(_Frozen):
    """What a policy may decide from one measured level."""

    concurrency: int
    valid: bool
    output_tps: float | None = Field(None, description="mean output tokens/s (None when the level has none)")
    over_saturated: bool = Field(False, description="GuideLLM's over_saturation constraint stopped the level")


class Measured(_Frozen):
    """A RunLevels, Refine or Resume done: the run's report holds `levels`."""

    trial: int
    levels: Levels
    report: str
    resumed: bool = False
    results: tuple[LevelResult, ...] = Field((), description="each level's result, when the action asked to observe")


class TrialDone(_Frozen):
    """A CompleteTrial or ResumeTrial done: the trial's report holds `levels`."""

    trial: int
    levels: Levels


Observation = ReportFound | Isolated | Measured | TrialDone

# -- what a policy keeps in a trial's record ---------------------------------------------------------------------------


class Decisions(_Frozen):
    """A policy's decisions as the trial's record keeps them under the policy's name (cell.json)."""

    def describe(self) -> str | None:
        """A line for the sweep's log, or None."""
        return None


class AdaptiveDecisions(Decisions):
    """adaptive.AdaptiveSweep.summary(), key for key."""

    grid: list[int]
    run: list[int]
    not_run: list[int]
    refined: list[int]
    stopped_after: int | None
    stop_reason: str | None
    patience: int
    refine: int
    noise_floor_pct: float

    def describe(self) -> str:
        return (f"adaptive sweep stopped after level {self.stopped_after} ({self.stop_reason}); not run: "
                f"{self.not_run or 'none'}; refined: {self.refined or 'none'}")


class SeededDecisions(Decisions):
    """seeded.SeededSweep.summary(), key for key."""

    policy: Literal["seeded"]
    mode: SeedMode
    reason: str
    seeded_from: SeedSource | None
    grid: list[int]
    bracket: list[int]
    run: list[int]
    not_run: list[int]
    not_run_reason: str
    widened_up: list[int]
    widened_down: list[int]
    refined: list[int]
    peak: int | None
    peak_moved: bool
    full_grid_every: int
    bracket_runs_before: int
    noise_floor_pct: float
    adaptive: AdaptiveDecisions | None

    def describe(self) -> str:
        said = f"seeded sweep ({self.mode}: {self.reason})"
        if self.mode == "bracket":
            said += f"; bracket {self.bracket}"
        if self.widened_up or self.widened_down:
            said += (f"; widened {'up to ' + str(self.widened_up[-1]) if self.widened_up else ''}"
                     f"{' and ' if self.widened_up and self.widened_down else ''}"
                     f"{'down to ' + str(self.widened_down[-1]) if self.widened_down else ''} "
                     "(the peak was at an edge of the levels measured)")
        said += f"; peak at {self.peak}" + (" (moved)" if self.peak_moved else "")
        if self.refined:
            said += f"; refined: {self.refined}"
        return said + f"; {self.not_run_reason}: {self.not_run or 'none'}"


class TrialOneLevels(Decisions):
    """A later trial of a policy that decides: it measured the levels trial 1 decided."""

    levels_of_trial_1: list[int]


# -- actions: what the step does next ------------------------------------------------------------------------------------


class Isolate(_Frozen):
    """Redeploy the cell before a trial, or restart it (a redeploy) or reset its caches and index before a level.
    `reference`: the trial's first reset, before which a fresh server's reference is measured."""

    isolation: IsolationKind
    trial: int
    before_level: int | None = None
    reference: bool = False


class RunLevels(_Frozen):
    """Run GuideLLM over `levels`, writing `report`; `observe`: report each level's LevelResult back."""

    trial: int
    levels: Levels
    report: str
    observe: bool = False


class Refine(RunLevels):
    """Run a refinement level (between the best level and a neighbour); executed as RunLevels."""

    @property
    def level(self) -> int:
        (level,) = self.levels
        return level


class Resume(_Frozen):
    """A run's report exists complete (runs: per-level): not run again; its levels count as measured."""

    trial: int
    levels: Levels
    report: str
    observe: bool = False


class ResumeTrial(_Frozen):
    """The trial's report exists with every grid level: the trial is not run again."""

    trial: int
    levels: Levels
    report: str


class CompleteTrial(_Frozen):
    """Every run of the trial is done: merge the per-level reports (`merge`, in order; empty when the one run wrote
    the trial's report), check the trial's report holds `levels`, record the trial with `decisions`."""

    trial: int
    report: str
    levels: Levels
    merge: tuple[str, ...] = ()
    decisions: Decisions | None = None


class Stop(_Frozen):
    reason: str


Action = Isolate | RunLevels | Resume | ResumeTrial | CompleteTrial | Stop

# -- policies --------------------------------------------------------------------------------------------------------


class NextRun(_Frozen):
    levels: Levels
    refine: bool = False
    kind: str = Field("", description="what the run is, as the policy's record names it (seeded: bracket, widen up...)")


P = TypeVar("P", bound="type[SweepPolicy]")


class SweepPolicy(ABC):
    """Which levels trial 1 measures and in which order. `observes`: each measured level's LevelResult is fed back
    (the policy decides level by level, so it needs one run per level)."""

    registry: ClassVar[dict[str, type[SweepPolicy]]] = {}
    name: ClassVar[str] = ""
    observes: ClassVar[bool] = False
    # decides level by level (needs one GuideLLM run per level); a policy that plans groups of levels does not
    level_by_level: ClassVar[bool] = False

    def __init__(self, plan: SweepPlan) -> None:
        if self.level_by_level and not plan.one_run_per_level:
            raise SweepCoreError(f"sweep: {plan.sweep} decides level by level and needs one GuideLLM run per level")
        self.plan = plan

    @classmethod
    def register(cls, name: str) -> Callable[[P], P]:
        def decorator(policy: P) -> P:
            if name in cls.registry:
                raise SweepCoreError(f"sweep policy {name!r} is registered twice ({cls.registry[name].__name__}, "
                                     f"{policy.__name__})")
            policy.name = name
            cls.registry[name] = policy
            return policy
        return decorator

    @abstractmethod
    def next_run(self, measured: Sequence[Measured]) -> NextRun | None:
        """Trial 1's next run given its runs so far (in order), or None when the trial is done."""

    def decisions(self, measured: Sequence[Measured]) -> Decisions | None:
        """What trial 1's record keeps of the policy's decisions."""
        return None

    def later_decisions(self, levels_of_trial_1: Levels) -> Decisions | None:
        """What a later trial's record keeps."""
        return None


def planned_runs(plan: SweepPlan, levels: Levels) -> list[Levels]:
    """The runs measuring `levels`: one per level, or one for all (method.runs_of)."""
    return [(c,) for c in levels] if plan.one_run_per_level else [levels]


def _next_planned(plan: SweepPlan, levels: Levels, measured: Sequence[Measured]) -> NextRun | None:
    done = {m.levels for m in measured}
    return next((NextRun(levels=run) for run in planned_runs(plan, levels) if run not in done), None)


@SweepPolicy.register("grid")
class GridPolicy(SweepPolicy):
    """Every level of the grid, in order."""

    def next_run(self, measured: Sequence[Measured]) -> NextRun | None:
        return _next_planned(self.plan, self.plan.levels, measured)


@SweepPolicy.register("adaptive")
class AdaptivePolicy(SweepPolicy):
    """adaptive.AdaptiveSweep: levels in order until throughput stops rising beyond the noise floor (or GuideLLM's
    over-saturation constraint stops a level), then refinement levels around the best. The sweep is replayed from
    the measured levels with the same calls, in the same order, as a sweep fed level by level."""

    observes = True
    level_by_level = True

    def _replay(self, measured: Sequence[Measured]) -> AdaptiveSweep:
        sweep = AdaptiveSweep(list(self.plan.levels), self.plan.noise_floor_pct, self.plan.adaptive)
        for run in measured:
            wanted = sweep.next_level()
            if run.levels != (wanted,) or len(run.results) != 1 or run.results[0].concurrency != wanted:
                raise SweepCoreError(f"trial {run.trial}: the adaptive sweep asked for level {wanted}, the observation "
                                     f"is of {list(run.levels)} with {len(run.results)} result(s)")
            (result,) = run.results
            sweep.observe(LevelOutcome(result.concurrency, result.output_tps if result.valid else None,
                                       result.over_saturated))
        return sweep

    def next_run(self, measured: Sequence[Measured]) -> NextRun | None:
        sweep = self._replay(measured)
        level = sweep.next_level()
        # once the sweep has stopped, what it asks for is a refinement level
        return None if level is None else NextRun(levels=(level,), refine=sweep.stopped_after is not None)

    def decisions(self, measured: Sequence[Measured]) -> AdaptiveDecisions:
        sweep = self._replay(measured)
        if sweep.next_level() is not None:
            raise SweepCoreError("the adaptive sweep is not done")
        return AdaptiveDecisions.model_validate(sweep.summary(), strict=False)

    def later_decisions(self, levels_of_trial_1: Levels) -> TrialOneLevels:
        return TrialOneLevels(levels_of_trial_1=list(levels_of_trial_1))


@SweepPolicy.register("seeded")
class SeededPolicy(SweepPolicy):
    """seeded.SeededSweep: the bracket around the seed's peak (one GuideLLM run, or one per level), widened while the
    peak sits at its edge, refined when the peak moved; the full grid or an adaptive sweep when plan.seed says so.
    Its decisions are a function of the levels measured, so it is replayed from the observations' results."""

    observes = True

    def __init__(self, plan: SweepPlan) -> None:
        super().__init__(plan)
        if plan.seed is None:
            raise SweepCoreError("sweep: seeded needs the seed decided from the store's history (plan.seed)")
        self.seed = plan.seed

    def _sweep(self) -> SeededSweep:
        return SeededSweep(list(self.plan.levels), self.seed, self.plan.noise_floor_pct, self.plan.adaptive)

    def _replay(self, measured: Sequence[Measured]) -> tuple[SeededSweep, list[tuple[Levels, str]]]:
        sweep, kinds = self._sweep(), []
        for run in measured:
            wanted = sweep.next_levels()
            if wanted is None or not set(run.levels) <= set(wanted[0]):
                raise SweepCoreError(f"trial {run.trial}: the seeded sweep asked for "
                                     f"{list(wanted[0]) if wanted else 'nothing'}, the observation is of {list(run.levels)}")
            if sorted(r.concurrency for r in run.results) != sorted(run.levels):
                raise SweepCoreError(f"trial {run.trial}: the observation of {list(run.levels)} has results for "
                                     f"{sorted(r.concurrency for r in run.results)}")
            kinds.append((run.levels, wanted[1]))
            for result in run.results:
                sweep.observe(LevelOutcome(result.concurrency, result.output_tps if result.valid else None,
                                           result.over_saturated))
        return sweep, kinds

    def next_run(self, measured: Sequence[Measured]) -> NextRun | None:
        sweep, _ = self._replay(measured)
        wanted = sweep.next_levels()
        if wanted is None:
            return None
        levels, kind = wanted
        return NextRun(levels=tuple(levels), refine=kind == "refine", kind=kind)

    def decisions(self, measured: Sequence[Measured]) -> SeededDecisions:
        sweep, kinds = self._replay(measured)
        if sweep.next_levels() is not None:
            raise SweepCoreError("the seeded sweep is not done")
        return SeededDecisions.model_validate(sweep.summary(kinds), strict=False)

    def later_decisions(self, levels_of_trial_1: Levels) -> TrialOneLevels:
        return TrialOneLevels(levels_of_trial_1=list(levels_of_trial_1))


def policy_for(plan: SweepPlan) -> SweepPolicy:
    policy = SweepPolicy.registry.get(plan.sweep)
    if policy is None:
        raise SweepCoreError(f"sweep: {plan.sweep!r} has no policy; allowed: {', '.join(sorted(SweepPolicy.registry))}")
    return policy(plan)


# -- the decision --------------------------------------------------------------------------------------------------------


def next_action(plan: SweepPlan, observations: Sequence[Observation]) -> Action:
    """What the sweep of `plan` does next, given everything observed so far (in the order it happened)."""
    policy = policy_for(plan)
    found = {o.report: o.levels for o in observations if isinstance(o, ReportFound)}
    levels_of_trial_1: Levels = plan.levels
    for trial in range(1, plan.trials + 1):
        here = [o for o in observations if not isinstance(o, ReportFound) and o.trial == trial]
        done = next((o for o in here if isinstance(o, TrialDone)), None)
        if done is not None:
            if trial == 1:
                levels_of_trial_1 = done.levels
            continue
        trial_report = report_name(trial)
        if found.get(trial_report) == plan.levels:
            return ResumeTrial(trial=trial, levels=plan.levels, report=trial_report)
        isolated = {(o.isolation, o.before_level) for o in here if isinstance(o, Isolated)}
        if trial > 1 and plan.trial_isolation == "redeploy" and ("redeploy", None) not in isolated:
            return Isolate(isolation="redeploy", trial=trial)
        measured = [o for o in here if isinstance(o, Measured)]
        decides = trial == 1
        nxt = policy.next_run(measured) if decides else _next_planned(plan, levels_of_trial_1, measured)
        if nxt is None:
            # the runs' reports merged into the trial's, unless its one run wrote the trial's report
            merge = () if [m.report for m in measured] == [trial_report] else tuple(m.report for m in measured)
            return CompleteTrial(
                trial=trial, report=trial_report, levels=tuple(sorted(c for m in measured for c in m.levels)),
                merge=merge,
                decisions=policy.decisions(measured) if decides else policy.later_decisions(levels_of_trial_1))
        if plan.one_run_per_level and len(nxt.levels) > 1:
            nxt = nxt.model_copy(update={"levels": nxt.levels[:1]})
        observe = decides and policy.observes
        # a run of the whole grid writes the trial's report; any other run its own, named by its first level
        whole = not plan.one_run_per_level and nxt.levels == plan.levels
        run_report = report_name(trial, None if whole else nxt.levels[0])
        if run_report != trial_report and found.get(run_report) == nxt.levels:
            return Resume(trial=trial, levels=nxt.levels, report=run_report, observe=observe)
        before = nxt.levels[0]
        if plan.level_isolation == "restart" and measured and ("restart", before) not in isolated:
            return Isolate(isolation="restart", trial=trial, before_level=before)
        if plan.level_isolation == "reset" and ("reset", before) not in isolated:
            first = not any(kind == "reset" for kind, _ in isolated)
            return Isolate(isolation="reset", trial=trial, before_level=before, reference=first)
        run = Refine if nxt.refine else RunLevels
        return run(trial=trial, levels=nxt.levels, report=run_report, observe=observe)
    return Stop(reason=f"every trial measured ({plan.trials})")
