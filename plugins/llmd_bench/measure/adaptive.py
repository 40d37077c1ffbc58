"""Adaptive sweeps: run a cell's levels in order, stop once throughput stops rising beyond noise (or GuideLLM's
over-saturation constraint stops a level), then measure between the best level and its better neighbour.

Plain Python: the sweep core (sweep_core.AdaptivePolicy) feeds each measured level in and asks for the next one,
`llmd-bench plan` asks for the most it could run, the report shows the levels it decided not to run as
"not run (past saturation)".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmd_bench.model.campaign import AdaptiveSettings

# Why a level was not run; the report shows it instead of a number (never a zero, never "missing").
NOT_RUN = "not run (past saturation)"


@dataclass
class LevelOutcome:
    concurrency: int
    output_tps: float | None        # None: the level is invalid (errors, cut short)
    over_saturated: bool = False    # GuideLLM's over_saturation constraint stopped the level


@dataclass
class AdaptiveSweep:
    grid: list[int]
    noise_floor_pct: float
    settings: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    outcomes: dict[int, LevelOutcome] = field(default_factory=dict)
    stopped_after: int | None = None
    stop_reason: str | None = None
    refined: list[int] = field(default_factory=list)

    def observe(self, outcome: LevelOutcome) -> None:
        self.outcomes[outcome.concurrency] = outcome

    @property
    def best(self) -> LevelOutcome | None:
        valid = [o for o in self.outcomes.values() if o.output_tps is not None]
        return max(valid, key=lambda o: (o.output_tps, -o.concurrency)) if valid else None

    def next_level(self) -> int | None:
        """The next level to measure, or None when the cell is done."""
        if self.stopped_after is None:
            for level in self.grid:
                if level not in self.outcomes:
                    return level
                reason = self._stop_after(level)
                if reason:
                    self.stopped_after, self.stop_reason = level, reason
                    break
            else:
                self.stopped_after, self.stop_reason = self.grid[-1], "every grid level measured"
            self.refined = self._refinement_levels()
        for level in self.refined:
            if level not in self.outcomes:
                return level
        return None

    def _stop_after(self, level: int) -> str | None:
        """Why the sweep stops once `level` (and the grid levels before it) are measured."""
        measured = [c for c in self.grid if c <= level]
        here = self.outcomes[level]
        if here.over_saturated:
            return f"GuideLLM's over_saturation constraint stopped level {level}"
        best_before = _best([self.outcomes[c] for c in measured[:-1]])
        if best_before is None:
            return None
        if here.output_tps is None:
            return f"level {level} is invalid after a valid peak at {best_before.concurrency}"
        floor = self.noise_floor_pct / 100
        peak_tps = best_before.output_tps
        assert peak_tps is not None  # _best picks among valid levels
        if here.output_tps < peak_tps * (1 - floor):
            return (f"throughput fell {100 * (1 - here.output_tps / peak_tps):.1f} % below the peak at "
                    f"{best_before.concurrency} (beyond the {self.noise_floor_pct:g} % noise floor)")
        flat = 0
        best_so_far: float | None = None
        for c in measured:
            tps = self.outcomes[c].output_tps
            if best_so_far is not None and (tps is None or tps <= best_so_far * (1 + floor)):
                flat += 1
            else:
                flat = 0
            if tps is not None and (best_so_far is None or tps > best_so_far):
                best_so_far = tps
        if flat >= self.settings.patience:
            return (f"{flat} level(s) in a row did not raise throughput beyond the {self.noise_floor_pct:g} % noise "
                    f"floor (patience {self.settings.patience})")
        return None

    def _refinement_levels(self) -> list[int]:
        best = self.best
        if best is None or self.settings.refine == 0:
            return []
        ran = sorted(c for c in self.grid if c in self.outcomes)
        i = ran.index(best.concurrency) if best.concurrency in ran else None
        if i is None:
            return []
        sides = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(ran):
                other = self.outcomes[ran[j]].output_tps
                sides.append((-(other if other is not None else -1.0), ran[j]))
        levels = []
        # the better neighbour first: the peak most likely lies towards it
        for _, neighbour in sorted(sides):
            mid = (best.concurrency + neighbour) // 2
            if mid not in (best.concurrency, neighbour) and mid not in self.outcomes and mid not in levels:
                levels.append(mid)
        return levels[: self.settings.refine]

    def summary(self) -> dict[str, Any]:
        run = sorted(self.outcomes)
        return {"grid": list(self.grid), "run": run, "not_run": [c for c in self.grid if c not in self.outcomes],
                "refined": [c for c in self.refined if c in self.outcomes], "stopped_after": self.stopped_after,
                "stop_reason": self.stop_reason, "patience": self.settings.patience, "refine": self.settings.refine,
                "noise_floor_pct": self.noise_floor_pct}


def _best(outcomes: list[LevelOutcome]) -> LevelOutcome | None:
    valid = [o for o in outcomes if o.output_tps is not None]
    return max(valid, key=lambda o: o.output_tps or 0.0) if valid else None  # `or`: never None among valid


def over_saturation_fired(bench: dict[str, Any]) -> bool:
    """Whether GuideLLM's over_saturation constraint stopped this level: it leaves its action under the level's
    scheduler_state (guidellm/benchmark/analysis/knee.py _constraint_action, GuideLLM v0.8.1)."""
    state = bench.get("scheduler_state") or {}
    for key in ("scheduler_constraints", "end_processing_constraints", "end_queuing_constraints"):
        action = (state.get(key) or {}).get("over_saturation")
        if isinstance(action, dict) and (action.get("metadata") or {}).get("is_over_saturated"):
            return True
    return False
