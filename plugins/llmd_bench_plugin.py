"""Airflow plugin: each run's comparison report and each campaign's trends over its runs, served by the api-server
and linked from the UI: a "Report" and a "Trends" tab on every DAG run, a "Trends" tab on every DAG, and a
"Benchmark reports" entry in the navigation listing the reports and the campaigns' trends a user may read.

Every page needs Airflow's login and the right to read its DAG's runs, asked of the auth manager the api-server runs
with, as Airflow's own routes ask it; without that right a page answers 403 and lists nothing of the DAG."""

from __future__ import annotations

import html
import json
import mimetypes
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.models.dag import DagModel
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from llmd_bench.integrations import storage
from llmd_bench.model import paths

reports_app = FastAPI(title="llmd-bench reports", docs_url=None, redoc_url=None, openapi_url=None)
trends_app = FastAPI(title="llmd-bench trends", docs_url=None, redoc_url=None, openapi_url=None)


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
    """Airflow's own rule for reading a DAG's runs (the auth manager the api-server is configured with), with the
    DAG's team as Airflow's routes pass it (airflow-core api_fastapi/core_api/security.py requires_access_dag @3.3.2:
    DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))); a report without a known DAG needs the right to
    read runs in general."""
    team = DagModel.get_team_name(dag_id) if dag_id else None
    return get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id, team_name=team), user=user)


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
    campaigns = {r: campaign_of(r) for r in names}
    allowed: dict[str | None, bool] = {}
    for campaign in set(campaigns.values()):
        allowed[campaign] = may_read_runs(user, campaign)
    names = [r for r in names if allowed[campaigns[r]]]
    items = "".join(f'<li><a href="{quote(r)}/report.html">{html.escape(r)}</a></li>' for r in names)
    readable = sorted({c for r, c in campaigns.items() if c and allowed[c]})
    trend_items = "".join(f'<li><a href="../trends/{quote(c)}">{html.escape(c)}</a></li>' for c in readable)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>llmd-bench reports</title></head>"
            f"<body><h1>Benchmark reports</h1>{note}<ul>{items or '<li>No report yet.</li>'}</ul>"
            f"<h2>Trends over runs</h2><ul>{trend_items or '<li>No campaign with a report yet.</li>'}</ul></body></html>")


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


@trends_app.get("/{dag_id}", response_class=HTMLResponse)
def trends_page(dag_id: str, user: GetUserDep, run: str | None = None) -> str:
    """The campaign's trends over its runs up to `run` (its latest run when not given): report/trends.py's section."""
    # the permission first: a user who may not read the DAG's runs learns nothing, not even whether runs exist
    if not may_read_runs(user, dag_id):
        raise HTTPException(status_code=403, detail="Forbidden: reading a campaign's trends needs the right to read "
                                                    "its DAG's runs")
    from llmd_bench.report import trends  # deferred: loads pandas and the report, which the api-server needs only here

    try:
        page = trends.page(dag_id, run)
    except trends.TrendsUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    if page is None:
        raise HTTPException(status_code=404, detail=f"no stored run of campaign {dag_id}"
                                                    + (f" with run id {run}" if run else "") + ": has compare run?")
    return page


class LlmdBenchPlugin(AirflowPlugin):
    name = "llmd_bench"
    fastapi_apps = [{"app": reports_app, "url_prefix": "/llmd-bench/reports", "name": "llmd-bench reports"},
                    {"app": trends_app, "url_prefix": "/llmd-bench/trends", "name": "llmd-bench trends"}]
    # a view's href placeholders {DAG_ID} and {RUN_ID} are filled by the UI for views on a DAG or a run (airflow-core
    # ui/src/pages/Iframe.tsx @3.3.2, in the installed bundle)
    external_views = [
        {"name": "Report", "href": "llmd-bench/reports/{RUN_ID}/report.html", "destination": "dag_run",
         "url_route": "llmd-bench-report"},
        {"name": "Trends", "href": "llmd-bench/trends/{DAG_ID}?run={RUN_ID}", "destination": "dag_run",
         "url_route": "llmd-bench-run-trends"},
        {"name": "Trends", "href": "llmd-bench/trends/{DAG_ID}", "destination": "dag", "url_route": "llmd-bench-trends"},
        {"name": "Benchmark reports", "href": "llmd-bench/reports/", "destination": "nav", "category": "browse"},
    ]
