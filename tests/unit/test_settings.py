"""One settings object: every variable the package reads is a documented field of `Settings`, docs/settings.md's table
is generated from those fields, nothing else reads them, and the parsing that moved into the fields behaves as
it did next to each read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.settings import Settings, SettingsError, env_name, markdown_table, results_store_url, settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("plugins", "dags") for p in sorted((ROOT / d).rglob("*.py"))]
SETTINGS_FILE = ROOT / "plugins" / "llmd_bench" / "model" / "settings.py"
FALLBACKS = {"AIRFLOW_VAR_LLMD_BENCH_RUNTIME", "AIRFLOW_CONN_LLMD_RESULTS", "AIRFLOW_CONN_LLMD_MLFLOW", "AWS_ENDPOINT_URL"}
ENV_NAMES = {env_name(f) for f in Settings.model_fields}


# -- the docs table and the fields --------------------------------------------------------------------------------

def docs_table() -> str:
    text = (ROOT / "docs" / "settings.md").read_text()
    found = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.S)
    assert found, "docs/settings.md has no generated Environment variables table (settings-table markers)"
    return found.group(1)


def test_the_docs_table_is_the_settings_fields():
    assert docs_table() == markdown_table(), (
        "docs/settings.md's Environment variables table differs from Settings: regenerate it with "
        "`PYTHONPATH=plugins .venv/bin/python -m llmd_bench.model.docs_tables`")


def test_the_table_has_one_row_per_field_with_its_description():
    rows = [r for r in markdown_table().splitlines()[2:]]
    names = [re.match(r"\| `([A-Z0-9_]+)` \|", r).group(1) for r in rows]
    assert sorted(names) == sorted(ENV_NAMES) and len(names) == len(set(names))
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 15, f"{env_name(name)} needs a description"
        assert info.json_schema_extra["set_by"], f"{env_name(name)}: who sets it?"
    assert {n for n in ENV_NAMES if not n.startswith("LLMD_BENCH_")} == FALLBACKS


def test_every_llmd_bench_name_in_the_package_is_a_field():
    named = {m for p in SOURCES for m in re.findall(r"\bLLMD_BENCH_[A-Z0-9_]*[A-Z0-9]\b", p.read_text())}
    assert named - ENV_NAMES == set(), "variables mentioned in plugins/ or dags/ without a Settings field"


# -- nobody else reads them -------------------------------------------------------------------------------------------

def _env_constants() -> set[str]:
    """Module constants naming one of our variables (URL_ENV = "LLMD_BENCH_RESULTS_URL")."""
    names = "|".join(re.escape(n) for n in ENV_NAMES)
    return {m for p in SOURCES for m in re.findall(rf'^\s*([A-Z][A-Z0-9_]*)\s*=\s*f?"(?:{names})"', p.read_text(), re.M)}


def ad_hoc_reads(text: str, constants: set[str]) -> list[str]:
    """Reads of our variables from the environment: os.environ.get / [] / pop / in, os.getenv."""
    target = "|".join([rf'f?["\'](?:{"|".join(map(re.escape, ENV_NAMES))})'] + [rf"\b{re.escape(c)}\b" for c in constants])
    patterns = [
        rf"(?:os\.)?environ(?:\.get|\.pop|\.setdefault)?\s*[(\[]\s*(?:{target})",
        rf"getenv\(\s*(?:{target})",
        rf"(?:{target})[\w\"']*\s+(?:not\s+)?in\s+(?:os\.)?environ\b",
    ]
    return [m.group(0) for p in patterns for m in re.finditer(p, text)]


def test_no_module_reads_a_variable_outside_settings():
    constants = _env_constants()
    found = {str(p.relative_to(ROOT)): reads for p in SOURCES if p != SETTINGS_FILE
             if (reads := ad_hoc_reads(p.read_text(), constants))}
    assert found == {}, "read these through llmd_bench.model.settings.settings() instead"


@pytest.mark.parametrize("line", [
    'x = os.environ.get("LLMD_BENCH_POLL_S", 5)',
    'x = os.environ.get(\n    "LLMD_BENCH_NAMESPACE")',
    'x = os.environ["LLMD_BENCH_DB_URL"]',
    'x = os.getenv("AWS_ENDPOINT_URL")',
    'if "AIRFLOW_CONN_LLMD_RESULTS" not in os.environ: pass',
    'x = os.environ.get(URL_ENV, "").strip()',
])
def test_the_scan_finds_an_ad_hoc_read(line):
    assert ad_hoc_reads(line, {"URL_ENV"}), line


def test_the_scan_leaves_pod_environments_and_messages_alone():
    assert not ad_hoc_reads('k8s.V1EnvVar(name="LLMD_BENCH_RUNTIME", value="kubernetes")', {"URL_ENV"})
    assert not ad_hoc_reads('raise StorageError(f"{URL_ENV}={url!r}: bad")', {"URL_ENV"})
    assert "URL_ENV" in _env_constants() and "DEADLINE_ENV" in _env_constants()


# -- fresh reads -----------------------------------------------------------------------------------------------------

def test_settings_follow_the_environment_at_run_time(monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "one")
    assert settings().namespace == "one"
    monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "two")
    assert settings().namespace == "two"
    monkeypatch.delenv("LLMD_BENCH_NAMESPACE")
    assert settings().namespace == "llmd-bench"


def test_paths_default_under_home_and_each_can_be_moved(monkeypatch, tmp_path):
    from llmd_bench.model import paths

    for name in ("CAMPAIGNS", "CATALOG", "MODELS", "RESULTS", "REPORTS", "TOKENIZER", "PGDATA_BASE"):
        monkeypatch.delenv(f"LLMD_BENCH_{name}", raising=False)
    monkeypatch.setenv("LLMD_BENCH_HOME", str(tmp_path))
    assert paths.home() == tmp_path
    assert paths.campaigns_dir() == tmp_path / "include" / "campaigns"
    assert paths.catalog_file() == tmp_path / "include" / "versions.yaml"
    assert paths.models_file() == tmp_path / "include" / "models.yaml"
    assert paths.results_root() == tmp_path / "results" and paths.reports_root() == tmp_path / "reports"
    assert paths.tokenizer_dir() == tmp_path / ".cache" / "tokenizer"
    assert settings().pgdata_base == tmp_path / ".state" / "pg" and settings().tokenizer is None
    monkeypatch.setenv("LLMD_BENCH_RESULTS", "/srv/results")
    monkeypatch.setenv("LLMD_BENCH_TOKENIZER", " /srv/tok ")
    assert paths.results_root() == Path("/srv/results") and paths.tokenizer_dir() == Path("/srv/tok")


# -- parsing moved into the fields -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variable, value, message", [
    ("LLMD_BENCH_PG_PORT", "fifty", "LLMD_BENCH_PG_PORT='fifty': expected a TCP port number (1-65535)"),
    ("LLMD_BENCH_PG_PORT", "70000", "LLMD_BENCH_PG_PORT='70000': expected a TCP port number (1-65535)"),
    ("LLMD_BENCH_SWEEP_TIMEOUT_S", "soon", "LLMD_BENCH_SWEEP_TIMEOUT_S='soon': expected a positive number of seconds"),
    ("LLMD_BENCH_SWEEP_TIMEOUT_S", "0", "LLMD_BENCH_SWEEP_TIMEOUT_S='0': expected a positive number of seconds"),
    ("LLMD_BENCH_SWEEP_STALL_RETRIES", "twice",
     "LLMD_BENCH_SWEEP_STALL_RETRIES='twice': expected a whole number of retries (0 or more)"),
    ("LLMD_BENCH_STORE_PUSH_WAIT_S", "-1", "LLMD_BENCH_STORE_PUSH_WAIT_S='-1': expected a number of seconds (0 or more)"),
    ("LLMD_BENCH_POLL_S", "fast", "LLMD_BENCH_POLL_S='fast': "),
    ("LLMD_BENCH_DB_ATTEMPTS", "many", "LLMD_BENCH_DB_ATTEMPTS='many': "),
    ("LLMD_BENCH_RUNTIME", "Mars", "LLMD_BENCH_RUNTIME='mars' is not a runtime; allowed: ['local', 'kubernetes']"),
])
def test_a_bad_value_names_the_variable_where_it_is_used(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    s = settings()  # building never fails: other settings stay usable
    assert s.namespace and s.home
    field = variable.removeprefix("LLMD_BENCH_").lower()
    with pytest.raises(SettingsError) as err:
        getattr(s, field)
    assert str(err.value).startswith(message)
    assert message.split(":")[0] in " ".join(s.problems())


def test_settings_errors_are_the_projects_and_value_errors(monkeypatch):
    from llmd_bench.stack.runtime import selected_runtime

    assert issubclass(SettingsError, LlmdBenchError) and issubclass(SettingsError, ValueError)
    monkeypatch.setenv("LLMD_BENCH_RUNTIME", "mars")
    with pytest.raises(ValueError, match=r"LLMD_BENCH_RUNTIME='mars' is not a runtime; allowed: \['local', 'kubernetes'\]"):
        selected_runtime()


def test_blank_means_the_default_where_it_did(monkeypatch):
    for variable in ("LLMD_BENCH_SWEEP_TIMEOUT_S", "LLMD_BENCH_SWEEP_STALL_RETRIES", "LLMD_BENCH_STORE_PUSH_WAIT_S",
                     "LLMD_BENCH_PG_PORT", "LLMD_BENCH_RESULTS_URL", "LLMD_BENCH_NODE_NAME"):
        monkeypatch.setenv(variable, "  ")
    s = settings()
    assert s.sweep_timeout_s is None and s.sweep_stall_retries == 1 and s.store_push_wait_s == 120.0
    assert s.pg_port is None and s.results_url is None and s.node_name is None
    monkeypatch.setenv("LLMD_BENCH_SWEEP_STALL_RETRIES", " 3 ")
    monkeypatch.setenv("LLMD_BENCH_PG_PORT", " 5433")
    monkeypatch.setenv("LLMD_BENCH_SWEEP_TIMEOUT_S", "45")
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", " s3://b/p ")
    s = settings()
    assert (s.sweep_stall_retries, s.pg_port, s.sweep_timeout_s, s.results_url) == (3, 5433, 45.0, "s3://b/p")


def test_an_empty_mlflow_uri_stays_empty(monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_MLFLOW_URI", "")
    assert settings().mlflow_uri == ""  # empty turns logging off; unset asks the Airflow connection
    monkeypatch.delenv("LLMD_BENCH_MLFLOW_URI")
    assert settings().mlflow_uri is None


@pytest.mark.parametrize("value, on", [("off", False), (" OFF ", False), ("0", False), ("false", False),
                                       ("on", True), ("1", True), ("maybe", True)])
def test_fsync_is_off_only_when_asked(monkeypatch, value, on):
    monkeypatch.setenv("LLMD_BENCH_PG_FSYNC", value)
    assert settings().pg_fsync is on


def test_the_runtime_falls_back_to_the_airflow_variable(monkeypatch):
    monkeypatch.delenv("LLMD_BENCH_RUNTIME", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_LLMD_BENCH_RUNTIME", raising=False)
    assert settings().runtime == "local"
    monkeypatch.setenv("AIRFLOW_VAR_LLMD_BENCH_RUNTIME", " Kubernetes ")
    assert settings().runtime == "kubernetes"
    monkeypatch.setenv("LLMD_BENCH_RUNTIME", "")  # empty: as unset
    assert settings().runtime == "kubernetes"
    monkeypatch.setenv("LLMD_BENCH_RUNTIME", "local")
    assert settings().runtime == "local"


def test_the_s3_endpoints_fall_back_in_order(monkeypatch):
    for v in ("LLMD_BENCH_S3_ENDPOINT", "LLMD_BENCH_STEP_S3_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(v, raising=False)
    assert settings().store_endpoint is None and settings().step_store_endpoint is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws")
    assert settings().store_endpoint == "http://aws" == settings().step_store_endpoint
    monkeypatch.setenv("LLMD_BENCH_S3_ENDPOINT", "http://minio")
    assert settings().store_endpoint == "http://minio" == settings().step_store_endpoint
    monkeypatch.setenv("LLMD_BENCH_STEP_S3_ENDPOINT", "http://pods")
    assert settings().store_endpoint == "http://minio" and settings().step_store_endpoint == "http://pods"


def test_defaults_agree_with_the_modules_constants():
    from llmd_bench.integrations import storage
    from llmd_bench.stack import manifests, pcp_manifests
    from llmd_bench.steps import sweep

    fields = Settings.model_fields
    assert fields["service_account"].default == manifests.STEP_SERVICE_ACCOUNT
    assert fields["pmcd_port"].json_schema_extra["shown_default"] == str(pcp_manifests.PMCD_PORT)
    assert fields["store_push_wait_s"].default == storage.DEFAULT_PUSH_WAIT_S
    assert fields["sweep_stall_retries"].default == sweep.DEFAULT_STALL_RETRIES
    assert env_name("results_url") == storage.URL_ENV and env_name("sweep_timeout_s") == sweep.DEADLINE_ENV


# -- the results store URL -------------------------------------------------------------------------------------------

@pytest.fixture
def no_store(monkeypatch):
    monkeypatch.delenv("LLMD_BENCH_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_LLMD_RESULTS", raising=False)

    def refuse(*_a, **_k):
        raise AssertionError("asking for the results store URL started the local server")

    from llmd_bench.store import server
    monkeypatch.setattr(server.LocalServer, "start", refuse)


def test_the_store_url_is_the_configured_one(monkeypatch, no_store):
    assert results_store_url() is None
    monkeypatch.setenv("AIRFLOW_CONN_LLMD_RESULTS", "postgresql://a:b@db:5432/r")
    assert results_store_url() == "postgresql://a:b@db:5432/r"
    monkeypatch.setenv("AIRFLOW_CONN_LLMD_RESULTS", '{"login": "a", "password": "b", "host": "db", "port": 5433, '
                                                    '"schema": "r"}')
    assert results_store_url() == "postgresql://a:b@db:5433/r"
    monkeypatch.setenv("LLMD_BENCH_DB_URL", "postgresql://x@elsewhere/r")
    assert results_store_url() == results_store_url(airflow=True) == "postgresql://x@elsewhere/r"


def test_the_store_url_asks_airflow_only_when_told(monkeypatch, no_store):
    airflow_sdk = pytest.importorskip("airflow.sdk")

    class Conn:
        def get_uri(self):
            return "postgres://from:airflow@db/r"

    asked = []
    monkeypatch.setattr(airflow_sdk.BaseHook, "get_connection", classmethod(lambda cls, conn_id: asked.append(conn_id)
                                                                            or Conn()))
    assert results_store_url() is None and asked == []
    assert results_store_url(airflow=True) == "postgres://from:airflow@db/r" and asked == ["llmd_results"]


