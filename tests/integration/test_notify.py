"""Notifications: a real SMTP server and a local stand-in for a Slack webhook receive what the callbacks
send; off without connections; a send error is a warning; regressions against the previous run of the
same llm-d version are found, persisted with the report, and sent.

The callbacks are run the way Airflow runs them: the DAG's failure callback through the dag-processor's
own dispatch (`_execute_dag_callbacks`, with the supervisor answering the task-state query), compare's
success callback through the task runner's dispatch with a task instance's template context.
"""

from __future__ import annotations

import email
import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.integrations import notify
from llmd_bench.integrations.importer import import_reports
from llmd_bench.measure.processes import free_port
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.store import db

DAG_ID = "llmd_tiny"
RUN_ID = "scheduled__2026-11-29T00:00:00+00:00"
LOGICAL = datetime(2026, 11, 29, tzinfo=UTC)
FAILED = ["Qwen3-0_6B__llm-d-redis.sweep", "compare"]


# -- receivers ---------------------------------------------------------------------------------------
class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


def _body(msg: email.message.Message) -> str:
    return "\n".join(part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
                     for part in msg.walk() if part.get_content_maintype() == "text")


@pytest.fixture
def smtp_server(monkeypatch):
    from aiosmtpd.controller import Controller

    box = _Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_LLMD_NOTIFY_EMAIL", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"to": ["bench@example.com", "oncall@example.com"], "from_email": "llmd-bench@example.com",
                  "disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0}}))
    yield box
    controller.stop()


@pytest.fixture
def slack_server(monkeypatch):
    posts: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    # The hook builds <schema>://<host>/<password>: the password is the webhook's T/B/X token.
    monkeypatch.setenv("AIRFLOW_CONN_LLMD_NOTIFY_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": f"127.0.0.1:{server.server_port}", "schema": "http",
        "password": "T0000/B0000/XXXXXXXX"}))
    yield posts
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_notification_connections(monkeypatch):
    for name in ("AIRFLOW_CONN_LLMD_NOTIFY_EMAIL", "AIRFLOW_CONN_LLMD_NOTIFY_SLACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")


# -- Airflow's side ----------------------------------------------------------------------------------
@pytest.fixture
def dag(campaigns_dir):
    from llmd_bench.orchestration.airflow_dag import build_dag
    return build_dag(load_campaign(write_campaign(campaigns_dir, tiny_campaign())), runtime="local")


class _Supervisor:
    """Answers what the dag-processor's / worker's supervisor answers: task states of the run; no
    connection from the metadata database (they come from the environment here)."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.asked: list = []

    def send(self, msg):
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import ErrorResponse, GetConnection, GetTaskStates, TaskStatesResult

        self.asked.append(msg)
        if isinstance(msg, GetTaskStates):
            assert msg.dag_id == DAG_ID
            return TaskStatesResult(task_states={run_id: self.states for run_id in msg.run_ids})
        if isinstance(msg, GetConnection):
            return ErrorResponse(error=ErrorType.CONNECTION_NOT_FOUND, detail={"conn_id": msg.conn_id})
        raise AssertionError(f"unexpected request {msg!r}")


@pytest.fixture
def supervisor(monkeypatch, dag):
    from airflow.sdk.execution_time import task_runner

    states = {t: "success" for t in dag.task_ids} | dict.fromkeys(FAILED, "failed")
    states["Qwen3-0_6B__llm-d-redis.collect_pcp"] = "upstream_failed"
    sup = _Supervisor(states)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", sup, raising=False)
    return sup


def _dag_run(state: str = "failed", run_id: str = RUN_ID):
    from airflow.api_fastapi.execution_api.datamodels.taskinstance import DagRun
    return DagRun(dag_id=DAG_ID, run_id=run_id, logical_date=LOGICAL, data_interval_start=LOGICAL,
                  data_interval_end=LOGICAL, run_after=LOGICAL, start_date=LOGICAL, end_date=LOGICAL,
                  run_type="scheduled", state=state, conf={"llmd_version": "v0.4.0"}, consumed_asset_events=[],
                  partition_key=None)


def _ti(task_id: str, run_id: str = RUN_ID):
    from airflow.api_fastapi.execution_api.datamodels.taskinstance import TaskInstance
    return TaskInstance(id=uuid.uuid4(), task_id=task_id, dag_id=DAG_ID, run_id=run_id, try_number=1,
                        dag_version_id=uuid.uuid4())


def run_dag_failure_callback(dag, last_task: str | None = "compare") -> None:
    """What the dag-processor does with the scheduler's DagCallbackRequest for a failed run."""
    import structlog
    from airflow.callbacks.callback_requests import DagCallbackRequest, DagRunContext
    from airflow.dag_processing.processor import _execute_dag_callbacks

    request = DagCallbackRequest(filepath="tiny.py", bundle_name="dags-folder", bundle_version=None, dag_id=DAG_ID,
                                 run_id=RUN_ID, is_failure_callback=True, msg="task_failure",
                                 context_from_server=DagRunContext(dag_run=_dag_run(),
                                                                   last_ti=_ti(last_task) if last_task else None))
    _execute_dag_callbacks(SimpleNamespace(dags={DAG_ID: dag}), request, structlog.get_logger())


def run_compare_success_callback(dag, run_id: str) -> None:
    """What the task runner does after compare succeeded: its on_success_callback with its context."""
    import structlog
    from airflow.sdk.api.datamodels._generated import TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, _run_task_state_change_callbacks

    task = dag.get_task("compare")
    ti = RuntimeTaskInstance.model_construct(
        **_ti("compare", run_id).model_dump(exclude_unset=True), task=task, state="success",
        _ti_context_from_server=TIRunContext.model_construct(dag_run=_dag_run("running", run_id), max_tries=0))
    _run_task_state_change_callbacks(task, "on_success_callback", ti.get_template_context(), structlog.get_logger())


# -- the results store -------------------------------------------------------------------------------
@pytest.fixture
def store(db_url, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    engine = db.make_engine(db_url)
    db.migrate(engine)
    engine.dispose()
    return db_url


def _scaled(real_report, tmp_path, factor: float, name: str):
    doc = json.loads(real_report.read_text())
    for b in doc["benchmarks"]:
        b["metrics"]["output_tokens_per_second"]["successful"]["mean"] *= factor
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def seed_two_weeks(url, real_report, tmp_path, factor: float) -> None:
    """Two weekly runs of the campaign at llm-d v0.4.0; in the second, llm-d-redis's throughput x factor."""
    later = _scaled(real_report, tmp_path, factor, f"week2-{factor}.json")
    for run_id, redis_report in (("week-1", real_report), (RUN_ID, later)):
        import_reports([real_report], "Qwen/Qwen3-0.6B", "no-offload", "v0.4.0", run_id=run_id, campaign=DAG_ID, url=url)
        import_reports([redis_report], "Qwen/Qwen3-0.6B", "llm-d-redis", "v0.4.0", run_id=run_id, campaign=DAG_ID,
                       url=url)


def _stored_regressions(url, run_id=RUN_ID):
    return db.stored_regressions(DAG_ID, run_id, url)


# -- tests -------------------------------------------------------------------------------------------
def test_failure_e_mail_names_the_dag_run_and_failed_tasks(dag, smtp_server, supervisor, store, caplog):
    caplog.set_level(logging.INFO, logger="llmd_bench.integrations.notify")
    run_dag_failure_callback(dag)
    assert len(smtp_server.messages) == 1
    msg = smtp_server.messages[0]
    assert sorted(smtp_server.envelopes[0].rcpt_tos) == ["bench@example.com", "oncall@example.com"]
    assert smtp_server.envelopes[0].mail_from == "llmd-bench@example.com"
    assert DAG_ID in msg["Subject"] and RUN_ID in msg["Subject"] and "FAILED" in msg["Subject"]
    body = _body(msg)
    for needle in (f"Campaign: {DAG_ID}", f"Run: {RUN_ID}", "Logical date: 2026-11-29T00:00:00+00:00",
                   "llm-d version: v0.4.0", "Failed tasks: Qwen3-0_6B__llm-d-redis.sweep, compare",
                   "http://airflow.example:8080/dags/llmd_tiny/runs/scheduled__2026-11-29T00%3A00%3A00%2B00%3A00",
                   "http://airflow.example:8080/llmd-bench/reports/scheduled__2026-11-29T00%3A00%3A00%2B00%3A00/report.html",
                   "Regressions: not known (the run has no stored report"):
        assert needle in body, needle
    assert "collect_pcp" not in body  # upstream_failed is a consequence, not a failure to name
    assert any(type(m).__name__ == "GetTaskStates" for m in supervisor.asked)
    assert "notification sent through llmd_notify_email" in caplog.text


def test_failure_without_a_supervisor_names_the_task_that_failed_the_run(dag, smtp_server, store, monkeypatch):
    from airflow.sdk.execution_time import task_runner
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", None, raising=False)
    run_dag_failure_callback(dag, last_task="Qwen3-0_6B__llm-d-redis.sweep")
    body = _body(smtp_server.messages[0])
    assert "Failed tasks: Qwen3-0_6B__llm-d-redis.sweep" in body


def test_off_by_default_nothing_sent_no_error(dag, supervisor, store, caplog, monkeypatch):
    sent = []
    monkeypatch.setattr(notify, "send", lambda *a, **k: sent.append(a))
    caplog.set_level(logging.INFO, logger="llmd_bench.integrations.notify")
    run_dag_failure_callback(dag)
    run_compare_success_callback(dag, RUN_ID)
    assert sent == []
    assert caplog.text.count(notify.OFF_MESSAGE) == 2  # once per callback
    assert "Callback failed" not in caplog.text and "Failed to run task callback" not in caplog.text


def test_a_send_error_is_a_warning_naming_the_connection(dag, supervisor, store, caplog, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_LLMD_NOTIFY_EMAIL", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"to": "bench@example.com", "disable_ssl": True, "disable_tls": True, "timeout": 2}}))
    caplog.set_level(logging.INFO)
    run_dag_failure_callback(dag)  # does not raise
    notify.on_dag_failure({"dag": dag, "run_id": RUN_ID, "reason": "task_failure"})  # nor called directly
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "llmd_notify_email" in r.getMessage()]
    assert len(warnings) == 2
    assert "ConnectionRefusedError" in warnings[0].getMessage()
    assert "Callback failed" not in caplog.text


def test_a_run_with_another_workload_is_not_the_previous_run(store, real_report, tmp_path):
    from sqlalchemy import text

    from llmd_bench.report.generate import generate_report

    seed_two_weeks(store, real_report, tmp_path, 0.7)
    engine = db.make_engine(store)
    with engine.begin() as conn:
        conn.execute(text("""UPDATE runs SET params = params || '{"concurrency": [1, 2]}' WHERE dag_run_id = 'week-1'"""))
    engine.dispose()
    report = generate_report(RUN_ID, tmp_path / "r", campaign=DAG_ID, store=True)
    assert report.previous_run is None and _stored_regressions(store) == []


def test_regressions_go_to_slack_in_one_message(dag, store, real_report, tmp_path, slack_server, supervisor):
    from llmd_bench.report.generate import generate_report

    seed_two_weeks(store, real_report, tmp_path, 0.7)
    generate_report(RUN_ID, tmp_path / "r", campaign=DAG_ID, store=True)
    supervisor.states = {t: "success" for t in dag.task_ids}  # the run went well, but slower
    run_compare_success_callback(dag, RUN_ID)
    assert len(slack_server) == 1
    path, body = slack_server[0]
    assert path == "/T0000/B0000/XXXXXXXX"
    text = body["text"]
    assert f"{DAG_ID}: run {RUN_ID}: 1 regression(s) beyond noise" in text
    assert "- Qwen3-0.6B/llm-d-redis, llm-d v0.4.0 vs previous run week-1: -30.0%" in text and "REGRESSION" in text
    assert "no-offload" not in text and "Failed tasks" not in text
    assert "/llmd-bench/reports/" in text


def test_no_regression_and_no_failure_sends_nothing(dag, store, real_report, tmp_path, slack_server, supervisor):
    from llmd_bench.report.generate import generate_report

    seed_two_weeks(store, real_report, tmp_path, 1.0)
    generate_report(RUN_ID, tmp_path / "r", campaign=DAG_ID, store=True)
    supervisor.states = {t: "success" for t in dag.task_ids}
    run_compare_success_callback(dag, RUN_ID)
    assert slack_server == []


def test_a_failed_run_lists_its_regressions_in_its_one_message(dag, store, real_report, tmp_path, slack_server,
                                                                smtp_server, supervisor):
    from llmd_bench.report.generate import generate_report

    seed_two_weeks(store, real_report, tmp_path, 0.7)
    generate_report(RUN_ID, tmp_path / "r", campaign=DAG_ID, store=True)
    run_dag_failure_callback(dag)
    assert len(slack_server) == 1 and len(smtp_server.messages) == 1
    for text in (slack_server[0][1]["text"], _body(smtp_server.messages[0])):
        assert "Failed tasks: Qwen3-0_6B__llm-d-redis.sweep, compare" in text
        assert "Regressions beyond noise (1):" in text and "vs previous run week-1: -30.0%" in text


def test_notify_imports_without_airflow():
    import subprocess
    import sys
    code = ("import sys; import llmd_bench.integrations.notify; "
            "assert not any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith('airflow')][:5]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


