"""load_results: parse and validate the cell's GuideLLM reports and store them in PostgreSQL.

One transaction per cell (all its trials): a bad report leaves nothing half-written. When the database
is down the step retries with back-off and then fails clearly; the reports stay in the results folder,
so clearing the task later loses nothing.
"""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.cell_folder import CellRecord, Observations, read_observations, write_levels
from llmd_bench.measure.guidellm_levels import Report
from llmd_bench.measure.guidellm_report import parse_report_file
from llmd_bench.measure.observe import generator, host_load
from llmd_bench.model import design
from llmd_bench.model.errors import ReportError
from llmd_bench.model.runtimes import cluster_runtime
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.lanes import fixed_lanes
from llmd_bench.store.results import cell_status, run_info_from_record, sha256
from llmd_bench.store.rows import CellInfo, Placement


def parse_trials(ctx: StepContext) -> list[tuple[int, Report]]:
    reports = []
    for trial in range(1, ctx.params.trials + 1):
        path = ctx.folder.trial_report(trial)
        if not path.exists():
            raise ReportError(f"cell {ctx.cell}: trial {trial} has no GuideLLM report at {path}")
        reports.append((trial, parse_report_file(path, expected_duration_s=ctx.params.expected_level_s)))
    return reports


def level_rows(reports: list[tuple[int, Report]]) -> list[dict[str, Any]]:
    return [{
        "trial": trial, "concurrency": lv.concurrency, "valid": lv.valid, "invalid_reason": lv.invalid_reason,
        "requests_successful": lv.requests_successful, "requests_errored": lv.requests_errored,
        "requests_incomplete": lv.requests_incomplete, "start": lv.start, "end": lv.end,
        "duration_s": lv.duration_s, "metrics": lv.metrics, "guidellm_version": report.guidellm_version,
    } for trial, report in reports for lv in report.levels]


def observation_rows(observed: Observations | None, trial: int) -> list[tuple[int, str, str, float]]:
    rows: list[tuple[int, str, str, float]] = []
    if observed is None:
        return rows
    for source, key in (("pcp", "host_levels"), ("vllm", "serving_levels"), ("epp", "epp_levels"),
                        ("generator", "generator_levels"), ("pcp-generator", "generator_host_levels")):
        for level in getattr(observed, key):
            if level.get("trial", 1) != trial:
                continue
            for metric, value in level.items():
                if metric in ("concurrency", "trial") or value is None:
                    continue
                rows.append((level["concurrency"], source, metric, float(value)))
    return rows


def suspect_levels(reports: list[tuple[int, Report]], observed: Observations | None = None) -> list[dict[str, Any]]:
    """The levels whose numbers describe the load generator (observe/generator.py) or a host busy with other work
    (observe/host_load.py, from the generator's samples of the host) rather than the servers."""
    host = {(lv.get("trial", 1), lv["concurrency"]): lv for lv in (observed.generator_levels if observed else [])}
    out = []
    for trial, report in reports:
        for lv in report.levels:
            lag = generator.start_lag_pct(lv.summary)
            reasons = [r for r in (generator.suspect_reason(lag),
                                   host_load.suspect_reason(host.get((trial, lv.concurrency), {}))) if r]
            out.append({"trial": trial, "concurrency": lv.concurrency, "start_lag_pct": lag,
                        "reason": "; ".join(reasons) or None})
    return out


def store(ctx: StepContext, reports: list[tuple[int, Report]]) -> None:
    from llmd_bench.store import db  # deferred: loads sqlalchemy

    assert ctx.cell is not None
    cell = ctx.cell
    record = ctx.record()
    if record is None:
        raise ReportError(f"cell {ctx.cell}: no record at {ctx.folder.record}: did deploy run?")
    run = run_info_from_record(record)
    observed = read_observations(ctx.folder)
    observability = ({k: getattr(observed, k) for k in ("pcp", "generator_host", "serving_metrics", "kv_index")}
                     if observed else {"pcp": {"status": "not measured", "reason": "collect_pcp did not run"}})
    versions = record.versions.model_dump(exclude_unset=True)
    levels = suspect_levels(reports, observed)
    for s in levels:
        if s["reason"]:
            print(f"level {s['concurrency']} (trial {s['trial']}) is suspect: {s['reason']}")

    def load(writer: db.Writer) -> None:
        for trial, report in reports:
            status, reason = cell_status(report)
            path = ctx.folder.trial_report(trial)
            info = CellInfo(model=cell.model, short_model=cell.short_model, config=cell.config,
                               stack_factors=cell.stack_factors, config_factors=cell.config_factors,
                               factors=dict(cell.factors), sweep=sweep_decisions(record, trial),
                               # design: aba's repeat of the baseline: its trials after the baseline's (design.py)
                               trial=design.stored_trial(trial, ctx.params.trials, cell), status=status, reason=reason,
                               replicas=record.serving.replicas if record.serving else None,
                               tensor_parallel_size=ctx.params.tensor_parallel_size,
                               versions=versions, report_path=str(path), report_sha256=sha256(path),
                               config_effect=observed.config_effect.model_dump() if observed else {},
                               observability=observability, stack=record.stack or {},
                               served=record.served.model_dump(mode="json") if record.served else {},
                               placement=placement(ctx, record))
            mine = [s for s in levels if s["trial"] == trial]
            suspects = {s["concurrency"]: s["reason"] for s in mine if s["reason"]}
            lag_rows = [(s["concurrency"], "generator", "start_lag_pct", s["start_lag_pct"]) for s in mine
                        if s["start_lag_pct"] is not None]
            writer.store_cell(run, info, report.levels, observation_rows(observed, trial) + lag_rows, suspects)

    db.in_transaction(load, f"loading {ctx.cell}")
    print(f"stored {sum(len(r.levels) for _, r in reports)} level rows for {ctx.cell} in the results store")


def placement(ctx: StepContext, record: CellRecord) -> Placement:
    """Where and beside what the cell ran: its lane (lanes: auto, recorded by deploy), else alone or shared by the
    campaign's lanes as this runtime ran them."""
    if record.placement:
        return Placement.model_validate(record.placement)
    lanes = fixed_lanes(ctx.campaign.lanes, cluster_runtime(ctx.runtime), ctx.campaign.serving.mode) or 1
    return Placement(kind="shared", lanes=lanes) if lanes > 1 else Placement(kind="alone", lanes=1)


def sweep_decisions(record: CellRecord, trial: int) -> dict[str, Any]:
    """The adaptive or seeded sweep's decisions for a trial (trials after the first measure trial 1's levels); {}
    for a grid sweep."""
    trials = {t.trial: t for t in (record.sweep.trials if record.sweep else [])}

    def decided(t: int) -> dict[str, Any] | None:
        return (trials[t].adaptive or trials[t].seeded) if t in trials else None

    first, mine = decided(1), decided(trial)
    return mine if mine and "grid" in mine else (first or {})


def run(ctx: StepContext) -> dict[str, Any]:
    reports = parse_trials(ctx)
    rows = level_rows(reports)
    write_levels(ctx.folder, rows)
    for r in rows:
        if not r["valid"]:
            print(f"level {r['concurrency']} (trial {r['trial']}) is invalid: {r['invalid_reason']}")
    store(ctx, reports)
    invalid = sum(not r["valid"] for r in rows)
    with ctx.update_record() as record:
        record["results"] = {"levels": len(rows), "invalid_levels": invalid, "stored": True}
    return {"levels": len(rows), "invalid_levels": invalid}
