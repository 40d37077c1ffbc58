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


