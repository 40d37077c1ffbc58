"""Test session set-up: a private AIRFLOW_HOME (set before Airflow is imported) and small campaigns."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from guidellm_run import COMMITTED as COMMITTED_REPORT
from guidellm_run import make_report

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "include" / "campaigns" / "kv_cache_eval.yaml"
ARTIFACTS = ROOT / "test-artifacts"

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="llmd-test-airflow-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update({
    "AIRFLOW_HOME": _AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "LLMD_BENCH_HOME": str(ROOT),
    "LLMD_BENCH_RUNTIME": "local",
    "HF_HUB_OFFLINE": "1",
    # every test sweep is a few levels of a few seconds: a GuideLLM stall shows in minutes, not hours
    "LLMD_BENCH_SWEEP_TIMEOUT_S": "240",
})
os.environ.pop("LLMD_BENCH_CAMPAIGNS", None)
os.environ.pop("LLMD_BENCH_GUIDELLM", None)

BIN = Path(sys.executable).parent


def tiny_campaign(**overrides) -> dict:
    """A small campaign derived from the reference one: 1 model, a few configs, 2 short levels."""
    doc = yaml.safe_load(REFERENCE.read_text())
    doc.update({
        "dag_id": "llmd_tiny",
        "schedule": None,
        "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}],
        "configs": ["no-offload", "llm-d-redis"],
        "workload": {"concurrency": [1, 4], "duration_s": 2, "prompt_tokens": 32, "output_tokens": 16,
                     "prefix_tokens": 64, "turns": 1, "seed": 889, "warmup_requests": 2},
    })
    doc.update(overrides)
    return doc


@pytest.fixture
def campaigns_dir(tmp_path, monkeypatch):
    d = tmp_path / "campaigns"
    d.mkdir()
    monkeypatch.setenv("LLMD_BENCH_CAMPAIGNS", str(d))
    return d


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    d = tmp_path / "results"
    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(d))
    monkeypatch.setenv("LLMD_BENCH_REPORTS", str(tmp_path / "reports"))
    return d


def write_campaign(directory: Path, doc: dict, name: str = "tiny") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata database for in-process DAG runs (SQLite in the private AIRFLOW_HOME)."""
    out = subprocess.run([str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session", autouse=True)
def results_db(tmp_path_factory):
    """A real PostgreSQL server for the whole test session (never the developer's own results)."""
    from llmd_bench.db.server import server_at
    from llmd_bench.runtime.processes import free_port

    server = server_at(tmp_path_factory.mktemp("pg") / "server", free_port())
    url = server.start()
    os.environ["LLMD_BENCH_DB_URL"] = url
    yield server
    server.stop(mode="immediate")
    os.environ.pop("LLMD_BENCH_DB_URL", None)
    shutil.rmtree(server.base, ignore_errors=True)  # may be the /var/tmp fallback: leave nothing behind


@pytest.fixture
def db_url(results_db):
    """A fresh, empty database in the session server; dropped afterwards."""
    import uuid

    import psycopg2

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = results_db.url("postgres")
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    yield results_db.url(name)
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def real_report(tmp_path_factory):
    """A real GuideLLM 0.8.1 report (two 2 s levels against the real mock server), committed so judgements that read
    its within-level spread do not depend on how busy the machine is (tests/guidellm_run.py makes it)."""
    out = tmp_path_factory.mktemp("report") / "report.json"
    shutil.copyfile(COMMITTED_REPORT, out)
    return out


@pytest.fixture(scope="session")
def live_report(tmp_path_factory):
    """A report GuideLLM makes now, the same way as the committed one."""
    return make_report(tmp_path_factory.mktemp("live-report") / "report.json")


@pytest.fixture(scope="module")
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1 for the object-store paths."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# `make test-fast` (-m "not slow") leaves out the tests that run real servers for more than a few seconds: GuideLLM
# sweeps, Airflow DAG runs, a browser, the MLflow server, fault injection. `make test` runs everything. One place
# for the split: a test is slow by its file, its name, or the e2e marker.
SLOW_FILES = {"test_ui.py", "test_side_by_side.py", "test_faults.py", "test_fidelity.py", "test_trials.py",
              "test_sweep_stall.py", "test_mlflow.py", "test_e2e.py"}
SLOW_TESTS = {
    "test_a_real_adaptive_sweep_stops_past_the_simulated_servers_capacity",
    "test_a_reset_sweep_empties_both_tiers_before_every_level_and_shows_it",
    "test_a_reset_that_leaves_the_offload_tier_stops_the_sweep_before_anything_is_measured",
    "test_an_existing_mode_campaign_runs_through_the_dag_patching_measuring_and_restoring_every_cell",
    "test_a_failed_sweep_in_existing_mode_still_restores_the_installed_stack_through_the_dag",
    "test_cell_archive_is_recorded_summarised_per_level_and_stored",
    "test_no_secret_reaches_any_artifact_log_or_stored_row",
    "test_a_cell_travels_between_step_pods_through_object_storage",
    "test_a_cell_folder_written_by_the_steps_parses_through_the_models",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or item.originalname in SLOW_TESTS or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
