"""Optional: log a stored run to an MLflow tracking server, where many teams already track experiments.

On when a tracking URI is configured, off (nothing logged, no error) otherwise. The URI comes from:

- `LLMD_BENCH_MLFLOW_URI` (the steps' override; an empty value turns logging off), else
- the Airflow connection `llmd_mlflow`, e.g. `airflow connections add llmd_mlflow --conn-uri https://mlflow.example:5000`
  (conn type http or https: scheme, host, port and schema as the path). Its login/password become MLflow's
  basic auth (MLFLOW_TRACKING_USERNAME/PASSWORD), an extra `{"token": "..."}` its bearer token and
  `{"insecure": true}` skips TLS verification. The environment form `AIRFLOW_CONN_LLMD_MLFLOW` is read
  without importing Airflow; Airflow itself is asked only by `llmd-bench mlflow-log` and in processes Airflow
  started (AIRFLOW_CTX_DAG_ID: compare run by the local runtime's operator), first through the task SDK,
  then, outside a kubernetes step pod, the metadata database (a local step is a process of its own, outside
  the task). A kubernetes step pod sees only its environment.

What a run becomes (read from the results store, never from result files):

- experiment `<hardware>/<llm-d version>`. hardware: the run param `hardware` when a campaign sets one; on
  the local runtime `local-simulated` (the serving layer is simulated); on kubernetes the GPU model when a
  cell records one (versions or observability: `gpu_model`, `gpu_product`, `accelerator`, `hardware`),
  else `kubernetes`; imported runs `imported`.
- one parent run per campaign run (`<campaign>/<dag run id>`): the run's tags, params shared by its cells, the
  counts of cells by status, and the report (every file of reports/<dag run id>/, else the stored
  report.md and report.html) as artifacts under `report/`. The report is on the parent only: one copy per
  campaign run instead of one per level.
- one child run per cell x trial x level, named `<model>/<config>[factors]/c<concurrency>/t<trial>`:
  params model, config, factors, concurrency, trial, replicas, tensor parallel size and the workload
  (tokens, duration, seed, method); metrics GuideLLM's successful-request statistics as stored
  (`output_tps_mean` ... `request_latency_s_p99`, their `_std`, request counts, duration); tags the versions
  (llm-d, vLLM, GuideLLM, llmd-bench, images), campaign, dag run id, runtime, hardware, factors
  (`factor.<name>`), simulated, valid and invalid_reason/suspect_reason, the cell's status.

Idempotent: every MLflow run carries a stable key tag (`llmd_bench.key`, with its hash `llmd_bench.key_id`)
and its campaign run's hash (`llmd_bench.run_key_id`). Logging looks them up first (one search per campaign
run) and updates the runs it finds instead of creating new ones: the same tags are set again, params
already logged are kept (MLflow forbids changing them; a changed one is reported), a metric is logged
again only when its value changed, artifacts are overwritten. So re-running compare, or `llmd-bench
mlflow-log`, leaves one MLflow run per cell x trial x level.

Plain Python: neither Airflow nor MLflow is imported at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from llmd_bench.measure.guidellm_levels import METRICS as GUIDELLM_METRICS
from llmd_bench.model import paths
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import cluster_runtime
from llmd_bench.model.settings import settings
from llmd_bench.store.rows import CELL_STATUSES, LEVEL_METRICS, LEVEL_STATS, CellRow, LevelRow, RunRow, StoredRun, metric_column

CONN_ID = "llmd_mlflow"
URI_ENV = "LLMD_BENCH_MLFLOW_URI"
KEY_TAG = "llmd_bench.key"
KEY_ID_TAG = "llmd_bench.key_id"
RUN_KEY_ID_TAG = "llmd_bench.run_key_id"
KIND_TAG = "llmd_bench.kind"
PARENT_TAG = "mlflow.parentRunId"
REPORT_ARTIFACT_PATH = "report"
# The run's params every level shares, logged on each (the workload and method of params.RunParams, the warm-up);
# the per-cell ones (concurrency, replicas, tensor parallel size) are logged with the cell's own values.
SHARED_PARAMS = ("duration_s", "prompt_tokens", "output_tokens", "prefix_tokens", "prefix_count", "turns", "seed",
                   "max_requests", "warmup_requests", "runs", "level_isolation", "trial_isolation", "trials", "sweep",
                   "baseline", "noise_floor_pct")
COUNT_METRICS = ("requests_successful", "requests_errored", "requests_incomplete", "duration_s")
# level_results columns, and the standard deviations read from the stored GuideLLM summary
METRIC_COLUMNS = tuple(metric_column(m, s) for m in LEVEL_METRICS for s in LEVEL_STATS) + ("output_tps_std",) + COUNT_METRICS
STD_FROM_SUMMARY = {short: name for name, short in GUIDELLM_METRICS.items() if short != "output_tps"}
GPU_KEYS = ("gpu_model", "gpu_product", "accelerator", "hardware")
# MLflow's limits (3.x allows more; these fit older servers too)
PARAM_MAX, TAG_MAX = 500, 5000
# A server that is down must not hold compare for MLflow's default of 7 retries (minutes): the user's
# own MLFLOW_HTTP_REQUEST_* settings win.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}

log = logging.getLogger(__name__)


class MlflowLogError(LlmdBenchError):
    pass


# -- where to log ---------------------------------------------------------------------------------------
@dataclass
class Target:
    uri: str
    env: dict[str, str] = field(default_factory=dict)  # MLFLOW_TRACKING_* credentials for the client

    @property
    def redacted(self) -> str:
        return redact(self.uri)

    @classmethod
    def from_uri(cls, uri: str) -> Target:
        """user:password@ in the URI becomes MLflow's basic auth, so that it is never in a message."""
        parts = urlsplit(uri.strip())
        if not (parts.username or parts.password):
            return cls(uri.strip())
        env = {"MLFLOW_TRACKING_USERNAME": unquote(parts.username or "")}
        if parts.password:
            env["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
        return cls(redact(uri.strip()), env)


def redact(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return uri


def tracking_target(airflow: bool | None = None) -> Target | None:
    """The configured tracking server (see the module doc), or None: logging is off.

    airflow: also ask Airflow for the connection `llmd_mlflow` (its secrets backends, then, outside a step pod,
    its metadata database). Default: only in a process Airflow started (a task, or a step the local runtime's
    operator started, which inherit AIRFLOW_CTX_DAG_ID), so that a step run by hand or by the tests does not
    pay for importing Airflow just to find logging off."""
    env = settings().mlflow_uri
    if env is not None:
        return Target.from_uri(env) if env.strip() else None
    raw = settings().airflow_conn_llmd_mlflow
    if raw:
        return _target_from_env_connection(raw)
    if airflow is None:
        airflow = bool(os.environ.get("AIRFLOW_CTX_DAG_ID"))
    conn = _airflow_connection() if airflow else None
    if conn is None:
        return None
    return target_from_connection(conn.conn_type, conn.host, conn.port, conn.schema, conn.login, conn.password,
                                  conn.extra_dejson or {})


def _airflow_connection() -> Any:
    try:
        from airflow.sdk import BaseHook  # deferred: loads airflow
    except Exception:  # noqa: BLE001 - without Airflow only the environment configures MLflow
        return None
    try:
        return BaseHook.get_connection(CONN_ID)  # a task: its supervisor; elsewhere the environment and secrets backends
    except Exception as exc:  # noqa: BLE001 - not defined there, or no supervisor to ask: try the metadata database
        log.debug("connection %s not found by the task SDK: %s", CONN_ID, exc)
    if cluster_runtime(settings().runtime):
        return None  # a step pod has no metadata database: it gets LLMD_BENCH_MLFLOW_URI or nothing
    try:
        # a step the local runtime runs is a process of its own, outside the task: it reads the metadata database
        from airflow.models.connection import Connection  # deferred: loads airflow
        return Connection.get_connection_from_secrets(CONN_ID)
    except Exception as exc:  # noqa: BLE001 - not defined (or no metadata database): logging is off
        log.debug("connection %s not defined: %s", CONN_ID, exc)
        return None


def tracking_uri() -> str | None:
    """The tracking URI logging goes to, or None when MLflow logging is off."""
    target = tracking_target()
    return target.uri if target else None


def _target_from_env_connection(raw: str) -> Target | None:
    raw = raw.strip()
    if raw.startswith("{"):
        c = json.loads(raw)
        extra = c.get("extra") or {}
        return target_from_connection(c.get("conn_type"), c.get("host"), c.get("port"), c.get("schema"), c.get("login"),
                                      c.get("password"), json.loads(extra) if isinstance(extra, str) else extra)
    parts = urlsplit(raw)
    extra = dict(parse_qsl(parts.query))
    return target_from_connection(parts.scheme, parts.hostname, parts.port, unquote(parts.path.lstrip("/")) or None,
                                  unquote(parts.username) if parts.username else None,
                                  unquote(parts.password) if parts.password else None, extra)


def target_from_connection(conn_type: str | None, host: str | None, port: int | None, schema: str | None,
                           login: str | None, password: str | None, extra: dict[str, Any]) -> Target | None:
    """An Airflow connection as an MLflow tracking URI: http(s)://host[:port][/schema]; a host that is a full
    URL is taken as it is. The credentials go to MLflow's own environment variables."""
    if not host:
        return None
    if "://" in host:
        return Target.from_uri(host.rstrip("/"))
    else:
        scheme = extra.get("scheme") or (conn_type if conn_type in ("http", "https") else "http")
        uri = f"{scheme}://{host}" + (f":{port}" if port else "") + (f"/{schema.strip('/')}" if schema else "")
    env = {}
    if login:
        env["MLFLOW_TRACKING_USERNAME"] = login
    if password:
        env["MLFLOW_TRACKING_PASSWORD"] = password
    if extra.get("token"):
        env["MLFLOW_TRACKING_TOKEN"] = str(extra["token"])
    if str(extra.get("insecure", "")).lower() in ("true", "1", "yes"):
        env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
    return Target(uri, env)


@contextlib.contextmanager
def _client_env(target: Target) -> Iterator[None]:
    """The client's settings for the duration of the logging: credentials, and bounded retries unless set."""
    values = {k: v for k, v in CLIENT_DEFAULTS.items() if k not in os.environ} | target.env
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- what is logged ---------------------------------------------------------------------------------------
def hardware(stored: StoredRun) -> str:
    """The experiment's hardware part (see the module doc)."""
    run = stored.run
    if run.params.hardware:
        return run.params.hardware
    if run.simulated:
        return f"{run.runtime}-simulated"
    for entry in stored.cells:
        cell = entry.cell
        for source in (cell.versions, cell.observability, cell.observability.get("pcp") or {}):
            for key in GPU_KEYS:
                if isinstance(source, dict) and isinstance(source.get(key), str) and source[key].strip():
                    return source[key].strip()
    return run.runtime or "unknown"


def experiment_name(stored: StoredRun) -> str:
    return f"{hardware(stored)}/{stored.run.llmd_version}"


def factors_text(factors: dict[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (factors or {}).items())


def run_key(campaign: str, dag_run_id: str) -> str:
    return f"{campaign}/{dag_run_id}"


def level_key(run: RunRow, cell: CellRow, concurrency: int) -> str:
    """Stable for a cell x trial x level: the store's own unique key of the cell, then the level."""
    return "/".join([run_key(run.campaign, run.dag_run_id), cell.model, cell.config,
                     cell.stack_factors or "-", cell.config_factors or "-", f"t{cell.trial}", f"c{concurrency}"])


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def cell_label(cell: CellRow) -> str:
    factors = factors_text(cell.factors)
    return f"{cell.short_model}/{cell.config}" + (f"[{factors}]" if factors else "")


def level_run_name(cell: CellRow, concurrency: int) -> str:
    return f"{cell_label(cell)}/c{concurrency}/t{cell.trial}"


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_tags(stored: StoredRun, campaign_run_id: str) -> dict[str, str]:
    run = stored.run
    tags = {"llmd_bench.campaign": run.campaign, "llmd_bench.dag_run_id": run.dag_run_id,
            "llmd_bench.runtime": run.runtime, "hardware": hardware(stored),
            "simulated": "true" if run.simulated else "false",
            "llmd_version": run.llmd_version, "vllm_version": run.vllm_version,
            "guidellm_version": run.guidellm_version, "llmd_bench_version": run.llmd_bench_version,
            "llmd_bench.run_status": run.status, RUN_KEY_ID_TAG: campaign_run_id}
    tags |= {f"image.{k}": v for k, v in run.images.items()}
    return {k: _text(v, TAG_MAX) for k, v in tags.items() if v is not None}


def workload_params(stored: StoredRun) -> dict[str, str]:
    params = stored.run.params.as_stored()
    return {k: _text(params[k], PARAM_MAX) for k in SHARED_PARAMS if k in params}


def level_params(stored: StoredRun, cell: CellRow, level: LevelRow) -> dict[str, str]:
    values = {"model": cell.model, "short_model": cell.short_model, "config": cell.config,
              "factors": factors_text(cell.factors) or "none", "concurrency": level.concurrency,
              "trial": cell.trial, "replicas": cell.replicas, "tensor_parallel_size": cell.tensor_parallel_size}
    return workload_params(stored) | {k: _text(v, PARAM_MAX) for k, v in values.items() if v is not None}


def level_metrics(level: LevelRow) -> dict[str, float]:
    metrics = {c: getattr(level, c) for c in METRIC_COLUMNS if getattr(level, c) is not None}
    summary = (level.summary or {}).get("metrics") or {}
    for short, name in STD_FROM_SUMMARY.items():
        std = ((summary.get(name) or {}).get("successful") or {}).get("std_dev")
        if isinstance(std, (int, float)):
            metrics[f"{short}_std"] = std
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


def level_tags(stored: StoredRun, cell: CellRow, level: LevelRow, campaign_run_id: str) -> dict[str, str]:
    tags = run_tags(stored, campaign_run_id) | {
        "model": cell.short_model, "config": cell.config, "factors": factors_text(cell.factors),
        "valid": "true" if level.valid else "false", "invalid_reason": level.invalid_reason,
        "suspect_reason": level.suspect_reason, "cell_status": cell.status, "cell_reason": cell.reason}
    tags |= {f"factor.{k}": v for k, v in cell.factors.items()}
    return {k: _text(v, TAG_MAX) for k, v in tags.items() if v is not None and v != ""}


def _ms(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if value is not None and hasattr(value, "timestamp") else None


# -- logging ---------------------------------------------------------------------------------------------
@dataclass
class LogResult:
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    created: int = 0
    updated: int = 0
    level_runs: int = 0
    artifacts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{redact(self.tracking_uri).rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.parent_run_id}"

    def line(self) -> str:
        return (f"MLflow: {self.level_runs} level run(s) ({self.created} new, {self.updated} updated) in experiment "
                f"{self.experiment!r} at {redact(self.tracking_uri)}; report "
                f"{'attached' if self.artifacts else 'not attached'}: {self.url}")


class _Logger:
    def __init__(self, client: Any, experiment_id: str, existing: dict[str, Any], result: LogResult) -> None:
        self.client, self.experiment_id, self.existing, self.result = client, experiment_id, existing, result

    def upsert(self, key: str, name: str, tags: dict[str, str], params: dict[str, str], metrics: dict[str, float],
               start_ms: int | None, end_ms: int | None, status: str, parent: str | None = None) -> tuple[str, bool]:
        """The MLflow run of `key`, created or updated; (its id, whether it was created)."""
        from mlflow.entities import Metric, Param, RunTag  # deferred: loads mlflow

        tags = tags | {KEY_TAG: _text(key, TAG_MAX), KEY_ID_TAG: key_id(key), "mlflow.runName": name}
        if parent:
            tags[PARENT_TAG] = parent
        found = self.existing.get(key_id(key))
        if found is None:
            run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=name)
            run_id, old_params, old_metrics = run.info.run_id, {}, {}
        else:
            run_id, old_params, old_metrics = found.info.run_id, found.data.params, found.data.metrics
        new_params = {}
        for k, v in params.items():
            if k not in old_params:
                new_params[k] = v
            elif old_params[k] != v:  # MLflow refuses to change a logged param
                self.result.warnings.append(f"{name}: param {k} stays {old_params[k]!r} in MLflow (the store now says {v!r})")
        now = int(time.time() * 1000)
        stamp = end_ms or now
        batch_metrics = [Metric(k, v, stamp if k not in old_metrics else max(stamp, now), 0)
                         for k, v in metrics.items() if old_metrics.get(k) != v]
        self.client.log_batch(run_id, metrics=batch_metrics, params=[Param(k, v) for k, v in new_params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
        return run_id, found is None


def log_run(engine_or_url: Any, run_id: str, campaign: str | None = None, tracking_uri: str | Target | None = None,
            report_dir: Path | str | None = None) -> LogResult:
    """Log the stored run `run_id` to MLflow (see the module doc) and return what was done.

    engine_or_url: a SQLAlchemy engine, a database URL, or None for the configured results store.
    tracking_uri: a URI or a Target; default the configured one (an error when none is).
    report_dir: the run's report folder; default reports/<run id>/ when it has the report, else the stored report.
    """
    target = tracking_uri if isinstance(tracking_uri, Target) else Target.from_uri(tracking_uri) if tracking_uri else \
        tracking_target()
    if target is None:
        raise MlflowLogError(f"no MLflow tracking server configured (Airflow connection {CONN_ID} or {URI_ENV})")
    stored = _read(engine_or_url, run_id, campaign)
    try:
        with _client_env(target):
            return _log(stored, target, _report_files(stored, report_dir))
    except LlmdBenchError:
        raise
    except Exception as exc:  # MLflow's and the HTTP client's errors (re-raised), said in one line
        lines = str(exc).strip().splitlines()
        raise MlflowLogError(f"logging run {run_id!r} to MLflow at {target.redacted} failed: {type(exc).__name__}: "
                             f"{lines[0][:500] if lines else ''}") from exc


def _read(engine_or_url: Any, run_id: str, campaign: str | None) -> StoredRun:
    """The stored run (store/read.py) from a SQLAlchemy engine, a database URL, or the configured store (None)."""
    from llmd_bench.store.read import read_stored_run, stored_run  # deferred: loads sqlalchemy

    if engine_or_url is None or isinstance(engine_or_url, str):
        return read_stored_run(run_id, campaign, engine_or_url, MlflowLogError)
    return stored_run(engine_or_url, run_id, campaign, MlflowLogError)


def _report_files(stored: StoredRun, report_dir: Path | str | None) -> Path | None:
    """A folder holding the run's report: report_dir, else reports/<run id>/, else the stored report written out."""

    folder = Path(report_dir) if report_dir else paths.reports_root() / paths.safe_component(stored.run.dag_run_id)
    if (folder / "report.html").is_file() or (folder / "report.md").is_file():
        return folder
    if stored.report:
        tmp = Path(tempfile.mkdtemp(prefix="llmd-mlflow-report-"))
        (tmp / "report.md").write_text(stored.report.markdown)
        (tmp / "report.html").write_text(stored.report.html)
        return tmp
    return None


def _existing_runs(client: Any, experiment_id: str, campaign_run_id: str) -> dict[str, Any]:
    """key id -> the MLflow run already logged for it (active runs of this campaign run)."""
    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_ID_TAG}` = '{campaign_run_id}'",
                                  max_results=1000, page_token=token)
        for r in page:
            kid = r.data.tags.get(KEY_ID_TAG)
            if kid and kid not in found:
                found[kid] = r
        token = page.token
        if not token:
            return found


def _experiment(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        from mlflow.exceptions import MlflowException  # deferred: loads mlflow
        try:
            return client.create_experiment(name, tags={"llmd_bench": "true"})
        except MlflowException:  # created meanwhile by another logger
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise MlflowLogError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore "
                             f"--experiment-id {exp.experiment_id}) or remove it for good, then log again")
    return exp.experiment_id


def _log(stored: StoredRun, target: Target, report: Path | None) -> LogResult:
    from mlflow import MlflowClient  # deferred: loads mlflow

    client = MlflowClient(tracking_uri=target.uri)
    run = stored.run
    name = experiment_name(stored)
    experiment_id = _experiment(client, name)
    campaign_run_id = key_id(run_key(run.campaign, run.dag_run_id))
    existing = _existing_runs(client, experiment_id, campaign_run_id)
    result = LogResult(target.uri, name, experiment_id, parent_run_id="")
    logger = _Logger(client, experiment_id, existing, result)

    cells = [entry.cell for entry in stored.cells]
    statuses = [c.status for c in cells]
    counts = {f"cells_{s}": float(statuses.count(s)) for s in CELL_STATUSES}
    all_levels = [lv for entry in stored.cells for lv in entry.levels]
    counts |= {"level_runs": float(len(all_levels)), "levels_valid": float(sum(lv.valid for lv in all_levels))}
    failed = [f"{cell_label(c)}/t{c.trial}: {c.status} ({c.reason or 'no reason recorded'})"
              for c in cells if c.status in ("failed", "invalid")]
    parent_tags = run_tags(stored, campaign_run_id) | {KIND_TAG: "campaign-run"}
    if failed:
        parent_tags["failed_cells"] = _text("; ".join(failed), TAG_MAX)
    parent_params = workload_params(stored) | {
        "models": _text(sorted({c.model for c in cells}), PARAM_MAX),
        "configs": _text(sorted({c.config for c in cells}), PARAM_MAX)}
    started = _ms(run.started_at) or _ms(run.created_at)
    ended = _ms(run.ended_at) or max((_ms(lv.level_end) or 0 for lv in all_levels), default=None) or None
    parent, _ = logger.upsert(run_key(run.campaign, run.dag_run_id), run_key(run.campaign, run.dag_run_id),
                           parent_tags, parent_params, counts, started, ended,
                           "FAILED" if run.status == "failed" else "FINISHED")
    result.parent_run_id = parent
    if report is not None:
        client.log_artifacts(parent, str(report), REPORT_ARTIFACT_PATH)
        result.artifacts = sorted(p.name for p in report.iterdir() if p.is_file() and not p.name.startswith("."))

    for entry in stored.cells:
        cell = entry.cell
        for level in entry.levels:
            tags = level_tags(stored, cell, level, campaign_run_id) | {KIND_TAG: "level"}
            _, created = logger.upsert(level_key(run, cell, level.concurrency), level_run_name(cell, level.concurrency),
                                       tags, level_params(stored, cell, level), level_metrics(level),
                                       _ms(level.level_start), _ms(level.level_end), "FINISHED", parent=parent)
            result.level_runs += 1
            result.created += created
            result.updated += not created
    return result
