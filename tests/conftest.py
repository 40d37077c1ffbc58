"""Test session set-up: a private AIRFLOW_HOME (set before Airflow is imported) and small campaigns."""

from __future__ import annotations

import atexit
import functools
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
from guidellm_run import MOCK_SERVER as MOCK_SERVER  # re-exported: the test files import it from conftest
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
# GuideLLM's scheduler workers (guidellm/settings.py @v0.8.1: mp_context_type "spawn", max_worker_processes 10): one
# worker forked from a forkserver needs half the CPU of one spawned interpreter per stream, and the test sweeps' few
# streams against a mock server need no more; the demo, the benchmarks and test_fidelity keep GuideLLM's defaults
# (measured: a 2-level run 15.5 -> 8.4 CPU-s)
LIGHT_GUIDELLM_ENV = {"GUIDELLM__MP_CONTEXT_TYPE": "forkserver", "GUIDELLM__MAX_WORKER_PROCESSES": "1"}
os.environ.update(LIGHT_GUIDELLM_ENV)
os.environ.pop("LLMD_BENCH_CAMPAIGNS", None)
os.environ.pop("LLMD_BENCH_GUIDELLM", None)

BIN = Path(sys.executable).parent


def _cache_kubernetes_schemas() -> None:
    """kubernetes_validate.validate re-reads and re-parses its schema files on every call (kubernetes_validate/utils.py
    schema_contents, 1.37.0), _definitions.json among them: 40 % of the manifest tests' CPU. The tests only read them."""
    import kubernetes_validate.utils as k8s_validate_utils

    k8s_validate_utils.schema_contents = functools.lru_cache(maxsize=None)(k8s_validate_utils.schema_contents)


_cache_kubernetes_schemas()


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


def fake_guidellm_command(directory: Path) -> str:
    """A `guidellm` command whose `run` is tests/fake_guidellm.py (real traffic, no GuideLLM start-up cost) and whose
    other subcommands (`mock-server`) are the real GuideLLM's: for tests about orchestration, not measurement."""
    wrapper = directory / "guidellm"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_guidellm.py"}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def fake_guidellm(tmp_path_factory, monkeypatch):
    """LLMD_BENCH_GUIDELLM set to the light stand-in (fake_guidellm_command) for this test."""
    command = fake_guidellm_command(tmp_path_factory.mktemp("fake-guidellm"))
    monkeypatch.setenv("LLMD_BENCH_GUIDELLM", command)
    return command


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def results_db(tmp_path_factory):
    """A real PostgreSQL server for the whole test session (never the developer's own results), started on first
    request: by db_url, or for every integration and e2e test (their conftest.py), never for a unit test."""
    from llmd_bench.measure.processes import free_port
    from llmd_bench.store.server import server_at

    server = server_at(tmp_path_factory.mktemp("pg") / "server", free_port())
    url = server.start()
    os.environ["LLMD_BENCH_DB_URL"] = url
    yield server
    server.stop(mode="immediate")
    os.environ.pop("LLMD_BENCH_DB_URL", None)
    shutil.rmtree(server.base, ignore_errors=True)  # may be the /var/tmp fallback: leave nothing behind


def _database(results_db):
    """A fresh, empty database in the session server, dropped when the generator resumes."""
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


@pytest.fixture
def db_url(results_db):
    """A fresh, empty database in the session server; dropped afterwards."""
    yield from _database(results_db)


@pytest.fixture(scope="module")
def module_db_url(results_db):
    """A fresh database shared by a module's tests (for data that takes seconds to make, read by several tests)."""
    yield from _database(results_db)


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


# The tier is the folder: tests/unit (pure logic, fixture files, in-process fakes; no process, server or PostgreSQL),
# tests/integration (real local servers, processes, PostgreSQL, a short GuideLLM run; a few seconds each), tests/e2e
# (Airflow DAG runs, the browser, sweeps with real GuideLLM, fault injection, the MLflow server, the fidelity timings).
# `make test-fast` runs tests/unit and tests/integration; `make test` runs all three. Items under tests/e2e also get
# the `slow` marker, so `-m "not slow"` leaves them out of any selection.
TESTS = ROOT / "tests"
TIERS = ("unit", "integration", "e2e")


def tier_of(item) -> str | None:
    """The tier folder an item's file is in (None for a file directly under tests/)."""
    parts = item.path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


# `make test` runs on every core (pytest-xdist) with `--dist loadfile`: a file's tests run on one worker, so
# test_ui's module-scoped Airflow is started once, not once per worker. (`--dist loadgroup` would group by the
# xdist_group mark, but with pytest 9.2 it silently stops grouping: pytest-dev/pytest-xdist#1386.) Tests that compare
# timings measured minutes apart run alone after the parallel pass (marker `solo`): the other worker's load moves them.
SOLO_FILES = {"e2e/test_fidelity.py"}
# The longest files first (a CI run's --durations on both cores, seconds per file), kept in this order by
# --no-loadscope-reorder, so that no worker is left with a long file at the end while the other idles.
HEAVIEST_FILES = ["e2e/test_ui.py",  # 357 (2026-12-07 CI): four runs through a real Airflow scheduler and a browser
                  "e2e/test_e2e.py", "e2e/test_side_by_side.py",  # 217, 135
                  "e2e/test_object_storage.py", "e2e/test_sweep_stall.py", "e2e/test_mlflow.py", "e2e/test_aba.py",
                  "e2e/test_adaptive.py", "e2e/test_existing.py", "e2e/test_local_runtime.py",
                  "e2e/test_observability.py", "e2e/test_trials.py", "e2e/test_seeded_sweep.py", "e2e/test_faults.py",
                  "e2e/test_guidellm_report.py",  # 67 down to 24
                  # the fast tiers' longest files (pytest --durations on 2 cores, seconds per file)
                  "integration/test_served.py", "integration/test_preflight.py",  # 24, 24
                  "integration/test_fake_guidellm.py", "integration/test_goodput.py", "integration/test_notify.py"]  # 17-15


def _file_key(item) -> str:
    return item.path.resolve().relative_to(TESTS).as_posix()


def _heaviest_first(item) -> int:
    """Collection order for the scheduler: the heaviest files first (LPT), then the rest as collected."""
    key = _file_key(item)
    return HEAVIEST_FILES.index(key) if key in HEAVIEST_FILES else len(HEAVIEST_FILES)


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(item)
        if tier is None:
            raise pytest.UsageError(f"{_file_key(item)}: every test file is in tests/unit, tests/integration or tests/e2e")
        if tier == "unit" and "results_db" in item.fixturenames:
            raise pytest.UsageError(f"{item.nodeid}: a unit test starts no PostgreSQL (results_db, db_url); "
                                    "it belongs in tests/integration")
        if tier == "e2e":
            item.add_marker(pytest.mark.slow)
        if _file_key(item) in SOLO_FILES:
            item.add_marker(pytest.mark.solo)
    items.sort(key=_heaviest_first)


def pytest_sessionfinish(session, exitstatus):
    """Run as root, a server whose folder `nobody` cannot reach keeps its data under /var/tmp/llmd-bench
    (store/server.py server_at), outside the test's tmp_path: remove this session's stopped ones (3.6 GB had piled up
    from earlier runs). Once, in the main process (under xdist the workers' temp folders are inside its own)."""
    if hasattr(session.config, "workerinput"):
        return
    from llmd_bench.store.server import FALLBACK_BASE, REQUESTED_BASE_FILE

    try:
        # the tmp_path_factory fixture's own object: pytest offers no other way to it outside a fixture
        basetemp = session.config._tmp_path_factory.getbasetemp().resolve()
        folders = list(FALLBACK_BASE.glob("data-*"))
    except OSError:
        return
    for folder in folders:
        try:
            requested = Path((folder / REQUESTED_BASE_FILE).read_text().strip())
        except OSError:
            continue
        if requested.is_relative_to(basetemp) and not (folder / "data" / "postmaster.pid").exists():
            shutil.rmtree(folder, ignore_errors=True)
