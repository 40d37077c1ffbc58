"""Effect by llm-d version: each configuration's % vs the baseline at every llm-d version stored for the campaign
(the evaluation's own table: Model | Config | v0.5.1 | v0.6.0 | v0.7.0), the changes of that effect between
consecutive stored versions judged against noise, and the policy changes the version catalog records between them.

The effect at a version is (configuration peak / baseline peak - 1) x 100 from the version's mean peaks (the peaks
the cross-version section compares: store/read.py version_peaks, every run and trial of the campaign at that
version). A change of effect is called beyond noise when it exceeds its 95 % bound. The bound comes from each of
the four peaks' relative standard error, taken, in order, from:

1. the version's own peaks when it has 2 or more (their standard deviation over runs and trials / sqrt(n));
2. the cell's run-to-run spread in this run (noise.py: its history in the store, else its trials), other versions
   taken to be as noisy, as noise.floor_between does for a cell without history;
3. the campaign's noise_floor_pct F, the 95 % bound of a difference of two single peaks (so one peak's standard
   error is F / (1.96 x sqrt 2), and a change of effect, a difference of two such differences, needs about 1.4 F);

never less than the peak level's within-level standard error (request latency spread and window edges). The
bound is Student t at the fewest degrees of freedom among the estimates, the normal quantile when all come from
the floor or the within-level spread. `judged_change` is the same rule for any two effects (compare_runs.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from llmd_bench.measure import noise
from llmd_bench.measure.noise import Z95, t95
from llmd_bench.model import catalog, configurations
from llmd_bench.model.campaign_files import campaign_configurations
from llmd_bench.model.errors import CampaignError
from llmd_bench.report import figures
from llmd_bench.report.analysis import (
    Report,
    baseline_of,
    cell_noise_of,
    config_order,
    is_missing,
    natural_key,
    noise_floor_pct,
    version_key,
)

if TYPE_CHECKING:
    from llmd_bench.model.configurations import Configuration
    from llmd_bench.report.document import DocumentBuilder

PLOT_NAME = "effect_by_version.png"
PLOT_CAPTION = "Each configuration's % vs the baseline at every llm-d version stored (95 % bounds; a ring: a change beyond noise)"
Verdict = Literal["beyond noise", "within noise", "no verdict"]
BEYOND: Verdict = "beyond noise"
WITHIN: Verdict = "within noise"
NO_VERDICT: Verdict = "no verdict"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class PeakNoise(_Frozen):
    """A peak (mean output tokens/s) with the relative standard error of that mean and where it comes from."""

    peak: float
    samples: int
    rel_se: float
    df: int | None  # degrees of freedom of rel_se; None: the normal quantile (campaign floor, within-level spread)
    source: str


class Effect(_Frozen):
    """A configuration's % vs the baseline, its standard error in percentage points and the estimates behind it."""

    pct: float
    se_pp: float
    df: int | None
    sources: tuple[str, ...]
    samples: int  # the configuration's peaks behind it
    suspect: str | None = None  # why no change involving it gets a verdict


class EffectChange(_Frozen):
    before: str
    after: str
    change_pp: float
    bound_pp: float | None
    verdict: Verdict
    basis: str
    policy: tuple[str, ...] = ()


class EffectRow(_Frozen):
    model: str
    config: str
    effects: dict[str, Effect]  # by column (llm-d version, or run)
    changes: tuple[EffectChange, ...]


class EffectTable(_Frozen):
    columns: tuple[str, ...]  # oldest first
    baseline: str
    current: str | None  # this run's llm-d version
    rows: tuple[EffectRow, ...]

    @property
    def beyond(self) -> list[tuple[EffectRow, EffectChange]]:
        return [(r, c) for r in self.rows for c in r.changes if c.verdict == BEYOND]


# -- the noise of a peak, an effect and a change of effect ------------------------------------------------------------
def floor_rel_se(floor_pct: float) -> float:
    """One single peak's relative standard error implied by the campaign floor (the 95 % bound of two peaks' difference)."""
    return floor_pct / 100.0 / (Z95 * math.sqrt(2))


def peak_noise(peak: float, samples: int, sd: float | None, within_se: float | None, fallback: noise.CellNoise | None,
               floor_pct: float) -> PeakNoise:
    """A mean peak of `samples` peaks (their standard deviation `sd` in tok/s, when 2 or more) with its relative
    standard error, in the module's order: own spread, the cell's run-to-run spread, the campaign floor; never below
    the within-level standard error `within_se` (tok/s) of a single peak."""
    if samples >= 2 and sd is not None and not is_missing(sd) and peak > 0:
        return PeakNoise(peak=peak, samples=samples, rel_se=float(sd) / peak / math.sqrt(samples), df=samples - 1,
                         source=f"{samples} peaks' spread")
    if fallback is not None:
        rel, df, source = fallback.relative_sd, fallback.df, f"run-to-run spread of {fallback.samples} peaks"
    else:
        rel, df, source = floor_rel_se(floor_pct), None, f"campaign noise_floor_pct {floor_pct:g} %"
    if within_se is not None and not is_missing(within_se) and peak > 0 and float(within_se) / peak > rel:
        rel, df, source = float(within_se) / peak, None, "the peak level's within-level spread"
    return PeakNoise(peak=peak, samples=max(samples, 1), rel_se=rel, df=df, source=source)


def _min_df(dfs: Sequence[int | None]) -> int | None:
    known = [d for d in dfs if d is not None]
    return min(known) if known else None


def _quantile(df: int | None) -> float:
    """The two-sided 95 % quantile: Student t at `df`, normal when None."""
    return Z95 if df is None else t95(max(df, 1))


def effect_of(config: PeakNoise, baseline: PeakNoise, suspect: str | None = None) -> Effect | None:
    """The configuration's % vs the baseline with its standard error (delta method on the ratio of two peaks)."""
    if baseline.peak <= 0:
        return None
    ratio = config.peak / baseline.peak
    return Effect(pct=(ratio - 1) * 100.0, se_pp=100.0 * ratio * math.hypot(config.rel_se, baseline.rel_se),
                  df=_min_df([config.df, baseline.df]), sources=tuple(dict.fromkeys((config.source, baseline.source))),
                  samples=config.samples, suspect=suspect)


def judged_change(before: Effect, after: Effect, before_name: str, after_name: str,
                  policy: Sequence[str] = ()) -> EffectChange:
    """The change of an effect from `before` to `after` in percentage points, beyond noise when it exceeds the 95 %
    bound of the difference of two independent effects."""
    change = after.pct - before.pct
    suspect = before.suspect or after.suspect
    if suspect:
        return EffectChange(before=before_name, after=after_name, change_pp=change, bound_pp=None, verdict=NO_VERDICT,
                            basis=suspect, policy=tuple(policy))
    df = _min_df([before.df, after.df])
    bound = _quantile(df) * math.hypot(before.se_pp, after.se_pp)
    sources = ", ".join(dict.fromkeys((*before.sources, *after.sources)))
    basis = (f"95 % bound +/-{bound:.1f} pp ({'normal' if df is None else f'Student t, {df} df'}) from {sources}")
    return EffectChange(before=before_name, after=after_name, change_pp=change, bound_pp=bound,
                        verdict=BEYOND if abs(change) > bound else WITHIN, basis=basis, policy=tuple(policy))


# -- the policy changes the catalog records between two releases ------------------------------------------------------
def configurations_of(report: Report) -> dict[str, Configuration]:
    """The run's configuration definitions by configuration name (the catalog's and the campaign's own)."""
    own = campaign_configurations(report.data.campaign)
    names = [raw if isinstance(raw, str) else str(label).split(" [", 1)[0]
             for raw, label in zip(report.data.cells.get("configuration", pd.Series(dtype=object)),
                                   report.data.cells.get("config", pd.Series(dtype=object)), strict=False)]
    found = {}
    for name in dict.fromkeys(names):
        config = configurations.lookup(name, own)
        if config is not None:
            found[name] = config
    return found


def policy_changes_for(config: Configuration | None, before: str, after: str) -> list[str]:
    """The policy changes the catalog records between two releases (catalog.policy_changes) that apply to this
    configuration: offload_prompt_only for an OffloadingConnector configuration that leaves it to vLLM, the
    filesystem tier's implementation for one with a filesystem tier. None for a release the catalog does not know."""
    offload = config.model_server.kv_offload if config is not None else None
    if offload is None or before == after:
        return []
    try:
        changes = catalog.policy_changes(before, after)
    except CampaignError:  # a release the catalog does not know (an import's own label): nothing recorded
        return []
    return [c.text for c in changes
            if (c.applies_to == "offload" and offload.connector == "OffloadingConnector"
                and offload.offload_prompt_only is None)
            or (c.applies_to == "filesystem" and offload.filesystem is not None)]


def config_name(label: str) -> str:
    return str(label).split(" [", 1)[0]


# -- the table ---------------------------------------------------------------------------------------------------------
def effect_by_version(report: Report) -> EffectTable | None:
    """Every configuration's effect at every llm-d version stored for the campaign; None when the store holds one
    version (or the report is not from the store)."""
    cv = report.data.cross_version
    if cv is None or cv.empty or not report.data.llmd_version:
        return None
    baseline, floor = baseline_of(report.data), noise_floor_pct(report.data)
    versions = tuple(sorted(dict.fromkeys(str(v) for v in cv["llmd_version"]), key=version_key))
    peaks = report.peaks
    configs = configurations_of(report)
    current = report.data.llmd_version

    def this_run(model: str, config: str) -> pd.Series | None:
        found = peaks[(peaks["model"] == model) & (peaks["config"] == config)] if not peaks.empty else peaks
        return None if found.empty else found.iloc[0]

    def noise_of(r: Any, fallback: noise.CellNoise | None) -> PeakNoise:
        return peak_noise(float(r.peak_output_tps), int(r.samples), None if is_missing(r.peak_std) else float(r.peak_std),
                          None if is_missing(r.within_level_se) else float(r.within_level_se), fallback, floor)

    rows = []
    models = sorted(dict.fromkeys(cv["model"]), key=natural_key)
    for model in models:
        of_model = cv[cv["model"] == model]
        base_cur = this_run(model, baseline)
        for config in sorted(dict.fromkeys(of_model["config"]), key=config_order):
            if config == baseline:
                continue
            cell_cur = this_run(model, config)
            fallback = (cell_noise_of(cell_cur) if cell_cur is not None else None) or \
                (cell_noise_of(base_cur) if base_cur is not None else None)
            base_fallback = (cell_noise_of(base_cur) if base_cur is not None else None) or fallback
            suspect = next((f"{r['config']}'s peak level in this run is suspect: {r['peak_suspect']}"
                            for r in (cell_cur, base_cur) if r is not None and isinstance(r.get("peak_suspect"), str)
                            and r["peak_suspect"]), None)
            effects: dict[str, Effect] = {}
            for version in versions:
                c = of_model[(of_model["config"] == config) & (of_model["llmd_version"] == version)]
                b = of_model[(of_model["config"] == baseline) & (of_model["llmd_version"] == version)]
                if c.empty or b.empty:
                    continue
                found = effect_of(noise_of(next(c.itertuples()), fallback), noise_of(next(b.itertuples()), base_fallback),
                                  suspect if version == current else None)
                if found is not None:
                    effects[version] = found
            if not effects:
                continue
            present = [v for v in versions if v in effects]
            definition = configs.get(config_name(config))
            changes = tuple(judged_change(effects[a], effects[b], a, b, policy_changes_for(definition, a, b))
                            for a, b in zip(present, present[1:]))
            rows.append(EffectRow(model=model, config=config, effects=effects, changes=changes))
    return EffectTable(columns=versions, baseline=baseline, current=current, rows=tuple(rows))


def column_header(version: str, current: str | None) -> str:
    """'v0.7.0 (vLLM 0.19.1)', with '; this run' for the run's own version."""
    known = version in catalog.known_versions()
    vllm = catalog.entry(version).vllm_version if known else ""
    said = [f"vLLM {vllm}"] if vllm else []
    said += ["this run"] if version == current else []
    return version + (f" ({'; '.join(said)})" if said else "")


def signed(v: float) -> str:
    return f"{v:+.1f}%"


def effect_rows(table: EffectTable) -> list[list[str]]:
    """The table's rows as text: the effect per column (bold where the change into it is beyond noise), the changes
    beyond noise (or without a verdict) with their bounds, and the policy changes recorded between the columns."""
    out = []
    for r in table.rows:
        into = {c.after: c for c in r.changes}
        cells = []
        for col in table.columns:
            e = r.effects.get(col)
            if e is None:
                cells.append("-")
                continue
            text = signed(e.pct)
            cells.append(f"**{text}**" if col in into and into[col].verdict == BEYOND else text)
        flagged = [f"{c.before} -> {c.after}: {c.change_pp:+.1f} pp (+/-{c.bound_pp:.1f})" for c in r.changes
                   if c.verdict == BEYOND and c.bound_pp is not None]
        flagged += [f"{c.before} -> {c.after}: {NO_VERDICT} ({c.basis})" for c in r.changes if c.verdict == NO_VERDICT]
        policy = [f"{c.before} -> {c.after}: {'; '.join(t.split(': ', 1)[1] for t in c.policy)}" for c in r.changes if c.policy]
        out.append([r.model, r.config, *cells, "; ".join(flagged) or ("none beyond noise" if r.changes else "-"),
                    "; ".join(policy) or "-"])
    return out


def effect_section(doc: DocumentBuilder, report: Report, plots: dict[str, bytes] | None = None) -> None:
    """The report's 'Effect by llm-d version' section (Markdown and HTML from the same Document), with its plot
    (PLOT_NAME among the report's `plots`, plots.py) below the table."""
    if not report.data.llmd_version or report.data.cross_version is None:
        if report.data.llmd_version and report.data.source.startswith("results store"):
            doc.h(2, "Effect by llm-d version")
            doc.p(f"Only llm-d {report.data.llmd_version} is stored for campaign {report.data.campaign}: no other "
                  "version to set the configurations' effects beside.")
        return
    table = effect_by_version(report)
    if table is None:
        return
    doc.h(2, "Effect by llm-d version")
    doc.p(f"Each configuration's peak output tokens/s as % vs the {table.baseline} peak of the same model, at every "
          "llm-d version stored for this campaign (the mean peak over each version's stored runs and trials, as in "
          "Across llm-d versions). A change of effect between two consecutive stored versions is **bold** and listed "
          "when it exceeds its 95 % bound, in percentage points (pp).")
    doc.p("Basis of the bound: each effect's standard error from its two peaks' relative standard errors: the version's "
          "own spread where it has 2 or more peaks, else the cell's run-to-run spread in this run (its history in the "
          "store, else its trials; other versions taken to be as noisy), else the campaign's noise_floor_pct "
          f"({noise_floor_pct(report.data):g} %, the 95 % bound of a difference of two single peaks: a change of "
          "effect, a difference of two such differences, needs about 1.4 times it), never below the peak level's "
          "within-level spread; Student t at the fewest degrees of freedom, the normal quantile from the floor. "
          "A cell whose peak level in this run is suspect gets no verdict at this run's version.")
    if not table.rows:
        doc.p(f"No configuration has a peak beside a {table.baseline} peak of the same model at any stored version.")
        return
    if any(c.policy for r in table.rows for c in r.changes):
        doc.p("Policy changes: what the version catalog records upstream changed between the two releases for the "
              "configuration (include/versions.yaml; catalog.policy_changes): a change of effect beside one may be "
              "that policy, not performance.")
    doc.table(["Model", "Config", *(column_header(v, table.current) for v in table.columns),
               "Changes of effect beyond noise", "Policy changes between releases"], effect_rows(table))
    beyond = table.beyond
    doc.p(f"**{len(beyond)} change(s) of effect beyond noise.**" if beyond else "No change of effect beyond noise.")
    png = (plots or {}).get(PLOT_NAME)
    if png:
        doc.img(PLOT_NAME, png, PLOT_CAPTION)


# -- the plot ---------------------------------------------------------------------------------------------------------
def effect_plot(table: EffectTable, column_label: Any = None) -> bytes | None:
    """One panel per model: a line per configuration of its % vs the baseline over the columns (x), the 95 % bound
    of each effect as an error bar, a ring where the change into a point is beyond noise, and the policy changes
    the catalog records between two columns named above the panel."""
    if not table.rows:
        return None
    import matplotlib  # deferred: loads matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    label = column_label or (lambda c: c)
    models = list(dict.fromkeys(r.model for r in table.rows))
    x = {c: i for i, c in enumerate(table.columns)}
    fig, axes = plt.subplots(1, len(models), figsize=(max(4.8, 1.1 * len(table.columns) + 2.4) * len(models), 3.9),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        ax.axhline(0, color="#555", linestyle="--", linewidth=1, label=f"{table.baseline} (baseline)")
        policy_between: dict[tuple[str, str], dict[str, list[str]]] = {}
        mine = [r for r in table.rows if r.model == model]
        for i, r in enumerate(mine):
            dodge = (i - (len(mine) - 1) / 2) * 0.05  # configurations side by side, so their error bars stay apart
            cols = [c for c in table.columns if c in r.effects]
            ys = [r.effects[c].pct for c in cols]
            errs = [_quantile(r.effects[c].df) * r.effects[c].se_pp for c in cols]
            line = ax.errorbar([x[c] + dodge for c in cols], ys, yerr=errs, marker="o", capsize=3, label=r.config)
            for change in r.changes:
                if change.verdict == BEYOND:
                    ax.plot(x[change.after] + dodge, r.effects[change.after].pct, marker="o", markersize=13,
                            fillstyle="none", color=line[0].get_color(), markeredgewidth=1.6)
                for text in change.policy:  # "policy changed between A and B: <field> ..."
                    field = text.split(": ", 1)[1].split(" ")[0]
                    policy_between.setdefault((change.before, change.after), {}).setdefault(field, []).append(r.config)
        for (a, b), fields in policy_between.items():
            mid = (x[a] + x[b]) / 2
            ax.axvline(mid, color="#b07000", linestyle=":", linewidth=1)
            ax.annotate("policy: " + "; ".join(f"{f} ({', '.join(c)})" for f, c in sorted(fields.items())), (mid, 1.0),
                        xycoords=("data", "axes fraction"), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=7, color="#b07000")
        ax.set_xticks(range(len(table.columns)), [label(c) for c in table.columns], fontsize=8)
        ax.set_xlim(-0.5, len(table.columns) - 0.5)
        ax.set_title(model, pad=14)
        ax.set_ylabel(f"% vs {table.baseline} peak")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figures.png(fig)


def plots(report: Report) -> dict[str, bytes]:
    """PLOT_NAME when the store holds more than one llm-d version of the campaign (plots.py adds it to the report's)."""
    table = effect_by_version(report)
    png = effect_plot(table) if table is not None else None
    return {PLOT_NAME: png} if png else {}
