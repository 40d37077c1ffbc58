"""compare: the run's report. Runs after every cell, also when some failed.

Failed and skipped cells are recorded in the store, the report is generated from the stored levels
into reports/<dag_run_id>/ (reports/latest points at it) and into the store, and the peak table is
printed. A failed cell is named with its reason, never shown as 0; the task fails when any cell did,
after the report is written, so the DAG run shows red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmd_bench.integrations import mlflow_log, storage
from llmd_bench.measure import gpu_time
from llmd_bench.measure.cell_folder import RUN_SUMMARY_FILE, read_levels
from llmd_bench.model import paths
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.report import peak_table_text, point_latest
from llmd_bench.report.generate import generate_report
from llmd_bench.stack.context import StepContext, tool_versions, write_json_atomic
from llmd_bench.store import db
from llmd_bench.store.results import run_info
from llmd_bench.store.rows import CellInfo, GpuTime


class CellsFailed(LlmdBenchError):
    pass


def cell_outcomes(ctx: StepContext) -> list[dict[str, Any]]:
    outcomes = []
    for cell in ctx.campaign.cells():
        sub = StepContext(ctx.campaign, ctx.params, ctx.run_id, ctx.runtime, cell)
        row: dict[str, Any] = {"model": cell.short_model, "config": cell.config, "factors": dict(cell.factors),
                               "stack_factors": cell.stack_factors, "config_factors": cell.config_factors}
        if not ctx.params.selects(cell):
            outcomes.append(row | {"status": "skipped", "reason": "not selected"})
            continue
        record = sub.record()
        row["gpu_time"] = gpu_time.phases(record)
        row["stack"] = (record.stack if record else None) or {}  # what deploy found, also for a cell that failed later
        failed_steps = {k: v for k, v in (record.steps if record else {}).items() if v.status == "failed"}
        step_errors = "; ".join(f"{k}: {v.error}" for k, v in failed_steps.items()) or None
        levels = read_levels(sub.folder)
        if levels is None:
            outcomes.append(row | {"status": "failed", "reason": step_errors or "no results (steps did not run)"})
            continue
        if not any(lv.valid for lv in levels):
            outcomes.append(row | {"status": "invalid", "reason": "no valid level"})
            continue
        outcomes.append(row | {"status": "ok", "reason": step_errors})
    return outcomes


def record_outcomes(ctx: StepContext, outcomes: list[dict[str, Any]]) -> None:
    """Failed and skipped cells go into the store too, so they are never silently missing there."""

    run = run_info(ctx.campaign.dag_id, ctx.run_id, ctx.runtime, tool_versions(ctx.params.llmd_version),
                   ctx.stored_params())
    by_short = {m.short_name: m.name for m in ctx.campaign.models}

    def write(writer: db.Writer) -> None:
        run_pk = writer.upsert_run(run)
        for o in outcomes:
            if o["status"] in ("failed", "skipped"):
                writer.upsert_cell(run_pk, CellInfo(
                    model=by_short[o["model"]], short_model=o["model"], config=o["config"], trial=1,
                    stack_factors=o["stack_factors"], config_factors=o["config_factors"], factors=o["factors"],
                    status=o["status"], reason=o["reason"],
                    tensor_parallel_size=o["factors"].get("tensor_parallel_size", ctx.params.tensor_parallel_size),
                    replicas=o["factors"].get("replicas"), stack=o.get("stack") or None))
            if o.get("gpu_time"):
                writer.set_gpu_time(run_pk, by_short[o["model"]], o["config"], o["stack_factors"],
                                    o["config_factors"], GpuTime.model_validate(o["gpu_time"]))
        failed = any(o["status"] in ("failed", "invalid") for o in outcomes)
        writer.finish_run(ctx.campaign.dag_id, ctx.run_id, "failed" if failed else "ok")

    db.in_transaction(write, "recording the run's outcome")

def run(ctx: StepContext) -> dict[str, Any]:
    out = paths.reports_root() / paths.safe_component(ctx.run_id)
    ctx.check_owner(ctx.run_dir)
    ctx.check_owner(out)
    outcomes = cell_outcomes(ctx)
    record_outcomes(ctx, outcomes)
    report = generate_report(ctx.run_id, out, campaign=ctx.campaign.dag_id, store=True)
    point_latest(paths.reports_root(), out)
    storage.push_report(out)  # where the Airflow UI finds it when this step ran in a pod
    print(peak_table_text(report))
    print(f"report: {out / 'report.html'}")
    mlflow = log_to_mlflow(ctx.run_id, ctx.campaign.dag_id, out)
    write_json_atomic(ctx.run_dir / RUN_SUMMARY_FILE, {"run_id": ctx.run_id, "campaign": ctx.campaign.dag_id,
                                                     "runtime": ctx.runtime, "report": str(out), "cells": outcomes})
    failed = [f"{o['model']}/{o['config']}{_factors_suffix(o)} ({o['reason']})" for o in outcomes
              if o["status"] in ("failed", "invalid")]
    if failed:
        raise CellsFailed(f"report written to {out}; {len(failed)} cell(s) failed: " + "; ".join(failed))
    return {"cells": len(outcomes), "ok": sum(o["status"] == "ok" for o in outcomes), "report": str(out), "mlflow": mlflow}


def log_to_mlflow(run_id: str, campaign: str, out: Path) -> str:
    """Log the stored run to MLflow when a tracking server is configured (llmd_bench/integrations/mlflow_log.py), else nothing.
    Never fails the step, the report being stored already: a failure is a warning in the step's output and
    its summary says it."""

    try:
        target = mlflow_log.tracking_target()
        if target is None:
            return "off"
        result = mlflow_log.log_run(None, run_id, campaign=campaign, tracking_uri=target, report_dir=out)
    except Exception as exc:  # noqa: BLE001 - the report is stored: MLflow is extra, its failure is a warning
        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else type(exc).__name__
        print(f"[llmd-bench] WARNING: MLflow logging FAILED (the report is stored): {first}. Log the run again with "
              f"`llmd-bench mlflow-log --run-id {run_id} --campaign {campaign}`", flush=True)
        return f"FAILED: {first}"
    print(f"[llmd-bench] {result.line()}", flush=True)
    for warning in result.warnings:
        print(f"[llmd-bench] MLflow: {warning}", flush=True)
    return f"logged {result.level_runs} level run(s) to experiment {result.experiment!r}"


def _factors_suffix(outcome: dict[str, Any]) -> str:
    factors = outcome.get("factors") or {}
    return f" [{','.join(f'{k}={v}' for k, v in factors.items())}]" if factors else ""
