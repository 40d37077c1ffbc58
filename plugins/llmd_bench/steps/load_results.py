"""load_results: parse and validate the cell's GuideLLM reports and store the per-level results."""

from __future__ import annotations

from typing import Any

from llmd_bench.context import StepContext, write_json_atomic
from llmd_bench.errors import ReportError
from llmd_bench.guidellm_report import parse_report_file
from llmd_bench.steps.sweep import report_path

LEVELS_FILE = "levels.json"


def level_rows(ctx: StepContext) -> list[dict[str, Any]]:
    rows = []
    for trial in range(1, ctx.params.trials + 1):
        path = report_path(ctx, trial)
        if not path.exists():
            raise ReportError(f"cell {ctx.cell}: trial {trial} has no GuideLLM report at {path}")
        report = parse_report_file(path, expected_duration_s=ctx.params.duration_s)
        for lv in report.levels:
            rows.append({
                "trial": trial,
                "concurrency": lv.concurrency,
                "valid": lv.valid,
                "invalid_reason": lv.invalid_reason,
                "requests_successful": lv.requests_successful,
                "requests_errored": lv.requests_errored,
                "requests_incomplete": lv.requests_incomplete,
                "start": lv.start, "end": lv.end, "duration_s": lv.duration_s,
                "metrics": lv.metrics,
                "guidellm_version": report.guidellm_version,
            })
    return rows


def run(ctx: StepContext) -> dict[str, Any]:
    rows = level_rows(ctx)
    write_json_atomic(ctx.cell_dir / LEVELS_FILE, rows)
    invalid = [r for r in rows if not r["valid"]]
    with ctx.update_record() as record:
        record["results"] = {"levels": len(rows), "invalid_levels": len(invalid)}
    for r in invalid:
        print(f"level {r['concurrency']} (trial {r['trial']}) is invalid: {r['invalid_reason']}")
    return {"levels": len(rows), "invalid_levels": len(invalid)}
