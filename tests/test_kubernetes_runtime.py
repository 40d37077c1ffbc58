"""Deploy, wait, failure detection and teardown against a local fake of the Kubernetes API."""

from __future__ import annotations

import pytest

from conftest import REFERENCE
from fake_kube import FakeKube
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import kubernetes as k8s


@pytest.fixture
def kube(monkeypatch, results_dir):
    fakes = []

    def make(scenario="ready", stuck_kinds=(), **kw):
        fake = FakeKube(scenario, stuck_kinds, **kw)
        fakes.append(fake)
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "3")
        monkeypatch.setenv("LLMD_BENCH_TEARDOWN_TIMEOUT_S", "1")
        return fake

    yield make
    for f in fakes:
        f.close()


def ctx(config="llm-d-redis", run_id="run-2", replicas=2):
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {"replicas": replicas}, catalog.known_versions())
    return StepContext(campaign, params, run_id, "kubernetes", Cell("Qwen/Qwen3-8B", config))


def test_happy_path_applies_waits_and_tears_down(kube):
    fake = kube("ready")
    c = ctx()
    state = k8s.deploy(c)
    applies = [(m, p) for m, p, _ in fake.calls if m == "PATCH"]
    assert [p.rsplit("/", 2)[-2] for _, p in applies] == ["deployments", "services", "configmaps", "deployments",
                                                          "services", "inferencepools", "deployments"]
    assert len(state["replicas"]) == 2 and all(u.startswith("http://10.1.") and u.endswith(":8000") for u in state["replicas"])
    assert state["endpoint"] == "http://qwen3-8b-llm-d-redis-epp.bench.svc.cluster.local:8081"
    assert "ghcr.io/llm-d/llm-d-cuda:v0.4.0@sha256:" + "ab" * 32 in state["image_digests"]
    assert c.read_record()["versions"]["image_digests"] == state["image_digests"]
    targets = k8s.observation_targets(c)
    assert targets.replicas == state["replicas"]
    # the sweep pod watches the index and the EPP through their Services
    assert targets.kv == ("qwen3-8b-llm-d-redis-kv.bench.svc.cluster.local", 6379)
    assert targets.epp_metrics == "http://qwen3-8b-llm-d-redis-epp.bench.svc.cluster.local:9090/metrics"
    # PCP: each model server's node, at the DaemonSet's pmcd port on the host network
    assert k8s.pcp_hosts(c) == {"gpu-node-0": "192.168.10.11:44321", "gpu-node-1": "192.168.10.12:44321"}
    result = k8s.teardown(c)
    assert len(result["deleted"]) == 7 and fake.kinds_left() == []


@pytest.mark.parametrize("scenario, needle", [
    ("crashloop", "CrashLoopBackOff: container vllm: back-off 5m0s"),
    ("imagepull", 'ImagePullBackOff: container vllm: Back-off pulling image "ghcr.io/llm-d/llm-d-cuda:v0.4.0"'),
    ("unschedulable", "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    ("oom", "OOMKilled: container vllm ran out of memory (exit code 137)"),
])
def test_failing_pods_fail_fast_with_reason_and_log(kube, scenario, needle):
    fake = kube(scenario)
    with pytest.raises(RuntimeStepError) as err:
        k8s.deploy(ctx("native-offload"))
    msg = str(err.value)
    assert needle in msg and "qwen3-8b-native-offload-ms-" in msg
    if scenario == "crashloop":
        assert "torch.OutOfMemoryError: CUDA out of memory" in msg  # the pod's last log lines
        assert any("/log" in p and "tailLines=30" in q for _, p, q in fake.calls)
    # teardown still removes everything of the cell
    k8s.teardown(ctx("native-offload"))
    assert fake.kinds_left() == []


def test_teardown_fails_loudly_when_an_object_stays(kube):
    kube("ready", stuck_kinds=("Service",))
    c = ctx("no-offload")
    k8s.deploy(c)
    with pytest.raises(RuntimeStepError) as err:
        k8s.teardown(c)
    assert "teardown left things behind in namespace bench: Service/qwen3-8b-no-offload-epp" in str(err.value)


def test_leftovers_of_earlier_runs_are_removed_before_deploying(kube):
    fake = kube("ready")
    k8s.deploy(ctx("llm-d-valkey", run_id="old-run"))
    assert any(name.startswith("Deployment/qwen3-8b-llm-d-valkey") for name in fake.kinds_left())
    state = k8s.deploy(ctx("no-offload", run_id="new-run"))
    assert len(state["removed_leftovers"]) == 7 and all("(run old-run)" in r for r in state["removed_leftovers"])
    assert not any("valkey" in name for name in fake.kinds_left())
    deletes = [p for m, p, _ in fake.calls if m == "DELETE"]
    assert all("/namespaces/bench/" in p for p in deletes)


def test_not_ready_in_time_names_what_is_missing(kube, monkeypatch):
    fake = kube("ready")
    monkeypatch.setattr(FakeKube, "_make_pods", lambda self, dep: dep["status"].update(readyReplicas=0))
    with pytest.raises(RuntimeStepError, match=r"not ready after 3 s: .*qwen3-8b-no-offload-ms 0/2 ready"):
        k8s.deploy(ctx("no-offload"))
    assert fake.calls


def test_ready_timeout_grows_with_model_size(monkeypatch):
    monkeypatch.delenv("LLMD_BENCH_READY_TIMEOUT_S", raising=False)
    assert k8s.ready_timeout_s(1.5) == pytest.approx(645)
    assert k8s.ready_timeout_s(29.5) == pytest.approx(1485)


def _pcp_ready() -> bool:
    import os
    import shutil
    return bool(shutil.which("pmlogger") or os.path.exists("/usr/lib/pcp/bin/pmlogger")) and os.geteuid() == 0


@pytest.mark.skipif(not _pcp_ready(), reason="PCP is not installed here (make setup installs it as root)")
def test_sweep_pod_records_each_nodes_pmcd_and_collect_pcp_summarises_it(kube, tmp_path, monkeypatch):
    """Cluster PCP path with real pmcd/pmlogger: the fake API puts the two model servers on two nodes whose
    host IP is this machine, so the sweep pod's per-node pmloggers record the real local pmcd."""
    import time

    from llmd_bench.measure.observe import pcp
    from llmd_bench.steps import collect_pcp, sweep

    pcp.ensure_pmcd(tmp_path / "pmcd-logs")
    kube("ready", host_ips=("127.0.0.1", "127.0.0.1"))
    # the sweep pod's own node (the downward API's env): a CPU node whose pmcd is this machine's too
    monkeypatch.setenv("LLMD_BENCH_NODE_NAME", "cpu-node-7")
    monkeypatch.setenv("LLMD_BENCH_NODE_IP", "127.0.0.1")
    c = ctx("llm-d-redis")
    k8s.deploy(c)
    start = time.time()
    with sweep.host_recording(c) as state:
        time.sleep(4.5)
    end = time.time()
    assert sorted(state["nodes"]) == ["gpu-node-0", "gpu-node-1"], state
    assert sorted(state["generator"]["nodes"]) == ["cpu-node-7"], state["generator"]
    with c.update_record() as record:
        record["sweep"] = {"target": "http://epp", "levels": [1], "pcp": state, "trials": [
            {"trial": 1, "report": "trial-1/guidellm_report.json", "level_windows": [
                {"trial": 1, "concurrency": 1, "start": start + 0.5, "end": end - 0.5}]}]}
    status, levels = collect_pcp.host_summaries(c, collect_pcp.level_windows(c.record()))
    assert status["status"] == "recorded" and status["nodes"] == ["gpu-node-0", "gpu-node-1"], status
    assert "no nvidia PMDA" in status["gpu"]
    assert any(a.endswith("gpu-node-0/host.0.xz") for a in status["archive"])
    (level,) = levels
    assert level["nodes"] == 2 and level["samples"] >= 2
    assert 0 < level["cpu_util_pct"] <= 100 and level["mem_used_bytes"] > 0
    # the load generator's node, summarised apart from the model servers'
    gen_status, gen_levels = collect_pcp.generator_host_summaries(c, collect_pcp.level_windows(c.record()))
    assert gen_status["status"] == "recorded" and gen_status["nodes"] == ["cpu-node-7"], gen_status
    assert any(a.endswith("cpu-node-7/host.0.xz") for a in gen_status["archive"])
    (gen_level,) = gen_levels
    assert gen_level["samples"] >= 2 and 0 < gen_level["cpu_util_pct"] <= 100
    # a sweep pod that shares a model server's node points there instead of recording it twice
    monkeypatch.setenv("LLMD_BENCH_NODE_NAME", "gpu-node-1")
    with sweep.host_recording(c) as state:
        pass
    assert state["generator"] == {"same_node": "gpu-node-1"}


def test_no_pmcd_on_the_nodes_is_not_measured_with_the_reason(kube, monkeypatch):
    from llmd_bench.steps import collect_pcp, sweep

    monkeypatch.setenv("LLMD_BENCH_PMCD_PORT", "1")  # nothing listens there
    kube("ready", host_ips=("127.0.0.1",))
    c = ctx("no-offload", replicas=1)
    k8s.deploy(c)
    with sweep.host_recording(c) as state:
        pass
    with c.update_record() as record:
        record["sweep"] = {"target": "http://epp", "levels": [1], "pcp": state, "trials": []}
    status, levels = collect_pcp.host_summaries(c, [])
    assert status["status"] == "not measured" and levels == []
    assert "PCP" in status["reason"] and ("DaemonSet" in status["reason"] or "not installed" in status["reason"])


def test_the_index_is_ready_before_the_epp_that_pings_it_is_applied(kube):
    fake = kube("ready")
    c = ctx("llm-d-valkey")
    k8s.deploy(c)
    calls = [(m, p) for m, p, _ in fake.calls]
    kv_service = calls.index(("PATCH", "/api/v1/namespaces/bench/services/qwen3-8b-llm-d-valkey-kv"))
    epp_config = calls.index(("PATCH", "/api/v1/namespaces/bench/configmaps/qwen3-8b-llm-d-valkey-epp-cfg"))
    # between the two: the readiness wait of the index's Deployment
    assert any(m == "GET" and p.endswith("/deployments") for m, p in calls[kv_service:epp_config])
    plan = c.read_record()["memory_plan"]
    assert plan["offload_bytes_per_rank"] == 0 and plan["request_bytes"] == 2 * 16 * 2**30
    assert "request 32.0 GiB" in plan["summary"]


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


def test_a_redeployed_trial_deletes_and_applies_the_cells_objects_then_warms_up(kube, monkeypatch):
    """trial_isolation: redeploy in a cluster: the cell's objects are deleted (and gone) and applied again, ready,
    before the warm-up and the next trial."""
    from llmd_bench.steps import sweep, warmup

    fake = kube("ready")
    c = ctx()
    k8s.deploy(c)
    warmed = []
    monkeypatch.setattr(warmup, "run", lambda ctx_: warmed.append(len(fake.calls)) or {"requests": 8})
    before = len(fake.calls)
    result = sweep.redeploy(c)
    calls = fake.calls[before:]
    deletes = [i for i, (m, _, _) in enumerate(calls) if m == "DELETE"]
    applies = [i for i, (m, _, _) in enumerate(calls) if m == "PATCH"]
    assert deletes and len(applies) == 7 and max(deletes) < min(applies)  # torn down first, then applied
    assert warmed == [len(fake.calls)]  # warmed up after the stack was ready again
    assert result["isolation"] == "redeployed" and result["warmup_requests"] == 8
    k8s.teardown(c)
    assert fake.kinds_left() == []


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
