"""Writing a report's folder: every output is rendered in memory first (the registered formats of render/, the
CSVs, the plots and report.json), then each file is written atomically (a temporary file renamed over the old
one), so a reader never sees half a file and a format that fails leaves the folder as it was.

The folder: report.md, report.html (and any other registered format's file), the PNG plots, report.json
(paths.REPORT_META: the campaign, run id and runtime; the UI plugin authorises readers by the campaign),
all_peak_metrics.csv, performance_comparisons.csv, <model>_<config>_metrics.csv per cell, and cross_version.csv
and previous_run.csv when the run has them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from llmd_bench.model import paths
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.report import csv, render, sections
from llmd_bench.report.analysis import Report
from llmd_bench.report.plots import plots


def outputs(report: Report, images: dict[str, bytes] | None = None) -> dict[str, str | bytes]:
    """File name -> content of every file of the report's folder."""

    images = plots(report) if images is None else images
    document = sections.document(report, images)
    files: dict[str, str | bytes] = dict(images)
    for fmt in render.formats():
        try:
            files[fmt.filename] = fmt.render(document, report)
        except Exception as exc:  # any format's failure is named and fails the report
            raise LlmdBenchError(f"report output format {fmt.name!r} ({fmt.filename}) failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    # which campaign (DAG) the report belongs to: the UI plugin authorises readers by it
    files[paths.REPORT_META] = json.dumps({"campaign": report.data.campaign, "run_id": report.data.run_id,
                                           "runtime": report.data.runtime}, indent=1)
    files.update(csv.csv_files(report))
    return files


def write_atomic(path: Path, content: str | bytes) -> None:
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(report: Report, out: Path) -> dict[str, Path]:
    """Write every output into `out` (replacing files of the same name) and return their paths."""
    files = outputs(report)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomic(out / name, content)
    return {name: out / name for name in files}


def point_latest(reports_root: Path, run_dir: Path) -> None:
    link = reports_root / "latest"
    tmp = reports_root / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)
