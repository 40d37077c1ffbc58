"""Results through S3-compatible object storage, as step pods use it: a real S3 server on 127.0.0.1
(moto's), every step in its own scratch folder, teardown and load_results at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT, tiny_campaign, write_campaign
from llmd_bench.integrations import storage

BUCKET = "llmd-bench"


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "llmd-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "llmd-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LLMD_BENCH_S3_ENDPOINT", s3_server)
    bucket = f"{BUCKET}-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", f"s3://{bucket}/campaigns")
    return storage.ObjectStore(f"s3://{bucket}/campaigns")


def test_push_sends_only_what_the_step_changed(s3, tmp_path):
    pod_a = tmp_path / "pod-a" / "results"
    cell = pod_a / "run-1" / "M" / "no-offload"
    snap = storage.pull(cell, pod_a, "results")
    (cell / "trial-1").mkdir(parents=True)
    (cell / "trial-1" / "report.json").write_text("{}")
    (cell / ".cell.lock").write_text("")  # private: never leaves the pod
    assert storage.push(snap) == 1
    assert s3.list_files("results", "run-1", "M", "no-offload") == {"trial-1/report.json": 2}

    pod_b = tmp_path / "pod-b" / "results"
    cell_b = pod_b / "run-1" / "M" / "no-offload"
    snap_b = storage.pull(cell_b, pod_b, "results")
    assert (cell_b / "trial-1" / "report.json").read_text() == "{}"
    (cell_b / "observations.json").write_text("[]")
    (cell_b / "trial-1" / "report.json").unlink()  # e.g. an archive volume replaced by its .xz
    assert storage.push(snap_b) == 1  # the pulled report is not sent back ...
    assert s3.list_files("results", "run-1", "M", "no-offload") == {"observations.json": 2}  # ... and is gone

    # a file this machine already has is never replaced by the store's copy (the local runtime's one folder)
    (cell / "observations.json").write_text("[1, 2]")
    storage.pull(cell, pod_a, "results")
    assert (cell / "observations.json").read_text() == "[1, 2]"


def test_a_store_restarted_in_the_middle_of_a_push_loses_nothing(s3, tmp_path, monkeypatch):
    """The store goes away after the first file of a push and comes back 6 s later on the same address
    (longer than botocore's and s3fs's own retries inside one upload, so our wait is what bridges it):
    the push waits for it and sends every file. (A private moto server: moto keeps buckets per process,
    so the restarted server still has the bucket.)"""
    from moto.server import ThreadedMotoServer

    from llmd_bench.measure.processes import free_port

    port = free_port()
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]
    servers[0].start()
    monkeypatch.setenv("LLMD_BENCH_S3_ENDPOINT", f"http://127.0.0.1:{port}")

    def stop() -> None:  # moto's stop() leaves the socket listening: connections would hang, not fail
        servers[-1].stop()
        servers[-1]._server.server_close()

    def start_again(after_s: float) -> None:
        time.sleep(after_s)
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()

    cell = tmp_path / "pod" / "results" / "run-1" / "M" / "no-offload"
    snap = storage.pull(cell, tmp_path / "pod" / "results", "results")
    for name in ("a.json", "b.json", "c.json"):
        (cell / name).write_text(name)
    real_upload, uploads, failed = storage.ObjectStore.upload, [], []

    def upload(self, local_file, *parts):
        if len(uploads) == 1 and len(servers) == 1:
            stop()
            threading.Thread(target=start_again, args=(6.0,), daemon=True).start()
        uploads.append(local_file.name)
        try:
            return real_upload(self, local_file, *parts)
        except storage.StorageError:
            failed.append(local_file.name)
            raise

    monkeypatch.setattr(storage.ObjectStore, "upload", upload)
    monkeypatch.setenv("LLMD_BENCH_STORE_PUSH_WAIT_S", "60")
    try:
        assert storage.push(snap) == 3
        assert len(servers) == 2 and failed and failed[0] == "b.json"  # the store was really down for b.json
        store = storage.configured()
        assert store.list_files("results", "run-1", "M", "no-offload") == {"a.json": 6, "b.json": 6, "c.json": 6}
        # a store that stays down fails the push once the wait is spent, naming the variable
        monkeypatch.setattr(storage.ObjectStore, "upload", real_upload)
        monkeypatch.setenv("LLMD_BENCH_STORE_PUSH_WAIT_S", "1")
        (cell / "d.json").write_text("d")
        stop()
        with pytest.raises(storage.StorageError, match="LLMD_BENCH_STORE_PUSH_WAIT_S"):
            storage.push(storage.Snapshot(cell, snap.remote_parts, {}, set()))
    finally:
        if servers[-1]._server is not None and servers[-1]._server.socket.fileno() != -1:
            servers[-1].stop()
            servers[-1]._server.server_close()


def test_a_store_that_is_down_fails_the_step_quickly_and_clearly(campaigns_dir, results_dir, monkeypatch):
    write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload"]))
    env = {**os.environ, "LLMD_BENCH_RESULTS_URL": "s3://llmd-bench/x", "LLMD_BENCH_S3_ENDPOINT": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    out = subprocess.run([str(BIN / "llmd-bench"), "deploy", "--campaign", "tiny", "--run-id", "r", "--model",
                          "Qwen/Qwen3-0.6B", "--config", "no-offload"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "object storage s3://llmd-bench/x at http://127.0.0.1:9" in out.stderr + out.stdout
    assert not (results_dir / "r" / "Qwen3-0.6B" / "no-offload" / "runtime.json").exists()  # nothing started


@pytest.mark.e2e
def test_a_cell_travels_between_step_pods_through_object_storage(s3, campaigns_dir, tmp_path, db_url, monkeypatch, fake_guidellm):
    """Each step in a fresh scratch folder (a new pod), the local runtime serving; nothing is shared but
    the object store and the results database."""
    doc = tiny_campaign(configs=["no-offload"])
    doc["workload"].update(concurrency=[1, 2], duration_s=2)
    write_campaign(campaigns_dir, doc)
    args = ["--campaign", "tiny", "--run-id", "s3-run"]
    cell = ["--model", "Qwen/Qwen3-0.6B", "--config", "no-offload"]

    def pod_env(name):
        return {**os.environ, "LLMD_BENCH_DB_URL": db_url, "LLMD_BENCH_RESULTS": str(tmp_path / name / "results"),
                "LLMD_BENCH_REPORTS": str(tmp_path / name / "reports")}

    def step(name, *extra):
        return subprocess.Popen([str(BIN / "llmd-bench"), name, *args, *extra], env=pod_env(name),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    for name in ("deploy", "warmup", "sweep", "collect_pcp"):
        proc = step(name, *cell)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, (name, out[-2000:])
    # teardown and load_results run at the same time in Airflow: neither may erase the other's record
    both = [step("teardown", *cell), step("load_results", *cell)]
    for proc in both:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-2000:]
    proc = step("compare")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-2000:]

    files = s3.list_files("results", "s3-run", "Qwen3-0.6B", "no-offload")
    assert "trial-1/guidellm_report.json" in files and "levels.json" in files and "observations.json" in files
    assert {f"record/{s}.json" for s in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")} <= set(files)
    # compare pulled the whole run into its own pod and saw every step of the cell succeed
    check = tmp_path / "check" / "results"
    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(check))
    storage.pull_run(check / "s3-run")
    from llmd_bench.stack.context import merged_record
    record = merged_record(check / "s3-run" / "Qwen3-0.6B" / "no-offload")
    assert {k: v["status"] for k, v in record["steps"].items()} == {s: "ok" for s in (
        "deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")}
    pulled = {f.relative_to(check / "s3-run").as_posix() for f in (check / "s3-run").rglob("*") if f.is_file()}
    assert "Qwen3-0.6B/no-offload/levels.json" in pulled
    assert not any("guidellm_report" in f or "/pcp/" in f for f in pulled), pulled  # compare needs no raw data
    summary = json.loads((check / "s3-run" / "summary.json").read_text())
    assert summary["cells"][0]["status"] == "ok"
    # the report is where the Airflow UI reads it
    html = storage.read_report_file("s3-run", "report.html")
    assert html and b"Qwen3-0.6B" in html and b"simulated" in html.lower()
    assert "s3-run" in storage.report_runs()
    # ... and the UI plugin serves it from there (this machine has no local copy)
    import sys

    from fastapi.testclient import TestClient

    monkeypatch.setenv("LLMD_BENCH_REPORTS", str(tmp_path / "airflow-side-reports"))
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow.api_fastapi.core_api.security import get_user

    import llmd_bench_plugin

    client = TestClient(llmd_bench_plugin.reports_app)
    assert client.get("/s3-run/report.html").status_code == 401  # no login (the real api-server: test_ui)
    asked = []
    monkeypatch.setattr(llmd_bench_plugin, "may_read_runs", lambda user, dag_id: asked.append(dag_id) or True)
    llmd_bench_plugin.reports_app.dependency_overrides[get_user] = lambda: "a reader"
    try:
        page = client.get("/s3-run/report.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "Qwen3-0.6B" in page.text
        assert asked == ["llmd_tiny"]  # authorised by the report's DAG, read from its report.json in the store
        assert 's3-run/report.html' in client.get("/").text
        assert client.get("/s3-run/nothing.html").status_code == 404
        monkeypatch.setattr(llmd_bench_plugin, "may_read_runs", lambda user, dag_id: False)
        assert client.get("/s3-run/report.html").status_code == 403
        assert 's3-run' not in client.get("/").text
    finally:
        llmd_bench_plugin.reports_app.dependency_overrides.clear()


def test_no_secret_reaches_any_artifact_log_or_stored_row(s3, s3_server, campaigns_dir, tmp_path, db_url, monkeypatch,
                                                          fake_guidellm):
    """Known values planted for the HF token, the results database's password and the object-store keys; a
    cell runs through every step and compare, each step in its own pod folder; then every file the steps
    wrote (logs, cell.json, params, reports), every object in the bucket, every line they printed and every
    stored row (JSONB included) is searched for them."""
    import boto3
    from sqlalchemy import text

    from llmd_bench.store.db import make_engine

    hf_token = "hf_PLANTEDtokenVALUE0123456789abcdef"
    access_key, secret_key = "AKIAPLANTEDACCESSKEY", "PLANTEDsecretKEY/abc+0123456789xyz"
    db_password = db_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    planted = {"HF token": hf_token, "S3 access key": access_key, "S3 secret key": secret_key,
               "database password": db_password}
    assert len(db_password) >= 12
    monkeypatch.setenv("HF_TOKEN", hf_token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    doc = tiny_campaign(configs=["llm-d-valkey"])
    doc["workload"].update(concurrency=[1, 2], duration_s=2)
    write_campaign(campaigns_dir, doc)
    printed = []

    def step(name, *extra):
        env = {**os.environ, "LLMD_BENCH_DB_URL": db_url, "LLMD_BENCH_RESULTS": str(tmp_path / name / "results"),
               "LLMD_BENCH_REPORTS": str(tmp_path / name / "reports")}
        out = subprocess.run([str(BIN / "llmd-bench"), name, "--campaign", "tiny", "--run-id", "leak-run", *extra],
                             env=env, capture_output=True, text=True, timeout=300)
        printed.append(out.stdout + out.stderr)
        assert out.returncode == 0, (name, out.stdout[-1500:], out.stderr[-1500:])

    cell = ["--model", "Qwen/Qwen3-0.6B", "--config", "llm-d-valkey"]
    for name in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"):
        step(name, *cell)
    step("compare")

    def leaks(where, content):
        return [f"{what} in {where}" for what, value in planted.items() if value in content]

    found = []
    for f in tmp_path.rglob("*"):
        if f.is_file():
            found += leaks(f, f.read_bytes().decode("utf-8", errors="replace"))
    client = boto3.client("s3", endpoint_url=s3_server)
    bucket = s3.url.split("/")[2]
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert len(objects) > 10
    for obj in objects:
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("utf-8", errors="replace")
        found += leaks(f"s3://{bucket}/{obj['Key']}", body)
    for i, out in enumerate(printed):
        found += leaks(f"the output of step {i}", out)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        for table in ("runs", "cells", "level_results", "level_observations", "reports"):
            rows = conn.execute(text(f"SELECT row_to_json(t)::text FROM {table} t")).scalars().all()
            assert rows or table == "level_observations", table
            found += leaks(f"table {table}", "\n".join(rows))
    engine.dispose()
    assert found == []
