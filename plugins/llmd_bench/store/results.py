"""From a cell's files to the results store: build run/cell records and load them in one transaction."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llmd_bench.measure.cell_folder import CellRecord
from llmd_bench.measure.guidellm_levels import Report
from llmd_bench.store.rows import RunInfo, StoredRunParams


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cell_status(report: Report) -> tuple[str, str | None]:
    """ok when at least one level is valid; invalid (with the levels' reasons) otherwise."""
    if any(lv.valid for lv in report.levels):
        return "ok", None
    reasons = "; ".join(f"c={lv.concurrency}: {lv.invalid_reason}" for lv in report.levels)
    return "invalid", f"no valid level ({reasons})"


def run_info(campaign: str, dag_run_id: str, runtime: str, versions: dict[str, Any], params: dict[str, Any]) -> RunInfo:
    """The run's row from the versions recorded with it (context.tool_versions' shape)."""
    return RunInfo(campaign=campaign, dag_run_id=dag_run_id, runtime=runtime, llmd_version=versions.get("llmd", "unknown"),
                   vllm_version=versions.get("vllm"),
                   guidellm_version=versions.get("guidellm_report") or versions.get("guidellm"),
                   llmd_bench_version=versions.get("llmd_bench"), images=versions.get("images", {}),
                   params=StoredRunParams.model_validate(params))


def run_info_from_record(record: CellRecord) -> RunInfo:
    """The run's row from a cell's record (the versions and params stored with it, as stored)."""
    return run_info(record.campaign, record.run_id, record.runtime, record.versions.model_dump(exclude_unset=True),
                    record.params.model_dump(exclude_unset=True))
