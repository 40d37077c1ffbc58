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
    from llmd_bench.measure.processes import free_port
    from llmd_bench.store.server import server_at

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
    "test_todays_guidellm_writes_a_report_that_parses_as_the_committed_one",
    # 3 s or more each on 2 cores (real local servers, whole-catalog renders, database restarts): measured by
    # `pytest --durations=0`; the fast loop keeps the cheaper tests of the same behaviours
    "test_a_damaged_zst_is_refused_clearly_before_any_database_access",
    "test_a_failed_preflight_stops_every_cell",
    "test_a_file_that_is_not_an_llmd_bench_benchmark_report_is_refused_by_name",
    "test_a_past_studys_factor_values_import_as_separate_cells_and_report_as_scaling",
    "test_a_port_held_by_another_server_says_whose_data_it_serves_and_how_to_stop_it",
    "test_a_quiet_history_lets_one_trial_show_a_3_percent_drop",
    "test_a_server_without_metrics_is_not_measured_never_zero",
    "test_a_store_restarted_in_the_middle_of_a_push_loses_nothing",
    "test_a_store_that_is_down_fails_the_step_quickly_and_clearly",
    "test_a_suspect_peak_level_gets_no_verdict_and_pages_nobody",
    "test_after_a_good_preflight_a_failed_cell_does_not_stop_the_next",
    "test_cleanup_stops_what_a_cell_left_when_its_teardown_never_ran",
    "test_configuration_differences_are_where_they_belong",
    "test_csv_round_trip_gives_the_same_report",
    "test_database_down_then_up",
    "test_deploy_after_an_interrupted_attempt_stops_the_old_processes_first",
    "test_every_cell_of_every_shipped_campaign_renders_strictly_and_builds_its_task_group",
    "test_every_manifest_of_every_cell_validates_strictly",
    "test_every_shipped_campaign_is_a_dag_and_none_is_invalid",
    "test_existing_mode_is_validated_with_the_field_and_allowed_values",
    "test_html_report_renders_in_headless_chromium",
    "test_import_of_a_report_that_is_not_an_object_fails_cleanly",
    "test_import_of_the_compressed_report_into_the_store",
    "test_kubernetes_runtime_builds_step_pods",
    "test_later_studies_configurations_render_strictly_for_every_llmd_version",
    "test_local_shape_from_a_real_local_deploy",
    "test_mutated_reports_load_or_raise_report_error",
    "test_not_ready_in_time_names_what_is_missing",
    "test_published_peak_table_is_reproduced_from_level_data",
    "test_push_sends_only_what_the_step_changed",
    "test_regression_against_the_previous_run_of_the_same_version",
    "test_replicas_behind_a_router_share_the_load_and_teardown_frees_everything",
    "test_report_compares_llmd_versions_and_flags_a_regression",
    "test_routing_configs_get_a_real_kv_server",
    "test_scraped_offload_counters_decide_native_offload",
    "test_several_missing_pieces_are_all_listed_in_one_run",
    "test_stored_with_the_cell_idempotently_and_shown_in_the_report",
    "test_sweep_pod_records_each_nodes_pmcd_and_collect_pcp_summarises_it",
    "test_teardown_fails_loudly_when_something_survives",
    "test_the_generators_cpu_is_measured_per_process_of_its_group",
    "test_the_model_cache_volume_must_exist_and_be_shareable_by_the_replicas",
    "test_two_checkouts_get_their_own_ports_and_stop_only_their_own_server",
    "test_warmup_fails_fast_when_the_model_is_not_served",
}


# `make test` runs on every core (pytest-xdist) with `--dist loadfile`: a file's tests run on one worker, so
# test_ui's module-scoped Airflow is started once, not once per worker. (`--dist loadgroup` would group by the
# xdist_group mark, but with pytest 9.2 it silently stops grouping: pytest-dev/pytest-xdist#1386.) Tests that compare
# timings measured minutes apart run alone after the parallel pass (marker `solo`): the other worker's load moves them.
SOLO_FILES = {"test_fidelity.py"}
# The longest files first (a CI run's --durations on both cores, seconds per file), kept in this order by
# --no-loadscope-reorder, so that no worker is left with a long file at the end while the other idles.
HEAVIEST_FILES = ["test_ui.py",  # 350: three runs through a real Airflow scheduler and a browser
                  "test_e2e.py", "test_side_by_side.py", "test_trials.py",  # 230, 190, 140
                  "test_object_storage.py", "test_sweep_stall.py", "test_existing.py", "test_adaptive.py",
                  "test_faults.py", "test_level_reset.py", "test_observability.py", "test_mlflow.py",
                  "test_guidellm_report.py"]


def _heaviest_first(item) -> int:
    """Collection order for the scheduler: the heaviest files first (LPT), then the rest as collected."""
    name = item.path.name
    return HEAVIEST_FILES.index(name) if name in HEAVIEST_FILES else len(HEAVIEST_FILES)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or item.originalname in SLOW_TESTS or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
        if item.path.name in SOLO_FILES:
            item.add_marker(pytest.mark.solo)
    items.sort(key=_heaviest_first)
