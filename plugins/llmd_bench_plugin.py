"""Airflow plugin: each run's comparison report, served by the api-server and linked from the UI
(a "Report" tab on every DAG run, and a "Benchmark reports" entry in the navigation)."""

from __future__ import annotations

import html
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from llmd_bench import paths

reports_app = FastAPI(title="llmd-bench reports", docs_url=None, redoc_url=None, openapi_url=None)


@reports_app.get("/", response_class=HTMLResponse)
def index() -> str:
    root = paths.reports_root()
    runs = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), key=lambda p: p.stat().st_mtime,
                  reverse=True) if root.exists() else []
    items = "".join(f'<li><a href="{quote(r.name)}/report.html">{html.escape(r.name)}</a></li>' for r in runs)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>llmd-bench reports</title></head>"
            f"<body><h1>Benchmark reports</h1><ul>{items or '<li>No report yet.</li>'}</ul></body></html>")


@reports_app.get("/{run_id}/{name}")
def report_file(run_id: str, name: str) -> FileResponse:
    root = paths.reports_root().resolve()
    path = (root / paths.safe_component(run_id) / name).resolve()
    if root not in path.parents or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no {name} for run {run_id}: has its compare task run?")
    return FileResponse(path)


class LlmdBenchPlugin(AirflowPlugin):
    name = "llmd_bench"
    fastapi_apps = [{"app": reports_app, "url_prefix": "/llmd-bench/reports", "name": "llmd-bench reports"}]
    external_views = [
        {"name": "Report", "href": "llmd-bench/reports/{RUN_ID}/report.html", "destination": "dag_run",
         "url_route": "llmd-bench-report"},
        {"name": "Benchmark reports", "href": "llmd-bench/reports/", "destination": "nav", "category": "browse"},
    ]
