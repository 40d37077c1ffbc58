"""The step pods' settings (KubernetesPodOperator arguments): image, environment, resources, placement and
security. Airflow-side, next to the DAG builder (airflow_dag.py), and plain Python so tests and preflight
read the same values."""

from __future__ import annotations

import re
from typing import Any

from llmd_bench import __version__
from llmd_bench.integrations import storage
from llmd_bench.model.campaign import Campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.settings import settings

DEFAULT_STEP_IMAGE = f"ghcr.io/llmd-bench/llmd-bench-steps:{__version__}"

# The sweep pod runs GuideLLM's load generator: it needs CPU; the others are light clients.
STEP_RESOURCES = {
    "sweep": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
}
LIGHT = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def step_pod_settings(step: str, campaign: Campaign) -> dict[str, Any]:
    from kubernetes.client import models as k8s  # deferred: loads kubernetes

    res = STEP_RESOURCES.get(step, LIGHT)
    s = settings()
    ns = s.namespace
    results_url = s.results_url or storage.DEFAULT_CLUSTER_URL
    if not results_url.startswith("s3://"):
        # a file:// path would be each pod's own scratch folder: results would vanish with the pod
        raise RuntimeStepError(f"{storage.URL_ENV}={results_url!r}: the kubernetes runtime needs an "
                               "S3-compatible store (s3://bucket[/prefix]) that every step pod can reach")
    s3_secret = s.s3_secret

    def from_secret(name: str, secret: str, key: str, optional: bool = False) -> Any:
        return k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(secret_key_ref=k8s.V1SecretKeySelector(
            name=secret, key=key, optional=optional or None)))

    env = [
        k8s.V1EnvVar(name="LLMD_BENCH_RUNTIME", value="kubernetes"),
        # Scratch folders in the pod; the step pulls its cell from object storage and pushes it back.
        k8s.V1EnvVar(name="LLMD_BENCH_RESULTS", value="/work/results"),
        k8s.V1EnvVar(name="LLMD_BENCH_REPORTS", value="/work/reports"),
        k8s.V1EnvVar(name="LLMD_BENCH_RESULTS_URL", value=results_url),
        k8s.V1EnvVar(name="LLMD_BENCH_NAMESPACE", value=ns),
        # optional: with IRSA / workload identity the pod's service account carries the credentials
        from_secret("AWS_ACCESS_KEY_ID", s3_secret, "AWS_ACCESS_KEY_ID", optional=True),
        from_secret("AWS_SECRET_ACCESS_KEY", s3_secret, "AWS_SECRET_ACCESS_KEY", optional=True),
        from_secret("LLMD_BENCH_DB_URL", s.db_secret, "url"),
        # the campaign's token Secret, as the model servers use (gated tokenizers)
        from_secret("HF_TOKEN", campaign.serving.hf_token_secret, "HF_TOKEN", optional=True),
        # optional: compare logs the run to this MLflow tracking server (mlflow_log.py); absent, logging is off
        from_secret("LLMD_BENCH_MLFLOW_URI", s.mlflow_secret, "uri",
                    optional=True),
        k8s.V1EnvVar(name="HF_HUB_OFFLINE", value="0"),
        # the image runs as UID 65532: the tokenizer download needs a writable home (the /work emptyDir)
        k8s.V1EnvVar(name="HOME", value="/work"),
        k8s.V1EnvVar(name="HF_HOME", value="/work/hf"),
        # the pod's own node: the sweep records its PCP as the load generator's host
        k8s.V1EnvVar(name="LLMD_BENCH_NODE_NAME", value_from=k8s.V1EnvVarSource(
            field_ref=k8s.V1ObjectFieldSelector(field_path="spec.nodeName"))),
        k8s.V1EnvVar(name="LLMD_BENCH_NODE_IP", value_from=k8s.V1EnvVarSource(
            field_ref=k8s.V1ObjectFieldSelector(field_path="status.hostIP"))),
    ]
    # Pods may reach the store at another address than Airflow does (docker-compose's MinIO, for one).
    endpoint = s.step_store_endpoint
    if endpoint:
        env.append(k8s.V1EnvVar(name="LLMD_BENCH_S3_ENDPOINT", value=endpoint))
    from llmd_bench.stack.manifests import mirrored, pod_placement  # deferred: loads jinja2

    serving = campaign.serving
    placement = pod_placement(serving.scheduling.steps, serving)
    # Pod Security `restricted`: step pods are plain clients; only the PCP DaemonSet is privileged.
    pod_security = k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=65532, run_as_group=65532,
                                            fs_group=65532, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))
    container_security = k8s.V1SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                                               capabilities=k8s.V1Capabilities(drop=["ALL"]))
    extra: dict[str, Any] = {}
    if placement.get("runtimeClassName"):
        # KubernetesPodOperator has no argument for it: the pod template carries it
        extra["full_pod_spec"] = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], runtime_class_name=placement["runtimeClassName"]))
    return {
        **extra,
        "volumes": [k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="20Gi"))],
        "volume_mounts": [k8s.V1VolumeMount(name="work", mount_path="/work")],
        "image": mirrored(s.step_image or DEFAULT_STEP_IMAGE, serving.registry_mirrors),
        "security_context": pod_security,
        "container_security_context": container_security,
        "node_selector": placement.get("nodeSelector"),
        "tolerations": [k8s.V1Toleration(**{_snake(k): v for k, v in t.items()})
                        for t in placement.get("tolerations", [])] or None,
        "affinity": placement.get("affinity"),
        "priority_class_name": placement.get("priorityClassName"),
        "image_pull_secrets": [k8s.V1LocalObjectReference(name=n) for n in serving.image_pull_secrets] or None,
        "namespace": ns,
        "service_account_name": s.service_account,
        "kubernetes_conn_id": s.kube_conn,
        "env_vars": env,
        "container_resources": k8s.V1ResourceRequirements(requests=res["requests"], limits=res["limits"]),
        "image_pull_policy": "IfNotPresent",
        "get_logs": True,
        "on_finish_action": "delete_pod",
        "startup_timeout_seconds": 600,
        "random_name_suffix": True,
    }


def _snake(key: str) -> str:
    """`tolerationSeconds` -> `toleration_seconds` (the Kubernetes client's model arguments)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


