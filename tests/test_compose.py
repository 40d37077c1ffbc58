"""docker-compose.yaml cannot start here (no Docker engine): validate it against the Compose Specification
and check that its services, volumes and connections refer to each other correctly."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT

SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


@pytest.mark.skipif(not SCHEMA.exists(), reason="shared/schemas is not beside this checkout")
def test_compose_file_matches_the_compose_specification(compose):
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_services_volumes_and_connections_are_consistent(compose):
    services = compose["services"]
    assert {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists() or source in ("./results", "./reports", "./kubeconfig"), source
            elif not source.startswith("$"):
                assert source in compose["volumes"], source
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW_CONN_LLMD_RESULTS"].startswith("postgresql://")
    assert env["AIRFLOW_CONN_LLMD_RESULTS"].split("@")[1].startswith("postgres:5432/llmd_results")
    assert "llmd_results" in (ROOT / "docker" / "postgres-init.sql").read_text()
    dockerfile = (ROOT / services["airflow-init"]["build"]["dockerfile"]).read_text()
    assert "FROM apache/airflow:3.3.2" in dockerfile and "requirements.txt" in dockerfile
    assert services["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]


def test_object_store_is_wired_to_airflow_and_created_before_it_starts(compose):
    services = compose["services"]
    env = services["airflow-scheduler"]["environment"]
    # results and reports travel through MinIO: its service, its bucket, the same credentials
    assert env["LLMD_BENCH_RESULTS_URL"] == "s3://llmd-bench"
    host = env["LLMD_BENCH_S3_ENDPOINT"].split("//")[1].split(":")[0]
    assert host in services and services[host]["image"].startswith("quay.io/minio/minio:RELEASE.")
    init = services["minio-init"]
    assert "mb --ignore-existing store/llmd-bench" in init["command"][0]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert "minio-data" in compose["volumes"]
