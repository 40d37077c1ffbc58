"""compare: the run's verdict per cell. Runs after every cell, also when some failed.

It prints only numbers that a run produced; a failed cell is named with its reason, never shown as 0.
"""

from __future__ import annotations

import json
from typing import Any

from llmd_bench.analysis import peak
from llmd_bench.context import StepContext, read_json, write_json_atomic
from llmd_bench.errors import LlmdBenchError
from llmd_bench.steps.load_results import LEVELS_FILE


class CellsFailed(LlmdBenchError):
    pass


def cell_outcomes(ctx: StepContext) -> list[dict[str, Any]]:
    outcomes = []
    for cell in ctx.campaign.cells():
        sub = StepContext(ctx.campaign, ctx.params, ctx.run_id, ctx.runtime, cell)
        row: dict[str, Any] = {"model": cell.short_model, "config": cell.config}
        if not ctx.params.selects(cell):
            outcomes.append(row | {"status": "skipped", "reason": "not selected"})
            continue
        record = read_json(sub.record_path)
        failed_steps = {k: v for k, v in record.get("steps", {}).items() if v.get("status") == "failed"}
        levels_path = sub.cell_dir / LEVELS_FILE
        if not levels_path.exists():
            reason = "; ".join(f"{k}: {v.get('error')}" for k, v in failed_steps.items()) or "no results (steps did not run)"
            outcomes.append(row | {"status": "failed", "reason": reason})
            continue
        levels = json.loads(levels_path.read_text())
        best = peak(levels)
        if best is None:
            outcomes.append(row | {"status": "invalid", "reason": "no valid level"})
            continue
        status = "ok"
        reason = "; ".join(f"{k}: {v.get('error')}" for k, v in failed_steps.items()) or None
        outcomes.append(row | {"status": status, "reason": reason, "peak_output_tps": round(best.output_tps, 1),
                               "optimal_concurrency": best.concurrency,
                               "ttft_mean_ms": None if best.ttft_ms is None else round(best.ttft_ms, 1),
                               "tpot_mean_ms": None if best.tpot_ms is None else round(best.tpot_ms, 2)})
    return outcomes


def record_outcomes(ctx: StepContext, outcomes: list[dict[str, Any]]) -> None:
    """Failed and skipped cells go into the store too, so they are never silently missing there."""
    from sqlalchemy.orm import Session

    from llmd_bench.context import tool_versions
    from llmd_bench.db import store as db

    versions = tool_versions(ctx.params.llmd_version)
    run = db.RunInfo(campaign=ctx.campaign.dag_id, dag_run_id=ctx.run_id, runtime=ctx.runtime,
                     llmd_version=ctx.params.llmd_version, vllm_version=versions["vllm"],
                     guidellm_version=versions["guidellm"], llmd_bench_version=versions["llmd_bench"],
                     images=versions["images"], params=ctx.params.model_dump())
    by_short = {m.short_name: m.name for m in ctx.campaign.models}
    url = db.database_url()
    engine = db.make_engine(url)

    def write() -> None:
        db.migrate(engine)
        with Session(engine) as session, session.begin():
            run_pk = db.upsert_run(session, run)
            for o in outcomes:
                if o["status"] in ("failed", "skipped"):
                    db.upsert_cell(session, run_pk, db.CellInfo(
                        model=by_short[o["model"]], short_model=o["model"], config=o["config"], trial=1,
                        status=o["status"], reason=o["reason"], tensor_parallel_size=ctx.params.tensor_parallel_size))
            failed = any(o["status"] in ("failed", "invalid") for o in outcomes)
            db.finish_run(session, ctx.campaign.dag_id, ctx.run_id, "failed" if failed else "ok")

    try:
        db.with_retries(write, "recording the run's outcome", url)
    finally:
        engine.dispose()


def format_table(outcomes: list[dict[str, Any]]) -> str:
    header = f"{'model':<16} {'config':<15} {'status':<8} {'peak out tok/s':>14} {'at conc.':>8}  note"
    lines = [header, "-" * len(header)]
    for o in outcomes:
        tps = f"{o['peak_output_tps']:.1f}" if o.get("peak_output_tps") is not None else "-"
        conc = str(o.get("optimal_concurrency") or "-")
        lines.append(f"{o['model']:<16} {o['config']:<15} {o['status']:<8} {tps:>14} {conc:>8}  {o.get('reason') or ''}")
    return "\n".join(lines)


def run(ctx: StepContext) -> dict[str, Any]:
    outcomes = cell_outcomes(ctx)
    if ctx.runtime == "local":
        print("NOTE: local runtime - the serving layer was simulated (GuideLLM mock servers); "
              "numbers show the pipeline works, not how llm-d performs.")
    print(format_table(outcomes))
    write_json_atomic(ctx.run_dir / "summary.json", {"run_id": ctx.run_id, "campaign": ctx.campaign.dag_id,
                                                     "runtime": ctx.runtime, "cells": outcomes})
    record_outcomes(ctx, outcomes)
    failed = [f"{o['model']}/{o['config']} ({o['reason']})" for o in outcomes if o["status"] in ("failed", "invalid")]
    if failed:
        raise CellsFailed(f"{len(failed)} cell(s) failed: " + "; ".join(failed))
    return {"cells": len(outcomes), "ok": sum(o["status"] == "ok" for o in outcomes)}
