"""Render a cell's Kubernetes manifests (include/manifests/, Jinja) from the campaign, params and the
version catalog. All configuration differences between the four cells are decided here, in one place:

- no-offload / native-offload: EPP with the in-memory `prefix-cache-scorer` profile;
  native-offload adds vLLM's OffloadingConnector (`num_cpu_blocks` before vLLM 0.14, `cpu_bytes_to_use` after).
- llm-d-redis / llm-d-valkey: EPP with `precise-prefix-cache-scorer` indexing into Redis / Valkey (the
  in-memory index explicitly disabled: in llm-d v0.4.0 it wins otherwise), vLLM publishing KV events to
  the EPP over ZMQ with the same hash algorithm, block size and PYTHONHASHSEED as the indexer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml

from llmd_bench import __version__, catalog, paths
from llmd_bench.campaign import ROUTING_CONFIGS, Campaign, Cell, RunParams
from llmd_bench.names import dns_label, label_value

SIM_MAX_MODEL_LEN, SIM_KV_CACHE_BLOCKS = 32768, 8192
EPP_PORT, ENVOY_PORT, MODEL_PORT, ZMQ_PORT, EPP_METRICS_PORT = 9002, 8081, 8000, 5557, 9090
ENVOY_IMAGE = "docker.io/envoyproxy/envoy:v1.33.2"
STEP_SERVICE_ACCOUNT, EPP_SERVICE_ACCOUNT = "llmd-bench-steps", "llmd-bench-epp"


def vllm_major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"cannot read a vLLM version from {version!r}")
    return int(m.group(1)), int(m.group(2))


def offload_extra_config(vllm_version: str, serving: Any) -> dict[str, Any]:
    """OffloadingConnector's size setting: vLLM 0.11-0.13 read num_cpu_blocks; 0.14 fails on it."""
    if vllm_major_minor(vllm_version) >= (0, 14):
        return {"cpu_bytes_to_use": int(serving.offload_cpu_gib * 2**30)}
    return {"num_cpu_blocks": serving.offload_cpu_blocks}


def cell_names(cell: Cell) -> dict[str, str]:
    prefix = dns_label(f"{cell.short_model}-{cell.config}", limit=50)
    return {"model_server": f"{prefix}-ms", "epp": f"{prefix}-epp", "epp_config": f"{prefix}-epp-cfg",
            "pool": f"{prefix}-pool", "kv": f"{prefix}-kv"}


def cell_labels(campaign: Campaign, cell: Cell, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    selector = {"app.kubernetes.io/managed-by": "llmd-bench", "llmd-bench/campaign": label_value(campaign.dag_id),
                "llmd-bench/model": dns_label(cell.short_model), "llmd-bench/config": cell.config}
    labels = selector | {"llmd-bench/run": label_value(run_id), "app.kubernetes.io/part-of": "llmd-bench",
                         "app.kubernetes.io/version": label_value(__version__)}
    return labels, selector


def epp_config(cell: Cell, serving: Any, names: dict[str, str], namespace: str) -> dict[str, Any]:
    base_scorers = [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}]
    tail = [{"type": "max-score-picker"}, {"type": "single-profile-handler"}]
    if cell.config in ROUTING_CONFIGS:
        address = f"{names['kv']}.{namespace}.svc.cluster.local:6379"
        index = ({"redisConfig": {"address": f"redis://{address}"}} if cell.config == "llm-d-redis"
                 else {"valkeyConfig": {"address": f"valkey://{address}", "backendType": "valkey"}})
        index["inMemoryConfig"] = None  # v0.4.0: a default in-memory index wins unless cleared
        index["enableMetrics"] = True  # kvcache_index_* on the EPP's /metrics: evidence that the index is used
        prefix = {"type": "precise-prefix-cache-scorer", "parameters": {
            "indexerConfig": {
                "tokenProcessorConfig": {"blockSize": serving.block_size, "hashSeed": serving.hash_seed},
                "kvBlockIndexConfig": index,
                "tokenizersPoolConfig": {"modelName": cell.model},
            },
            "kvEventsConfig": {"zmqEndpoint": f"tcp://*:{ZMQ_PORT}", "topicFilter": "kv@", "concurrency": 4},
        }}
    else:
        prefix = {"type": "prefix-cache-scorer", "parameters": {
            "blockSize": serving.block_size, "maxPrefixBlocksToMatch": 256, "lruCapacityPerServer": 31250}}
    plugins = base_scorers + [prefix] + tail
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": plugins,
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": prefix["type"], "weight": 3},
            {"pluginRef": "max-score-picker"},
        ]}],
    }


def envoy_config() -> dict[str, Any]:
    """Standalone mode: Envoy asks the EPP (ext_proc on localhost) which pod to use and forwards there."""
    return {
        "static_resources": {
            "listeners": [{
                "name": "inference", "address": {"socket_address": {"address": "0.0.0.0", "port_value": ENVOY_PORT}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inference",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "model_servers", "timeout": "0s"}}]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.ext_proc", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                                "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
                                "processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SEND",
                                                    "request_body_mode": "FULL_DUPLEX_STREAMED",
                                                    "request_trailer_mode": "SEND"},
                                "message_timeout": "1000s", "allow_mode_override": True}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    }}]}],
            }],
            "clusters": [
                {"name": "model_servers", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                 "connect_timeout": "10s",
                 "original_dst_lb_config": {"use_http_header": True, "http_header_name": "x-gateway-destination-endpoint"}},
                {"name": "epp", "type": "STATIC", "connect_timeout": "5s",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                     "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                     "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "epp", "endpoints": [{"lb_endpoints": [{"endpoint": {
                     "address": {"socket_address": {"address": "127.0.0.1", "port_value": EPP_PORT}}}}]}]}},
            ],
        }
    }


def model_server(cell: Cell, params: RunParams, serving: Any, entry: catalog.VersionEntry, names: dict[str, str],
                 namespace: str, size_gb: float) -> dict[str, Any]:
    tp = params.tensor_parallel_size
    env: list[dict[str, Any]] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": serving.hf_token_secret, "key": "HF_TOKEN", "optional": True}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "PYTHONHASHSEED", "value": serving.hash_seed},
    ]
    if serving.model_cache_pvc:
        env.append({"name": "HF_HOME", "value": "/models"})
    kv_events = cell.config in ROUTING_CONFIGS
    events = {"enable_kv_cache_events": True, "publisher": "zmq",
              "endpoint": f"tcp://{names['epp']}.{namespace}.svc.cluster.local:{ZMQ_PORT}",
              "topic": f"kv@$(POD_IP)@{cell.model}"}
    if serving.backend == "inference-sim":
        # llm-d-inference-sim >= v0.7.0 flags; latencies carry units (v0.9 rejects bare numbers), and the
        # default --max-model-len (1024) would reject the sweep's 10k-token shared prefixes.
        args = ["--model", cell.model, "--port", str(MODEL_PORT), "--max-num-seqs", str(serving.max_num_seqs),
                "--max-model-len", str(SIM_MAX_MODEL_LEN), "--block-size", str(serving.block_size),
                "--time-to-first-token=50ms", "--inter-token-latency=10ms"]
        if kv_events:
            # the simulator dials the EPP's ZMQ endpoint and needs POD_IP for its topic (env above)
            args += ["--enable-kvcache", "--kv-cache-size", str(SIM_KV_CACHE_BLOCKS), "--hash-seed", serving.hash_seed,
                     "--zmq-endpoint", events["endpoint"]]
        return {"container": "inference-sim", "image": entry.images["inference_sim"], "command": ["/app/llm-d-inference-sim"],
                "args": args, "env": env, "kv_events": kv_events, "startup_failures": 30,
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}}
    args = [cell.model, "--host", "0.0.0.0", "--port", str(MODEL_PORT), "--tensor-parallel-size", str(tp),
            "--max-num-seqs", str(serving.max_num_seqs), "--gpu-memory-utilization", str(serving.gpu_memory_utilization),
            "--block-size", str(serving.block_size), "--enable-prefix-caching"]
    if cell.config == "native-offload":
        args += ["--kv-transfer-config", json.dumps({
            "kv_connector": "OffloadingConnector", "kv_role": "kv_both",
            "kv_connector_extra_config": offload_extra_config(entry.vllm_version, serving)}, separators=(",", ":"))]
    if kv_events:
        args += ["--prefix-caching-hash-algo", "sha256_cbor", "--kv-events-config", json.dumps(events, separators=(",", ":"))]
    # Loading weights takes longer for bigger models: a startup budget of 10 min + 1 min per 2 GB.
    startup_failures = int((600 + 30 * size_gb) / 10)
    gpus = str(tp)
    return {"container": "vllm", "image": entry.images["vllm"], "command": ["vllm", "serve"], "args": args, "env": env,
            "kv_events": kv_events, "startup_failures": startup_failures,
            "resources": {"requests": {"nvidia.com/gpu": gpus, "cpu": str(4 * tp), "memory": f"{16 * tp}Gi"},
                          "limits": {"nvidia.com/gpu": gpus, "memory": f"{32 * tp}Gi"}}}


def context(campaign: Campaign, params: RunParams, cell: Cell, run_id: str, namespace: str) -> dict[str, Any]:
    serving = campaign.serving
    entry = catalog.entry(params.llmd_version)
    names = cell_names(cell)
    labels, selector = cell_labels(campaign, cell, run_id)
    spec = campaign.model(cell.model)
    kv = None
    if cell.config in ROUTING_CONFIGS:
        kind = "redis" if cell.config == "llm-d-redis" else "valkey"
        kv = {"kind": kind, "image": entry.images[kind]}
    epp_args = ["--pool-name", names["pool"], "--pool-namespace", namespace, "--config-file", "/config/epp-config.yaml",
                "--grpc-port", str(EPP_PORT), "--grpc-health-port", "9003", "--metrics-port", str(EPP_METRICS_PORT),
                # the sweep pod scrapes it inside the namespace; token review would need cluster-scoped RBAC
                "--metrics-endpoint-auth=false",
                "--kv-cache-usage-percentage-metric", "vllm:kv_cache_usage_perc", "--v", "2"]
    epp_env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": serving.hf_token_secret, "key": "HF_TOKEN", "optional": True}}}]
    if cell.config in ROUTING_CONFIGS:
        epp_env.append({"name": "PYTHONHASHSEED", "value": serving.hash_seed})
    return {
        "namespace": namespace, "labels": labels, "selector": selector, "names": names,
        "replicas": params.replicas, "shm_size": serving.shm_size, "model_cache_pvc": serving.model_cache_pvc,
        "server": model_server(cell, params, serving, entry, names, namespace, spec.size_gb),
        "epp": {"image": entry.images["epp"], "envoy_image": entry.images.get("envoy", ENVOY_IMAGE),
                "args": epp_args, "env": epp_env, "service_account": EPP_SERVICE_ACCOUNT,
                "kv_events": cell.config in ROUTING_CONFIGS,
                "config_yaml": yaml.safe_dump(epp_config(cell, serving, names, namespace), sort_keys=False),
                "envoy_yaml": yaml.safe_dump(envoy_config(), sort_keys=False)},
        "kv": kv,
    }


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.home() / "include" / "manifests")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["combine"] = lambda a, b: {**a, **b}
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


def render_cell(campaign: Campaign, params: RunParams, cell: Cell, run_id: str, namespace: str) -> list[dict[str, Any]]:
    """The cell's objects, in apply order."""
    ctx = context(campaign, params, cell, run_id, namespace)
    env = _env()
    docs: list[dict[str, Any]] = []
    templates = (["cell/kv-index.yaml.j2"] if ctx["kv"] else []) + ["cell/epp.yaml.j2", "cell/model-server.yaml.j2"]
    for name in templates:
        docs += [d for d in yaml.safe_load_all(env.get_template(name).render(**ctx)) if d]
    return docs


def render_namespace(namespace: str) -> list[dict[str, Any]]:
    text = _env().get_template("namespace/rbac.yaml.j2").render(
        namespace=namespace, step_service_account=STEP_SERVICE_ACCOUNT, epp_service_account=EPP_SERVICE_ACCOUNT)
    return [d for d in yaml.safe_load_all(text) if d]


PCP_NODE_IMAGE = "ghcr.io/llmd-bench/llmd-bench-pcp-node:6.0.3"  # docker/pcp-node.Dockerfile
PMCD_PORT = 44321


def render_pcp(namespace: str, image: str | None = None, node_selector: dict[str, str] | None = None,
               runtime_class: str | None = None) -> list[dict[str, Any]]:
    """The PCP DaemonSet on the GPU nodes (applied once, like the namespace's RBAC)."""
    text = _env().get_template("pcp/daemonset.yaml.j2").render(
        namespace=namespace, image=image or os.environ.get("LLMD_BENCH_PCP_IMAGE", PCP_NODE_IMAGE),
        node_selector=node_selector or {"nvidia.com/gpu.present": "true"}, runtime_class=runtime_class,
        pmcd_port=PMCD_PORT)
    return [d for d in yaml.safe_load_all(text) if d]


def write(docs: list[dict[str, Any]], out: Path, prefix: str = "") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, doc in enumerate(docs):
        path = out / f"{prefix}{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    return written
