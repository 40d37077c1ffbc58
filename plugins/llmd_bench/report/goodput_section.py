"""The report's Goodput section and its plots: each cell's goodput under the run's SLOs beside its peak, judged against
the baseline (analysis.goodput_table), and per model p95 TTFT and p95 ITL against output tokens/s, a line per
configuration, with the SLO drawn where set (goodput.py holds the SLO and which levels count)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmd_bench.report import analysis, figures, goodput
from llmd_bench.report.analysis import Report, is_missing
from llmd_bench.report.document import DocumentBuilder

LATENCY_PLOT = "latency_vs_throughput.png"
GOODPUT_PLOT = "goodput_vs_peak.png"
CAPTIONS = {LATENCY_PLOT: "p95 TTFT and p95 ITL against output tokens/s per level (a line per configuration; the SLO "
                          "where set; a star at each cell's goodput)",
            GOODPUT_PLOT: "Goodput under the SLOs (solid) beside the peak (light) per configuration, with 95 % intervals"}
# the plotted metrics: the SLO's name (goodput.SLO_METRICS) and how the plot names it
PLOTTED = (("ttft_ms", "TTFT"), ("itl_ms", "ITL"))


def _fmt(v: Any, digits: int = 1) -> str:
    if is_missing(v):
        return "-"
    if hasattr(v, "item"):  # numpy / pandas scalars
        v = v.item()
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def _signed(v: Any) -> str:
    return "-" if is_missing(v) else f"{float(v):+.1f}%"


def _judgement(judgement: Any, basis: Any) -> str:
    """As the peak table says it: a judgement from one trial without history says it is weak."""
    if not isinstance(judgement, str):
        return "-"
    weak = isinstance(basis, str) and "(no history)" in basis and judgement in ("higher", "lower")
    return f"{judgement} (weak: 1 trial, no history)" if weak else judgement


def section(doc: DocumentBuilder, report: Report, plots: dict[str, bytes]) -> None:
    """## Goodput: the SLOs stated, each cell's goodput beside its peak with its judgement against the baseline, and
    the plots; with no SLO set, that goodput is not computed (the latency plot still shows)."""
    doc.h(2, "Goodput")
    targets, unread = goodput.targets_of(report.data.params)
    t = report.peaks[report.peaks["status"] != "skipped"]
    if unread:
        doc.p(f"Goodput is not computed: {unread}.")
    elif not targets:
        doc.p(goodput.NO_SLO)
    else:
        doc.p(f"SLOs: **{goodput.slo_text(targets)}** (GuideLLM's percentiles of each level's successful requests).")
        doc.p("A cell's **goodput** is the level with the highest mean output tokens/s among those that meet every SLO "
              "in every trial (with latency rising with load, the highest level that meets them): its throughput and "
              "concurrency, beside the peak. Invalid and suspect levels never count. It is judged against the "
              f"{analysis.baseline_of(report.data)} baseline's goodput like the peak: the interval of its own level, "
              "the same noise floor (see Noise); no verdict when the baseline's peak left its run-to-run range or a "
              "level of either cell ran on a busy host.")
        if report.data.latency is None:
            doc.p(f"Not available: {goodput.NOT_RECORDED}.")
        elif "goodput_judgement" in t.columns:
            rows = []
            for r in t.itertuples():
                if r.status != "ok":
                    rows.append([r.model, r.config, f"**{r.status}**", "-", "-", "-", "-", "-", "-"])
                    continue
                ci = "" if is_missing(r.goodput_ci_low) else f" [{_fmt(r.goodput_ci_low, 0)}, {_fmt(r.goodput_ci_high, 0)}]"
                share = (f"{r.goodput_output_tps / r.peak_output_tps * 100:.0f}%"
                         if not is_missing(r.goodput_output_tps) and r.peak_output_tps else "-")
                rows.append([r.model, r.config, f"{_fmt(r.peak_output_tps)} (c={_fmt(r.optimal_concurrency)})",
                             ("-" if is_missing(r.goodput_output_tps) else _fmt(r.goodput_output_tps) + ci),
                             _fmt(r.goodput_concurrency), share, _signed(r.goodput_vs_baseline_pct),
                             _judgement(r.goodput_judgement, r.goodput_basis), str(r.goodput_reason or "-")])
            doc.table(["Model", "Config", "Peak tok/s (at conc.)", "Goodput tok/s [95% CI]", "At concurrency",
                       "Of peak", "vs baseline", "Judgement", "Limited by"], rows)
            bases = sorted({str(b) for b in t.get("goodput_basis", pd.Series(dtype=object)).dropna()
                            if b not in ("none",)})
            doc.ul([f"Basis of a goodput judgement: {b}" for b in bases])
        if GOODPUT_PLOT in plots:
            doc.img(GOODPUT_PLOT, plots[GOODPUT_PLOT], CAPTIONS[GOODPUT_PLOT])
    doc.h(3, "Latency against throughput")
    if LATENCY_PLOT in plots:
        doc.p("Per model, each configuration's levels (valid ones, the mean over trials) with their p95 TTFT and p95 ITL "
              "against output tokens/s: how much latency each configuration pays for its throughput."
              + (" The SLO's limits are drawn (solid: its p95; dotted: its other percentiles)." if targets else ""))
        doc.img(LATENCY_PLOT, plots[LATENCY_PLOT], CAPTIONS[LATENCY_PLOT])
    else:
        doc.p("No plot: " + (goodput.NOT_RECORDED if report.data.latency is None
                             else "no valid level has its p95 TTFT or ITL recorded") + ".")


def _level_points(report: Report) -> pd.DataFrame:
    """Per model x config x level (valid ones): mean output tokens/s and mean percentiles over trials, and whether a
    trial of it was suspect."""
    levels, latency = report.data.levels, report.data.latency
    if latency is None or levels.empty:
        return pd.DataFrame()
    valid = levels[levels["valid"].astype(bool)].merge(latency, on=goodput.LATENCY_KEYS, how="left")
    if valid.empty:
        return pd.DataFrame()
    valid = valid.assign(suspect=valid["suspect_reason"].map(lambda v: isinstance(v, str) and bool(v)))
    columns = ["output_tps_mean"] + [f"{m}_{p}" for m, _ in PLOTTED for p in ("p50", "p90", "p95", "p99")]
    for col in columns:
        valid[col] = pd.to_numeric(valid[col], errors="coerce")
    agg = {col: (col, "mean") for col in columns} | {"suspect": ("suspect", "any")}
    return valid.groupby(["model", "config", "concurrency"], as_index=False).agg(**agg)


def plots(report: Report) -> dict[str, bytes]:
    """latency_vs_throughput.png (when any level has a p95 TTFT or ITL) and goodput_vs_peak.png (when an SLO is set
    and some cell has a goodput)."""
    out: dict[str, bytes] = {}
    fig = latency_figure(report)
    if fig is None:
        return out
    out[LATENCY_PLOT] = figures.png(fig)
    targets, _ = goodput.targets_of(report.data.params)
    peaks = report.peaks
    if targets and "goodput_output_tps" in peaks.columns and peaks["goodput_output_tps"].notna().any():
        models = [m for m in dict.fromkeys(peaks["model"]) if ((peaks["model"] == m) & (peaks["status"] == "ok")).any()]
        configs = sorted(peaks["config"].unique(), key=analysis.config_order)
        out[GOODPUT_PLOT] = _goodput_plot(peaks, models, configs, _colours(report))
    return out


def _colours(report: Report) -> dict[str, str]:
    """One colour per configuration, the same in both plots."""
    return {c: f"C{i % 10}" for i, c in enumerate(sorted(report.peaks["config"].unique(), key=analysis.config_order))}


def latency_figure(report: Report) -> Any | None:
    """The latency-against-throughput figure (matplotlib), None without a level's p95 TTFT or ITL: a row per metric,
    a column per model, a line per configuration, the SLO's limits of the metric as horizontal lines."""
    points = _level_points(report)
    if points.empty or points[[f"{m}_p95" for m, _ in PLOTTED]].isna().all().all():
        return None
    import matplotlib  # deferred: loads matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib
    from matplotlib.ticker import FuncFormatter

    targets, _ = goodput.targets_of(report.data.params)
    models = [m for m in dict.fromkeys(report.peaks["model"]) if (points["model"] == m).any()]
    configs = sorted(points["config"].unique(), key=analysis.config_order)
    colours = _colours(report)
    peaks = report.peaks
    fig, axes = plt.subplots(len(PLOTTED), len(models), figsize=(4.6 * len(models), 3.3 * len(PLOTTED)), squeeze=False)
    for j, model in enumerate(models):
        mine = points[points["model"] == model]
        for i, (metric, label) in enumerate(PLOTTED):
            ax = axes[i][j]
            column = f"{metric}_p95"
            for config in configs:
                c = mine[(mine["config"] == config) & mine[column].notna()].sort_values("concurrency")
                if c.empty:
                    continue
                ax.plot(c["output_tps_mean"], c[column], marker="o", markersize=4, color=colours[config], label=config)
                suspect = c[c["suspect"]]
                if not suspect.empty:
                    ax.scatter(suspect["output_tps_mean"], suspect[column], marker="x", s=60, color="black", zorder=4,
                               label="suspect level")
                at = _goodput_level(peaks, model, config)
                if at is not None:
                    g = c[c["concurrency"] == at]
                    ax.scatter(g["output_tps_mean"], g[column], marker="*", s=180, color=colours[config],
                               edgecolors="black", linewidths=0.6, zorder=5, label="goodput")
            for pct, limit in targets.get(metric, {}).items():
                ax.axhline(limit, color="crimson", linewidth=1.2, linestyle="-" if pct == "p95" else ":",
                           label=f"SLO {pct} <= {limit:g} ms")
            values = mine[column].dropna()
            if len(values) and values.min() > 0 and values.max() / values.min() > 20:
                ax.set_yscale("log")  # past saturation latency grows by orders of magnitude
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
            ax.set_title(f"{model}: p95 {label}")
            ax.set_xlabel("output tokens/s")
            ax.set_ylabel(f"p95 {label} (ms)")
            ax.grid(alpha=0.3)
            handles, names = ax.get_legend_handles_labels()
            unique = dict(zip(names, handles))  # the configurations first, then the markers and the SLO
            order = sorted(unique, key=lambda name: (name not in colours, list(unique).index(name)))
            ax.legend([unique[name] for name in order], order, fontsize=7)
    return fig


def _goodput_level(peaks: pd.DataFrame, model: str, config: str) -> int | None:
    if "goodput_concurrency" not in peaks.columns:
        return None
    row = peaks[(peaks["model"] == model) & (peaks["config"] == config)]
    if row.empty or is_missing(row.iloc[0]["goodput_concurrency"]):
        return None
    return int(row.iloc[0]["goodput_concurrency"])


def _half(low: Any, high: Any) -> float:
    return 0.0 if is_missing(low) or is_missing(high) else (float(high) - float(low)) / 2


def _goodput_plot(peaks: pd.DataFrame, models: list[str], configs: list[str], colours: dict[str, str]) -> bytes:
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    fig, axes = plt.subplots(1, len(models), figsize=(max(4.6, 1.2 * len(configs) + 1.5) * len(models), 3.6),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        ok = peaks[(peaks["model"] == model) & (peaks["status"] == "ok")]
        shown = [c for c in configs if (ok["config"] == c).any()]
        for x, config in enumerate(shown):
            r = ok[ok["config"] == config].iloc[0]
            # side by side: the peak (light) on the left, the goodput (solid) on the right, each at its level
            for dx, value, low, high, level, solid in (
                    (-0.2, r["peak_output_tps"], r["peak_ci_low"], r["peak_ci_high"], r["optimal_concurrency"], False),
                    (0.2, r["goodput_output_tps"], r["goodput_ci_low"], r["goodput_ci_high"], r["goodput_concurrency"],
                     True)):
                if is_missing(value):
                    ax.text(x + dx, 0, "no goodput", ha="center", va="bottom", fontsize=7, rotation=90)
                    continue
                half = _half(low, high)
                ax.bar(x + dx, value, 0.38, color=colours[config], alpha=1.0 if solid else 0.3, yerr=half,
                       capsize=3, ecolor="dimgray", label=("goodput" if solid else "peak") if x == 0 else None)
                ax.text(x + dx, float(value) + half, f"c={int(level)}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(shown)), shown, rotation=20, ha="right", fontsize=8)
        ax.set_title(model)
        ax.set_ylabel("output tokens/s")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return figures.png(fig)
