"""DAG integrity: one DAG per campaign, one group per cell, setup/teardown wiring, lanes, params, pods.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_dag.py.
"""

from __future__ import annotations

import json

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench.model.campaign_files import load_campaign
from unit.test_dag import STEPS, _render_pod


def test_kubernetes_runtime_builds_step_pods(monkeypatch, campaigns_dir):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from llmd_bench.orchestration.airflow_dag import build_dag

    monkeypatch.setenv("LLMD_BENCH_STEP_IMAGE", "registry.example/llmd-bench-steps:0.1.0")
    monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "s3://bench-results/campaigns")
    monkeypatch.setenv("LLMD_BENCH_S3_ENDPOINT", "http://minio.bench:9000")
    dag = build_dag(load_campaign(REFERENCE), runtime="kubernetes")
    for step in sorted(STEPS):
        task = dag.get_task(f"Qwen3-32B-AWQ__llm-d-valkey.{step}")
        assert isinstance(task, KubernetesPodOperator)
        pod = _render_pod(task)
        c = pod.spec.containers[0]
        assert c.image == "registry.example/llmd-bench-steps:0.1.0"
        assert pod.metadata.namespace == "bench"
        assert c.command == ["llmd-bench"]
        assert c.args[:5] == [step, "--campaign", "kv_cache_eval", "--run-id", "scheduled__2026-11-22T00:00:00+00:00"]
        assert c.args[-4:] == ["--model", "Qwen/Qwen3-32B-AWQ", "--config", "llm-d-valkey"]
        params = json.loads(c.args[c.args.index("--params") + 1])
        assert params["models"][-1] == "Qwen/Qwen3-32B-AWQ" and params["seed"] == 889
        labels = pod.metadata.labels
        assert labels["llmd-bench/campaign"] == "llmd_kv_cache_eval"
        assert labels["llmd-bench/model"] == "qwen3-32b-awq" and labels["llmd-bench/config"] == "llm-d-valkey"
        assert labels["llmd-bench/step"] == step
        assert pod.spec.service_account_name == "llmd-bench-steps"
        env = {e.name: e for e in c.env}
        assert env["LLMD_BENCH_RUNTIME"].value == "kubernetes" and env["LLMD_BENCH_NAMESPACE"].value == "bench"
        assert env["LLMD_BENCH_DB_URL"].value is None  # from a Secret, never inline
        assert env["LLMD_BENCH_DB_URL"].value_from.secret_key_ref.name == "llmd-bench-results-db"
        # results travel through object storage; credentials from a Secret, the pod's folders are scratch
        assert env["LLMD_BENCH_RESULTS_URL"].value == "s3://bench-results/campaigns"
        assert env["LLMD_BENCH_S3_ENDPOINT"].value == "http://minio.bench:9000"
        assert env["AWS_SECRET_ACCESS_KEY"].value is None
        assert env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == "llmd-bench-object-store"
        mlflow = env["LLMD_BENCH_MLFLOW_URI"].value_from.secret_key_ref  # compare logs to MLflow when it exists
        assert (mlflow.name, mlflow.key, mlflow.optional) == ("llmd-bench-mlflow", "uri", True)
        assert env["LLMD_BENCH_RESULTS"].value.startswith("/work/")
        assert [m.mount_path for m in c.volume_mounts] == ["/work"] and pod.spec.volumes[0].empty_dir is not None
        assert 99 in task.skip_on_exit_code
    sweep = _render_pod(dag.get_task("Qwen3-8B__no-offload.sweep"))
    assert sweep.spec.containers[0].resources.requests["cpu"] == "4"
    compare = _render_pod(dag.get_task("compare"))
    assert compare.spec.containers[0].args[0] == "compare" and "--model" not in compare.spec.containers[0].args


def _run_kubernetes_shaped_dag(monkeypatch, campaigns_dir, failing):
    """The kubernetes DAG's wiring with every step pod replaced by a Python task that fails when named."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk.exceptions import AirflowException

    from llmd_bench.orchestration import airflow_dag

    def fake_step(step, campaign, cell, runtime, **kwargs):
        name = f"{cell.group_id}.{step}" if cell else step

        def run():
            if name in failing:
                raise AirflowException(f"{name} failed")
        kwargs.pop("on_success_callback", None)
        return PythonOperator(task_id=step, python_callable=run, **kwargs)

    monkeypatch.setattr(airflow_dag, "step_operator", fake_step)
    doc = tiny_campaign(configs=["no-offload", "llm-d-redis"])
    dag = airflow_dag.build_dag(load_campaign(write_campaign(campaigns_dir, doc)), runtime="kubernetes")
    dr = dag.test()
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def test_a_failed_preflight_stops_every_cell(airflow_db, monkeypatch, campaigns_dir):
    dr, states = _run_kubernetes_shaped_dag(monkeypatch, campaigns_dir, failing={"preflight"})
    assert states["preflight"] == "failed"
    for cell in ("Qwen3-0_6B__no-offload", "Qwen3-0_6B__llm-d-redis"):
        assert states[f"{cell}.deploy"] in ("upstream_failed", "skipped"), states
        assert states[f"{cell}.sweep"] in ("upstream_failed", "skipped"), states
    assert states["compare"] == "upstream_failed" and dr.state == "failed"


def test_after_a_good_preflight_a_failed_cell_does_not_stop_the_next(airflow_db, monkeypatch, campaigns_dir):
    dr, states = _run_kubernetes_shaped_dag(monkeypatch, campaigns_dir, failing={"Qwen3-0_6B__no-offload.sweep"})
    assert states["preflight"] == "success"
    assert states["Qwen3-0_6B__no-offload.sweep"] == "failed"
    assert states["Qwen3-0_6B__no-offload.teardown"] == "success"
    assert all(states[f"Qwen3-0_6B__llm-d-redis.{s}"] == "success" for s in STEPS), states
    assert states["compare"] == "success"
