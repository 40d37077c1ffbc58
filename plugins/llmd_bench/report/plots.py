"""The report's plots (PNG bytes by file name), drawn with matplotlib from the Report; imported on use only."""

from __future__ import annotations

from llmd_bench.report import analysis, figures, timeseries, trends
from llmd_bench.report.analysis import Report, is_missing
from llmd_bench.report.goodput_section import plots as goodput_plots
from llmd_bench.report.versions import plots as effect_plots


def plots(report: Report) -> dict[str, bytes]:
    """Throughput, TTFT and TPOT vs concurrency per model, host use per level (where PCP measured it) and the
    peaks with their intervals."""
    import matplotlib  # deferred: loads matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    levels = report.data.levels[report.data.levels["valid"]]
    out: dict[str, bytes] = {}
    models = list(dict.fromkeys(report.peaks["model"]))
    if levels.empty or not models:
        return out
    mean = levels.groupby(["model", "config", "concurrency"], as_index=False)[
        ["output_tps_mean", "ttft_mean_ms", "tpot_mean_ms"]].mean()
    for name, col, ylabel in (("throughput_vs_concurrency.png", "output_tps_mean", "output tokens/s"),
                              ("ttft_vs_concurrency.png", "ttft_mean_ms", "TTFT (ms)"),
                              ("tpot_vs_concurrency.png", "tpot_mean_ms", "TPOT (ms)")):
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models):
            g = mean[mean["model"] == model]
            for config in sorted(g["config"].unique(), key=analysis.config_order):
                c = g[g["config"] == config].sort_values("concurrency")
                ax.plot(c["concurrency"], c[col], marker="o", label=config)
            ax.set_title(model)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        out[name] = figures.png(fig)
    obs = report.data.observations
    host = obs[obs["metric"].isin(["cpu_util_pct", "gpu_busy_pct"]) & (obs["source"] == "pcp")] if not obs.empty else obs
    if not host.empty:
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models):
            g = host[host["model"] == model]
            for (config, metric), c in g.groupby(["config", "metric"]):
                c = c.sort_values("concurrency")
                ax.plot(c["concurrency"], c["value"], marker="o", linestyle="-" if metric == "cpu_util_pct" else "--",
                        label=f"{config} {'CPU' if metric == 'cpu_util_pct' else 'GPU'}")
            ax.set_title(model)
            ax.set_xlabel("concurrency")
            ax.set_ylabel("busy %")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        out["host_use_per_level.png"] = figures.png(fig)
    ok = report.peaks[report.peaks["status"] == "ok"]
    if not ok.empty:
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(models) * 2), 3.6))
        configs = sorted(ok["config"].unique(), key=analysis.config_order)
        width = 0.8 / len(configs)
        for i, config in enumerate(configs):
            xs, ys, errs = [], [], []
            for j, model in enumerate(models):
                row = ok[(ok["model"] == model) & (ok["config"] == config)]
                if row.empty:
                    continue
                r = row.iloc[0]
                xs.append(j + i * width)
                ys.append(r["peak_output_tps"])
                errs.append(0 if is_missing(r["peak_ci_low"]) else (r["peak_ci_high"] - r["peak_ci_low"]) / 2)
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=config)
        ax.set_xticks([j + width * (len(configs) - 1) / 2 for j in range(len(models))], models)
        ax.set_ylabel("peak output tokens/s")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        out["peak_vs_baseline.png"] = figures.png(fig)
    out.update(goodput_plots(report))  # latency against throughput, goodput beside the peak (goodput_section.py)
    out.update(effect_plots(report))  # each configuration's effect by llm-d version (versions.py)
    out.update(trends.report_plots(report))  # each model's cells over the campaign's runs (trends.py)
    out.update(timeseries.report_plots(report))  # each cell's servers over its sweep (timeseries.py)
    return out
