"""Every environment variable the package reads, in one place: `settings()` is the configuration as the
environment says now, each variable a documented field of `Settings`. docs/settings.md's "Environment variables"
table is generated from these fields (`python -m llmd_bench.model.docs_tables`), and a test keeps the two in step.

The names are public interfaces: `LLMD_BENCH_<FIELD>`, plus the four fallbacks that are not ours
(AIRFLOW_VAR_LLMD_BENCH_RUNTIME, AIRFLOW_CONN_LLMD_RESULTS, AIRFLOW_CONN_LLMD_MLFLOW, AWS_ENDPOINT_URL).

A bad value does not stop `settings()`: the field holds it as invalid, and reading that field raises a
`SettingsError` that names the variable, the value and what is allowed. So a bad LLMD_BENCH_PG_PORT fails
what starts the database and nothing else, as when each module read its own variable.

`results_store_url()` is the one answer to "which results store?" for the DAG, the steps and the
notifications: the configured URL, or None. It never starts the local PostgreSQL server; the places that
fall back to it start it explicitly (`db.server.start_local_server()`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import RUNTIMES

PREFIX = "LLMD_BENCH_"
CHECKOUT = Path(__file__).resolve().parents[3]
RESULTS_CONN_ID = "llmd_results"
# Who sets a variable (docs/settings.md's "set by" column).
USER, DEPLOYMENT, STEP_POD, TESTS = "user", "deployment", "step pod", "tests"


class SettingsError(LlmdBenchError, ValueError):
    """An environment variable has a value the package cannot use."""


class _Invalid:
    """A field whose variable did not validate: reading the field raises `SettingsError(message)`."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"<invalid: {self.message}>"


def _field(default: Any, description: str, set_by: str, shown: str | None = None, env: str | None = None) -> Any:
    extra: dict[str, Any] = {"set_by": set_by}
    if shown is not None:
        extra["shown_default"] = shown
    return Field(default, description=description, json_schema_extra=extra,
                 validation_alias=AliasChoices(env) if env else None)


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings):
    """The package's configuration, read from the environment (see the module doc)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", populate_by_name=True)

    # -- where things live ---------------------------------------------------------------------------------------
    home: Path = _field(CHECKOUT, "The project folder: campaigns, catalog, models and the default results, reports "
                        "and database folders live under it.", USER, shown="the checkout")
    campaigns: Path | None = _field(None, "Folder of campaign files (one DAG each).", USER,
                                    shown="`$LLMD_BENCH_HOME/include/campaigns`")
    catalog: Path | None = _field(None, "The llm-d version catalog.", USER, shown="`$LLMD_BENCH_HOME/include/versions.yaml`")
    models: Path | None = _field(None, "The model catalog.", USER, shown="`$LLMD_BENCH_HOME/include/models.yaml`")
    results: Path | None = _field(None, "The results folder (`results/<run>/<model>/<config>/`); a step pod's scratch "
                                  "copy.", f"{USER}, {STEP_POD}", shown="`$LLMD_BENCH_HOME/results`")
    reports: Path | None = _field(None, "The reports folder; a step pod's scratch copy.", f"{USER}, {STEP_POD}",
                                  shown="`$LLMD_BENCH_HOME/reports`")
    tokenizer: Path | None = _field(None, "A local copy of the tokenizer (air-gapped machines and clusters); in the "
                                    "existing mode unset means the model's own tokenizer.", USER,
                                    shown="`$LLMD_BENCH_HOME/.cache/tokenizer`")

    # -- runtime and cluster ---------------------------------------------------------------------------------------
    runtime: str | None = _field(None, "Where the steps run: `local` or `kubernetes`. Chosen by the deployment, not "
                                 "per trigger.", f"{DEPLOYMENT}, {STEP_POD}", shown="`local`")
    airflow_var_runtime: str | None = _field(None, "The Airflow Variable `llmd_bench_runtime`: the runtime when "
                                             "LLMD_BENCH_RUNTIME is unset or empty.", DEPLOYMENT,
                                             env="AIRFLOW_VAR_LLMD_BENCH_RUNTIME")
    namespace: str = _field("llmd-bench", "The Kubernetes namespace of the cells and step pods.", f"{USER}, {STEP_POD}")
    kube_api: str | None = _field(None, "Talk to this Kubernetes API server without authentication (kubectl proxy, the "
                                  "tests' fake) instead of the in-pod service account or the kubeconfig.", TESTS)
    kube_conn: str = _field("kubernetes_default", "The Airflow connection the step pods are started through.", DEPLOYMENT)
    service_account: str = _field("llmd-bench-steps", "The step pods' service account.", DEPLOYMENT)
    step_image: str | None = _field(None, "The step pods' image.", DEPLOYMENT,
                                    shown="`ghcr.io/llmd-bench/llmd-bench-steps:<package version>`")
    pcp_image: str | None = _field(None, "The PCP DaemonSet's image (`llmd-bench manifests`).", USER,
                                   shown="`ghcr.io/llmd-bench/llmd-bench-pcp-node:<pinned>`")
    s3_secret: str = _field("llmd-bench-object-store", "Secret with the step pods' S3 credentials "
                            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).", DEPLOYMENT)
    db_secret: str = _field("llmd-bench-results-db", "Secret with the results database URL (key `url`) for the "
                            "step pods.", DEPLOYMENT)
    mlflow_secret: str = _field("llmd-bench-mlflow", "Optional Secret with the MLflow tracking URI (key `uri`) for "
                                "the step pods.", DEPLOYMENT)
    poll_s: float = _field(5.0, "Seconds between polls of the cluster while waiting for objects.", TESTS)
    ready_timeout_s: float | None = _field(None, "Seconds deploy waits for the model servers to become ready.", USER,
                                           shown="600 + 30 per GB of weights")
    crashloop_restarts: int = _field(3, "Restarts after which a crash-looping container is taken as failed rather "
                                     "than still starting.", USER)
    teardown_timeout_s: float = _field(300.0, "Seconds teardown waits for the cell's objects to be gone.", USER)
    pmcd_port: int | None = _field(None, "The port of the PCP pmcd on the GPU nodes (host network).", USER,
                                   shown="44321")
    node_name: str | None = _field(None, "The node the step pod runs on (downward API): the load generator's host "
                                   "for PCP.", STEP_POD)
    node_ip: str | None = _field(None, "The step pod's host IP (downward API).", STEP_POD)

    # -- object storage --------------------------------------------------------------------------------------------
    results_url: str | None = _field(None, "The object store between step pods and Airflow: `s3://bucket/prefix` or "
                                     "`file:///path`; unset in the local runtime means the results folder itself.",
                                     f"{DEPLOYMENT}, {STEP_POD}", shown="`s3://llmd-bench` (kubernetes), else none")
    s3_endpoint: str | None = _field(None, "The S3-compatible store's endpoint (MinIO, Ceph RGW); unset means "
                                     "AWS_ENDPOINT_URL, else AWS S3.", f"{DEPLOYMENT}, {STEP_POD}")
    aws_endpoint_url: str | None = _field(None, "The usual AWS variable: the S3 endpoint when LLMD_BENCH_S3_ENDPOINT "
                                          "is unset.", USER, env="AWS_ENDPOINT_URL")
    step_s3_endpoint: str | None = _field(None, "The S3 endpoint as the step pods reach it, when that differs from "
                                          "Airflow's (docker-compose's MinIO).", DEPLOYMENT,
                                          shown="LLMD_BENCH_S3_ENDPOINT")
    store_push_wait_s: float = _field(120.0, "Seconds a step keeps retrying to push what it measured while the "
                                      "store is unreachable (0 or more).", USER)

    # -- results database -----------------------------------------------------------------------------------------
    db_url: str | None = _field(None, "The results store (PostgreSQL URL); wins over the Airflow connection "
                                "`llmd_results`.", f"{USER}, {STEP_POD}")
    airflow_conn_llmd_results: str | None = _field(None, "The Airflow connection `llmd_results` in its environment "
                                                   "form (URI or JSON): the results store when LLMD_BENCH_DB_URL is "
                                                   "unset.", DEPLOYMENT, env="AIRFLOW_CONN_LLMD_RESULTS")
    db_attempts: int = _field(5, "Connection attempts to the results store before a step fails.", USER)
    db_retry_delay_s: float = _field(1.0, "Seconds before the second attempt (doubled after each).", USER)
    pgdata_base: Path | None = _field(None, "Folder of the project's local PostgreSQL server.", USER,
                                      shown="`$LLMD_BENCH_HOME/.state/pg`")
    pg_port: int | None = _field(None, "Port of the local server (1-65535); unset: the port its data folder "
                                 "recorded, first 54329 when free.", USER, shown="54329 or a free port")
    pg_fsync: bool = _field(True, "`off` (or `0`, `false`) runs the local server without fsync: faster, not "
                            "crash-safe (tests).", TESTS, shown="`on`")

    # -- steps -----------------------------------------------------------------------------------------------------
    guidellm: str | None = _field(None, "The GuideLLM command (another install, or a wrapper).", TESTS,
                                  shown="the venv's `guidellm`")
    sweep_pool: str | None = _field(None, "Airflow pool of the sweep tasks: one load generator at a time per machine.",
                                    DEPLOYMENT)
    sweep_timeout_s: float | None = _field(None, "Seconds one GuideLLM run may take before it is taken as stalled "
                                           "(a positive number).", USER,
                                           shown="300 + per level 2 x duration + 60")
    sweep_stall_retries: int = _field(1, "Times a stalled trial is run again (a whole number, 0 or more).", USER)
    sweep_stall_grace_s: float = _field(30.0, "Seconds a GuideLLM run may show no progress past what its current "
                                        "level needs (its workers' start-up, its duration, the drain) before it is "
                                        "stopped as stalled and run again; 0 turns this watch off (the deadline "
                                        "stays).", USER)
    mlflow_uri: str | None = _field(None, "The MLflow tracking server; wins over the Airflow connection `llmd_mlflow`; "
                                    "empty turns logging off.", f"{USER}, {STEP_POD}", shown="none (off)")
    airflow_conn_llmd_mlflow: str | None = _field(None, "The Airflow connection `llmd_mlflow` in its environment form "
                                                  "(URI or JSON): the tracking server when LLMD_BENCH_MLFLOW_URI is "
                                                  "unset.", DEPLOYMENT, env="AIRFLOW_CONN_LLMD_MLFLOW")

    # -- parsing that used to live next to each read ---------------------------------------------------------------
    @field_validator("tokenizer", "results_url", "node_name", "node_ip", mode="before")
    @classmethod
    def _stripped_blank_unset(cls, value: Any) -> Any:
        value = _blank_is_none(value)
        return value.strip() if isinstance(value, str) else value

    @field_validator("sweep_timeout_s", mode="before")
    @classmethod
    def _positive_seconds(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ValueError("expected a positive number of seconds")
        return seconds

    @field_validator("store_push_wait_s", "sweep_stall_grace_s", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            assert info.field_name is not None  # set for a field validator
            return cls.model_fields[info.field_name].default
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:
            raise ValueError("expected a number of seconds (0 or more)")
        return seconds

    @field_validator("sweep_stall_retries", mode="before")
    @classmethod
    def _retries(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return cls.model_fields["sweep_stall_retries"].default
        if not value.strip().isdigit():
            raise ValueError("expected a whole number of retries (0 or more)")
        return int(value)

    @field_validator("pg_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if not (value.strip().isdigit() and 0 < int(value) < 65536):
            raise ValueError("expected a TCP port number (1-65535)")
        return int(value)

    @field_validator("pg_fsync", mode="before")
    @classmethod
    def _fsync(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() not in ("off", "0", "false")
        return value

    # Defined last, so it wraps every other validator: a bad value becomes an _Invalid with a message.
    @field_validator("*", mode="wrap")
    @classmethod
    def _defer_errors(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            reason = first["msg"].removeprefix("Value error, ")
            shown = value.strip() if isinstance(value, str) else value
            assert info.field_name is not None  # set for a field validator
            return _Invalid(f"{env_name(info.field_name)}={shown!r}: {reason}")

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        values = self.__dict__
        raw = values["runtime"] or values["airflow_var_runtime"] or "local"
        value = raw.strip().lower()
        values["runtime"] = value if value in RUNTIMES else _Invalid(
            f"{env_name('runtime')}={value!r} is not a runtime; allowed: {list(RUNTIMES)}")
        home = values["home"]
        if not isinstance(home, _Invalid):
            for name, default in (("campaigns", home / "include" / "campaigns"),
                                  ("catalog", home / "include" / "versions.yaml"),
                                  ("models", home / "include" / "models.yaml"),
                                  ("results", home / "results"), ("reports", home / "reports"),
                                  ("pgdata_base", home / ".state" / "pg")):
                if values[name] is None:
                    values[name] = default
        return self

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if type(value) is _Invalid:
            raise SettingsError(value.message)
        return value

    # -- derived values ----------------------------------------------------------------------------------------------
    @property
    def store_endpoint(self) -> str | None:
        """Airflow's and the steps' S3 endpoint: LLMD_BENCH_S3_ENDPOINT, else AWS_ENDPOINT_URL."""
        return self.s3_endpoint or self.aws_endpoint_url

    @property
    def step_store_endpoint(self) -> str | None:
        """The S3 endpoint handed to the step pods: LLMD_BENCH_STEP_S3_ENDPOINT, else the store's endpoint."""
        return self.step_s3_endpoint or self.store_endpoint

    @property
    def tokenizer_dir(self) -> Path:
        return self.tokenizer or self.home / ".cache" / "tokenizer"

    def problems(self) -> list[str]:
        """Every variable whose value is invalid, as its error message."""
        return [v.message for v in self.__dict__.values() if type(v) is _Invalid]


def located(value: Path | None) -> Path:
    """A location `Settings._resolve` defaults from `home` (campaigns, catalog, models, results, reports,
    pgdata_base): None only when LLMD_BENCH_HOME itself is invalid, which the error then names."""
    if value is None:
        raise SettingsError("; ".join(settings().problems()) or f"{env_name('home')} is invalid")
    return value


def env_name(field: str) -> str:
    """The environment variable of a Settings field."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{PREFIX}{field.upper()}"


_cache: tuple[tuple[tuple[str, str], ...], Settings] | None = None
_WATCHED = (PREFIX, "AIRFLOW_VAR_LLMD_BENCH_", "AIRFLOW_CONN_LLMD_RESULTS", "AIRFLOW_CONN_LLMD_MLFLOW", "AWS_ENDPOINT_URL")


def settings() -> Settings:
    """The settings as the environment says now (tests change it at run time): rebuilt whenever one of the
    variables changed, else the last one built."""
    global _cache
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(_WATCHED)))
    if _cache is None or _cache[0] != key:
        _cache = (key, Settings())
    return _cache[1]


# -- the results store -------------------------------------------------------------------------------------------------

def url_from_airflow_connection(value: str | None) -> str | None:
    """The URL of an Airflow connection in its environment form: a URI, or JSON (login, password, host, port,
    schema)."""
    if not value:
        return None
    if value.lstrip().startswith("{"):
        c = json.loads(value)
        auth = f"{c.get('login', '')}:{c.get('password', '')}@" if c.get("login") else ""
        port = f":{c['port']}" if c.get("port") else ""
        return f"postgresql://{auth}{c.get('host', '127.0.0.1')}{port}/{c.get('schema', '')}"
    return value


def results_store_url(airflow: bool = False) -> str | None:
    """The configured results store, or None when none is: LLMD_BENCH_DB_URL, else the Airflow connection
    `llmd_results` in the environment (AIRFLOW_CONN_LLMD_RESULTS), else, with `airflow`, the connection as Airflow
    resolves it (secrets backends, metadata database). Never starts the project's local server."""
    s = settings()
    url = s.db_url or url_from_airflow_connection(s.airflow_conn_llmd_results)
    if url or not airflow:
        return url
    try:
        from airflow.sdk import BaseHook  # deferred: loads airflow
        return BaseHook.get_connection(RESULTS_CONN_ID).get_uri()
    except Exception:  # noqa: BLE001 - not defined, no Airflow, or a failing secrets backend: all mean "none configured"
        return None


# -- the docs/settings.md table -------------------------------------------------------------------------------------------

def _shown_default(name: str) -> str:
    info = Settings.model_fields[name]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if info.default is None:
        return "unset"
    return f"`{info.default}`"


def markdown_table() -> str:
    """docs/settings.md's "Environment variables" table (docs_tables.py writes it there)."""
    lines = ["| Variable | Default | Set by | What it does |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        lines.append(f"| `{env_name(name)}` | {_shown_default(name)} | {extra['set_by']} | {info.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
