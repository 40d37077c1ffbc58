"""Every cell's Kubernetes manifests: valid against the official schemas (strict), the InferencePool
against its CRD, and the configuration differences where they must be and nowhere else."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from conftest import REFERENCE, ROOT
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Architecture, Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import CampaignError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack import manifests, pcp_manifests

CRD = ROOT.parent / "shared" / "schemas" / "inferencepools.inference.networking.k8s.io-v1.2.0.crd.yaml"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
K8S_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(REFERENCE)


def render(campaign, model, config, **conf):
    params = resolve_params(campaign, conf, catalog.known_versions())
    docs = manifests.render_cell(campaign, params, Cell(model, config), "scheduled__2026-11-22T00:00:00+00:00", "bench")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}, docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def container(docs, name):
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] == name:
                return c
    return None


def epp_config(docs):
    cm = by_kind(docs, "ConfigMap")[0]
    return yaml.safe_load(cm["data"]["epp-config.yaml"])


def test_pcp_daemonset_runs_pmcd_on_each_gpu_node_where_sweep_pods_reach_it():
    ns, ds = pcp_manifests.render_pcp()
    for doc in (ns, ds):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # its own namespace, the only one labelled privileged: the bench namespace is not loosened
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == ds["metadata"]["namespace"] == "llmd-bench-pcp"
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "privileged"
    assert "privileged" not in json.dumps(manifests.render_namespace("bench"))
    pod = ds["spec"]["template"]["spec"]
    # NVML reaches a pod that requests no GPU only through the NVIDIA runtime class (GPU Operator with CDI)
    assert pod["hostNetwork"] is True and pod["hostPID"] is True and pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (c,) = pod["containers"]
    assert c["securityContext"]["privileged"] is True
    assert c["ports"][0]["hostPort"] == c["ports"][0]["containerPort"] == 44321  # what pcp_hosts() connects to
    assert {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"} in c["env"]
    assert "nvidia.com/gpu" not in str(c.get("resources"))  # watches the GPUs without taking one
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    # both settable; runtime_class=None leaves the field out (nodes whose default runtime is NVIDIA's)
    ns2, ds2 = pcp_manifests.render_pcp("gpu-observability", runtime_class=None)
    for doc in (ns2, ds2):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert ns2["metadata"]["name"] == ds2["metadata"]["namespace"] == "gpu-observability"
    assert "runtimeClassName" not in ds2["spec"]["template"]["spec"]
    assert pcp_manifests.render_pcp(runtime_class="nvidia-cdi")[1]["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia-cdi"


def test_epp_exposes_index_metrics_and_the_simulator_gets_unit_latencies(campaign):
    _, docs = render(campaign, "Qwen/Qwen3-8B", "llm-d-valkey", replicas=2)
    cfg = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap" and "epp-config.yaml" in d.get("data", {}))
                         ["data"]["epp-config.yaml"])
    scorer = next(p for p in cfg["plugins"] if p["type"] == "precise-prefix-cache-scorer")
    assert scorer["parameters"]["indexerConfig"]["kvBlockIndexConfig"]["enableMetrics"] is True
    epp = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-epp"))
    args = epp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-endpoint-auth=false" in args and args[args.index("--metrics-port") + 1] == "9090"
    sim = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"backend": "inference-sim"})})
    _, docs = render(sim, "Qwen/Qwen3-8B", "llm-d-valkey", replicas=2)
    server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ms"))
    sim_args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--time-to-first-token=50ms" in sim_args and "--inter-token-latency=10ms" in sim_args
    assert int(sim_args[sim_args.index("--max-model-len") + 1]) > 10000  # the sweep's shared prefix fits
    assert sim_args[sim_args.index("--zmq-endpoint") + 1].startswith("tcp://qwen3-8b-llm-d-valkey-epp.")


@pytest.mark.parametrize("config, key", [("llm-d-redis", "redisConfig"), ("llm-d-valkey", "valkeyConfig")])
def test_index_scorer_kv_events_seed_and_block_size_agree_between_epp_and_vllm(campaign, config, key):
    objs, docs = render(campaign, "Qwen/Qwen3-14B", config)
    cfg = epp_config(docs)
    scorer = next(p for p in cfg["plugins"] if p["type"] == "precise-prefix-cache-scorer")["parameters"]
    index = scorer["indexerConfig"]["kvBlockIndexConfig"]
    kv_svc = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-kv"))
    assert kv_svc["metadata"]["name"] in index[key]["address"] and index[key]["address"].endswith(":6379")
    assert "inMemoryConfig" in index and index["inMemoryConfig"] is None  # the v0.4.0 pitfall
    if key == "valkeyConfig":
        assert index[key]["backendType"] == "valkey"
    assert "prefix-cache-scorer" not in {p["type"] for p in cfg["plugins"]}  # Redis under the plain scorer is ignored
    vllm = container(docs, "vllm")
    events = json.loads(vllm["args"][vllm["args"].index("--kv-events-config") + 1])
    epp_svc = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-epp"))
    zmq_port = int(scorer["kvEventsConfig"]["zmqEndpoint"].rsplit(":", 1)[1])
    assert events["endpoint"] == f"tcp://{epp_svc['metadata']['name']}.bench.svc.cluster.local:{zmq_port}"
    assert zmq_port in [p["port"] for p in epp_svc["spec"]["ports"]]
    assert events["topic"].startswith(scorer["kvEventsConfig"]["topicFilter"]) and events["topic"].endswith("@Qwen/Qwen3-14B")
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["PYTHONHASHSEED"] == scorer["indexerConfig"]["tokenProcessorConfig"]["hashSeed"]
    block = vllm["args"][vllm["args"].index("--block-size") + 1]
    assert int(block) == scorer["indexerConfig"]["tokenProcessorConfig"]["blockSize"]
    assert vllm["args"][vllm["args"].index("--prefix-caching-hash-algo") + 1] == "sha256_cbor"


def test_offload_setting_is_the_published_one_on_v0_4_0(campaign):
    _, docs = render(campaign, "Qwen/Qwen3-8B", "native-offload")
    vllm = container(docs, "vllm")
    cfg = json.loads(vllm["args"][vllm["args"].index("--kv-transfer-config") + 1])
    assert cfg["kv_connector"] == "OffloadingConnector"
    # the February evaluation: 10000 CPU blocks of vLLM's default 16 tokens (vLLM 0.11.2 reads num_cpu_blocks)
    assert cfg["kv_connector_extra_config"] == {"num_cpu_blocks": 10000}
    assert vllm["args"][vllm["args"].index("--block-size") + 1] == "16"


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_gpus_equal_tensor_parallel_size_and_the_rest_of_the_pod(campaign, tp):
    _, docs = render(campaign, "Qwen/Qwen3-32B-AWQ", "no-offload", tensor_parallel_size=tp, replicas=3)
    ms = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ms"))
    vllm = container(docs, "vllm")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == str(tp) == vllm["resources"]["requests"]["nvidia.com/gpu"]
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == str(tp)
    assert ms["spec"]["replicas"] == 3
    shm = next(v for v in ms["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/v1/models" and vllm["livenessProbe"]["httpGet"]["path"] == "/health"
    token = next(e for e in vllm["env"] if e["name"] == "HF_TOKEN")
    assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"] == "llmd-bench-hf-token"
    assert "--max-num-seqs" in vllm["args"]
    pool = by_kind(docs, "InferencePool")[0]
    assert pool["spec"]["selector"]["matchLabels"].items() <= ms["spec"]["template"]["metadata"]["labels"].items()


def test_labels_account_for_every_object(campaign):
    _, docs = render(campaign, "Qwen/Qwen3-8B", "llm-d-redis")
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["llmd-bench/campaign"] == "llmd_kv_cache_eval"
        assert labels["llmd-bench/model"] == "qwen3-8b" and labels["llmd-bench/config"] == "llm-d-redis"
        assert labels["llmd-bench/run"] == "scheduled__2026-11-22T00-00-00-00-00"
        assert d["metadata"]["namespace"] == "bench"


@pytest.mark.parametrize("model", ["Qwen/Qwen3-0.6B", "org/Some_Model.With.DOTS-and-UPPER", "x/" + "very-long-name-" * 8])
def test_names_are_dns_labels_for_any_model_name(campaign, model):
    spec = campaign.models[0].model_copy(
        update={"name": model, "architecture": Architecture(layers=28, kv_heads=8, head_dim=128)})
    c = campaign.model_copy(update={"models": [spec]})
    for config in ("no-offload", "llm-d-valkey"):
        _, docs = render(c, model, config)
        for d in docs:
            name = d["metadata"]["name"]
            assert DNS1123.match(name) and len(name) <= 63, name
            for v in d["metadata"]["labels"].values():
                assert len(v) <= 63


def test_a_backfill_version_takes_its_images_and_offload_setting_from_the_catalog(campaign):
    _, docs = render(campaign, "Qwen/Qwen3-8B", "native-offload", llmd_version="v0.8.0")
    vllm = container(docs, "vllm")
    assert vllm["image"] == "ghcr.io/llm-d/llm-d-cuda:v0.8.0"
    assert container(docs, "epp")["image"] == "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.9.0"
    cfg = json.loads(vllm["args"][vllm["args"].index("--kv-transfer-config") + 1])
    # vLLM >= 0.14 reads cpu_bytes_to_use (num_cpu_blocks would fail), for all TP ranks together: the same
    # 10000 blocks of 16 tokens per rank as on v0.4.0, at 2 x 36 layers x 4 KV heads x 128 x 2 bytes per token
    assert cfg["kv_connector_extra_config"] == {"cpu_bytes_to_use": 2 * 10000 * 16 * (2 * 36 * 4 * 128 * 2)}


def test_placement_pull_secrets_and_mirrors_reach_every_component(campaign):
    from llmd_bench.model.campaign import Placement, Scheduling

    gpu = Placement(node_selector={"nvidia.com/gpu.product": "NVIDIA-L40S"},
                    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    runtime_class_name="nvidia", priority_class_name="bench-high")
    cpu = Placement(node_selector={"pool": "cpu"}, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]}]}}})
    serving = campaign.serving.model_copy(update={
        "scheduling": Scheduling(model_server=gpu, epp=cpu, kv_index=cpu), "image_pull_secrets": ["regcred"],
        "registry_mirrors": {"ghcr.io": "mirror.internal/ghcr", "docker.io": "mirror.internal/hub"}})
    c = campaign.model_copy(update={"serving": serving})
    _, docs = render(c, "Qwen/Qwen3-8B", "llm-d-valkey", replicas=2)
    for d in by_kind(docs, "Deployment"):
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        pod = d["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        for ctr in pod["containers"] + pod.get("initContainers", []):
            assert ctr["image"].startswith("mirror.internal/"), ctr["image"]
        if d["metadata"]["name"].endswith("-ms"):
            assert pod["nodeSelector"] == gpu.node_selector and pod["runtimeClassName"] == "nvidia"
            assert pod["priorityClassName"] == "bench-high" and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        else:
            assert pod["nodeSelector"] == {"pool": "cpu"} and "nodeAffinity" in pod["affinity"]
            assert "runtimeClassName" not in pod
    assert container(docs, "vllm")["image"] == "mirror.internal/ghcr/llm-d/llm-d-cuda:v0.4.0"
    assert container(docs, "envoy")["image"] == "mirror.internal/hub/envoyproxy/envoy:distroless-v1.33.2"


def test_per_model_resources_and_a_shared_model_cache(campaign):
    from llmd_bench.model.campaign import PodResources

    big = campaign.model("Qwen/Qwen3-32B-AWQ").model_copy(
        update={"resources": PodResources(cpu_per_gpu=12, memory_gib_per_gpu=40)})
    c = campaign.model_copy(update={"models": [big]})
    _, docs = render(c, big.name, "no-offload")
    res = container(docs, "vllm")["resources"]
    assert res["requests"]["cpu"] == "24" and res["requests"]["memory"] == f"{80 * 1024}Mi"
    rwo = campaign.serving.model_copy(update={"model_cache_pvc": "models", "model_cache_pvc_access_mode": "ReadWriteOnce"})
    with pytest.raises(CampaignError, match="ReadWriteOnce but this run has 2 replicas"):
        render(campaign.model_copy(update={"serving": rwo}), "Qwen/Qwen3-8B", "no-offload", replicas=2)
    render(campaign.model_copy(update={"serving": rwo}), "Qwen/Qwen3-8B", "no-offload", replicas=1)  # one pod: fine


def _offload(docs):
    vllm = container(docs, "vllm")
    return json.loads(vllm["args"][vllm["args"].index("--kv-transfer-config") + 1])["kv_connector_extra_config"]


def _memory_request(docs):
    return container(docs, "vllm")["resources"]["requests"]["memory"]


@pytest.mark.parametrize("version, key, scale", [("v0.4.0", "num_cpu_blocks", 1),
                                                 ("v0.8.0", "cpu_bytes_to_use", 2 * 16 * 2 * 36 * 4 * 128 * 2)])
def test_a_catalog_configuration_with_its_own_offload_size_renders_it_for_each_vllm(campaign, version, key, scale):
    """native-offload-20k is data only (include/configurations.yaml): twice the published CPU tier, in the
    size key each vLLM reads, and a pod sized for it."""
    _, published = render(campaign, "Qwen/Qwen3-8B", "native-offload", llmd_version=version)
    _, doubled = render(campaign, "Qwen/Qwen3-8B", "native-offload-20k", llmd_version=version)
    assert _offload(published) == {key: 10000 * scale} and _offload(doubled) == {key: 20000 * scale}
    from llmd_bench.stack import sizing

    per_rank = 10000 * 16 * sizing.kv_bytes_per_token_per_rank(sizing.architecture(campaign.model("Qwen/Qwen3-8B")), 2)
    def mib(q):
        assert q.endswith("Mi")
        return int(q[:-2]) * 2**20

    grew = mib(_memory_request(doubled)) - mib(_memory_request(published))
    assert abs(grew - 2 * per_rank) <= 2**20  # 10000 more blocks on each of 2 ranks (quantities round to MiB)


def test_a_campaign_configuration_renders_its_model_server_and_router_parts(tmp_path):
    from conftest import tiny_campaign, write_campaign

    doc = tiny_campaign(configs=["no-offload", "valkey-lowmem"])
    doc["configurations"] = {"valkey-lowmem": {
        "description": "precise routing into Valkey, GPU cache squeezed",
        "model_server": {"gpu_memory_utilization": 0.6, "extra_args": ["--max-model-len", "8192"],
                         "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}, "image": "registry.internal/vllm:patched"},
        "router": {"prefix_scorer": "precise", "index": "valkey"}, "evidence": "index-keys"}}
    doc["local_simulation"]["valkey-lowmem"] = {"ttft_ms": 40, "itl_ms": 8.0}
    c = load_campaign(write_campaign(tmp_path, doc))
    _, docs = render(c, "Qwen/Qwen3-0.6B", "valkey-lowmem", replicas=2)
    vllm = container(docs, "vllm")
    assert vllm["args"][vllm["args"].index("--gpu-memory-utilization") + 1] == "0.6"
    assert vllm["args"][-2:] == ["--max-model-len", "8192"] and "--kv-events-config" in vllm["args"]
    assert {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"} in vllm["env"]
    assert vllm["image"] == "registry.internal/vllm:patched"
    assert any("valkey/valkey:" in cont["image"] for d in by_kind(docs, "Deployment")
               for cont in d["spec"]["template"]["spec"]["containers"])
    assert "precise-prefix-cache-scorer" in json.dumps(epp_config(docs))
    for d in docs:
        if d["kind"] != "InferencePool":
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    _, baseline = render(c, "Qwen/Qwen3-0.6B", "no-offload")
    assert container(baseline, "vllm")["args"][container(baseline, "vllm")["args"].index("--gpu-memory-utilization") + 1] == "0.9"


LATER_CONFIGS = ["native-offload-20k", "lmcache-local", "lmcache-redis", "lmcache-valkey", "fs-offload", "cpu+fs-offload-20k"]


def _kv_transfer(docs):
    vllm = container(docs, "vllm")
    return json.loads(vllm["args"][vllm["args"].index("--kv-transfer-config") + 1]), vllm


def test_filesystem_and_multiconnector_configs_follow_upstream(campaign):
    c = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"llmd_version": "v0.7.0"})})
    _, docs = render(c, "Qwen/Qwen3-8B", "fs-offload")
    cfg, vllm = _kv_transfer(docs)
    # llmd_fs_backend/spec.py @v0.7.0 keys; the CPU spec is absent (cpu: false)
    assert cfg == {"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
        "spec_name": "SharedStorageOffloadingSpec", "spec_module_path": "llmd_fs_backend.spec",
        "shared_storage_path": "/kvcache/kv-cache/", "block_size": 256, "threads_per_gpu": 128}}
    args = vllm["args"]
    assert args[args.index("--distributed-executor-backend") + 1] == "mp"
    # llm-d-cuda runs as uid 2000 and a fresh claim is root-owned: as upstream's guide, the container runs as root
    assert vllm["securityContext"] == {"runAsUser": 0}
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "256Gi" and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ms"))
    volumes = {v["name"]: v for v in server["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kv-offload-fs"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert {"name": "kv-offload-fs", "mountPath": "/kvcache"} in vllm["volumeMounts"]
    # staging: one 256-token file of Qwen3-8B's KV per rank (36 layers x 2 x 4 heads x 128 x 2 B = 72 KiB/token,
    # 18 MiB per file) per I/O thread, 128 threads, on each of 2 ranks, on top of vLLM's own 2 x 16 GiB
    assert _memory_request(docs) == f"{2 * 16 * 1024 + 2 * 18 * 128}Mi"

    _, docs = render(c, "Qwen/Qwen3-8B", "cpu+fs-offload-20k")
    cfg, _ = _kv_transfer(docs)
    cpu, fs = cfg["kv_connector_extra_config"]["connectors"]
    assert cfg["kv_connector"] == "MultiConnector"
    assert cpu == {"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
                   "kv_connector_extra_config": {"cpu_bytes_to_use": 20000 * 16 * 72 * 1024 * 2}}
    assert fs["kv_connector_extra_config"]["spec_name"] == "SharedStorageOffloadingSpec"
    # a second replica cannot mount a ReadWriteOnce volume
    with pytest.raises(CampaignError, match="filesystem offload volume is ReadWriteOnce but the cell has 2 replicas"):
        render(c, "Qwen/Qwen3-8B", "fs-offload", replicas=2)
    # an existing claim instead of one per cell
    shared = c.model_copy(update={"serving": c.serving.model_copy(update={
        "filesystem_offload": c.serving.filesystem_offload.model_copy(update={"claim": "kvcache-storage-pvc"})})})
    _, docs = render(shared, "Qwen/Qwen3-8B", "fs-offload")
    assert not by_kind(docs, "PersistentVolumeClaim")
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ms"))
    assert {"name": "kv-offload-fs", "persistentVolumeClaim": {"claimName": "kvcache-storage-pvc"}} in \
        server["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize("model, gib", [("Qwen/Qwen3-0.6B", 4), ("Qwen/Qwen3-8B", 9), ("Qwen/Qwen3-14B", 29),
                                        ("Qwen/Qwen3-32B-AWQ", 10)])
def test_lmcache_cpu_tier_is_sized_per_model_and_its_remote_is_the_cells_store(campaign, model, gib):
    c = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"llmd_version": "v0.7.0"})})
    _, docs = render(c, model, "lmcache-local")
    cfg, vllm = _kv_transfer(docs)
    assert cfg == {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    # the evaluation's LMCACHE_MAX_LOCAL_CPU_SIZE per model, GiB per worker; PYTHONHASHSEED for consistent hashing
    assert env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == str(gib) and env["LMCACHE_LOCAL_CPU"] == "true"
    assert env["PYTHONHASHSEED"] and "LMCACHE_REMOTE_URL" not in env
    assert _memory_request(docs) == f"{2 * 16 * 1024 + 2 * gib * 1024}Mi"  # pinned per worker, counted in the pod
    _, docs = render(c, model, "lmcache-valkey")
    _, vllm = _kv_transfer(docs)
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    store = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-kv"))
    assert env["LMCACHE_REMOTE_URL"] == f"redis://{store['metadata']['name']}.bench.svc.cluster.local:6379"
    (kv,) = [ct for d in by_kind(docs, "Deployment") for ct in d["spec"]["template"]["spec"]["containers"]
             if ct["name"] == "valkey"]
    assert kv["args"][-4:] == ["--maxmemory", "3gb", "--maxmemory-policy", "allkeys-lru"]


def test_a_pre_start_command_runs_before_vllm_which_keeps_its_arguments(tmp_path):
    from conftest import tiny_campaign, write_campaign

    doc = tiny_campaign(configs=["no-offload", "lmcache-pinned"])
    doc["serving"]["llmd_version"] = "v0.4.0"  # no LMCache in this image: the configuration installs it
    doc["configurations"] = {"lmcache-pinned": {
        "description": "LMCache installed at start-up", "evidence": "offload-counters",
        "model_server": {"kv_offload": {"connector": "LMCacheConnectorV1", "size": {"cpu_gib_per_gpu": 4}},
                         "image": "docker.io/vllm/vllm-openai:v0.11.2", "pre_start": ["pip install lmcache==0.3.9"]}}}
    doc["local_simulation"]["lmcache-pinned"] = {"ttft_ms": 40, "itl_ms": 8}
    campaign = load_campaign(write_campaign(tmp_path, doc))
    _, docs = render(campaign, "Qwen/Qwen3-0.6B", "lmcache-pinned")
    vllm = container(docs, "vllm")
    assert vllm["command"] == ["/bin/sh", "-c", 'pip install lmcache==0.3.9 && exec vllm serve "$@"', "vllm"]
    assert vllm["args"][0] == "Qwen/Qwen3-0.6B" and "--kv-transfer-config" in vllm["args"]
    _, docs = render(campaign, "Qwen/Qwen3-0.6B", "no-offload")
    assert container(docs, "vllm")["command"] == ["vllm", "serve"]


def test_a_configurations_block_size_and_scorer_weights_reach_vllm_and_the_epp(tmp_path):
    from conftest import tiny_campaign, write_campaign

    doc = tiny_campaign(configs=["no-offload", "valkey-big-blocks"])
    doc["configurations"] = {"valkey-big-blocks": {
        "description": "precise routing on 64-token blocks, prefix-heavy weights", "evidence": "index-keys",
        "model_server": {"block_size": 64},
        "router": {"prefix_scorer": "precise", "index": "valkey", "weights": {"queue": 1, "kv_cache_utilization": 0,
                                                                               "prefix": 5}}}}
    doc["local_simulation"]["valkey-big-blocks"] = {"ttft_ms": 40, "itl_ms": 8}
    campaign = load_campaign(write_campaign(tmp_path, doc))
    _, docs = render(campaign, "Qwen/Qwen3-0.6B", "valkey-big-blocks")
    args = container(docs, "vllm")["args"]
    assert args[args.index("--block-size") + 1] == "64"
    cfg = epp_config(docs)
    scorer = next(p for p in cfg["plugins"] if p["type"] == "precise-prefix-cache-scorer")["parameters"]
    processor = scorer.get("tokenProcessorConfig") or scorer["indexerConfig"]["tokenProcessorConfig"]
    assert 64 in processor.values()  # the indexer hashes the blocks vLLM reports
    profile = {p["pluginRef"]: p.get("weight") for p in cfg["schedulingProfiles"][0]["plugins"]}
    assert profile == {"queue-scorer": 1, "precise-prefix-cache-scorer": 5, "max-score-picker": None}
    assert "kv-cache-utilization-scorer" not in {p["type"] for p in cfg["plugins"]}
    # the baseline keeps the published weights and block size
    _, docs = render(campaign, "Qwen/Qwen3-0.6B", "no-offload")
    assert {p["pluginRef"]: p.get("weight") for p in epp_config(docs)["schedulingProfiles"][0]["plugins"]} == {
        "queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3, "max-score-picker": None}
    args = container(docs, "vllm")["args"]
    assert args[args.index("--block-size") + 1] == "16"


@pytest.mark.parametrize("version, vllm_image", [("v0.8.0", "ghcr.io/llm-d/llm-d-cuda:v0.8.0"),
                                                 ("v0.8.1", "docker.io/vllm/vllm-openai:v0.23.0"),
                                                 ("v0.9.0", "docker.io/vllm/vllm-openai:v0.26.0"),
                                                 ("v0.10.0", "docker.io/vllm/vllm-openai:v0.30.0")])
def test_from_vllm_0_23_the_filesystem_tier_is_vllms_own_tiering_spec(campaign, version, vllm_image):
    """vLLM 0.23 carries the filesystem tier (TieringOffloadingSpec with an `fs` secondary tier behind a CPU primary
    tier; vllm/v1/kv_offload/tiering/spec.py, tiering/fs/manager.py @v0.23.0); llmd_fs_backend is not in these
    images (or not for their vLLM line), so it is never rendered there."""
    c = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"llmd_version": version})})
    _, docs = render(c, "Qwen/Qwen3-8B", "cpu+fs-offload-20k")
    cfg, vllm = _kv_transfer(docs)
    assert vllm["image"] == vllm_image
    assert cfg == {"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
        "spec_name": "TieringOffloadingSpec", "cpu_bytes_to_use": 20000 * 16 * 72 * 1024 * 2, "block_size": 256,
        "secondary_tiers": [{"type": "fs", "root_dir": "/kvcache/kv-cache"}]}}
    assert "--distributed-executor-backend" not in vllm["args"] and "llmd_fs_backend" not in json.dumps(docs)
    assert vllm["securityContext"] == {"runAsUser": 0}
    # the CPU primary tier is an mmap in /dev/shm (tiering/spec.py: SharedOffloadRegion): /dev/shm holds it
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ms"))
    shm = next(v for v in server["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")["emptyDir"]["sizeLimit"]
    assert int(shm.removesuffix("Mi")) * 2**20 >= 20000 * 16 * 72 * 1024 * 2
    for doc in docs:
        if doc["kind"] != "InferencePool":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # no CPU tier: vLLM's fs tier cannot start without one; refused naming the release and why
    with pytest.raises(CampaignError, match=rf"llm-d {version}'s filesystem tier is vLLM .*TieringOffloadingSpec.*"
                                            r"cpu: false"):
        render(c, "Qwen/Qwen3-8B", "fs-offload")


def test_offload_prompt_only_is_set_where_vllm_has_it_and_refused_where_it_does_not(tmp_path):
    from conftest import tiny_campaign, write_campaign

    doc = tiny_campaign(configs=["no-offload", "native-all-blocks", "tiered-all-blocks"])
    doc["configurations"] = {
        "native-all-blocks": {"description": "native offload of decode blocks too", "evidence": "offload-counters",
                              "model_server": {"kv_offload": {"connector": "OffloadingConnector",
                                                              "offload_prompt_only": False}}},
        "tiered-all-blocks": {"description": "CPU + filesystem, decode blocks too", "evidence": "offload-counters",
                              "model_server": {"kv_offload": {"connector": "OffloadingConnector", "offload_prompt_only": False,
                                                              "size": {"cpu_gib_per_gpu": 4},
                                                              "filesystem": {"block_size": 256, "read_threads": 8}}}}}
    for name in ("native-all-blocks", "tiered-all-blocks"):
        doc["local_simulation"][name] = {"ttft_ms": 40, "itl_ms": 8}
    c = load_campaign(write_campaign(tmp_path, doc))
    _, docs = render(c, "Qwen/Qwen3-0.6B", "native-all-blocks", llmd_version="v0.8.0")
    cfg, _ = _kv_transfer(docs)
    assert cfg["kv_connector_extra_config"]["offload_prompt_only"] is False
    _, docs = render(c, "Qwen/Qwen3-0.6B", "tiered-all-blocks", llmd_version="v0.9.0")
    extra = _kv_transfer(docs)[0]["kv_connector_extra_config"]
    assert extra["offload_prompt_only"] is False and extra["spec_name"] == "TieringOffloadingSpec"
    assert extra["secondary_tiers"] == [{"type": "fs", "root_dir": "/kvcache/kv-cache", "n_read_threads": 8}]
    # left unset, the key is not rendered: the release's vLLM default (recorded in the catalog) applies
    _, docs = render(c, "Qwen/Qwen3-0.6B", "no-offload", llmd_version="v0.8.0")
    assert "offload_prompt_only" not in json.dumps(docs)
    # vLLM 0.19.1 (llm-d v0.7.0) has no such key: refused before anything is rendered, naming the release
    with pytest.raises(CampaignError, match=r"offload_prompt_only is set, but llm-d v0\.7\.0's vLLM 0\.19\.1 has no such key"):
        render(c, "Qwen/Qwen3-0.6B", "native-all-blocks", llmd_version="v0.7.0")
    # and it is an OffloadingConnector setting
    bad = tiny_campaign(configs=["no-offload", "lm"])
    bad["configurations"] = {"lm": {"description": "d", "evidence": "offload-counters", "model_server": {"kv_offload": {
        "connector": "LMCacheConnectorV1", "offload_prompt_only": True}}}}
    bad["local_simulation"]["lm"] = {"ttft_ms": 40, "itl_ms": 8}
    with pytest.raises(CampaignError, match="offload_prompt_only is a setting of connector OffloadingConnector"):
        bad_dir = tmp_path / "bad"
        bad_dir.mkdir()
        load_campaign(write_campaign(bad_dir, bad))


@pytest.mark.parametrize("config, key, scheme", [("llm-d-redis", "redisConfig", "redis"),
                                                 ("llm-d-valkey", "valkeyConfig", "valkey")])
def test_epp_config_and_lmcache_address_the_index_at_the_port_they_are_given(campaign, config, key, scheme):
    """An installed index (existing mode) answers on its own Service's port: epp_config and model_server take it as a
    parameter (the default is the port of the index a cell deploys), not by rewriting the rendered strings."""
    params = resolve_params(campaign, {}, catalog.known_versions())
    entry = catalog.entry(params.llmd_version)
    cell = Cell("Qwen/Qwen3-14B", config)
    names = {**manifests.cell_names(cell), "kv": "valkey"}
    definition = campaign.cell_configuration(cell)

    def address(**kw):
        cfg = manifests.epp_config(cell, campaign.serving, names, "llm-d", entry, definition, **kw)
        scorer = next(p for p in cfg["plugins"] if p["type"] == "precise-prefix-cache-scorer")["parameters"]
        return scorer["indexerConfig"]["kvBlockIndexConfig"][key]["address"]

    assert address() == f"{scheme}://valkey.llm-d.svc.cluster.local:{manifests.INDEX_PORT}"
    assert address(index_port=6390) == f"{scheme}://valkey.llm-d.svc.cluster.local:6390"
    v070 = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"llmd_version": "v0.7.0"})})
    p070 = resolve_params(v070, {}, catalog.known_versions())
    lm = Cell("Qwen/Qwen3-14B", "lmcache-valkey")
    server = manifests.model_server(lm, p070, v070, catalog.entry("v0.7.0"), {**manifests.cell_names(lm), "kv": "valkey"},
                                    "llm-d", index_port=6390)
    assert {"name": "LMCACHE_REMOTE_URL", "value": "redis://valkey.llm-d.svc.cluster.local:6390"} in server["env"]
