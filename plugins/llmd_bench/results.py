"""From a cell's files to the results store: build run/cell records and load them in one transaction."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llmd_bench.guidellm_report import Report


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


def run_info_from_record(record: dict[str, Any]):  # noqa: ANN201
    from llmd_bench.db.store import RunInfo

    v = record.get("versions", {})
    return RunInfo(campaign=record["campaign"], dag_run_id=record["run_id"], runtime=record.get("runtime", "local"),
                   llmd_version=v.get("llmd", "unknown"), vllm_version=v.get("vllm"),
                   guidellm_version=v.get("guidellm_report") or v.get("guidellm"), llmd_bench_version=v.get("llmd_bench"),
                   images=v.get("images", {}), params=record.get("params", {}))
