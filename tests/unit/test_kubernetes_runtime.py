"""Deploy, wait, failure detection and teardown against a local fake of the Kubernetes API.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_kubernetes_runtime.py.
"""

from __future__ import annotations

import pytest

from conftest import REFERENCE
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import kubernetes as k8s


def test_ready_timeout_grows_with_model_size(monkeypatch):
    monkeypatch.delenv("LLMD_BENCH_READY_TIMEOUT_S", raising=False)
    assert k8s.ready_timeout_s(1.5) == pytest.approx(645)
    assert k8s.ready_timeout_s(29.5) == pytest.approx(1485)


def test_a_container_restarting_a_few_times_is_still_starting_but_a_crash_loop_fails(monkeypatch):
    def pod(restarts):
        return {"status": {"containerStatuses": [{"name": "epp", "restartCount": restarts, "state": {"waiting": {
            "reason": "CrashLoopBackOff", "message": "back-off 10s"}}, "lastState": {"terminated": {"exitCode": 1}}}]}}

    assert k8s.pod_failure(pod(1)) is None  # the EPP before its index answered: recovers within the timeout
    assert k8s.pod_failure(pod(3)).startswith("CrashLoopBackOff: container epp")
    monkeypatch.setenv("LLMD_BENCH_CRASHLOOP_RESTARTS", "10")
    assert k8s.pod_failure(pod(5)) is None


def test_step_pods_pass_restricted_pod_security_and_follow_the_campaign(monkeypatch):
    """Placement, pull secrets, a mirrored image, the campaign's token Secret and a writable HOME, as the pod
    KubernetesPodOperator really builds it; checked against the `restricted` Pod Security rules."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.definitions.context import Context

    from llmd_bench.orchestration.airflow_dag import build_dag

    monkeypatch.setenv("LLMD_BENCH_STEP_IMAGE", "ghcr.io/llmd-bench/llmd-bench-steps:0.1.0")
    campaign = load_campaign(REFERENCE)
    steps = {"node_selector": {"pool": "cpu"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "bench",
                                                                  "effect": "NoSchedule"}],
             "runtime_class_name": "gvisor", "priority_class_name": "bench-low"}
    serving = campaign.serving.model_copy(update={
        "hf_token_secret": "team-hf", "image_pull_secrets": ["regcred"],
        "registry_mirrors": {"ghcr.io": "mirror.internal/ghcr"},
        "scheduling": campaign.serving.scheduling.model_copy(update={"steps": type(campaign.serving.scheduling.steps)(**steps)})})
    dag = build_dag(campaign.model_copy(update={"serving": serving}), runtime="kubernetes")
    task = dag.get_task("Qwen3-8B__llm-d-redis.sweep")
    assert isinstance(task, KubernetesPodOperator)
    task.render_template_fields(Context(run_id="r1", params={}, dag=dag, task=task, ti=None))
    pod = task.build_pod_request_obj(dry_run=True)
    spec, c = pod.spec, pod.spec.containers[0]
    assert c.image == "mirror.internal/ghcr/llmd-bench/llmd-bench-steps:0.1.0"
    assert spec.node_selector == {"pool": "cpu"} and spec.tolerations[0].key == "dedicated"
    assert spec.runtime_class_name == "gvisor" and spec.priority_class_name == "bench-low"
    assert [s.name for s in spec.image_pull_secrets] == ["regcred"]
    env = {e.name: e for e in c.env}
    assert env["HF_TOKEN"].value_from.secret_key_ref.name == "team-hf"
    assert env["HOME"].value == "/work" and env["HF_HOME"].value.startswith("/work/")
    # the pod learns its own node, where the sweep records the load generator's host
    assert env["LLMD_BENCH_NODE_NAME"].value_from.field_ref.field_path == "spec.nodeName"
    assert env["LLMD_BENCH_NODE_IP"].value_from.field_ref.field_path == "status.hostIP"
    # restricted: non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp
    assert spec.security_context.run_as_non_root is True and spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert c.security_context.allow_privilege_escalation is False and c.security_context.capabilities.drop == ["ALL"]
    assert not c.security_context.privileged and not spec.host_network


@pytest.mark.parametrize("campaign_file", ["kv_cache_eval.yaml", "kv_cache_eval_lmcache.yaml"])
def test_the_recorded_memory_plan_is_what_each_model_servers_pod_requests(campaign_file):
    """cell.json's memory_plan once used the configuration's default CPU tier and native offload: 42 GiB for every
    lmcache-local cell whose pods requested 40 to 90 GiB. It must be the pod's own request, for every cell."""
    from llmd_bench.model import paths
    from llmd_bench.stack import manifests
    from llmd_bench.stack.sizing import quantity

    campaign = load_campaign(paths.campaigns_dir() / campaign_file)
    params = resolve_params(campaign, {}, catalog.known_versions())
    checked = set()
    for cell in campaign.cells():
        c = StepContext(campaign, params, "run-mem", "kubernetes", cell)
        docs = manifests.render_cell(campaign, params, cell, "run-mem", "bench")
        (server,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ms")]
        (vllm,) = [ct for ct in server["spec"]["template"]["spec"]["containers"] if ct["name"] == "vllm"]
        requested = vllm["resources"]["requests"]["memory"]
        assert quantity(k8s._memory_plan(c)["request_bytes"]) == requested, (cell, requested)
        checked.add(requested)
    assert len(checked) > 2  # the cells differ, so a plan ignoring the model or configuration would fail
