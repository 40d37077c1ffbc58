"""Trends over runs: per cell, the peak (and goodput) of the campaign's stored runs over time, the noise band from the
history, this run marked, and steps and drifts flagged. The report's "Trends over runs" section and the Airflow UI's
Trends page (plugins/llmd_bench_plugin.py) are both written here from the same rows (store/read.py campaign_trends:
the campaign's runs up to this one that measured the same workload, method, kind of runtime and placement, at any
llm-d version).

The rule, per cell and series (peak, goodput), on the runs' values in time order (docs/report.md "Trends over runs"):

- **Noise**: the run-to-run spread s of the cell's runs before this one (the latest noise.MAX_HISTORY, at least
  noise.MIN_HISTORY), from their successive differences like noise.py's spread, as their median (`spread`): a slow
  drift moves successive differences little and a step or an outlier moves one or two of them, not their median, so
  the band is not widened by what it is to find (noise.py's mean square of them is: with 5 runs a 20 % step hid
  itself). Its t quantile counts the median's degrees of freedom at MEDIAN_EFFICIENCY. With fewer runs the campaign's
  `noise_floor_pct` is the band's half-width.
- **Band**: where a new run of a level falls 95 % of the time: the level's mean +/- t95(df) x s x sqrt(1 + 1/n), n the
  level's runs (the prediction interval noise.CellNoise.prediction_pct uses).
- **Step**: a run beyond the band and the next run beyond it on the same side: the level changed at the first of the
  two, which starts a new level. By noise alone two runs in a row beyond one side of a 95 % band happen about
  0.025^2 = 0.06 % of the time; one run beyond it (5 %) does not make a step.
- **Outlier**: a run beyond the band whose next run is not beyond it on the same side: left out of its level's mean.
  This run beyond the band, with no run after it yet, is said to be beyond the band: a step if the next run stays.
- **Drift**: DRIFT_RUNS (6) runs in a row, each higher (or each lower) than the one before by no more than two runs
  differ by noise (t95 x s x sqrt(2); a larger move is a step's or an outlier's), and the last beyond that from the
  first: by noise alone 6 values come out in order 2/6! = 0.28 % of the time (5 would be 1.7 %, too often over a
  year of weekly runs), and the change keeps a wander inside the noise from being called. Steps among a drift's runs
  are part of the drift.
- A run whose peak level was suspect (a saturated load generator or host) is shown but neither judged nor counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, median
from typing import TYPE_CHECKING, Any

import pandas as pd

from llmd_bench.measure import noise
from llmd_bench.model.campaign import DEFAULT_NOISE_FLOOR_PCT
from llmd_bench.report import analysis, figures
from llmd_bench.report.document import DocumentBuilder
from llmd_bench.store.trend_rows import GOODPUT_KEY as GOODPUT
from llmd_bench.store.trend_rows import GOODPUT_SLO_KEY as GOODPUT_SLO
from llmd_bench.store.trend_rows import TrendPeakRow

if TYPE_CHECKING:
    from llmd_bench.report.analysis import Report

DRIFT_RUNS = 6
TREND_COLUMNS = ["run_pk", "dag_run_id", "llmd_version", "t", "is_current", "model", "config", "samples",
                 "peak_output_tps", "goodput_output_tps", "goodput_slo", "suspect", "campaign_runs"]
# this run's verdict
WITHIN = "within the band"
BEYOND = "beyond the band (a step if the next run stays there)"
STEP = "step"
DRIFT = "drift"
FIRST = "first run: nothing to compare"
SUSPECT = "no verdict: its peak level was suspect"
ABSENT = "not in this run"
HEADING = "Trends over runs"
SERIES = {"peak": ("peak_output_tps", "peak output tok/s"), "goodput": ("goodput_output_tps", "goodput tok/s")}


def frame(rows: Sequence[TrendPeakRow]) -> pd.DataFrame:
    """The rows as the report reads them: one per run x cell label, oldest first."""
    return pd.DataFrame([{"run_pk": r.run_pk, "dag_run_id": r.dag_run_id, "llmd_version": r.llmd_version, "t": r.t,
                          "is_current": r.is_current, "model": r.model_label, "config": r.config_label,
                          "samples": r.samples, "peak_output_tps": r.peak_output_tps,
                          "goodput_output_tps": r.goodput_output_tps, "goodput_slo": r.goodput_slo,
                          "suspect": r.suspect, "campaign_runs": r.campaign_runs} for r in rows], columns=TREND_COLUMNS)


# -- the rule ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    """Runs (indices into the series) at one level: its mean and the band's half-width (%) at its last run."""

    first: int
    last: int
    members: tuple[int, ...]
    mean: float
    half_pct: float


@dataclass(frozen=True)
class Step:
    index: int       # the first run of the new level
    pct: float       # the new level's mean vs the old level's, %


@dataclass(frozen=True)
class Drift:
    first: int
    last: int
    pct: float       # last vs first run, %


@dataclass(frozen=True)
class Judgement:
    """A series' judgement: its levels, steps, drifts, outliers, what this run (the last value, when `current`) is,
    and the basis of the band."""

    levels: tuple[Level, ...]
    steps: tuple[Step, ...]
    drifts: tuple[Drift, ...]
    outliers: tuple[int, ...]
    beyond: int | None
    verdict: str
    band_pct: float | None
    basis: str


# the median of |d| for a difference d ~ N(0, 2 sd^2) of two runs is this x sd
MEDIAN_ABS_DIFF = NormalDist().inv_cdf(0.75) * math.sqrt(2)
# the degrees of freedom a median of n - 1 differences counts as: 45 % of a mean square's (a median's asymptotic efficiency
# is 37 %, more with few values); 45 % keeps noise-only series of 12 runs flagged under 3 % (tests/unit/test_trends.py)
MEDIAN_EFFICIENCY = 0.45


def spread(history: Sequence[float]) -> noise.CellNoise | None:
    """The run-to-run spread of a series' earlier values (oldest first; the values noise.cell_noise keeps: the latest
    noise.MAX_HISTORY, at least noise.MIN_HISTORY): the median absolute successive difference / (0.6745 x sqrt(2)).
    noise.py's mean square of the same differences is widened by one step or outlier in a short history (with 5
    runs, a 20 % step hid itself); their median is not. A series that never moved falls back to the mean square's
    estimate; None with too few values or no spread at all."""
    found = noise.cell_noise(history)
    if found is None or found.mean is None:
        return None
    values = [float(x) for x in history if x is not None and math.isfinite(float(x)) and float(x) > 0]
    values = values[-noise.MAX_HISTORY:]
    middle = median(abs(b - a) / found.mean for a, b in zip(values, values[1:]))
    if middle <= 0:
        return found if found.relative_sd > 0 else None
    df = max(1, round(MEDIAN_EFFICIENCY * (found.samples - 1)))
    return noise.CellNoise(middle / MEDIAN_ABS_DIFF, df + 1, found.mean)


class _Band:
    """The band's half-width (%) around a level of n runs: from the history's run-to-run spread, else the floor."""

    def __init__(self, history: Sequence[float], floor_pct: float) -> None:
        self.noise = spread(history)
        self.history = len(history)
        self.floor_pct = floor_pct

    def half_pct(self, n: int) -> float:
        if self.noise is None:
            return self.floor_pct
        return noise.t95(self.noise.df) * self.noise.relative_sd * math.sqrt(1 + 1 / max(n, 1)) * 100.0

    @property
    def basis(self) -> str:
        if self.noise is None:
            return f"campaign noise_floor_pct {self.floor_pct:g} % (fewer than {noise.MIN_HISTORY} earlier runs)"
        return (f"run-to-run spread {self.noise.relative_sd * 100:.2f} % (1 sd) from the median successive difference "
                f"of {min(self.history, noise.MAX_HISTORY)} earlier runs (t95 at {self.noise.df} df)")


def judge(values: Sequence[float | None], floor_pct: float, current: bool = True,
          judged: Sequence[bool] | None = None) -> Judgement:
    """The rule above on a series oldest first. values: None where the run has no value; judged: False where the run's
    value is shown but not judged (a suspect peak). current: the last value is this run's."""
    usable = [i for i, v in enumerate(values) if v is not None and v > 0 and (judged is None or judged[i])]
    v = {i: float(values[i]) for i in usable}  # type: ignore[arg-type]  # usable holds no None
    last = len(values) - 1
    history = [v[i] for i in usable if i != last or not current]
    band = _Band(history, floor_pct)
    levels: list[Level] = []
    steps: list[Step] = []
    outliers: list[int] = []
    beyond: int | None = None
    members: list[int] = usable[:1]
    k = 1
    while k < len(usable):
        i = usable[k]
        mean = sum(v[j] for j in members) / len(members)
        half = band.half_pct(len(members))
        off = (v[i] / mean - 1) * 100.0
        if abs(off) <= half:
            members.append(i)
            k += 1
            continue
        if k + 1 == len(usable):
            beyond = i
            break
        nxt = (v[usable[k + 1]] / mean - 1) * 100.0
        if abs(nxt) > half and (nxt > 0) == (off > 0):
            levels.append(_level(members, v, band))
            steps.append(Step(i, 0.0))
            members = [i]
        else:
            outliers.append(i)
        k += 1
    if members:
        levels.append(_level(members, v, band))
    steps = [Step(s.index, (after.mean / before.mean - 1) * 100.0)
             for s, before, after in zip(steps, levels[:-1], levels[1:], strict=True)]
    drifts = _drifts(usable, v, band)
    steps = [s for s in steps if not any(d.first < s.index <= d.last for d in drifts)]
    verdict = _verdict(values, usable, last, current, judged, steps, drifts, beyond)
    half_now = levels[-1].half_pct if levels else None
    return Judgement(tuple(levels), tuple(steps), tuple(drifts), tuple(outliers), beyond, verdict, half_now, band.basis)


def _level(members: list[int], v: dict[int, float], band: _Band) -> Level:
    return Level(members[0], members[-1], tuple(members), sum(v[j] for j in members) / len(members),
                 band.half_pct(len(members)))


def _drifts(usable: list[int], v: dict[int, float], band: _Band) -> list[Drift]:
    """Maximal runs of DRIFT_RUNS or more values each above (or each below) the one before by no more than two runs
    differ by noise (a larger move is a step's or an outlier's), beyond the band from the first to the last."""
    out: list[Drift] = []
    pair = band.half_pct(1)  # t95 x spread x sqrt(2): how far two runs differ by noise alone

    def move(k: int) -> int:
        a, b = v[usable[k - 1]], v[usable[k]]
        return _direction(v, usable, k) if abs(b / a - 1) * 100.0 <= pair else 0

    k = 0
    while k < len(usable) - 1:
        direction = move(k + 1)
        end = k + 1
        while direction and end + 1 < len(usable) and move(end + 1) == direction:
            end += 1
        span = usable[k:end + 1]
        if direction and len(span) >= DRIFT_RUNS:
            pct = (v[span[-1]] / v[span[0]] - 1) * 100.0
            if abs(pct) > pair:
                out.append(Drift(span[0], span[-1], pct))
        k = end
    return out


def _direction(v: dict[int, float], usable: list[int], k: int) -> int:
    """+1 / -1 / 0: how usable[k] moved from usable[k - 1]."""
    a, b = v[usable[k - 1]], v[usable[k]]
    return (b > a) - (b < a)


def _verdict(values: Sequence[float | None], usable: list[int], last: int, current: bool,
             judged: Sequence[bool] | None, steps: list[Step], drifts: list[Drift], beyond: int | None) -> str:
    if not current:
        return ABSENT
    if values[last] is None:
        return ABSENT
    if judged is not None and not judged[last]:
        return SUSPECT
    if len(usable) < 2:
        return FIRST
    if any(d.last == last for d in drifts):
        return DRIFT
    if beyond == last:
        return BEYOND
    # the step this run confirms: the new level began at the run before it (or at it, as the second of the two)
    if steps and steps[-1].index >= usable[-2]:
        return STEP
    return WITHIN


# -- per cell --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellTrend:
    model: str
    config: str
    series: str                        # "peak" or "goodput"
    runs: pd.DataFrame                 # the cell's rows, oldest first
    values: tuple[float | None, ...]
    judgement: Judgement


def cell_trends(trends: pd.DataFrame, floor_pct: float, current_goodput: dict[tuple[str, str], float] | None = None,
                current_slo: str | None = None) -> list[CellTrend]:
    """Every cell's peak series, and its goodput series where a run recorded goodput under this run's SLO.
    current_goodput: this run's goodput per (model, config) when its report is being built (its stored report, if
    any, is an older one)."""
    out: list[CellTrend] = []
    if trends is None or trends.empty:
        return out
    current_run = trends.loc[trends["is_current"], "run_pk"]
    this_pk = current_run.iloc[0] if not current_run.empty else None
    keys = sorted(dict.fromkeys(zip(trends["model"], trends["config"], strict=True)),
                  key=lambda k: (analysis.natural_key(str(k[0])), analysis.config_order(str(k[1])), str(k[1])))
    groups = dict(iter(trends.groupby(["model", "config"], sort=False)))
    for model, config in keys:
        g = groups[(model, config)]
        g = g.sort_values(["t", "run_pk"]).reset_index(drop=True)
        has_current = bool(g["is_current"].iloc[-1]) if this_pk is not None else False
        judged = [not bool(s) for s in g["suspect"]]
        peaks = tuple(float(x) for x in g["peak_output_tps"])
        out.append(CellTrend(str(model), str(config), "peak", g, peaks,
                             judge(peaks, floor_pct, current=has_current, judged=judged)))
        goodput = [None if pd.isna(x) else float(x) for x in g["goodput_output_tps"]]
        slo = list(g["goodput_slo"])
        if current_goodput is not None and has_current:
            goodput[-1] = current_goodput.get((str(model), str(config)))
            slo[-1] = current_slo
        reference = slo[-1] if has_current else next((s for s in reversed(slo) if isinstance(s, str)), None)
        goodput = [x if (x is not None and s == reference) else None for x, s in zip(goodput, slo, strict=True)]
        if sum(x is not None for x in goodput) >= 1:
            out.append(CellTrend(str(model), str(config), "goodput", g, tuple(goodput),
                                 judge(goodput, floor_pct, current=has_current, judged=judged)))
    return out


def _runs_text(cell: CellTrend, indices: Sequence[int]) -> str:
    return ", ".join(f"{cell.runs['dag_run_id'].iloc[i]}" for i in indices)


def flags_text(cell: CellTrend) -> str:
    """The series' steps, drifts and outliers, named by run."""
    j, runs = cell.judgement, cell.runs
    parts = [f"step {s.pct:+.1f}% at {runs['dag_run_id'].iloc[s.index]} ({_date(runs['t'].iloc[s.index])}"
             + _version_change(runs, s.index) + ")" for s in j.steps]
    parts += [f"drift {d.pct:+.1f}% over {d.last - d.first + 1} runs, {runs['dag_run_id'].iloc[d.first]} to "
              f"{runs['dag_run_id'].iloc[d.last]}" for d in j.drifts]
    if j.outliers:
        parts.append(f"outlier(s): {_runs_text(cell, j.outliers)}")
    return "; ".join(parts) or "-"


def _version_change(runs: pd.DataFrame, index: int) -> str:
    if index == 0:
        return ""
    before, after = runs["llmd_version"].iloc[index - 1], runs["llmd_version"].iloc[index]
    return f", llm-d {before} -> {after}" if before != after else ""


def _date(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%d")


def _this_value(cell: CellTrend) -> str:
    if cell.judgement.verdict == ABSENT:
        return "-"
    value = cell.values[-1]
    return "-" if value is None else f"{value:,.1f}"


def _level_text(cell: CellTrend) -> str:
    j = cell.judgement
    if not j.levels:
        return "-"
    level = j.levels[-1]
    drift = next((d for d in j.drifts if d.first < level.first <= d.last), None)
    if drift is not None:  # the level the rule last started is one the drift passed through
        return f"drifting since {cell.runs['dag_run_id'].iloc[drift.first]}"
    return f"{level.mean:,.1f} ± {level.half_pct:.1f}% ({len(level.members)} runs)"


# -- the section (report and UI page) ---------------------------------------------------------------------------------
def section(doc: DocumentBuilder, trends: pd.DataFrame | None, floor_pct: float, images: dict[str, bytes],
            current_goodput: dict[tuple[str, str], float] | None = None, current_slo: str | None = None,
            unavailable: str | None = None) -> None:
    """The "Trends over runs" section: the rule, a row per cell and series, and a plot per model (from `images`,
    named by plot_name)."""
    doc.h(2, HEADING)
    if trends is None:
        doc.p(f"Not available: {unavailable or 'the trends were not read'}.")
        return
    if trends.empty:
        doc.p("Not available: no stored run of this campaign up to this one has a valid peak.")
        return
    cells = cell_trends(trends, floor_pct, current_goodput, current_slo)
    runs = trends["run_pk"].nunique()
    current = trends[trends["is_current"]]
    this = current["dag_run_id"].iloc[0] if not current.empty else None
    total = int(trends["campaign_runs"].max())
    versions = list(dict.fromkeys(trends.sort_values("t")["llmd_version"]))
    doc.p(f"Each cell's peak output tokens/s (and goodput, where the runs' reports recorded it under this run's SLO) "
          f"over the {runs} run(s) of this campaign up to " + (f"run **{this}**" if this else "this run")
          + " that measured the same workload, method, kind of runtime and placement (llm-d "
          + ", ".join(versions) + ")."
          + (f" {total - runs} other run(s) of the campaign up to it measured something else, had no valid peak or "
             "are older than the latest ones, and are not shown." if total > runs else ""))
    doc.p("**The rule.** The band is where a new run of the current level falls 95 % of the time: the level's mean ± "
          "t95 × the run-to-run spread × sqrt(1 + 1/n) (the spread from the median successive difference of the earlier "
          f"runs, at least {noise.MIN_HISTORY}; otherwise the campaign's noise floor). A **step**: two runs in a row beyond the "
          "band on the same side (with a known spread, noise does that 0.06 % of the time); the level moved at the "
          "first. An **outlier**: one "
          "run beyond it, the next back. A **drift**: "
          f"{DRIFT_RUNS} runs in a row each moving the same way by less than two runs differ by noise (by noise alone "
          f"in order 2/{DRIFT_RUNS}! = {2 / math.factorial(DRIFT_RUNS) * 100:.2f} % of the time), the last further "
          "than that from the first. A run whose peak level was suspect is shown, not judged (docs/report.md).")
    rows = []
    for c in cells:
        rows.append([c.model, c.config, c.series, str(sum(x is not None for x in c.values)), _this_value(c),
                     c.judgement.verdict if c.judgement.verdict in (WITHIN, FIRST, ABSENT, SUSPECT)
                     else f"**{c.judgement.verdict}**", _level_text(c), flags_text(c), c.judgement.basis])
    doc.table(["Model", "Config", "Series", "Runs", "This run", "This run is", "Current level ± band", "Flagged",
               "Band from"], rows)
    for model in dict.fromkeys(c.model for c in cells):
        name = plot_name(model)
        if name in images:
            doc.img(name, images[name], f"{model}: peak (and goodput) per run, the current level's band shaded, "
                                        "this run starred, steps and drifts marked")


def plot_name(model: str) -> str:
    return "trends_" + re.sub(r"[^A-Za-z0-9.-]+", "_", model).strip("_") + ".png"


# -- the plots ---------------------------------------------------------------------------------------------------
def plots(trends: pd.DataFrame | None, floor_pct: float, current_goodput: dict[tuple[str, str], float] | None = None,
          current_slo: str | None = None) -> dict[str, bytes]:
    """A PNG per model: a panel per configuration with its peak (and goodput) per run over time."""
    if trends is None or trends.empty:
        return {}
    cells = cell_trends(trends, floor_pct, current_goodput, current_slo)
    out: dict[str, bytes] = {}
    for model in dict.fromkeys(c.model for c in cells):
        out[plot_name(model)] = figures.png(figure([c for c in cells if c.model == model], model))
    return out


COLORS = {"peak": "#1f77b4", "goodput": "#2ca02c"}


def figure(cells: list[CellTrend], model: str) -> Any:
    import matplotlib  # deferred: loads matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    configs = list(dict.fromkeys(c.config for c in cells))
    fig, axes = plt.subplots(len(configs), 1, figsize=(11, 2.6 * len(configs) + 0.4), squeeze=False, sharex=True)
    for ax, config in zip(axes[:, 0], configs, strict=True):
        for cell in (c for c in cells if c.config == config):
            _draw(ax, cell)
        ax.set_title(f"{model} / {config}", fontsize=10)
        ax.set_ylabel("tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.autofmt_xdate()
    return fig


def _draw(ax: Any, cell: CellTrend) -> None:
    t = list(pd.to_datetime(cell.runs["t"]))
    color, label = COLORS[cell.series], SERIES[cell.series][1]
    shown = [(t[i], v) for i, v in enumerate(cell.values) if v is not None]
    if not shown:
        return
    ax.plot([x for x, _ in shown], [y for _, y in shown], marker="o", markersize=4, color=color, label=label,
            linestyle="-" if cell.series == "peak" else "--")
    j = cell.judgement
    for level in j.levels:
        if any(d.first < level.first <= d.last for d in j.drifts):
            continue  # a level the drift's runs passed through: the drift's span says it
        x0, x1 = t[level.first], t[max(level.last, len(t) - 1) if level is j.levels[-1] else level.last]
        low, high = level.mean * (1 - level.half_pct / 100), level.mean * (1 + level.half_pct / 100)
        if x0 == x1:
            ax.errorbar([x0], [level.mean], yerr=[[level.mean - low], [high - level.mean]], color=color, alpha=0.4,
                        capsize=4)
        else:
            ax.fill_between([x0, x1], [low, low], [high, high], color=color, alpha=0.12, linewidth=0)
            ax.plot([x0, x1], [level.mean, level.mean], color=color, alpha=0.5, linewidth=0.8)
    for s in j.steps:
        ax.axvline(t[s.index], color="#d62728", linestyle=":", linewidth=1.2)
        ax.annotate(f"step {s.pct:+.1f}%", (t[s.index], cell.values[s.index] or 0), textcoords="offset points",
                    xytext=(4, 8), fontsize=7, color="#d62728")
    for d in j.drifts:
        ax.axvspan(t[d.first], t[d.last], color="#ff7f0e", alpha=0.12)
        ax.annotate(f"drift {d.pct:+.1f}% over {d.last - d.first + 1} runs", (t[d.first], 1.0),
                    xycoords=("data", "axes fraction"), textcoords="offset points", xytext=(4, -22), fontsize=7,
                    color="#d2691e")
    for i in j.outliers:
        ax.plot([t[i]], [cell.values[i]], marker="o", markersize=9, markerfacecolor="none", color="#d62728")
    suspect = [i for i, s in enumerate(cell.runs["suspect"]) if s and cell.values[i] is not None]
    if suspect:
        ax.plot([t[i] for i in suspect], [cell.values[i] for i in suspect], marker="x", linestyle="none",
                color="#7f7f7f", markersize=8, label="suspect (not judged)")
    if j.verdict != ABSENT and cell.values[-1] is not None:
        ax.plot([t[-1]], [cell.values[-1]], marker="*", markersize=15, color=color, markeredgecolor="black",
                linestyle="none", label=f"this run: {j.verdict.split(' (')[0]}")
    versions = list(cell.runs["llmd_version"])
    for i in range(1, len(versions)):
        if versions[i] != versions[i - 1] and cell.series == "peak":
            ax.axvline(t[i], color="#7f7f7f", linestyle="--", linewidth=0.8)
            ax.annotate(f"llm-d {versions[i]}", (t[i], 1), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", fontsize=7, color="#555555")


# -- a run's report --------------------------------------------------------------------------------------------------
def current_goodput(report: Report) -> tuple[dict[tuple[str, str], float] | None, str | None]:
    """This run's goodput per cell and the SLO it met, from its peak table (analysis.goodput_table's columns); (None,
    None) when the table has none."""
    peaks = report.peaks
    if GOODPUT not in peaks.columns:
        return None, None
    values = {(str(m), str(c)): float(v) for m, c, v in zip(peaks["model"], peaks["config"], peaks[GOODPUT], strict=True)
              if not analysis.is_missing(v)}
    slos = [s for s in peaks.get(GOODPUT_SLO, pd.Series(dtype=object)) if isinstance(s, str)]
    return values, (slos[0] if slos else None)


def report_plots(report: Report) -> dict[str, bytes]:
    return plots(report.data.trends, analysis.noise_floor_pct(report.data), *current_goodput(report))


def report_section(doc: DocumentBuilder, report: Report, images: dict[str, bytes]) -> None:
    section(doc, report.data.trends, analysis.noise_floor_pct(report.data), images, *current_goodput(report),
            unavailable=f"this report was made from {report.data.source}, not from the results store")


# -- the Airflow UI's Trends page (plugins/llmd_bench_plugin.py) -----------------------------------------------------
class TrendsUnavailable(Exception):
    """The results store could not be read for the page (no store configured, or it did not answer)."""


def page(campaign: str, run_id: str | None = None, url: str | None = None) -> str | None:
    """The Trends page of a campaign: its trends up to run `run_id` (its latest run when None), as one self-contained
    HTML page (plots embedded). None when the store holds no such run. Reads the configured results store once (never
    starts the local one, never retries: a page must answer), else raises TrendsUnavailable."""
    from llmd_bench.model.settings import results_store_url
    from llmd_bench.report.render import html
    from llmd_bench.store import read  # deferred: loads sqlalchemy

    url = url or results_store_url(airflow=True)
    if not url:
        raise TrendsUnavailable("no results store is configured (connection llmd_results or LLMD_BENCH_DB_URL)")
    try:
        run, rows = read.read_campaign_trends(url, campaign, run_id)
    except read.StoreUnreadable as exc:
        raise TrendsUnavailable(str(exc)) from None
    if run is None:
        return None
    floor = run.params.noise_floor_pct
    floor_pct = float(floor) if floor is not None else DEFAULT_NOISE_FLOOR_PCT
    data = frame(rows)
    title = f"Trends: {campaign}"
    doc = DocumentBuilder(title)
    doc.h(1, title)
    if run.simulated:
        doc.note("**The serving layer was SIMULATED** in these runs (the local runtime): the trends show the pipeline "
                 "at work, not how llm-d performs.")
    started = run.started_at or run.created_at
    doc.p(f"This run: **{run.dag_run_id}** (llm-d {run.llmd_version}, {run.runtime} runtime, "
          f"{pd.Timestamp(started).strftime('%Y-%m-%d %H:%M UTC')}), "
          + ("the campaign's latest." if run_id is None else "as chosen.")
          + " Its report has this section as it stood when the report was made.")
    section(doc, data, floor_pct, plots(data, floor_pct))
    return html.render(doc.document)
