"""Optional notifications on a failed run and on regressions, by Slack and/or e-mail. Off by default.

They are on when an Airflow connection exists:

- `llmd_notify_slack`: conn type `slackwebhook` (apache-airflow-providers-slack). The webhook URL is the
  connection's password (a full `https://hooks.slack.com/services/T/B/X` URL, or the `T/B/X` token with
  the host, and optionally the schema, in the connection).
- `llmd_notify_email`: conn type `smtp` (apache-airflow-providers-smtp): host, port, login, password;
  extra `{"to": ["a@example.com"], "cc": [...], "from_email": "llmd-bench@example.com"}` plus the
  provider's own extras (`disable_ssl`, `disable_tls`, `timeout`, `retry_limit`).

Two callbacks, wired in airflow_dag.build_dag:

- `on_dag_failure` (the DAG's on_failure_callback): one message per failed run: campaign, run id, logical
  date, the failed task ids, the llm-d version, links to the run and its report, and any regressions
  the run's report found.
- `on_compare_success` (compare's on_success_callback): one message when the run's report found
  regressions beyond noise (against other llm-d versions or the previous run at the same version),
  or when tasks failed although the run did not (a teardown, say).

compare is the run's only leaf, so a failed compare fails the run: the DAG callback covers it and no
compare failure callback is needed (it would send a second message for the same run). The
regressions are read from the results store (`reports.regressions`, written by compare), never from
report files. Sending is best effort: an error is logged as a warning naming the connection and never
fails the run. Nothing here imports Airflow or a provider at module level, so parsing the DAG stays light.
"""

from __future__ import annotations

import html
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from llmd_bench.model.settings import results_store_url

SLACK_CONN_ID = "llmd_notify_slack"
EMAIL_CONN_ID = "llmd_notify_email"
OFF_MESSAGE = f"notifications off (no {SLACK_CONN_ID} / {EMAIL_CONN_ID} connection)"

log = logging.getLogger(__name__)


# -- the callbacks ----------------------------------------------------------------------------------
def on_dag_failure(context: Any) -> None:
    """DAG on_failure_callback: the run failed."""
    _never_raise(_notify_failure, context)


def on_compare_success(context: Any) -> None:
    """compare's on_success_callback: the report is stored; tell about its regressions, if any."""
    _never_raise(_notify_regressions, context)


def _never_raise(fn: Callable[[Any], None], context: Any) -> None:
    try:
        fn(context)
    except Exception as exc:  # noqa: BLE001 - a notification must never fail or hide the run's outcome
        log.warning("notification not sent: %s: %s", type(exc).__name__, exc)


def _notify_failure(context: Any) -> None:
    channels = configured_channels()
    if not channels:
        log.info(OFF_MESSAGE)
        return
    run = RunFacts.from_context(context)
    failed = failed_tasks(context, run)
    regressions, note = read_regressions(run)
    send(failure_message(run, failed, regressions, note), channels)


def _notify_regressions(context: Any) -> None:
    channels = configured_channels()
    if not channels:
        log.info(OFF_MESSAGE)
        return
    run = RunFacts.from_context(context)
    regressions, note = read_regressions(run)
    failed = failed_tasks(context, run) or []
    if not regressions and not failed:
        log.info("run %s: no regression beyond noise and no failed task: nothing to notify%s", run.run_id,
                 f" ({note})" if note else "")
        return
    send(regression_message(run, regressions or [], failed), channels)


# -- what the message says ----------------------------------------------------------------------------
@dataclass
class RunFacts:
    dag_id: str
    run_id: str
    logical_date: str | None = None
    llmd_version: str | None = None
    reason: str | None = None
    base_url: str | None = None

    @classmethod
    def from_context(cls, context: Any) -> RunFacts:
        """From the callback context Airflow passes (a full template context, or only dag/run_id/reason
        when the dag-processor has no task instance to build one from)."""
        get = context.get if hasattr(context, "get") else (lambda k, d=None: getattr(context, k, d))
        dag, dag_run, ti = get("dag"), get("dag_run"), get("ti") or get("task_instance")
        dag_id = (getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None)
                  or "unknown DAG")
        run_id = get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None) or "unknown run"
        logical = get("logical_date") or getattr(dag_run, "logical_date", None)
        return cls(dag_id=str(dag_id), run_id=str(run_id), logical_date=_iso(logical),
                   llmd_version=_llmd_version(get("params"), dag_run, dag), reason=get("reason"), base_url=_base_url())

    @property
    def run_url(self) -> str | None:
        if not self.base_url:
            return None
        return f"{self.base_url}/dags/{quote(self.dag_id, safe='')}/runs/{quote(self.run_id, safe='')}"

    @property
    def report_url(self) -> str:
        """Served by the plugin in plugins/llmd_bench_plugin.py (relative when api.base_url is not set)."""
        path = f"llmd-bench/reports/{quote(self.run_id, safe='')}/report.html"
        return f"{self.base_url}/{path}" if self.base_url else path


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _llmd_version(params: Any, dag_run: Any, dag: Any) -> str | None:
    for source in (params, getattr(dag_run, "conf", None)):
        try:
            if source and source.get("llmd_version"):
                return str(source.get("llmd_version"))
        except Exception:  # noqa: BLE001 - a param that does not resolve: try the next source
            pass
    try:
        return str(dag.params["llmd_version"])
    except Exception:  # noqa: BLE001 - no version in the DAG's params either: the message says unknown
        return None


def _base_url() -> str | None:
    try:
        from airflow.sdk.configuration import conf  # deferred: loads airflow
        url = conf.get("api", "base_url", fallback=None)
    except Exception:  # noqa: BLE001 - no Airflow configuration: no link to the UI
        url = os.environ.get("AIRFLOW__API__BASE_URL")
    return url.rstrip("/") if url else None


@dataclass
class Message:
    subject: str
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join([self.subject, "", *self.lines])

    def html(self) -> str:
        def line(text: str) -> str:
            escaped = html.escape(text)
            for word in text.split():
                if word.startswith(("http://", "https://")):
                    escaped = escaped.replace(html.escape(word), f'<a href="{html.escape(word)}">{html.escape(word)}</a>')
            return escaped
        return (f"<p><b>{html.escape(self.subject)}</b></p>\n<p>"
                + "<br>\n".join(line(t) for t in self.lines) + "</p>\n")


def regression_line(g: dict[str, Any]) -> str:
    change = g.get("change_pct")
    other = f"llm-d {g.get('other')}" if g.get("kind") == "llm-d version" else f"previous run {g.get('other')}"
    peaks = ""
    if g.get("peak_output_tps") is not None and g.get("other_peak_output_tps") is not None:
        peaks = f" ({g['peak_output_tps']:,.1f} vs {g['other_peak_output_tps']:,.1f} tok/s)"
    return (f"- {g.get('model')}/{g.get('config')}, llm-d {g.get('version')} vs {other}: "
            f"{'?' if change is None else f'{change:+.1f}%'}{peaks}: {g.get('judgement', 'REGRESSION')}")


def _facts(run: RunFacts) -> list[str]:
    return [f"Campaign: {run.dag_id}", f"Run: {run.run_id}", f"Logical date: {run.logical_date or 'none'}",
            f"llm-d version: {run.llmd_version or 'unknown'}"]


def _links(run: RunFacts) -> list[str]:
    return ([f"Run in Airflow: {run.run_url}"] if run.run_url else []) + [f"Report: {run.report_url}"]


def failure_message(run: RunFacts, failed: list[str] | None, regressions: list[dict[str, Any]] | None,
                    note: str | None = None) -> Message:
    lines = _facts(run)
    lines.append("Failed tasks: " + (", ".join(failed) if failed else "not known (see the run in Airflow)"))
    if run.reason:
        lines.append(f"Reason: {run.reason}")
    lines += _links(run)
    if regressions:
        lines.append(f"Regressions beyond noise ({len(regressions)}):")
        lines += [regression_line(g) for g in regressions]
    elif regressions is None:
        lines.append(f"Regressions: not known ({note or 'no stored report'})")
    return Message(f"[llmd-bench] {run.dag_id}: run {run.run_id} FAILED", lines)


def regression_message(run: RunFacts, regressions: list[dict[str, Any]], failed: list[str]) -> Message:
    lines = _facts(run)
    if regressions:
        lines.append(f"Regressions beyond noise ({len(regressions)}):")
        lines += [regression_line(g) for g in regressions]
    if failed:
        lines.append("Failed tasks (the run did not fail): " + ", ".join(failed))
    lines += _links(run)
    what = [f"{len(regressions)} regression(s) beyond noise"] if regressions else []
    what += [f"{len(failed)} failed task(s)"] if failed else []
    return Message(f"[llmd-bench] {run.dag_id}: run {run.run_id}: {', '.join(what)}", lines)


# -- where the facts come from -------------------------------------------------------------------------
def failed_tasks(context: Any, run: RunFacts) -> list[str] | None:
    """Ids (group.task) of the run's failed tasks; None when Airflow cannot say. The first source that
    names any wins: the supervisor, the metadata database, then the task whose failure failed the run."""
    for source in (_failed_from_supervisor, _failed_from_database):
        try:
            found = source(run)
        except Exception:  # noqa: BLE001 - no supervisor / no database here (e.g. `airflow dags test`)
            continue
        if found:
            return found
    get = context.get if hasattr(context, "get") else (lambda k, d=None: getattr(context, k, d))
    ti = get("ti") or get("task_instance")
    state = getattr(ti, "state", None)
    if ti is not None and (get("reason") == "task_failure" or str(getattr(state, "value", state)) == "failed"):
        return [ti.task_id]  # the dag-processor's context carries it
    return None


def _failed_from_supervisor(run: RunFacts) -> list[str]:
    # Worker and dag-processor: task code has no metadata-database access, the supervisor answers.
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance  # deferred: loads airflow
    states = RuntimeTaskInstance.get_task_states(dag_id=run.dag_id, run_ids=[run.run_id])
    return sorted(t for t, s in (states.get(run.run_id) or {}).items() if str(s) == "failed")


def _failed_from_database(run: RunFacts) -> list[str]:
    # Airflow's metadata database, through Airflow's own query (airflow/models/dagrun.py @3.3.2 fetch_task_instances)
    from airflow.models.dagrun import DagRun  # deferred: loads airflow
    from airflow.utils.state import TaskInstanceState
    return sorted(ti.task_id for ti in DagRun.fetch_task_instances(dag_id=run.dag_id, run_id=run.run_id,
                                                                   state=TaskInstanceState.FAILED))


def results_url() -> str | None:
    """The results store as the steps see it, else the project's local server when it is running."""
    url = results_store_url(airflow=True)
    if url:
        return url
    # deferred: the DAG file imports this module; the server's code is needed only when a callback runs
    from llmd_bench.store.server import default_server

    try:
        server = default_server()
        return server.url() if server.running() else None  # never start a server from a callback
    except Exception:  # noqa: BLE001 - no local server here: regressions are then read from nowhere
        return None


def read_regressions(run: RunFacts) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The regressions compare stored with the run's report; (None, why) when they cannot be read."""
    url = results_url()
    if not url:
        return None, "no results store configured"
    try:
        from llmd_bench.store import db  # deferred: loads sqlalchemy
        found = db.stored_regressions(run.dag_id, run.run_id, url)
    except Exception as exc:  # noqa: BLE001 - the message goes out without them
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.warning("could not read the run's regressions from the results store: %s", first[0] if first else exc)
        return None, "results store not readable"
    if found is None:
        return None, "the run has no stored report (did compare run?)"
    return found, None


# -- sending ------------------------------------------------------------------------------------------
def configured_channels() -> dict[str, Any]:
    """{conn_id: connection} of the notification connections that exist."""
    try:
        from airflow.sdk import BaseHook  # deferred: loads airflow
        from airflow.sdk.exceptions import AirflowNotFoundException
    except Exception as exc:  # noqa: BLE001 - without Airflow there is nothing to send with
        log.warning("notifications unavailable: %s", exc)
        return {}
    found: dict[str, Any] = {}
    for conn_id in (SLACK_CONN_ID, EMAIL_CONN_ID):
        try:
            found[conn_id] = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
        except Exception as exc:  # noqa: BLE001 - a broken connection must not fail the run's callback
            log.warning("notification connection %s could not be read: %s", conn_id, exc)
    return found


def send(message: Message, channels: dict[str, Any]) -> dict[str, bool]:
    """Send to every configured channel; a failure is a warning naming the connection, never an error."""
    senders = {SLACK_CONN_ID: _send_slack, EMAIL_CONN_ID: _send_email}
    sent = {}
    for conn_id, conn in channels.items():
        try:
            senders[conn_id](conn_id, conn, message)
            log.info("notification sent through %s: %s", conn_id, message.subject)
            sent[conn_id] = True
        except Exception as exc:  # noqa: BLE001 - one channel failing must not stop the other
            log.warning("notification through connection %s failed: %s: %s", conn_id, type(exc).__name__, exc)
            sent[conn_id] = False
    return sent


def _send_slack(conn_id: str, conn: Any, message: Message) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook  # deferred: loads airflow

    text = "\n".join([f"*{message.subject}*", *message.lines])
    SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=15).send(text=text, unfurl_links=False)


def _recipients(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return [v.strip() for v in value or [] if isinstance(v, str) and v.strip()]


def _send_email(conn_id: str, conn: Any, message: Message) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook  # deferred: loads airflow

    extra = conn.extra_dejson or {}
    to = _recipients(extra.get("to"))
    if not to:
        raise ValueError(f'no recipients: set "to" in the extra of connection {conn_id}')
    sender = extra.get("from_email") or (conn.login if conn.login and "@" in conn.login else None) \
        or f"llmd-bench@{socket.getfqdn()}"
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=to, cc=_recipients(extra.get("cc")) or None, subject=message.subject,
                             html_content=message.html(), from_email=sender)
