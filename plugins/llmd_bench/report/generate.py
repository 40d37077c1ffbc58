"""A stored run's report: built from the results store into a folder (and stored with the run when asked)."""

from __future__ import annotations

import json
from pathlib import Path

from llmd_bench.report.analysis import Report, build
from llmd_bench.report.data import from_store
from llmd_bench.report.write import write
from llmd_bench.store import db


def generate_report(run_id: str, out: Path, campaign: str | None = None, store: bool = False) -> Report:
    """Build the report of a stored run into `out` (and into the store when asked)."""
    data = db.with_engine(lambda engine: from_store(engine, run_id, campaign), "reading the run")
    report = build(data)
    write(report, out)
    if store:
        md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
        table = report.peaks.drop(columns=["full_model", "observability"], errors="ignore")
        records = json.loads(table.to_json(orient="records"))
        # The regressions go into the store with the report: Airflow's notifications read them from there.
        regressions = report.regressions
        db.in_transaction(lambda writer: writer.store_report(data.campaign, data.run_id, md, page, records, regressions),
                          "storing the report")
        if regressions:
            print(f"{len(regressions)} regression(s) beyond noise: " + "; ".join(
                f"{g['model']}/{g['config']} {g['change_pct'] or 0:+.1f}% vs {g['kind']} {g['other']}" for g in regressions))
    return report
