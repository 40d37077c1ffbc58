"""Seeded sweeps: a cell measured before measures only a bracket around its last peak.

Plain Python, no I/O. `decide_seed` chooses, from what the store holds (store/history.py reads it into SeedSources)
and the stack the cell serves now, how the cell is swept:
- bracket: the last peak level (the refined level, where that run refined) and the grid levels either side of it;
- full-grid: every grid level (then one refinement), every `full_grid_every` runs and whenever the served stack
  changed (image digests, vLLM version, GPU model, driver) or the history has no valid peak;
- adaptive: no history of the cell, of the same cell at an earlier llm-d version, or of the configuration's other
  cells of the model (adaptive.py from scratch).
`SeededSweep` then decides, from the levels measured so far, which levels to run next: the bracket, widening in the
direction of an edge while the peak sits on it (rising beyond the noise floor), and one refinement only when the
peak moved. The sweep core (sweep_core.SeededPolicy) replays it from the observations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_bench.measure.adaptive import NOT_RUN as PAST_SATURATION
from llmd_bench.measure.adaptive import AdaptiveSweep, LevelOutcome
from llmd_bench.model.campaign import AdaptiveSettings

# Why a grid level has no number in a seeded sweep; the report shows it instead of a number.
NOT_RUN = "not run (seeded bracket)"

SeedMode = Literal["bracket", "full-grid", "adaptive"]
SeedKind = Literal["history", "previous-version", "other-cell"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StackFingerprint(_Frozen):
    """What makes a served stack a different system for a seeded sweep: the images as pulled (digest, else the
    image reference), the vLLM versions the servers reported, the GPU models and drivers of their nodes. Taken from
    the cell's stack metadata (Runtime.stack_metadata); the simulated runtime has none of these (all empty)."""

    images: tuple[str, ...] = ()
    vllm_versions: tuple[str, ...] = ()
    gpu_products: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()

    @classmethod
    def of(cls, stack: Mapping[str, Any] | None) -> StackFingerprint | None:
        """From stack metadata as cell.json and the store keep it; None when no metadata was captured."""
        if not stack:
            return None
        images: set[str] = set()
        versions: set[str] = set()
        for server in stack.get("model_servers") or []:
            ref = server.get("image_digest") or server.get("image")
            if ref:
                images.add(str(ref))
            if server.get("vllm_version"):
                versions.add(str(server["vllm_version"]))
            for side in server.get("sidecars") or []:
                if side.get("image_digest") or side.get("image"):
                    images.add(str(side.get("image_digest") or side.get("image")))
        epp = stack.get("epp") or {}
        if isinstance(epp, Mapping) and (epp.get("image_digest") or epp.get("image")):
            images.add(str(epp.get("image_digest") or epp.get("image")))
        nodes = stack.get("nodes") or {}
        products = {str(n["gpu_product"]) for n in nodes.values() if isinstance(n, Mapping) and n.get("gpu_product")}
        drivers = {str(n["driver_version"]) for n in nodes.values() if isinstance(n, Mapping) and n.get("driver_version")}
        return cls(images=tuple(sorted(images)), vllm_versions=tuple(sorted(versions)),
                   gpu_products=tuple(sorted(products)), drivers=tuple(sorted(drivers)))

    def changes_from(self, before: StackFingerprint) -> list[str]:
        """What changed since `before`, one phrase each ('vLLM version 0.11.2 -> 0.12.0'); empty when nothing did."""
        out = []
        for name, what in (("images", "image digests"), ("vllm_versions", "vLLM version"),
                           ("gpu_products", "GPU model"), ("drivers", "driver")):
            old, new = getattr(before, name), getattr(self, name)
            if old != new:
                out.append(f"{what} {', '.join(old) or 'none'} -> {', '.join(new) or 'none'}")
        return out


class PastSweep(_Frozen):
    """One stored run of a cell (its trial 1), as a seed reads it."""

    dag_run_id: str
    llmd_version: str
    cell: str = Field(description="the cell's label: model [stack factors] / configuration [configuration factors]")
    at: datetime
    mode: SeedMode | Literal["grid"] = Field(description="how it was swept: grid (the grid policy), adaptive, or a "
                                             "seeded sweep's mode")
    peak: int | None = Field(description="the level with the highest valid mean output tokens/s; None: no valid level")
    peak_output_tps: float | None = None
    stack: StackFingerprint | None = None

    @property
    def full_grid(self) -> bool:
        return self.mode in ("grid", "full-grid")


class SeedSources(_Frozen):
    """What the store holds that may seed a cell: its own runs at this llm-d version (newest first), its newest run
    at the newest earlier llm-d version stored, and the newest runs of the configuration's other cells of the model
    (other factor values) at this version."""

    same_cell: tuple[PastSweep, ...] = ()
    previous_version: PastSweep | None = None
    other_cells: tuple[PastSweep, ...] = ()


class SeedSource(_Frozen):
    kind: SeedKind
    dag_run_id: str
    llmd_version: str
    cell: str
    peak: int
    at: datetime

    def describe(self) -> str:
        where = {"history": "this cell's run", "previous-version": f"this cell at llm-d {self.llmd_version}, run",
                 "other-cell": f"{self.cell}, run"}[self.kind]
        return f"{where} {self.dag_run_id} (peak at {self.peak})"


class SeedDecision(_Frozen):
    """How a seeded cell is swept, and why (the report and the cell record say it)."""

    mode: SeedMode
    reason: str
    source: SeedSource | None = Field(None, description="the run the bracket is seeded from (mode bracket)")
    full_grid_every: int = Field(ge=1)
    bracket_runs_before: int = Field(0, ge=0, description="seeded bracket runs of the cell since its last full "
                                     "measurement (grid, full grid or adaptive)")


def decide_seed(sources: SeedSources, stack_now: StackFingerprint | None, full_grid_every: int) -> SeedDecision:
    """Bracket, full grid or adaptive, from the cell's stored history and the stack it serves now."""
    history = sources.same_cell
    if history:
        last = history[0]
        brackets = 0
        for past in history:
            if past.mode != "bracket":
                break
            brackets += 1
        if stack_now is not None and last.stack is not None and (changed := stack_now.changes_from(last.stack)):
            return SeedDecision(mode="full-grid", reason=f"the served stack changed since run {last.dag_run_id}: "
                                + "; ".join(changed), full_grid_every=full_grid_every, bracket_runs_before=brackets)
        if brackets + 1 >= full_grid_every:
            return SeedDecision(mode="full-grid", reason=f"one run in {full_grid_every} measures the full grid "
                                f"(seeded.full_grid_every: {full_grid_every}; {brackets} seeded bracket run(s) since the "
                                "last full one)",
                                full_grid_every=full_grid_every, bracket_runs_before=brackets)
        if last.peak is None:
            return SeedDecision(mode="full-grid", reason=f"the cell's last run {last.dag_run_id} has no valid level "
                                "to seed from", full_grid_every=full_grid_every, bracket_runs_before=brackets)
        return SeedDecision(mode="bracket", reason=f"seeded from this cell's last run {last.dag_run_id}",
                            source=_source("history", last), full_grid_every=full_grid_every, bracket_runs_before=brackets)
    if sources.previous_version is not None and sources.previous_version.peak is not None:
        prev = sources.previous_version
        return SeedDecision(mode="bracket", reason=f"no run of this cell at this llm-d version: seeded from its run "
                            f"{prev.dag_run_id} at llm-d {prev.llmd_version}", source=_source("previous-version", prev),
                            full_grid_every=full_grid_every)
    other = next((o for o in sources.other_cells if o.peak is not None), None)
    if other is not None:
        return SeedDecision(mode="bracket", reason=f"no run of this cell: seeded from the configuration's cell "
                            f"{other.cell} (run {other.dag_run_id})", source=_source("other-cell", other),
                            full_grid_every=full_grid_every)
    return SeedDecision(mode="adaptive", reason="no stored run of this cell, of it at an earlier llm-d version or of "
                        "the configuration's other cells of the model: an adaptive sweep from scratch",
                        full_grid_every=full_grid_every)


def _source(kind: SeedKind, past: PastSweep) -> SeedSource:
    assert past.peak is not None
    return SeedSource(kind=kind, dag_run_id=past.dag_run_id, llmd_version=past.llmd_version, cell=past.cell,
                      peak=past.peak, at=past.at)


def bracket(grid: Sequence[int], peak: int) -> list[int]:
    """The seed's peak and the grid levels either side of it (a peak past the grid's ends is clamped to them)."""
    below = [c for c in grid if c < peak]
    above = [c for c in grid if c > peak]
    levels = {peak} if grid[0] <= peak <= grid[-1] else set()
    if below:
        levels.add(below[-1])
    if above:
        levels.add(above[0])
    return sorted(levels)


@dataclass
class SeededSweep:
    """Which levels a seeded sweep runs next, from the outcomes measured so far (a function of the outcomes only, so
    the run grouping (one GuideLLM run for the bracket, or one per level) does not change its decisions)."""

    grid: list[int]
    seed: SeedDecision
    noise_floor_pct: float
    settings: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    outcomes: dict[int, LevelOutcome] = field(default_factory=dict)

    def observe(self, outcome: LevelOutcome) -> None:
        self.outcomes[outcome.concurrency] = outcome

    # -- the decision ----------------------------------------------------------------------------------------------

    def initial(self) -> list[int]:
        if self.seed.mode == "full-grid":
            return list(self.grid)
        assert self.seed.source is not None, "a bracket has a source"
        return bracket(self.grid, self.seed.source.peak)

    def next_levels(self) -> tuple[list[int], str] | None:
        """The levels of the next run and what they are ('bracket', 'grid', 'widen up', 'widen down', 'refine',
        'rest of the grid'), or None when the cell is done. Adaptive mode is AdaptiveSweep's, level by level."""
        if self.seed.mode == "adaptive":
            sweep = self._adaptive()
            level = sweep.next_level()
            return None if level is None else ([level], "refine" if sweep.stopped_after is not None else "adaptive")
        missing = [c for c in self.initial() if c not in self.outcomes]
        if missing:
            return missing, "grid" if self.seed.mode == "full-grid" else "bracket"
        if self.seed.mode == "bracket":
            if self._best() is None:
                rest = [c for c in self.grid if c not in self.outcomes]
                if rest:
                    return rest, "rest of the grid"
            else:
                widen = self._widen()
                if widen is not None:
                    return widen
        refine = [c for c in self._refinement() if c not in self.outcomes]
        return (refine[:1], "refine") if refine else None

    def _adaptive(self) -> AdaptiveSweep:
        sweep = AdaptiveSweep(list(self.grid), self.noise_floor_pct, self.settings)
        for outcome in self.outcomes.values():  # in the order measured, asked as fed level by level
            sweep.next_level()
            sweep.observe(outcome)
        return sweep

    def _valid(self) -> list[LevelOutcome]:
        return sorted((o for o in self.outcomes.values() if o.output_tps is not None), key=lambda o: o.concurrency)

    def _best(self) -> LevelOutcome | None:
        valid = self._valid()
        return max(valid, key=lambda o: (o.output_tps or 0.0, -o.concurrency)) if valid else None

    def _rises_to(self, best: LevelOutcome, other: LevelOutcome) -> bool:
        """`best` is higher than `other` beyond the noise floor (an invalid `other` counts as lower)."""
        if other.output_tps is None:
            return True
        assert best.output_tps is not None
        return best.output_tps > other.output_tps * (1 + self.noise_floor_pct / 100)

    def _widen(self) -> tuple[list[int], str] | None:
        """One more grid level beyond the measured edge the peak sits on, while throughput rises towards it."""
        best = self._best()
        assert best is not None
        measured = sorted(self.outcomes)
        if best.concurrency == measured[-1]:
            inner = self.outcomes[measured[-2]] if len(measured) > 1 else None
            beyond = [c for c in self.grid if c > best.concurrency]
            if beyond and (inner is None or self._rises_to(best, inner)):
                return [beyond[0]], "widen up"
        if best.concurrency == measured[0]:
            inner = self.outcomes[measured[1]] if len(measured) > 1 else None
            beyond = [c for c in self.grid if c < best.concurrency]
            if beyond and (inner is None or self._rises_to(best, inner)):
                return [beyond[-1]], "widen down"
        return None

    def _seed_peak(self) -> int | None:
        return self.seed.source.peak if self.seed.source is not None else None

    def _refinement(self) -> list[int]:
        """A bracket refines only when the peak moved from the seed's; a full grid refines as adaptive does."""
        best = self._best()
        if best is None or self.settings.refine == 0:
            return []
        if self.seed.mode == "bracket" and self.seed.source is not None and best.concurrency == self.seed.source.peak:
            return []
        # from the levels before refinement (the grid's and the seed's), so a refinement level never refines again
        base = {c: o for c, o in self.outcomes.items() if c in self.grid or c == self._seed_peak()}
        best = max((o for o in base.values() if o.output_tps is not None),
                   key=lambda o: (o.output_tps or 0.0, -o.concurrency), default=None)
        if best is None:
            return []
        ran = sorted(base)
        i = ran.index(best.concurrency)
        sides = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(ran):
                other = base[ran[j]].output_tps
                sides.append((-(other if other is not None else -1.0), ran[j]))
        levels: list[int] = []
        for _, neighbour in sorted(sides):  # the better neighbour first: the peak most likely lies towards it
            mid = (best.concurrency + neighbour) // 2
            if mid not in (best.concurrency, neighbour) and mid not in base and mid not in levels:
                levels.append(mid)
        return levels[: self.settings.refine]

    # -- the record ------------------------------------------------------------------------------------------------

    def summary(self, runs: Sequence[tuple[Sequence[int], str]]) -> dict[str, Any]:
        """What the trial's record keeps (sweep_core.SeededDecisions), from the runs made in order with their kind."""
        best = self._best()
        widened_up = [c for levels, kind in runs if kind == "widen up" for c in levels]
        widened_down = [c for levels, kind in runs if kind == "widen down" for c in levels]
        refined = [c for levels, kind in runs if kind == "refine" for c in levels]
        adaptive = self._adaptive().summary() if self.seed.mode == "adaptive" else None
        seed_peak = self.seed.source.peak if self.seed.source is not None else None
        return {
            "policy": "seeded", "mode": self.seed.mode, "reason": self.seed.reason,
            "seeded_from": self.seed.source.model_dump(mode="json") if self.seed.source is not None else None,
            "grid": list(self.grid), "bracket": self.initial() if self.seed.mode == "bracket" else [],
            "run": sorted(self.outcomes), "not_run": [c for c in self.grid if c not in self.outcomes],
            "not_run_reason": PAST_SATURATION if self.seed.mode == "adaptive" else NOT_RUN,
            "widened_up": widened_up, "widened_down": widened_down, "refined": refined,
            "peak": best.concurrency if best is not None else None,
            "peak_moved": seed_peak is not None and best is not None and best.concurrency != seed_peak,
            "full_grid_every": self.seed.full_grid_every, "bracket_runs_before": self.seed.bracket_runs_before,
            "noise_floor_pct": self.noise_floor_pct, "adaptive": adaptive,
        }

