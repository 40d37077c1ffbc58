"""Airflow plugin: each run's comparison report, served by the api-server and linked from the UI
(a "Report" tab on every DAG run, and a "Benchmark reports" entry in the navigation)."""

from __future__ import annotations

import html
import json
import mimetypes
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from llmd_bench.integrations import storage
from llmd_bench.model import paths

reports_app = FastAPI(title="llmd-bench reports", docs_url=None, redoc_url=None, openapi_url=None)


def campaign_of(run_id: str) -> str | None:
    """The DAG a report belongs to, from its report.json (locally, else in the object store)."""
    try:
        meta = (paths.reports_root() / paths.safe_component(run_id) / paths.REPORT_META).read_bytes()
    except (OSError, ValueError):
        try:
            meta = storage.read_report_file(run_id, paths.REPORT_META) or b"{}"
        except storage.StorageError:
            meta = b"{}"
    try:
        campaign = json.loads(meta).get("campaign")
    except (ValueError, AttributeError):
        return None
    return campaign if isinstance(campaign, str) else None


def may_read_runs(user, dag_id: str | None) -> bool:
    """Airflow's own rule for reading a DAG's runs (the auth manager the api-server is configured with);
    a report without a known DAG needs the right to read runs in general."""
    return get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id), user=user)


@reports_app.get("/", response_class=HTMLResponse)
def index(user: GetUserDep) -> str:
    root = paths.reports_root()
    local = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), key=lambda p: p.stat().st_mtime,
                   reverse=True) if root.exists() else []
    # Reports made in pods live in the object store; list them after the local ones.
    try:
        remote = storage.report_runs()
    except storage.StorageError as exc:
        remote, note = [], f"<p>Reports in object storage are not listed: {html.escape(str(exc))}</p>"
    else:
        note = ""
    names = [p.name for p in local] + [r for r in remote if r not in {p.name for p in local}]
    names = [r for r in names if may_read_runs(user, campaign_of(r))]
    items = "".join(f'<li><a href="{quote(r)}/report.html">{html.escape(r)}</a></li>' for r in names)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>llmd-bench reports</title></head>"
            f"<body><h1>Benchmark reports</h1>{note}<ul>{items or '<li>No report yet.</li>'}</ul></body></html>")


@reports_app.get("/{run_id}/{name}")
def report_file(run_id: str, name: str, user: GetUserDep) -> Response:
    if not may_read_runs(user, campaign_of(run_id)):
        raise HTTPException(status_code=403, detail="Forbidden: reading this report needs the right to read its DAG's runs")
    root = paths.reports_root().resolve()
    path = (root / paths.safe_component(run_id) / name).resolve()
    if root in path.parents and path.is_file():
        return FileResponse(path)
    if "/" not in name and not name.startswith("."):
        try:
            data = storage.read_report_file(run_id, name)
        except storage.StorageError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        if data is not None:
            return Response(content=data, media_type=mimetypes.guess_type(name)[0] or "application/octet-stream")
    raise HTTPException(status_code=404, detail=f"no {name} for run {run_id}: has its compare task run?")


class LlmdBenchPlugin(AirflowPlugin):
    name = "llmd_bench"
    fastapi_apps = [{"app": reports_app, "url_prefix": "/llmd-bench/reports", "name": "llmd-bench reports"}]
    external_views = [
        {"name": "Report", "href": "llmd-bench/reports/{RUN_ID}/report.html", "destination": "dag_run",
         "url_route": "llmd-bench-report"},
        {"name": "Benchmark reports", "href": "llmd-bench/reports/", "destination": "nav", "category": "browse"},
    ]
