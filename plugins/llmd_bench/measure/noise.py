"""The noise model: how large a difference between two peaks must be before it is called real.

With 2 or more trials per cell the trials' Student t intervals decide (analysis.py). With one trial the
spread of request latency inside the peak level (about +/-0.7 %) is far smaller than what the same cell
does from run to run (2-4 % on one machine, more under load), so a single-trial difference is called
higher or lower only beyond a noise floor taken, in order, from:

1. the cell's own history: earlier peaks of the same campaign, model, configuration, llm-d version,
   workload and kind of runtime in the results store (at least MIN_HISTORY of them);
2. otherwise the campaign's `noise_floor_pct`.

The run-to-run spread is estimated from successive differences (von Neumann's mean square successive
difference), so a step in the history (a new driver, a moved node) widens it far less than a plain
standard deviation would, while noise around a steady level is estimated as well as by the standard
deviation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

# Below this many earlier peaks a spread estimate is too uncertain to replace the campaign's floor.
MIN_HISTORY = 3
# Only the latest peaks: older ones may describe another state of the system.
MAX_HISTORY = 20

# The two-sided 95 % normal quantile (1.95996...): intervals from the many requests of one level.
Z95 = NormalDist().inv_cdf(0.975)


@functools.cache
def t95(df: int) -> float:
    """The two-sided 95 % Student t quantile at `df` degrees of freedom (12.706 at 1, 2.042 at 30); nan for none."""
    if df <= 0:
        return math.nan
    # deferred: scipy.stats takes about 0.8 s to import, paid only by a report that needs a t quantile
    from scipy import stats  # type: ignore[import-untyped]  # scipy ships neither stubs nor py.typed

    return float(stats.t.ppf(0.975, df))


def welch(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int) -> tuple[float, float]:
    """(difference a - b, its 95 % half-width) from two samples of trials: Welch's t on the difference,
    which tests it directly (two 95 % intervals that merely overlap can hide a difference at 95 %)."""
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return mean_a - mean_b, 0.0
    # Welch-Satterthwaite degrees of freedom, rounded down (the conservative side)
    denominator = sum(v ** 2 / (n - 1) for v, n in ((va, n_a), (vb, n_b)) if n > 1 and v > 0)
    df = (va + vb) ** 2 / denominator if denominator else 1
    return mean_a - mean_b, t95(max(1, int(df))) * se


@dataclass(frozen=True)
class CellNoise:
    """A cell's run-to-run spread of its peak, relative to its level (0.03 = 3 %)."""

    relative_sd: float
    samples: int
    mean: float | None = None  # the earlier peaks' mean (tok/s), when the spread comes from a history

    @property
    def df(self) -> int:
        return self.samples - 1

    def prediction_pct(self) -> float:
        """Half-width, in % of the mean, of the 95 % range a new run of the cell falls in."""
        return t95(self.df) * self.relative_sd * math.sqrt(1 + 1 / self.samples) * 100.0

    def off_by_pct(self, peak: float) -> float | None:
        """How far `peak` lies from the history's mean in %, when it is outside the 95 % range; else None."""
        if not self.mean:
            return None
        off = (peak / self.mean - 1) * 100.0
        return off if abs(off) > self.prediction_pct() else None


def cell_noise(history: Sequence[float]) -> CellNoise | None:
    """The run-to-run spread from a cell's earlier peaks, oldest first; None when there are too few."""
    values = [float(v) for v in history if v is not None and math.isfinite(float(v)) and float(v) > 0]
    values = values[-MAX_HISTORY:]
    if len(values) < MIN_HISTORY:
        return None
    mean = sum(values) / len(values)
    diffs = [(b - a) / mean for a, b in zip(values, values[1:])]
    relative_sd = math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs)))
    return CellNoise(relative_sd, len(values), mean)


@dataclass(frozen=True)
class Floor:
    """The smallest difference, in % of the reference, that is called higher or lower; and why."""

    pct: float
    basis: str


def floor_between(a: CellNoise | None, b: CellNoise | None, campaign_floor_pct: float) -> Floor:
    """The floor for comparing two single-trial peaks. With both cells' histories: the 95 % bound of the
    difference of two independent runs, t(df) x sqrt(sd_a^2 + sd_b^2). With one cell's history, the other
    cell is taken to be as noisy (same campaign, same machine). With none: the campaign's floor."""
    known = [n for n in (a, b) if n is not None]
    if not known:
        return Floor(campaign_floor_pct, f"1 trial; campaign noise_floor_pct {campaign_floor_pct:g} % (no history)")
    sd_a = (a or known[0]).relative_sd
    sd_b = (b or known[0]).relative_sd
    df = min(n.df for n in known)
    pct = t95(df) * math.sqrt(sd_a ** 2 + sd_b ** 2) * 100.0
    if a is not None and b is not None:
        basis = f"1 trial; noise floor {pct:.1f} % from the cells' run-to-run spread ({a.samples} and {b.samples} peaks)"
    else:
        basis = f"1 trial; noise floor {pct:.1f} % from one cell's run-to-run spread ({known[0].samples} peaks)"
    return Floor(pct, basis)


def beyond(change_pct: float | None, floor: Floor) -> bool:
    return change_pct is not None and math.isfinite(change_pct) and abs(change_pct) > floor.pct
