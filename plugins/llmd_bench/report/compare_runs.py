"""`llmd-bench compare-runs RUN_A RUN_B`: the report's judgements between any two stored runs (another week, another
llm-d version, another cluster), written as a report of its own (report.md, report.html, comparison.csv).

Which run is the reference: the one at the OLDER llm-d version; at the same version, the one that started first. A
regression is called only when the other (newer) run's peak is lower beyond noise, judged as the report judges a
configuration against the baseline (analysis.judge: Welch's t with 2+ trials on both sides, else the noise floor
from the cells' run-to-run history or the campaign's noise_floor_pct, and the within-level intervals). Each
configuration's % vs the baseline is set beside in both runs, its change judged as Effect by llm-d version judges
one (versions.py). Runs whose serving layer was simulated are compared only with simulated runs (a simulated
number says nothing about llm-d); runs that measured different workloads are shown side by side without verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from llmd_bench.measure.noise import MAX_HISTORY, Z95
from llmd_bench.model.campaign import METHOD_DEFAULTS
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.report.analysis import (
    NO_VERDICT,
    Report,
    baseline_of,
    build,
    cell_noise_of,
    config_order,
    is_missing,
    judge,
    natural_key,
    noise_floor_pct,
    pct,
    version_key,
)
from llmd_bench.report.data import from_stored_run
from llmd_bench.report.document import Document, DocumentBuilder
from llmd_bench.report.render import html, markdown
from llmd_bench.report.versions import (
    Effect,
    EffectRow,
    EffectTable,
    PeakNoise,
    config_name,
    configurations_of,
    effect_of,
    effect_plot,
    effect_rows,
    judged_change,
    peak_noise,
    policy_changes_for,
)
from llmd_bench.report.write import write_atomic
from llmd_bench.store.read import WORKLOAD_PARAMS
from llmd_bench.store.rows import RunRow

SIMULATED_NOTE = ("**The serving layer of both runs was SIMULATED** (the local runtime: GuideLLM mock servers stood in "
                  "for vLLM and llm-d, with the campaign's latency profiles). The comparison shows that the pipeline "
                  "works; it says nothing about how llm-d performs.")
PEAKS_CSV = "comparison.csv"


@dataclass(frozen=True)
class Side:
    """One of the two runs: as stored, and its report (its peaks judged with its own noise history)."""

    run: RunRow
    report: Report

    @property
    def label(self) -> str:
        return self.run.dag_run_id

    @property
    def started(self) -> datetime:
        return self.run.started_at or self.run.created_at


@dataclass
class Comparison:
    reference: Side
    compared: Side
    why_reference: str
    differs: list[str]       # what the two runs measured differently ("duration_s: 120 vs 60")
    peaks: pd.DataFrame      # one row per cell of either run
    effects: EffectTable     # columns: the reference's label, the compared run's
    floor_pct: float
    notes: list[str]

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [{"model": r.model, "config": r.config, "change_pct": None if is_missing(r.change_pct) else round(r.change_pct, 2),
                 "reference_peak_output_tps": r.reference_peak_output_tps,
                 "compared_peak_output_tps": r.compared_peak_output_tps}
                for r in self.peaks[self.peaks["judgement"] == "REGRESSION"].itertuples()]


# -- reading ----------------------------------------------------------------------------------------------------------
def read_side(engine: Any, run_id: str, campaign: str | None, argument: str) -> Side:
    """A stored run and its report (with the noise history it would have in its own report); a run id that is not
    stored, or that several campaigns share without --campaign, is an error naming the argument and the id."""
    from llmd_bench.store import read  # deferred: loads sqlalchemy

    try:
        stored = read.stored_run(engine, run_id, campaign, summaries=False)
    except LlmdBenchError as exc:
        raise LlmdBenchError(f"{argument}: {exc}") from None
    data = from_stored_run(stored, [], [], read.trial_peaks(engine, stored.run, MAX_HISTORY))
    return Side(stored.run, build(data))


def read_pair(run_a: str, run_b: str, campaign: str | None = None, url: str | None = None) -> tuple[Side, Side]:
    """Both runs from the results store (the configured one, or `url`)."""
    from llmd_bench.store import db  # deferred: loads sqlalchemy

    return db.with_engine(lambda engine: (read_side(engine, run_a, campaign, "RUN_A"),
                                          read_side(engine, run_b, campaign, "RUN_B")), "reading the two runs", url)


# -- judging ----------------------------------------------------------------------------------------------------------
def reference_of(a: Side, b: Side) -> tuple[Side, Side, str]:
    """(reference, compared, why): the older llm-d version is the reference; at the same version the earlier run."""
    ka, kb = version_key(a.run.llmd_version), version_key(b.run.llmd_version)
    if ka != kb:
        old, new = (a, b) if ka < kb else (b, a)
        return old, new, (f"llm-d {old.run.llmd_version} is older than {new.run.llmd_version}: the older run is the "
                          "reference, and a regression is the newer run's peak lower beyond noise")
    old, new = (a, b) if (a.started, a.run.id) <= (b.started, b.run.id) else (b, a)
    return old, new, (f"both ran llm-d {a.run.llmd_version}: the earlier run ({old.label}, {old.started:%Y-%m-%d %H:%M} "
                      "UTC) is the reference, and a regression is the later run's peak lower beyond noise")


def measured_differently(a: RunRow, b: RunRow) -> list[str]:
    """The workload and method params in which the two runs differ, as the store's history compares runs
    (store/read.py WORKLOAD_PARAMS, and the method's params with their defaults): differing runs get no verdicts."""
    pa, pb = a.params.as_stored(), b.params.as_stored()
    out = [f"{k}: {pa.get(k)!r} vs {pb.get(k)!r}" for k in WORKLOAD_PARAMS if pa.get(k) != pb.get(k)]
    defaults = METHOD_DEFAULTS.model_dump()
    out += [f"{k}: {pa.get(k, v)!r} vs {pb.get(k, v)!r}" for k, v in defaults.items() if pa.get(k, v) != pb.get(k, v)]
    return out


def _ok(report: Report) -> pd.DataFrame:
    p = report.peaks
    return p[(p["status"] == "ok") & p["peak_output_tps"].notna()]


def _row(frame: pd.DataFrame, model: str, config: str) -> pd.Series | None:
    found = frame[(frame["model"] == model) & (frame["config"] == config)]
    return None if found.empty else found.iloc[0]


def _run_peak_noise(row: pd.Series, floor_pct: float) -> PeakNoise:
    """A run's peak with its relative standard error: its trials' spread (2+), else its history, else the floor;
    never below the within-level spread of a single trial's peak (its weak interval)."""
    peak, trials = float(row["peak_output_tps"]), int(row["trials"])
    sd = None if trials < 2 or is_missing(row.get("trial_sd_rel")) else float(row["trial_sd_rel"]) * peak
    within = None
    if trials < 2 and not is_missing(row.get("peak_ci_low")) and not is_missing(row.get("peak_ci_high")):
        within = (float(row["peak_ci_high"]) - float(row["peak_ci_low"])) / 2 / Z95
    return peak_noise(peak, trials, sd, within, cell_noise_of(row), floor_pct)


def _suspect(*rows: pd.Series | None) -> str | None:
    for r in rows:
        if r is not None and isinstance(r.get("peak_suspect"), str) and r["peak_suspect"]:
            return f"{r['config']}'s peak level is suspect: {r['peak_suspect']}"
    return None


def compare(a: Side, b: Side) -> Comparison:
    """The two runs' judgements: each cell's peak of the newer run against the reference's, and each configuration's
    effect (% vs the baseline) in both with its change."""
    if a.run.id == b.run.id:
        raise LlmdBenchError(f"RUN_A and RUN_B are the same stored run ({a.label} of campaign {a.run.campaign}): "
                             "name two runs")
    if a.run.simulated != b.run.simulated:
        sim, real = (a, b) if a.run.simulated else (b, a)
        raise LlmdBenchError(f"run {sim.label} ran on the simulated {sim.run.runtime} runtime (GuideLLM mock servers, no "
                             f"vLLM or llm-d) and run {real.label} on {real.run.runtime}: a simulated number says nothing "
                             "about llm-d, so the two are not compared; compare simulated runs with simulated runs")
    ref, new, why = reference_of(a, b)
    differs = measured_differently(ref.run, new.run)
    floor = max(noise_floor_pct(ref.report.data), noise_floor_pct(new.report.data))
    notes = []
    if ref.run.campaign != new.run.campaign:
        notes.append(f"The runs belong to different campaigns ({ref.run.campaign}, {new.run.campaign}): cells are "
                     "matched by model and configuration name.")
    configs = {**configurations_of(ref.report), **configurations_of(new.report)}
    no_verdict = f"the runs measured different workloads ({'; '.join(differs)})" if differs else None
    ref_ok, new_ok = _ok(ref.report), _ok(new.report)
    keys = list(dict.fromkeys(list(zip(ref_ok["model"], ref_ok["config"])) + list(zip(new_ok["model"], new_ok["config"]))))
    keys.sort(key=lambda k: (natural_key(k[0]), config_order(k[1])))
    rows = []
    for model, config in keys:
        r, n = _row(ref_ok, model, config), _row(new_ok, model, config)
        policy = policy_changes_for(configs.get(config_name(config)), ref.run.llmd_version, new.run.llmd_version)
        if r is None or n is None:
            verdict, basis = f"only in {(new if r is None else ref).label}", "-"
        elif no_verdict:
            verdict, basis = NO_VERDICT, no_verdict
        else:
            judged, basis = judge(n, r, floor)
            verdict = {"higher": "improvement", "lower": "REGRESSION"}.get(judged, judged)
        rows.append({"model": model, "config": config,
                     "reference_peak_output_tps": None if r is None else float(r["peak_output_tps"]),
                     "reference_interval": _interval(r),
                     "compared_peak_output_tps": None if n is None else float(n["peak_output_tps"]),
                     "compared_interval": _interval(n),
                     "change_pct": None if r is None or n is None else pct(n["peak_output_tps"], r["peak_output_tps"]),
                     "judgement": verdict, "basis": basis, "attributed_to": "; ".join(policy)})
    peaks = pd.DataFrame(rows, columns=["model", "config", "reference_peak_output_tps", "reference_interval",
                                        "compared_peak_output_tps", "compared_interval", "change_pct", "judgement",
                                        "basis", "attributed_to"])
    return Comparison(ref, new, why, differs, peaks, _effects(ref, new, configs, floor, no_verdict), floor, notes)


def _interval(row: pd.Series | None) -> str:
    if row is None or is_missing(row.get("peak_ci_low")) or is_missing(row.get("peak_ci_high")):
        return ""
    return f"[{float(row['peak_ci_low']):,.0f}, {float(row['peak_ci_high']):,.0f}]"


def _effects(ref: Side, new: Side, configs: dict[str, Any], floor: float, no_verdict: str | None) -> EffectTable:
    """Each configuration's % vs the baseline in both runs and its change (versions.judged_change)."""
    columns = (ref.label, new.label) if ref.label != new.label else (f"{ref.label} ({ref.run.campaign})",
                                                                      f"{new.label} ({new.run.campaign})")
    baseline = baseline_of(ref.report.data)
    if baseline_of(new.report.data) != baseline:
        return EffectTable(columns=columns, baseline=baseline, current=None, rows=())
    rows = []
    ref_ok, new_ok = _ok(ref.report), _ok(new.report)
    for model in sorted(set(ref_ok["model"]) & set(new_ok["model"]), key=natural_key):
        for config in sorted(set(ref_ok[ref_ok["model"] == model]["config"]) & set(new_ok[new_ok["model"] == model]["config"]),
                             key=config_order):
            if config == baseline:
                continue
            effects: dict[str, Effect] = {}
            for column, frame in zip(columns, (ref_ok, new_ok), strict=True):
                cell, base = _row(frame, model, config), _row(frame, model, baseline)
                if cell is None or base is None:
                    continue
                found = effect_of(_run_peak_noise(cell, floor), _run_peak_noise(base, floor),
                                  no_verdict or _suspect(cell, base))
                if found is not None:
                    effects[column] = found
            if len(effects) < 2:
                continue
            policy = policy_changes_for(configs.get(config_name(config)), ref.run.llmd_version, new.run.llmd_version)
            rows.append(EffectRow(model=model, config=config, effects=effects,
                                  changes=(judged_change(effects[columns[0]], effects[columns[1]], columns[0], columns[1],
                                                         policy),)))
    return EffectTable(columns=columns, baseline=baseline, current=None, rows=tuple(rows))


# -- the report -------------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return "-" if v is None or is_missing(v) else f"{float(v):,.1f}"


def _signed(v: Any) -> str:
    return "-" if v is None or is_missing(v) else f"{float(v):+.1f}%"


def _judgement(judgement: str, basis: str) -> str:
    """A verdict from one trial without history says so where it is read, as in a run's report."""
    weak = "(no history)" in basis and judgement in ("improvement", "REGRESSION")
    return f"{judgement} (weak: 1 trial, no history)" if weak else judgement


def _run_facts(side: Side) -> list[str]:
    run, data = side.run, side.report.data
    ok = side.report.peaks["status"].eq("ok").sum()
    return [run.dag_run_id, run.campaign, run.llmd_version, run.vllm_version or "-", run.guidellm_version or "-",
            run.runtime + (" (SIMULATED serving layer)" if run.simulated else ""), f"{side.started:%Y-%m-%d %H:%M} UTC",
            f"{ok} of {len(side.report.peaks)}", baseline_of(data), f"{noise_floor_pct(data):g} %"]


def document(c: Comparison, plot: bytes | None) -> Document:
    ref, new = c.reference, c.compared
    title = f"llm-d KV-cache evaluation: run {new.label} against run {ref.label}"
    doc = DocumentBuilder(title)
    doc.h(1, title)
    if ref.run.simulated:
        doc.note(SIMULATED_NOTE)
    doc.p(f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by llmd-bench compare-runs from the results store. Every "
          "number below is computed from the two runs' stored per-level results.")

    doc.h(2, "The two runs")
    doc.table(["", "Reference", "Compared"],
              [[item, a, b] for item, a, b in zip(["Run", "Campaign", "llm-d", "vLLM", "GuideLLM", "Runtime", "Started",
                                                   "Cells ok", "Baseline", "noise_floor_pct"],
                                                  _run_facts(ref), _run_facts(new), strict=True)])
    doc.p(f"Reference: {c.why_reference}.")
    if c.differs:
        doc.note("**The runs measured different workloads**: " + "; ".join(c.differs) + ". Their numbers are shown side "
                 "by side; no difference between them is judged.")
    for note in c.notes:
        doc.p(note)

    doc.h(2, "Summary")
    counts = c.peaks["judgement"].value_counts().to_dict()
    items = [", ".join(f"{n} {j}" for j, n in counts.items()) + f" of {len(c.peaks)} cells."]
    regressions = c.regressions
    if regressions:
        items.append(f"**{len(regressions)} regression(s) beyond noise** in {new.label}: " + "; ".join(
            f"{g['model']}/{g['config']} {_signed(g['change_pct'])}" for g in regressions) + ".")
    elif not c.differs:
        items.append(f"No regression beyond noise in {new.label} against {ref.label}.")
    beyond = c.effects.beyond
    if beyond:
        items.append(f"{len(beyond)} change(s) of a configuration's effect beyond noise: " + "; ".join(
            f"{r.model}/{r.config} {ch.change_pp:+.1f} pp" for r, ch in beyond) + ".")
    doc.ul(items)

    doc.h(2, "Peaks")
    doc.p(f"Each cell's peak output tokens/s (the valid level with the highest mean, as in a run's report) in both runs, "
          f"{new.label} against {ref.label}: **improvement** or **REGRESSION** only beyond noise, judged as a run's report "
          "judges a configuration against its baseline: with 2 or more trials in both, Welch's t on the trials' peaks; "
          "otherwise the change must exceed the noise floor (the cells' run-to-run history in the store, else the "
          f"campaign's noise_floor_pct, here {c.floor_pct:g} %, the larger of the two runs') and the within-level "
          "intervals must separate. A peak measured at a suspect level gets no verdict. Attributed to: the policy "
          "changes the version catalog records between the two releases for the configuration (include/versions.yaml).")
    doc.table(["Model", "Config", f"{ref.label} tok/s [95% CI]", f"{new.label} tok/s [95% CI]", "Change", "Judgement",
               "Basis", "Attributed to"],
              [[r.model, r.config, f"{_fmt(r.reference_peak_output_tps)} {r.reference_interval}".strip(),
                f"{_fmt(r.compared_peak_output_tps)} {r.compared_interval}".strip(), _signed(r.change_pct),
                _judgement(r.judgement, r.basis), r.basis, r.attributed_to or "-"] for r in c.peaks.itertuples()])

    doc.h(2, "Effect vs the baseline in each run")
    if not c.effects.rows:
        doc.p("No configuration has a peak beside a baseline peak of the same model in both runs"
              + ("" if baseline_of(ref.report.data) == baseline_of(new.report.data) else
                 f" under the same baseline ({baseline_of(ref.report.data)} vs {baseline_of(new.report.data)})") + ".")
    else:
        doc.p(f"Each configuration's peak as % vs the {c.effects.baseline} peak of the same model in each run, and the "
              "change of that effect in percentage points (pp), **bold** when beyond its 95 % bound: each effect's "
              "standard error from its two peaks' (their trials' spread with 2 or more, else the cell's run-to-run "
              "spread from the store, else the campaign's noise_floor_pct as the 95 % bound of two single peaks' "
              "difference), never below the within-level spread; Student t at the fewest degrees of freedom, the "
              "normal quantile from the floor.")
        versions = (ref.run.llmd_version, new.run.llmd_version)
        doc.table(["Model", "Config", *(f"{col} (llm-d {v})" for col, v in zip(c.effects.columns, versions, strict=True)),
                   "Change of effect beyond noise", "Policy changes between releases"], effect_rows(c.effects))
        if plot:
            doc.img("effect_by_run.png", plot, f"% vs the {c.effects.baseline} peak in each run (95 % bounds; a ring: a "
                    "change beyond noise)")
    return doc.document


def write_comparison(c: Comparison, out: Path) -> dict[str, Path]:
    """report.md, report.html (self-contained), effect_by_run.png, comparison.csv and report.json into `out`, each
    written atomically."""
    plot = effect_plot(c.effects) if c.effects.rows else None
    doc = document(c, plot)
    files: dict[str, str | bytes] = {"report.md": markdown.render(doc), "report.html": html.render(doc),
                                     PEAKS_CSV: c.peaks.to_csv(index=False, float_format="%.3f")}
    if plot:
        files["effect_by_run.png"] = plot
    same = c.reference.run.campaign == c.compared.run.campaign
    # which campaign (DAG) the report belongs to: the UI plugin authorises readers by it (none: runs of two campaigns)
    files["report.json"] = json.dumps({"campaign": c.reference.run.campaign if same else None,
                                       "run_id": f"{c.reference.label} vs {c.compared.label}",
                                       "runtime": c.compared.run.runtime, "compared_runs": [c.reference.label, c.compared.label]},
                                      indent=1)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomic(out / name, content)
    return {name: out / name for name in files}


def summary_lines(c: Comparison) -> list[str]:
    """What the command prints: one line per cell, then the regressions."""
    lines = [f"reference {c.reference.label} (llm-d {c.reference.run.llmd_version}), compared "
             f"{c.compared.label} (llm-d {c.compared.run.llmd_version})"]
    for r in c.peaks.itertuples():
        lines.append(f"{r.model:<16} {r.config:<20} {_fmt(r.reference_peak_output_tps):>10} "
                     f"{_fmt(r.compared_peak_output_tps):>10} {_signed(r.change_pct):>8}  {r.judgement}")
    n = len(c.regressions)
    lines.append(f"{n} regression(s) beyond noise" if n else "no regression beyond noise")
    lines.append(f"{len(c.effects.beyond)} change(s) of effect beyond noise")
    return lines
