"""Kubernetes runtime: step pods (KubernetesPodOperator settings) and the cell's stack in a cluster.

Pod settings come from the deployment's environment, never from a trigger:
LLMD_BENCH_STEP_IMAGE, LLMD_BENCH_NAMESPACE, LLMD_BENCH_SERVICE_ACCOUNT, LLMD_BENCH_RESULTS
(object storage URL), LLMD_BENCH_KUBE_CONN (Airflow connection id).
"""

from __future__ import annotations

import os
from typing import Any

from llmd_bench import __version__
from llmd_bench.campaign import Campaign
from llmd_bench.context import StepContext
from llmd_bench.errors import RuntimeStepError

DEFAULT_STEP_IMAGE = f"ghcr.io/llmd-bench/llmd-bench-steps:{__version__}"

# The sweep pod runs GuideLLM's load generator: it needs CPU; the others are light clients.
STEP_RESOURCES = {
    "sweep": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
}
LIGHT = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def step_pod_settings(step: str, campaign: Campaign) -> dict[str, Any]:
    from kubernetes.client import models as k8s

    res = STEP_RESOURCES.get(step, LIGHT)
    return {
        "image": os.environ.get("LLMD_BENCH_STEP_IMAGE", DEFAULT_STEP_IMAGE),
        "namespace": os.environ.get("LLMD_BENCH_NAMESPACE", "llmd-bench"),
        "service_account_name": os.environ.get("LLMD_BENCH_SERVICE_ACCOUNT", "llmd-bench-steps"),
        "kubernetes_conn_id": os.environ.get("LLMD_BENCH_KUBE_CONN", "kubernetes_default"),
        "env_vars": [
            k8s.V1EnvVar(name="LLMD_BENCH_RUNTIME", value="kubernetes"),
            k8s.V1EnvVar(name="LLMD_BENCH_RESULTS", value=os.environ.get("LLMD_BENCH_RESULTS_URL", "s3://llmd-bench/results")),
            k8s.V1EnvVar(name="HF_HUB_OFFLINE", value="0"),
        ],
        "container_resources": k8s.V1ResourceRequirements(requests=res["requests"], limits=res["limits"]),
        "image_pull_policy": "IfNotPresent",
        "get_logs": True,
        "on_finish_action": "delete_pod",
        "startup_timeout_seconds": 600,
        "random_name_suffix": True,
    }


def _not_yet(what: str) -> RuntimeStepError:
    return RuntimeStepError(f"the kubernetes runtime cannot {what} yet: cell manifests and cluster steps "
                            "are not implemented in this version; use LLMD_BENCH_RUNTIME=local")


def deploy(ctx: StepContext) -> dict[str, Any]:
    raise _not_yet("deploy a cell")


def endpoint(ctx: StepContext) -> str:
    raise _not_yet("resolve a cell's endpoint")


def teardown(ctx: StepContext) -> dict[str, Any]:
    raise _not_yet("tear a cell down")


def observation_targets(ctx: StepContext) -> tuple[list[str], int | None]:
    raise _not_yet("find a cell's replicas")
