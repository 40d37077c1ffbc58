"""The report's content: the sections of a run's report, built as a Document (document.py) from a Report
(analysis.py) and its plots; no output format here (render/)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from llmd_bench.measure import adaptive, gpu_time, noise
from llmd_bench.measure.observe import generator, host_load
from llmd_bench.measure.served import ServedHistory
from llmd_bench.measure.served import worst as served_worst
from llmd_bench.model import catalog, configurations
from llmd_bench.model.campaign import FEBRUARY_METHOD, METHOD_DEFAULTS
from llmd_bench.model.campaign_files import campaign_configurations
from llmd_bench.report import analysis, drift, goodput_section, timeseries, trends
from llmd_bench.report.analysis import Report, baseline_of, is_missing, noise_floor_pct
from llmd_bench.report.data import ReportInput
from llmd_bench.report.document import Document, DocumentBuilder
from llmd_bench.report.versions import PLOT_CAPTION as EFFECT_PLOT_CAPTION
from llmd_bench.report.versions import PLOT_NAME as EFFECT_PLOT_NAME
from llmd_bench.report.versions import effect_by_version, effect_section, policy_changes_for
from llmd_bench.store.rows import Placement

SIMULATED_BANNER = ("**The serving layer was SIMULATED.** This run used the local runtime: GuideLLM mock servers "
                    "stood in for vLLM and llm-d, with per-configuration latency profiles from the campaign file. "
                    "The numbers show that the pipeline works; they say nothing about how llm-d performs.")
PLOT_CAPTIONS = {"throughput_vs_concurrency.png": "Output tokens/s vs concurrency (a line per configuration)",
                 "ttft_vs_concurrency.png": "TTFT vs concurrency", "tpot_vs_concurrency.png": "TPOT vs concurrency",
                 "peak_vs_baseline.png": "Peak output tokens/s per configuration with 95 % intervals",
                 "host_use_per_level.png": "CPU (and GPU, where measured) busy % per level, from PCP"}
PLOT_CAPTIONS[EFFECT_PLOT_NAME] = EFFECT_PLOT_CAPTION  # the Effect by llm-d version section's (versions.py)


def _fmt(v: Any, digits: int = 1, suffix: str = "") -> str:
    if is_missing(v):
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    if hasattr(v, "item"):  # numpy / pandas scalars
        v = v.item()
    return f"{v}{suffix}"


def _judgement(judgement: Any, basis: Any) -> str:
    """A judgement from one trial says so where it is read, not only in the noise section."""
    if not isinstance(judgement, str):
        return "-"
    weak = isinstance(basis, str) and "(no history)" in basis and judgement in ("higher", "lower")
    return f"{judgement} (weak: 1 trial, no history)" if weak else judgement


def _signed(v: Any, digits: int = 1) -> str:
    return "-" if is_missing(v) else f"{v:+.{digits}f}%"




def _method_section(doc: DocumentBuilder, report: Report) -> None:
    p = report.data.params or {}
    if "concurrency" not in p:
        doc.h(2, "Method")
        doc.p(f"Not recorded: this report was made from {report.data.source}, which carries no run params "
              "(imported GuideLLM reports and metrics CSVs).")
        return
    p = {**METHOD_DEFAULTS.model_dump(), **p}  # runs stored before the method was a setting used the defaults
    trials = int(p.get("trials") or 1)
    isolation = p.get("trial_isolation") or "same-server"
    levels = p.get("concurrency") or []
    prefix_count, max_requests = p["prefix_count"], p["max_requests"]
    prefixes = (f"{prefix_count[:-1]} x concurrency shared prefixes" if isinstance(prefix_count, str)
                else "one shared prefix" if prefix_count == 1 else f"{prefix_count} shared prefixes")
    cap = ("" if max_requests is None else
           f", at most {max_requests[:-1]} x concurrency x turns requests" if isinstance(max_requests, str)
           else f", at most {max_requests} requests")
    doc.h(2, "Method")
    items = [
        f"Workload per level: {p.get('prompt_tokens')} prompt + {p.get('output_tokens')} output tokens per turn, "
        f"{p.get('turns')} turn(s), {prefixes} of {p.get('prefix_tokens')} tokens (prefix_count {prefix_count}), "
        f"seed {p.get('seed')}; {_fmt(p.get('duration_s'))} s per level{cap}.",
        f"Levels: concurrency {', '.join(str(c) for c in levels)}; "
        + ("one GuideLLM run per cell sweeps them in order." if p["runs"] == "per-cell" else
           "one GuideLLM run per level, in order; each level's report is merged into the trial's."),
        ("Isolation between levels: restart; before every level after the first the model servers are restarted "
         "and warmed up and the index emptied, so no level starts with another level's cache."
         if p["level_isolation"] == "restart" else
         "Isolation between levels: reset; before every level the model servers' prefix caches (GPU and offload "
         "tiers) are reset through vLLM's /reset_prefix_cache, the index is emptied and the servers warmed up, without "
         "reloading the model; each reset was checked: a prompt cached before it was served with no cache hit after "
         "it, as on a fresh server."
         if p["level_isolation"] == "reset" else
         "Isolation between levels: none; the servers keep running and their caches carry over from level to level."),
        f"Warm-up: {p.get('warmup_requests', 'an unrecorded number of')} requests after deploy, before the sweep.",
        f"Trials: {trials}" + ((", each after the first redeployed and warmed up again (its spread includes deployment "
                                "variance)." if isolation == "redeploy" else
                                ", on the same running servers (their spread excludes deployment variance).")
                               if trials > 1 else " (no run-to-run interval from this run alone)."),
        f"Serving: llm-d {p.get('llmd_version')}, TP {p.get('tensor_parallel_size')}, {p.get('replicas')} replica(s)"
        + (" unless a factor sets them." if p.get("factors") else "."),
        "Noise: see the Noise section; single-trial judgements use the cells' history or the campaign floor "
        f"({noise_floor_pct(report.data):g} %).",
    ]
    policy = offload_policy_item(report, p.get("llmd_version"))
    if policy:
        items.append(policy)
    factors = p.get("factors") or {}
    if factors:
        items.append("Factors: " + "; ".join(f"{name} {', '.join(map(str, values))}" for name, values in factors.items())
                     + ". Cells are models x configurations x these values (offload_size only for configurations that "
                     "offload); each configuration is compared with the baseline under the same replicas, tensor "
                     "parallel size and memory regime, shown with the model as 'model [factor=value]'.")
    doc.ul(items)
    differs = [f"{k} {p.get(k)!r} (February: {v!r})" for k, v in FEBRUARY_METHOD.as_params().items() if p.get(k) != v]
    if differs:
        doc.note("This method differs from the February evaluation's: " + "; ".join(differs) + ".")


def _run_configurations(report: Report) -> dict[str, Any]:
    """The run's configuration definitions by name (the catalog's and the campaign's own); unknown names left out."""

    own = campaign_configurations(report.data.campaign)
    names: list[str] = []
    cells = report.data.cells
    for _, r in cells.iterrows():
        raw = r.get("configuration")
        names.append(raw if isinstance(raw, str) else str(r.get("config")).split(" [", 1)[0])
    found = {}
    for name in dict.fromkeys(names):
        config = configurations.lookup(name, own)
        if config is not None:
            found[name] = config
    return found


def offload_policy_item(report: Report, version: Any) -> str | None:
    """The method section's line on what the OffloadingConnector offloads at the run's release (the catalog's
    offload_prompt_only record) and which configurations set it themselves; None when no configuration offloads
    with it or the release is not in the catalog."""

    if not isinstance(version, str) or version not in catalog.known_versions():
        return None
    native = {name: c.model_server.kv_offload.offload_prompt_only for name, c in _run_configurations(report).items()
              if c.model_server.kv_offload is not None and c.model_server.kv_offload.connector == "OffloadingConnector"}
    if not native:
        return None
    entry = catalog.entry(version)
    contract = entry.contract.offload_prompt_only
    default = (f"offload_prompt_only defaults to {str(contract.default).lower()}" if contract.supported
               else "there is no offload_prompt_only")
    own = [f"{name} sets offload_prompt_only: {str(value).lower()}" for name, value in native.items() if value is not None]
    return (f"Offload policy: at llm-d {version} (vLLM {entry.vllm_version}) {default}, so vLLM's OffloadingConnector "
            f"offloads {contract.policy} unless a configuration says otherwise"
            + (f"; {', '.join(own)}" if own else "") + " (include/versions.yaml offload_prompt_only).")


def cross_version_attributions(report: Report) -> list[list[str]]:
    """Per cross-version row, the policy changes the catalog records between its two releases that apply to the
    row's configuration (catalog.policy_changes): offload_prompt_only for an OffloadingConnector configuration that
    leaves it to vLLM, the filesystem tier's implementation for one with a filesystem tier."""

    cv = report.cross_version
    if cv is None:
        return []
    configs = _run_configurations(report)
    # the one rule of which recorded change applies to a configuration, shared with Effect by llm-d version
    return [policy_changes_for(configs.get(str(r.config).split(" [", 1)[0]), str(r.other_version), str(r.version))
            for r in cv.itertuples()]


def regressions_of(report: Report, kind: str) -> list[dict[str, Any]]:
    """The regressions of one kind ('llm-d version', 'previous run') from Report.regressions: the one list the
    summary, the sections, the stored report and notify count, so their numbers agree."""
    return [g for g in report.regressions if g["kind"] == kind]


def regression_summary(report: Report) -> list[str]:
    """The summary's lines on regressions (against older llm-d versions and the previous run) and on changes of a
    configuration's effect between llm-d versions, counted from the lists the sections below show."""
    regressions = report.regressions
    items = []
    if regressions:
        by_kind = [f"{len(regressions_of(report, k))} {what}" for k, what in
                   (("llm-d version", "against older llm-d versions"), ("previous run", "since the previous run"))
                   if regressions_of(report, k)]
        items.append(f"**{len(regressions)} regression(s) beyond noise** ({', '.join(by_kind)}): " + "; ".join(
            f"{g['model']}/{g['config']} {_signed(g['change_pct'])} vs "
            + (f"llm-d {g['other']}" if g["kind"] == "llm-d version" else f"previous run {g['other']}")
            for g in regressions) + ".")
    elif report.cross_version is not None or report.previous_run is not None:
        items.append("No regression beyond noise against older llm-d versions or the previous run.")
    table = effect_by_version(report) if report.cross_version is not None else None
    if table is not None and table.beyond:
        items.append(f"{len(table.beyond)} change(s) of a configuration's effect beyond noise between llm-d versions: "
                     + "; ".join(f"{r.model}/{r.config} {c.before} -> {c.after} {c.change_pp:+.1f} pp"
                                 for r, c in table.beyond) + " (see Effect by llm-d version).")
    return items


def document(report: Report, plots: dict[str, bytes]) -> Document:
    """The report of `report` with its plots (name -> PNG), as a Document every output format renders."""
    d = report.data
    skipped = report.peaks[report.peaks["status"] == "skipped"]
    t = report.peaks[report.peaks["status"] != "skipped"]
    title = f"llm-d KV-cache evaluation: {d.campaign}, run {d.run_id}"
    doc = DocumentBuilder(title)
    doc.h(1, title)
    if d.simulated:
        doc.note(SIMULATED_BANNER)
    doc.p(f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by llmd-bench from {d.source}. Every number "
          "below is computed from the stored per-level results.")

    _method_section(doc, report)

    doc.h(2, "Summary")
    counts = report.peaks["status"].value_counts().to_dict()
    doc.p(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(report.peaks)} cells."
          + (f" Not selected in this run: {', '.join(f'{r.model}/{r.config}' for r in skipped.itertuples())}."
             if len(skipped) else ""))
    if (d.params or {}).get("sweep") == "seeded":
        doc.p(seeded_summary(t))
    items = []
    for r in t[t["status"].isin(["failed", "invalid"])].itertuples():
        items.append(f"**{r.model}/{r.config} {r.status}**: {r.reason or 'no reason recorded'}")
    for model, g in t[t["status"] == "ok"].groupby("model", sort=False):
        best = g.loc[g["peak_output_tps"].idxmax()]
        cmp = report.comparisons[(report.comparisons["model"] == model)]
        beyond = cmp[cmp["judgement"].isin(["higher", "lower"])]
        unjudged = cmp[cmp["judgement"] == analysis.NO_VERDICT]
        if not unjudged.empty:
            items.append(f"{model}: no verdict for {', '.join(unjudged['config'])}: a peak was measured at a suspect "
                         "level (see Noise).")
            cmp = cmp[cmp["judgement"] != analysis.NO_VERDICT]
        if beyond.empty and cmp.empty and not unjudged.empty:
            continue
        if beyond.empty:
            items.append(f"{model}: best peak {best['config']} ({_fmt(best['peak_output_tps'])} tok/s); no configuration "
                         f"differs from the {baseline_of(report.data)} baseline beyond noise." if not cmp.empty else
                         f"{model}: best peak {best['config']} ({_fmt(best['peak_output_tps'])} tok/s).")
        else:
            diffs = ", ".join(f"{c.config} {_signed(c.vs_baseline_pct)} ({_judgement(c.judgement, c.basis)})"
                              for c in beyond.itertuples())
            items.append(f"{model}: beyond noise vs baseline: {diffs}.")
    items += regression_summary(report)
    items += [f"Warning: {w}" for w in report.warnings]
    doc.ul(items)

    doc.h(2, "Peak output throughput")
    doc.p("Per model x configuration, the valid concurrency level with the highest mean output tokens/s "
          f"(successful requests); TTFT and TPOT are the means at that level; % vs the {baseline_of(report.data)} "
          "baseline of the same model.")
    rows = []
    for r in t.itertuples():
        ci = "" if is_missing(r.peak_ci_low) else f" [{_fmt(r.peak_ci_low, 0)}, {_fmt(r.peak_ci_high, 0)}]"
        status = r.status if r.status == "ok" else f"**{r.status}**"
        rows.append([r.model, r.config, status, (_fmt(r.peak_output_tps) + ci) if r.status == "ok" else "-",
                     _fmt(r.optimal_concurrency), _signed(r.vs_baseline_pct), _judgement(r.judgement, r.basis),
                     _fmt(r.ttft_mean_ms), _fmt(r.tpot_mean_ms), r.config_effect])
    doc.table(["Model", "Config", "Status", "Peak output tok/s [95% CI]", "At concurrency", "vs baseline", "Judgement",
               "TTFT ms", "TPOT ms", "Config effect"], rows)
    goodput_section.section(doc, report, plots)  # goodput under the SLOs beside the peak, latency vs throughput

    _adaptive_section(doc, t)
    _seeded_section(doc, t)
    _placement_section(doc, t)

    doc.h(2, "Latency at the peak")
    for metric, label in (("ttft_mean_ms", "TTFT (ms)"), ("tpot_mean_ms", "TPOT (ms)")):
        configs = list(dict.fromkeys(t.sort_values("config", key=lambda s: s.map(analysis.config_order))["config"]))
        rows = []
        for model, g in t.groupby("model", sort=False):
            vals = {r.config: (_fmt(getattr(r, metric)) if r.status == "ok" else r.status) for r in g.itertuples()}
            rows.append([model] + [vals.get(c, "-") for c in configs])
        doc.p(f"**{label}** at each cell's peak level")
        doc.table(["Model"] + configs, rows)

    doc.h(2, "Redis vs Valkey")
    if report.redis_valkey.empty:
        doc.p("Not available: no model has valid results for both llm-d-redis and llm-d-valkey.")
    else:
        doc.p("Computed from the peak table above (Valkey relative to Redis).")
        doc.table(["Model", "Redis tok/s", "Valkey tok/s", "Valkey - Redis", "Throughput", "TTFT", "TPOT", "Judgement", "Basis"],
                  [[r.model, _fmt(r.redis_peak_output_tps), _fmt(r.valkey_peak_output_tps), _fmt(r.valkey_vs_redis_tps),
                    _signed(r.valkey_vs_redis_pct), _signed(r.ttft_valkey_vs_redis_pct), _signed(r.tpot_valkey_vs_redis_pct),
                    r.judgement, r.basis] for r in report.redis_valkey.itertuples()])
    if not report.spread.empty:
        doc.p("**Per-model spread** of the configurations' peaks, (max - min) / min:")
        doc.table(["Model", "Configs", "Best", "Worst", "Spread"],
                  [[r.model, str(r.configs), r.best_config, r.worst_config, _signed(r.spread_pct)]
                   for r in report.spread.itertuples()])

    doc.h(2, "Noise")
    bases = sorted({b for b in t["noise_basis"].dropna()})
    floor = noise_floor_pct(d)
    doc.p("With 2 or more trials per cell, a difference is called higher or lower only when Welch's t test on the "
          "difference of the two cells' trial peaks puts it beyond its 95 % bound (each cell's own Student t "
          "interval is shown with its peak). With one trial, each peak's interval comes from the "
          "spread of request latency inside the level and from the level's window edges (GuideLLM counts requests "
          "completed inside the window, so each stream may add or lose one: streams / requests of the output), "
          "and that is still smaller than what the same cell does from run to run, so the difference must also "
          "exceed a **noise floor**: taken from the cells' own earlier runs in the results store (the same campaign, "
          "model, configuration, llm-d version, workload and kind of runtime; at least "
          f"{noise.MIN_HISTORY} peaks, the latest {noise.MAX_HISTORY}; the 95 % bound of the difference of two runs "
          "from their successive differences), otherwise the campaign's `noise_floor_pct` "
          f"(**{floor:g} %** for this run). A peak measured while the load generator was saturated gets **no verdict**, "
          "and so does a peak of a cell any of whose levels ran on a host busy with other work (at least "
          f"{host_load.HOST_BUSY_LIMIT_PCT:g} % busy, {host_load.OUTSIDE_LIMIT_PCT:g} % of it outside the cell's servers "
          f"and GuideLLM) or losing {host_load.STEAL_LIMIT_PCT:g} % of its CPU to steal. Under `design: aba` the "
          "baseline runs again last and its drift widens every bound of its model's comparisons. "
          "Otherwise the difference is **within noise**.")
    doc.ul([f"Interval of a cell's peak: {b}" for b in bases])
    doc.ul(drift.report_lines(t, baseline_of(d), floor, drift.design_of(d), int((d.params or {}).get("trials") or 1)))
    suspect = t[t["peak_suspect"].map(lambda v: isinstance(v, str) and bool(v))] if "peak_suspect" in t else t.iloc[0:0]
    if not suspect.empty:
        doc.p("**Peaks measured at a suspect level** (no verdict for their comparisons):")
        doc.ul([f"{r.model}/{r.config} (peak at concurrency {_fmt(r.optimal_concurrency)}): {r.peak_suspect}"
                for r in suspect.itertuples()])
    history = t[pd.to_numeric(t.get("history_n", pd.Series(dtype=float)), errors="coerce").fillna(0) > 0] \
        if "history_n" in t else t.iloc[0:0]
    if not history.empty:
        doc.p("Run-to-run spread of each cell's peak from its earlier runs (used when at least "
              f"{noise.MIN_HISTORY} peaks are stored):")
        doc.table(["Model", "Config", "Earlier peaks", "Run-to-run spread (1 sd)"],
                  [[r.model, r.config, _fmt(r.history_n),
                    "-" if is_missing(r.history_sd) else f"{float(r.history_sd) * 100:.2f}%"] for r in history.itertuples()])
    if not report.comparisons.empty:
        doc.table(["Model", "Config", "Baseline tok/s", "Peak tok/s", "vs baseline", "TTFT vs baseline", "TPOT vs baseline",
                   "Judgement", "Basis"],
                  [[r.model, r.config, _fmt(r.baseline_peak_output_tps), _fmt(r.peak_output_tps), _signed(r.vs_baseline_pct),
                    _signed(r.ttft_vs_baseline_pct), _signed(r.tpot_vs_baseline_pct), r.judgement, r.basis]
                   for r in report.comparisons.itertuples()])

    scaling = analysis.scaling(t)
    if not scaling.empty:
        doc.h(2, "Scaling")
        doc.p("Peak output tokens/s at each value of a factor that varied in this run, per model and configuration "
              "(and the other factors' values). Efficiency is the peak over the smallest value's peak scaled "
              "linearly (1.00 = linear); it compares single peaks, so read it against the noise floor above.")
        for factor, g in scaling.groupby("factor", sort=False):
            values = sorted(g["value"].unique())
            rows = []
            for (model, config, others), h in g.groupby(["model", "config", "others"], sort=False):
                by_value = {int(r.value): r for r in h.itertuples()}
                rows.append([model, config, others or "-"] + [
                    (f"{_fmt(by_value[v].peak_output_tps)} ({by_value[v].efficiency:.2f})"
                     if v in by_value and not is_missing(by_value[v].efficiency) else "-") for v in values])
            doc.table(["Model", "Config", "Other factors"] + [f"{factor}={v}: tok/s (eff.)" for v in values], rows)

    _gpu_time_section(doc, report, t)

    doc.h(2, "Did each configuration take effect?")
    doc.p("A benchmark must show that the configuration under test was active: offload moving blocks, the "
          "Redis/Valkey index holding keys, more than one replica for cache-aware routing.")
    doc.table(["Model", "Config", "Replicas", "Verdict", "Evidence"],
              [[r.model, r.config, _fmt(r.replicas), r.config_effect, r.config_effect_evidence or "-"]
               for r in t.itertuples() if r.status != "skipped"])
    doc.ul([f"Warning: {w}" for w in report.warnings])

    doc.h(2, "Host and serving metrics per level")
    _evidence_section(doc, report, t)
    timeseries.report_section(doc, report, plots)  # each cell's servers over its sweep (timeseries.py)

    if report.cross_version is not None:
        doc.h(2, "Across llm-d versions")
        cv = report.cross_version
        n = len(regressions_of(report, "llm-d version"))
        doc.p(f"Peaks of llm-d {d.llmd_version} against the runs of this campaign with other llm-d versions. An OLDER "
              "version is the reference: a drop beyond noise against it is a REGRESSION. A newer version is context "
              "(lower or higher than it), never a regression. "
              + (f"**{n} regression(s) beyond noise against older versions.**" if n else
                 "No regression beyond noise against older versions."))
        attributed = cross_version_attributions(report)
        if any(attributed):
            doc.p("A change marked with a policy change is attributed to it, not to performance: the version catalog "
                  "records that upstream changed what the configuration does between the two releases "
                  "(include/versions.yaml; catalog.policy_changes).")
        doc.table(["Model", "Config", "Version", "Peak tok/s", "Other version", "Other is", "Other peak tok/s", "Change",
                   "Judgement", "Basis", "Attributed to"],
                  [[r.model, r.config, r.version, _fmt(r.peak_output_tps), r.other_version, getattr(r, "relation", "-"),
                    _fmt(r.other_peak_output_tps), _signed(r.change_pct), r.judgement, r.basis, "; ".join(a) or "-"]
                   for r, a in zip(cv.itertuples(), attributed, strict=True)])
    effect_section(doc, report, plots)

    if report.previous_run is not None:
        doc.h(2, "Since the previous run")
        pr = report.previous_run
        n = len(regressions_of(report, "previous run"))
        doc.p(f"Each cell's peak against the latest earlier run of this campaign with the same llm-d version "
              f"({d.llmd_version}), the same workload and the same kind of runtime, judged against noise as above. "
              + (f"**{n} regression(s) beyond noise.**" if n else "No regression beyond noise."))
        doc.table(["Model", "Config", "Peak tok/s", "Previous run", "Previous peak tok/s", "Change", "Judgement", "Basis"],
                  [[r.model, r.config, _fmt(r.peak_output_tps), r.other_run, _fmt(r.other_peak_output_tps),
                    _signed(r.change_pct), r.judgement, r.basis] for r in pr.itertuples()])

    trends.report_section(doc, report, plots)  # each cell's peak (and goodput) over the campaign's runs (trends.py)

    doc.h(2, "Plots")
    shown = {getattr(b, "name", None) for b in doc.document.blocks() if b.kind == "figure"}  # a section's own, once
    for name, png in plots.items():
        if name not in shown:
            doc.img(name, png, PLOT_CAPTIONS.get(name, name))

    doc.h(2, "Versions and parameters")
    doc.table(["Item", "Value"], [[k, str(v)] for k, v in d.versions.items() if v is not None]
              + [[f"param {k}", str(v)] for k, v in d.params.items() if k not in ("imported_from", "guidellm_spec")])
    _stack_section(doc, d)
    return doc.document


STACK_HEADER = ["Cells", "Runtime", "Model server image", "vLLM", "Model-server command", "EPP image",
                "EPP config sha256", "Replicas", "GPUs per node (driver, CUDA the driver supports)", "Not available"]


def _cell_text(value: Any) -> str:
    return "-" if value in (None, "", []) else str(value).replace("|", "\\|")


def _with_digest(entry: dict[str, Any] | None) -> str | None:
    if not entry or not entry.get("image"):
        return None
    return f"{entry['image']}@{entry['image_digest']}" if entry.get("image_digest") else f"{entry['image']} (no digest)"


def _distinct(values: list[Any]) -> str | None:
    seen = list(dict.fromkeys(v for v in values if v))
    return "; ".join(seen) if seen else None


def stack_row(stack: dict[str, Any]) -> list[str | None]:
    """A cell's stored stack metadata (Runtime.stack_metadata) as the versions section's columns (without `Cells`);
    None where the stack does not say."""
    servers = stack.get("model_servers") or []
    unavailable = "; ".join(f"{k}: {v}" for k, v in (stack.get("unavailable") or {}).items())
    if stack.get("simulated"):
        versions = {s.get("guidellm_version") for s in servers}
        server = f"simulated: GuideLLM {_distinct(list(versions)) or '(version unknown)'} mock-server"
        routers = ", ".join(r.get("name", "") for r in stack.get("router") or [])
        kv = stack.get("kv_backend") or {}
        cpus = "; ".join(f"{n}: no GPU (simulated), CPU {f.get('cpu_model') or 'unknown'} x {f.get('cpu_count')}"
                         for n, f in (stack.get("nodes") or {}).items())
        epp = "simulated: " + (f"llmd-bench router ({routers})" if routers else "none (one replica, no router)")
        if kv:
            epp += f"; {kv.get('kind')} {kv.get('server_version')}"
        return [f"{stack.get('platform')} (simulated)", server, "simulated (no vLLM)",
                _distinct([" ".join(s.get("args") or []) for s in servers]), epp, "-",
                str(stack.get("replicas")), cpus, unavailable]
    vllm = _distinct([f"{s['vllm_version']} ({s.get('vllm_version_source')})" for s in servers if s.get("vllm_version")])
    epp_entry = stack.get("epp") or {}
    gpus = "; ".join(
        f"{n}: {f.get('gpu_product') or 'GPU model unknown'} x {f.get('gpu_count') if f.get('gpu_count') is not None else '?'}"
        f", driver {f.get('driver_version') or '?'}, CUDA {f.get('cuda_version') or '?'}"
        for n, f in sorted((stack.get("nodes") or {}).items()))
    return [str(stack.get("platform")), _distinct([_with_digest(s) for s in servers]), vllm,
            _distinct([" ".join(s.get("args") or []) for s in servers]), _with_digest(epp_entry), epp_entry.get("config_sha256"),
            str(stack.get("replicas")) if stack.get("replicas") is not None else None, gpus, unavailable]


def _stack_section(doc: DocumentBuilder, d: ReportInput) -> None:
    """Per cell, or grouped when equal: what ran (the stack metadata deploy captured and load_results stored)."""
    if "stack" not in d.cells.columns or d.cells.empty:
        return
    doc.h(3, "Stack per cell")
    groups: dict[tuple[str, ...], list[str]] = {}
    missing, simulated = [], []
    for r in d.cells.itertuples():
        stack = r.stack if isinstance(r.stack, dict) else {}
        label = f"{r.model}/{r.config}"
        if not stack:
            missing.append(label)
            continue
        if stack.get("simulated"):
            simulated.append(label)
        groups.setdefault(tuple(_cell_text(c) for c in stack_row(stack)), []).append(label)
    if simulated:
        doc.note(f"**The stack of {', '.join(simulated)} was simulated** (local runtime): GuideLLM mock servers stood "
                 "in for vLLM and a round-robin router for the EPP; there are no images, no vLLM version and no GPUs. "
                 "The command lines, server versions and host CPU below are what ran.")
    if groups:
        doc.p("What each cell ran, captured once its stack was ready: images with the digests the kubelet pulled, the "
              "vLLM version (measured by GET /version, or declared by the version catalog for its image) and "
              "command line, the EPP's image and configuration hash (the configuration itself is stored in "
              "cells.stack), replicas, and per node the GPU model and count, driver and the CUDA version the driver "
              "supports from NVIDIA GPU Feature Discovery labels. Cells with equal stacks share a row.")
        doc.table(STACK_HEADER, [[", ".join(cells), *row] for row, cells in groups.items()])
    if missing:
        doc.p(f"No stack metadata for {', '.join(missing)}: stored before it was captured, or imported.")
    _served_section(doc, d)


def served_row(trials: list[dict[str, Any]]) -> list[str]:
    """A cell's served-configuration proof (served.ServedHistory per trial) as the section's columns: status, checks,
    proven keys, differing keys, not provable keys with why."""
    histories = [ServedHistory.model_validate(t) for t in trials]
    checks = [c for h in histories for c in h.checks]
    status = served_worst(h.status for h in histories)
    proven = sorted({k.key for c in checks for p in c.pods for k in p.keys if k.status == "proven"})
    differs = sorted({f"{k.key} (wanted {k.wanted}, served {k.served})" for c in checks for k in
                      (k for _, k in c.differences)})
    unprovable: dict[str, str] = {}
    for c in checks:
        for _, k in c.not_provable:
            unprovable.setdefault(k.key, k.why or "")
    for c in checks:
        for note in c.notes:
            unprovable.setdefault("note", note)
    whens = ", ".join(dict.fromkeys(c.when for c in checks))
    return [status, f"{len(checks)} ({whens})", ", ".join(proven) or "-", "; ".join(differs) or "-",
            "; ".join(f"{k}: {v}" for k, v in unprovable.items()) or "-"]


def _served_section(doc: DocumentBuilder, d: ReportInput) -> None:
    """Per cell: did the running servers show they served the cell's configuration (served.py)?"""
    if "served" not in d.cells.columns or d.cells.empty:
        return
    rows, unproven = [], []
    for r in d.cells.itertuples():
        trials = r.served if isinstance(r.served, list) else []
        label = f"{r.model}/{r.config}"
        if not trials:
            unproven.append(label)
            continue
        rows.append([label, *served_row(trials)])
    doc.h(3, "Served configuration per cell")
    doc.p("After deploy, and after every redeploy, restart and reset, each model server's own start-up log (the "
          "non-default engine args, the KV connector it created) and its /metrics (vllm:cache_config_info) were read "
          "back and compared key by key with what the cell's configuration demands. **proven**: every server showed "
          "the wanted value; **differs**: a server showed another (its deploy failed, so no numbers were kept from "
          "it); **not provable**: nothing the server shows at this version tells, with why. A cell is only as "
          "trusted as its weakest check.")
    if any(isinstance(r.stack, dict) and r.stack.get("simulated") for r in d.cells.itertuples()):
        doc.note("On the local runtime the servers are simulated: each simulated vLLM replica was started with the "
                 "command line the renderer gives a cluster's vLLM pod and prints what vLLM would; this proves the "
                 "rendered configuration and the read-back path, not a real vLLM.")
    if rows:
        doc.table(["Cells", "Served configuration", "Checks", "Proven", "Differs", "Not provable (why)"],
                  [[_cell_text(c) for c in row] for row in rows])
    if unproven:
        doc.p(f"No served-configuration proof for {', '.join(unproven)}: stored before the proof existed, or imported "
              "(**not provable**: nothing read the servers).")


HOST_COLUMNS = [("cpu_util_pct", "CPU %", 1, 1), ("mem_used_bytes", "Memory GiB", 2, 2**30),
                ("net_in_bytes_per_s", "Net in MB/s", 2, 1e6), ("net_out_bytes_per_s", "Net out MB/s", 2, 1e6),
                ("disk_write_bytes_per_s", "Disk write MB/s", 2, 1e6), ("gpu_busy_pct", "GPU busy %", 1, 1),
                ("gpu_mem_used_bytes", "GPU mem GiB", 2, 2**30), ("gpu_power_w", "GPU W", 0, 1)]
# level_observations sources: what serves (host PCP, vLLM, EPP) and what generates the load
SERVED_SOURCES = ("pcp", "vllm", "epp")
GENERATOR_SOURCES = ("generator", "pcp-generator")
GENERATOR_COLUMNS = [("generator:start_lag_pct", "Start lag % of request", 1, 1),
                     ("generator:cpu_cores", "Generator cores", 2, 1),
                     ("generator:busiest_process_pct", "Busiest process %", 0, 1),
                     ("pcp-generator:cpu_util_pct", "Generator node CPU %", 1, 1)]
SERVING_COLUMNS = [("prefix_cache_hit_rate", "Prefix hit rate", 3, 1), ("kv_cache_usage_perc", "KV use", 3, 1),
                   ("requests_running", "Running", 1, 1), ("requests_waiting", "Waiting", 1, 1),
                   ("preemptions", "Preemptions", 0, 1), ("external_prefix_cache_queries", "Offload lookups", 0, 1)]


def _gpu_time_section(doc: DocumentBuilder, report: Report, t: pd.DataFrame) -> None:
    """GPU-hours per phase and cell (GPUs held x wall time from deploy to teardown), the campaign's total, and the
    cost where the campaign states a GPU-hour cost."""
    if "gpu_time" not in t.columns:
        return
    rows = [r for r in t.itertuples() if isinstance(r.gpu_time, dict) and r.gpu_time.get("gpu_hours")]
    if not rows:
        return
    stored_cost = (report.data.params or {}).get("gpu_hour_cost")
    cost = None if stored_cost is None or is_missing(stored_cost) else float(stored_cost)
    doc.h(2, "GPU time" + (" and cost" if cost is not None else ""))
    doc.p("GPUs held (tensor parallel size x replicas) x wall time from the start of deploy to the end of teardown, "
          "per phase: model load (deploy and every redeploy or restart), warm-up, measurement (the levels' own "
          "durations), idle (GuideLLM start-up, sample collection, scheduling gaps) and teardown."
          + (" The GPUs were SIMULATED (local runtime): this rehearses what a cluster run will hold." if report.data.simulated
             else ""))
    header = ["Model", "Config", "GPUs"] + [f"{p.replace('_', ' ')} GPU-h" for p in gpu_time.PHASES] + ["Total GPU-h"]
    if cost is not None:
        header += ["Cost", "Cost per M output tokens at peak"]
    table, total = [], 0.0
    for r in rows:
        g = r.gpu_time
        total += g["gpu_hours_total"]
        line = [r.model, r.config, str(g["gpus"])] + [f"{g['gpu_hours'][p]:.4f}" for p in gpu_time.PHASES] + \
            [f"{g['gpu_hours_total']:.4f}"]
        if cost is not None:
            per_m = gpu_time.cost_per_million_tokens(cost, g["gpus"], r.peak_output_tps) if r.status == "ok" else None
            line += [f"{g['gpu_hours_total'] * cost:,.2f}", "-" if per_m is None else f"{per_m:,.2f}"]
        table.append(line)
    doc.table(header, table)
    doc.p(f"Campaign total: {total:.4f} GPU-hours" + (f", cost {total * cost:,.2f} at {cost:g} per GPU-hour."
                                                        if cost is not None else "."))


def _adaptive_section(doc: DocumentBuilder, t: pd.DataFrame) -> None:
    """What an adaptive sweep measured and what it left out, per cell; levels it did not run are named as such."""
    if "sweep" not in t.columns:
        return
    # a seeded sweep's cells are the Seeded sweeps section's, its adaptive-mode cells too
    rows = [r for r in t.itertuples() if isinstance(r.sweep, dict) and r.sweep.get("grid") and not _seeded(r.sweep)]
    if not rows:
        return
    doc.h(2, "Adaptive sweep")
    doc.p("Each cell's levels ran in order until throughput stopped rising beyond the noise floor (or GuideLLM's "
          "over-saturation detection stopped a level); refinement levels were then measured between the best level "
          f"and its better neighbour. Grid levels after the stop are {adaptive.NOT_RUN}: no number exists for them.")
    doc.table(["Model", "Config", "Measured", "Refinement", "Not run", "Stopped because"],
              [[r.model, r.config, ", ".join(map(str, r.sweep.get("run", []))),
                ", ".join(map(str, r.sweep.get("refined", []))) or "-",
                (", ".join(map(str, r.sweep["not_run"])) + f" ({adaptive.NOT_RUN})") if r.sweep.get("not_run") else "-",
                r.sweep.get("stop_reason") or "-"] for r in rows])


def _placement_section(doc: DocumentBuilder, t: pd.DataFrame) -> None:
    """Which cells ran at the same time, and where: the lanes of `lanes: auto` (each cell on its own GPUs of one node)
    or `lanes: N` (cells at once sharing the GPUs, or on the local runtime this host). Nothing when one cell ran at a
    time."""
    if "placement" not in t.columns:
        return
    cells = [(r.model, r.config, r.placement) for r in t.itertuples() if isinstance(r.placement, Placement)]
    kinds = {p.kind for _, _, p in cells}
    if not cells or kinds == {"alone"}:
        return
    doc.h(2, "Cells side by side")
    if "lane" in kinds:
        doc.p("`lanes: auto`: as many cells ran at once as the nodes' allocatable GPUs held, each cell's model servers "
              "on its own GPUs of one node (a Lease per lane, stack/lanes.py). Concurrent cells share the cluster's "
              "network and storage, not GPUs; the noise history compares these cells only with runs placed the same way.")
    if "shared" in kinds:
        lanes = max(p.lanes or 0 for _, _, p in cells)
        doc.p(f"`lanes: {lanes}`: up to {lanes} cells ran at once sharing the GPUs (on the local runtime, this host's "
              "CPU); their numbers can include one another's load. The noise history compares these cells only with "
              "runs placed the same way.")
    rows = []
    for model, config, p in cells:
        beside = [f"{m} / {c}" for m, c, q in cells if (m, c) != (model, config) and _overlap(p, q)]
        where = f"{p.slot} ({p.gpus} GPUs on {p.node})" if p.kind == "lane" else p.kind
        rows.append([model, config, where, p.acquired or "-", p.released or "-",
                     f"{p.waited_s:.0f}" if p.waited_s is not None else "-",
                     ", ".join(beside) or ("-" if p.kind == "lane" else "not recorded")])
    doc.table(["Model", "Config", "Lane", "From", "To", "Waited (s)", "Ran at the same time as"], rows)


def _overlap(a: Placement, b: Placement) -> bool:
    """Two cells' lanes were held at the same time (ISO 8601 UTC times compare as text); unknown ends never overlap."""
    if not (a.acquired and b.acquired):
        return False
    a_end, b_end = a.released or "9999", b.released or "9999"
    return a.acquired < b_end and b.acquired < a_end


def _seeded(sweep: Any) -> bool:
    """A cell's stored sweep decisions (cells.sweep) are a seeded sweep's (sweep_core.SeededDecisions)."""
    return isinstance(sweep, dict) and sweep.get("policy") == "seeded"


def _levels(levels: Any) -> str:
    return ", ".join(map(str, levels or [])) or "-"


SEED_KINDS = {"history": "this cell's last run", "previous-version": "this cell at an earlier llm-d version",
              "other-cell": "another cell of the configuration"}


def _seeded_from(source: Any) -> str:
    """Kind, run id, llm-d version, cell and its peak: what the bracket was built around."""
    if not isinstance(source, dict):
        return "-"
    kind = SEED_KINDS.get(str(source.get("kind")), str(source.get("kind")))
    return (f"{kind}: run {source.get('dag_run_id')}, llm-d {source.get('llmd_version')}, {source.get('cell')}, "
            f"peak at {source.get('peak')}")


def _seeded_why(sweep: dict[str, Any]) -> str:
    """Why the cell ran its mode; a bracket also says when the next full grid is due, adaptive where it stopped."""
    why = str(sweep.get("reason") or "-")
    every, before = sweep.get("full_grid_every"), sweep.get("bracket_runs_before")
    if sweep.get("mode") == "bracket" and isinstance(every, int) and isinstance(before, int):
        why += f"; bracket run {before + 1} of {max(every - 1, 1)}, the full grid again in {max(every - 1 - before, 1)} run(s)"
    decided = sweep.get("adaptive")
    if sweep.get("mode") == "adaptive" and isinstance(decided, dict) and decided.get("stop_reason"):
        why += f"; stopped after {decided.get('stopped_after')}: {decided['stop_reason']}"
    return why


def seeded_summary(t: pd.DataFrame) -> str:
    """The summary's line for a run with sweep: seeded: how many cells ran each mode."""
    modes = [r.sweep.get("mode") for r in t.itertuples() if _seeded(getattr(r, "sweep", None))]
    counts = {m: sum(1 for x in modes if x == m) for m in ("bracket", "full-grid", "adaptive")}
    said = (f"Seeded sweep: {counts['bracket']} cell(s) measured a bracket around their last peak, "
            f"{counts['full-grid']} the full grid, {counts['adaptive']} an adaptive sweep")
    missing = len(t) - len(modes)
    return said + (f"; {missing} without a recorded decision (not swept)" if missing else "") + " (see Seeded sweeps)."


def _seeded_section(doc: DocumentBuilder, t: pd.DataFrame) -> None:
    """What each seeded cell measured and why: its mode, the run it was seeded from, the bracket, the levels widened
    and refined, the peak, and the levels not run, named by the cell's own reason (never a number)."""
    if "sweep" not in t.columns:
        return
    rows = [r for r in t.itertuples() if _seeded(r.sweep)]
    if not rows:
        return
    doc.h(2, "Seeded sweeps")
    doc.p("A cell with stored runs measured a **bracket**: the peak level of the run it was seeded from and the grid "
          "levels either side. While the best level sat at an edge of the levels measured (higher beyond the noise "
          "floor than its neighbour), one more grid level was measured in that direction (**widened**); a refinement "
          "level was measured only when the peak moved from the seed's. Every `seeded.full_grid_every`-th run, when "
          "the served stack changed (image digests, vLLM version, GPU model, driver) or the last run had no valid "
          "peak, the cell measured the **full grid**; a cell with nothing to seed from swept **adaptive**ly. Levels "
          "not run are named with their reason: no number exists for them.")
    table = []
    for r in rows:
        s = r.sweep
        widened = "; ".join(part for part in (
            f"up: {_levels(s.get('widened_up'))}" if s.get("widened_up") else "",
            f"down: {_levels(s.get('widened_down'))}" if s.get("widened_down") else "") if part) or "-"
        peak = s.get("peak")
        seed = s.get("seeded_from") if isinstance(s.get("seeded_from"), dict) else {}
        if peak is None:
            peak_text = "- (no valid level)"
        elif s.get("peak_moved"):
            peak_text = f"{peak} (moved from {seed.get('peak')})"
        else:
            peak_text = f"{peak}" + (" (as seeded)" if seed else "")
        reason = s.get("not_run_reason") or adaptive.NOT_RUN
        table.append([r.model, r.config, str(s.get("mode") or "-"), _seeded_from(s.get("seeded_from")),
                      _levels(s.get("bracket")), widened, _levels(s.get("refined")), _levels(s.get("run")), peak_text,
                      f"{_levels(s.get('not_run'))}: {reason}" if s.get("not_run") else "-", _seeded_why(s)])
    doc.table(["Model", "Config", "Mode", "Seeded from", "Bracket", "Widened", "Refined", "Measured", "Peak at",
               "Not run", "Why"], table)


def _evidence_section(doc: DocumentBuilder, report: Report, t: pd.DataFrame) -> None:
    obs = report.data.observations
    doc.p("Per level of each cell, averaged over the level's window: host use from the cell's Performance "
          "Co-Pilot archive and model-server metrics scraped during the sweep. What was not measured says why.")
    for r in t[t["status"] != "skipped"].itertuples():
        info = getattr(r, "observability", None)
        info = info if isinstance(info, dict) else {}
        pcp = info.get("pcp") or {}
        serving = info.get("serving_metrics") or {}
        kv = info.get("kv_index")
        notes = [f"PCP: {pcp.get('status', 'not measured')}" + (f" ({pcp['reason']})" if pcp.get("reason") else "")
                 + (f"; GPU {pcp['gpu']}" if pcp.get("gpu") else ""),
                 "serving metrics: " + ("scraped" if serving.get("available") else serving.get("reason", "not measured"))]
        if kv:
            final = kv.get("final") or {}
            notes.append(f"KV index ({kv.get('server')}): max {kv.get('max_keys')} keys, "
                         f"{final.get('used_memory_bytes', '?')} bytes used, {final.get('keyspace_hits', '?')} keyspace hits")
        doc.p(f"**{r.model}/{r.config}**: " + "; ".join(notes))
        cell = obs[(obs["model"] == r.model) & (obs["config"] == r.config)] if not obs.empty else obs
        served = cell[cell["source"].isin(SERVED_SOURCES)]
        if not served.empty:
            wide = served.pivot_table(index="concurrency", columns="metric", values="value", aggfunc="mean")
            cols = [c for c in HOST_COLUMNS + SERVING_COLUMNS if c[0] in wide.columns]
            doc.table(["Concurrency"] + [c[1] for c in cols],
                      [[str(conc)] + [_fmt(row[c[0]] / c[3] if not is_missing(row[c[0]]) else None, c[2]) for c in cols]
                       for conc, row in wide.iterrows()])
        generated = cell[cell["source"].isin(GENERATOR_SOURCES)]
        if not generated.empty:
            wide = generated.assign(key=generated["source"] + ":" + generated["metric"]).pivot_table(
                index="concurrency", columns="key", values="value", aggfunc="mean")
            cols = [c for c in GENERATOR_COLUMNS if c[0] in wide.columns]
            doc.p("Load generator (GuideLLM): how late it sent requests (suspect from "
                  f"{generator.START_LAG_LIMIT_PCT:g} %), its CPU, and its host's CPU where that is another node:")
            doc.table(["Concurrency"] + [c[1] for c in cols],
                      [[str(conc)] + [_fmt(row[c[0]] / c[3] if not is_missing(row[c[0]]) else None, c[2]) for c in cols]
                       for conc, row in wide.iterrows()])

def peak_table_text(report: Report) -> str:
    header = f"{'model':<16} {'config':<15} {'status':<8} {'peak tok/s':>11} {'conc.':>6} {'vs base':>8}  judgement"
    lines = [header, "-" * len(header)]
    for r in report.peaks[report.peaks["status"] != "skipped"].itertuples():
        lines.append(f"{r.model:<16} {r.config:<15} {r.status:<8} {_fmt(r.peak_output_tps):>11} "
                     f"{_fmt(r.optimal_concurrency):>6} {_signed(r.vs_baseline_pct):>8}  "
                     f"{r.judgement if isinstance(r.judgement, str) else (r.reason or '')}")
    return "\n".join(lines)
