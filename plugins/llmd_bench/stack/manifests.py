"""Render a cell's Kubernetes manifests (include/manifests/, Jinja) from the campaign, params and the
version catalog. All configuration differences between cells, and between llm-d releases, are decided
here, in one place, from the catalog entry's contract (catalog.py):

Each cell's configuration comes from the configuration catalog (configurations.py):
- router.prefix_scorer approximate: EPP with the approximate `prefix-cache-scorer`; model_server.kv_offload adds
  vLLM's OffloadingConnector, sized from the model's architecture (sizing.py).
- router.prefix_scorer precise: EPP with `precise-prefix-cache-scorer` indexing into Redis / Valkey, vLLM
  publishing KV events to the EPP over ZMQ with the same hash algorithm, block size and PYTHONHASHSEED as
  the indexer, on the topic the release's scheduler parses.
- Envoy in front of the EPP (standalone mode) speaks TLS to it exactly when the EPP serves TLS.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import yaml

from llmd_bench import __version__
from llmd_bench.model import catalog, paths, yaml_text
from llmd_bench.model.campaign import Campaign, Cell, Placement, Serving
from llmd_bench.model.configurations import Configuration, KvOffload
from llmd_bench.model.errors import CampaignError
from llmd_bench.model.names import dns_label, label_value
from llmd_bench.model.params import RunParams
from llmd_bench.stack import sizing
from llmd_bench.stack.lanes import HOSTNAME_LABEL

SIM_MAX_MODEL_LEN, SIM_KV_CACHE_BLOCKS = 32768, 8192
EPP_PORT, EPP_HEALTH_PORT, ENVOY_PORT, MODEL_PORT, ZMQ_PORT, EPP_METRICS_PORT = 9002, 9003, 8081, 8000, 5557, 9090
INDEX_PORT = 6379
UDS_SOCKET = "/tmp/tokenizer/tokenizer-uds.socket"
UDS_TOKENIZER_WORKERS = 24  # LLMD guides/precise-prefix-cache-aware (v0.7.0): workersCount 24
SIM_RENDER_PORT = 8082      # SIM pkg/common/config.go @v0.9.2 RenderURL default http://localhost:8082
EPP_RENDER_PORT = 8000      # ROUTER .../dataproducer/tokenizer/vllm_http.go @v0.10.0: default http://localhost:8000
STEP_SERVICE_ACCOUNT, EPP_SERVICE_ACCOUNT = "llmd-bench-steps", "llmd-bench-epp"


def vllm_major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"cannot read a vLLM version from {version!r}")
    return int(m.group(1)), int(m.group(2))


def mirrored(image: str, mirrors: dict[str, str]) -> str:
    """An image through the campaign's registry mirrors (longest matching prefix wins)."""
    for prefix in sorted(mirrors, key=len, reverse=True):
        if image == prefix or image.startswith(prefix.rstrip("/") + "/"):
            return mirrors[prefix].rstrip("/") + image[len(prefix.rstrip("/")):]
    return image


def pod_placement(placement: Placement, serving: Serving) -> dict[str, Any]:
    """Pod-spec fields for one component: where it may run and how its images are pulled."""
    spec: dict[str, Any] = {}
    if placement.node_selector:
        spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        spec["tolerations"] = [dict(t) for t in placement.tolerations]
    if placement.affinity:
        spec["affinity"] = dict(placement.affinity)
    if placement.runtime_class_name:
        spec["runtimeClassName"] = placement.runtime_class_name
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    if serving.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in serving.image_pull_secrets]
    return spec


def lane_placement(placement: dict[str, Any], lane_node: str | None) -> dict[str, Any]:
    """The model servers' pod placement in a lane (lanes: auto, stack/lanes.py): the campaign's nodeSelector plus the
    lane's node, by its kubernetes.io/hostname label; affinity and tolerations stay as the campaign sets them. Only
    the model servers: the EPP, Envoy and the index request no GPU."""
    if lane_node is None:
        return placement
    return {**placement, "nodeSelector": {**placement.get("nodeSelector", {}), HOSTNAME_LABEL: lane_node}}


def cell_names(cell: Cell) -> dict[str, str]:
    prefix = dns_label(f"{cell.short_model}-{cell.config}" + (f"-{cell.variant}" if cell.factors else ""), limit=50)
    return {"model_server": f"{prefix}-ms", "epp": f"{prefix}-epp", "epp_config": f"{prefix}-epp-cfg",
            "pool": f"{prefix}-pool", "kv": f"{prefix}-kv", "kv_fs": f"{prefix}-kvfs"}


def cell_labels(campaign: Campaign, cell: Cell, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    selector = {"app.kubernetes.io/managed-by": "llmd-bench", "llmd-bench/campaign": label_value(campaign.dag_id),
                "llmd-bench/model": dns_label(cell.short_model), "llmd-bench/config": label_value(cell.config)}
    if cell.factors:
        selector["llmd-bench/factors"] = label_value(cell.variant)
    labels = selector | {"llmd-bench/run": label_value(run_id), "app.kubernetes.io/part-of": "llmd-bench",
                         "app.kubernetes.io/version": label_value(__version__)}
    return labels, selector


def kv_event_topic(entry: catalog.VersionEntry, model: str) -> str:
    return entry.contract.kv_event_topic.format(port=MODEL_PORT, model=model)


def epp_config(cell: Cell, serving: Serving, names: dict[str, str], namespace: str,
               entry: catalog.VersionEntry, config: Configuration, index_port: int = INDEX_PORT) -> dict[str, Any]:
    """The cell's EndpointPickerConfig; the index is Service names['kv'] at index_port (the one a cell deploys listens
    on INDEX_PORT; an installed one's comes from its Service, runtime/existing.py index_endpoint)."""
    base_scorers = [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}]
    tail = [{"type": "max-score-picker"}, {"type": "single-profile-handler"}]
    if config.kv_events:
        contract = entry.contract.precise_scorer
        address = f"{names['kv']}.{namespace}.svc.cluster.local:{index_port}"
        if config.index_kind == "redis" or not contract.valkey_config_key:
            # Valkey speaks RESP: from router v0.10 it is reached through redisConfig (pkg/kvcache/kvblock/redis.go)
            index: dict[str, Any] = {"redisConfig": {"address": f"redis://{address}"}}
        else:
            index = {"valkeyConfig": {"address": f"valkey://{address}", "backendType": "valkey"}}
        if contract.inmemory_index_default:
            index["inMemoryConfig"] = None  # kv-cache < 0.5.0: a default in-memory index wins unless cleared
        index["enableMetrics"] = True  # kvcache_index_* on the EPP's /metrics: evidence that the index is used
        token_processor = {contract.block_size_key: serving.block_size, "hashSeed": serving.hash_seed}
        # the token-producer plugin tokenizes on the producer path (below): no tokenizer pool then
        tokenizers: dict[str, Any] = ({"modelName": cell.model}
                                      if contract.tokenizer_model_name and contract.tokenizer != "render" else {})
        if contract.tokenizer == "uds":
            # as upstream's precise-prefix-cache guide (llm-d guides/precise-prefix-cache-aware/gaie-kv-events/values.yaml);
            # workersCount stated: from kv-cache 0.8 the pool is no longer pre-filled and 0 workers never answer
            tokenizers["uds"] = {"socketFile": UDS_SOCKET}
            tokenizers["workersCount"] = UDS_TOKENIZER_WORKERS
        elif contract.tokenizer == "embedded":
            # the default cache dir is a build-time source path (KVC pkg/tokenization/tokenizer.go): use a writable one
            tokenizers["hf"] = {"tokenizersCacheDir": "/tmp/tokenizers"}
        indexer: dict[str, Any] = {"kvBlockIndexConfig": index}
        if tokenizers:
            indexer["tokenizersPoolConfig"] = tokenizers
        events: dict[str, Any] = {"zmqEndpoint": f"tcp://*:{ZMQ_PORT}", "topicFilter": "kv@", "concurrency": 4}
        if contract.discover_pods_key:
            events["discoverPods"] = False  # vLLM connects to the EPP's endpoint; the EPP does not dial pods
        parameters: dict[str, Any] = {"indexerConfig": indexer, "kvEventsConfig": events}
        if contract.token_processor_at == "top_level":
            parameters = {"tokenProcessorConfig": token_processor, **parameters}
        else:
            indexer["tokenProcessorConfig"] = token_processor
        if contract.plugin == "producer":
            # ROUTER config/charts + pkg/epp/.../dataproducer/{tokenizer,preciseprefixcache} @v0.10.0: the producer
            # keeps the index (binding zmqEndpoint itself: no dataLayer wiring in central mode), the token-producer
            # (which must keep its type as name) tokenizes through the render sidecar, the scorer reads the match
            producers = [
                {"type": "token-producer", "parameters": {"modelName": cell.model,
                                                          "vllm": {"url": f"http://localhost:{EPP_RENDER_PORT}",
                                                                   "timeout": "5s"}}},
                {"type": "precise-prefix-cache-producer", "parameters": parameters}]
            prefix: dict[str, Any] = {"type": "prefix-cache-scorer",
                                      "parameters": {"prefixMatchInfoProducerName": "precise-prefix-cache-producer"}}
            return _picker_config(entry, base_scorers + producers + [prefix] + tail, prefix["type"], config)
        prefix = {"type": "precise-prefix-cache-scorer", "parameters": parameters}
    else:
        # upstream's defaults: its blockSize counts prompt bytes, not tokens (GAIE pkg/epp/scheduling/framework/
        # plugins/multi/prefix/plugin.go @v1.2.0), from GAIE v1.5 the scorer ignores parameters, and from router
        # v0.9 any parameter but prefixMatchInfoProducerName is fatal
        prefix = {"type": "prefix-cache-scorer"}
    return _picker_config(entry, base_scorers + [prefix] + tail, prefix["type"], config)


def _picker_config(entry: catalog.VersionEntry, plugins: list[dict[str, Any]], prefix_scorer: str,
                   config: Configuration) -> dict[str, Any]:
    """The configuration's weights (default the published ones: queue 2, KV-cache utilization 2, prefix 3); a
    scorer weighted 0 is left out of the profile and of the plugins."""
    w = config.router.weights
    weights = {"queue-scorer": w.queue, "kv-cache-utilization-scorer": w.kv_cache_utilization, prefix_scorer: w.prefix}
    dropped = {ref for ref, weight in weights.items() if weight == 0}
    return {
        "apiVersion": entry.contract.epp_config_api_version,
        "kind": "EndpointPickerConfig",
        "plugins": [p for p in plugins if p["type"] not in dropped],
        "schedulingProfiles": [{"name": "default", "plugins": [
            *({"pluginRef": ref, "weight": weight} for ref, weight in weights.items() if weight),
            {"pluginRef": "max-score-picker"},
        ]}],
    }


def envoy_config(entry: catalog.VersionEntry) -> dict[str, Any]:
    """Standalone mode: Envoy asks the EPP (ext_proc on localhost) which pod to use and forwards there.
    The `epp` cluster speaks TLS exactly when the EPP serves it (--secure-serving, self-signed: no
    verification, as upstream's standalone config does)."""
    epp_cluster: dict[str, Any] = {
        "name": "epp", "type": "STATIC", "connect_timeout": "5s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "epp", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": EPP_PORT}}}}]}]}}
    if entry.contract.epp.secure_serving:
        epp_cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            # as upstream's Envoy config (GAIE config/charts/inferencepool, envoy sidecar @v1.2.0): the EPP's
            # certificate is self-signed, so no validation; gRPC needs h2
            "common_tls_context": {"validation_context": {}, "alpn_protocols": ["h2"]}}}
    return {
        "static_resources": {
            "listeners": [{
                "name": "inference", "address": {"socket_address": {"address": "0.0.0.0", "port_value": ENVOY_PORT}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                                 "HttpConnectionManager",
                        "stat_prefix": "inference",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "model_servers", "timeout": "0s"}}]}]},
                        "http_filters": [
                            {"name": "envoy.filters.http.ext_proc", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                                "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
                                "processing_mode": dict(entry.contract.envoy_processing_mode),
                                "message_timeout": "1000s"}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    }}]}],
            }],
            "clusters": [
                {"name": "model_servers", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                 "connect_timeout": "10s",
                 "original_dst_lb_config": {"use_http_header": True, "http_header_name": "x-gateway-destination-endpoint"}},
                epp_cluster,
            ],
        }
    }


def epp_args(entry: catalog.VersionEntry, names: dict[str, str], namespace: str) -> list[str]:
    epp = entry.contract.epp
    args = ["--pool-name", names["pool"], "--pool-namespace", namespace, "--config-file", "/config/epp-config.yaml",
            "--grpc-port", str(EPP_PORT), "--grpc-health-port", str(EPP_HEALTH_PORT),
            "--metrics-port", str(EPP_METRICS_PORT),
            # stated, not left to the default: Envoy's `epp` cluster is built to match (envoy_config)
            f"--secure-serving={'true' if epp.secure_serving else 'false'}"]
    if epp.tracing_flag:
        # no OTLP collector to export to (GAIE config/charts/inferencepool/templates/epp-deployment.yaml @v1.2.0)
        args.append("--tracing=false")
    if epp.metrics_endpoint_auth_flag:
        # the sweep pod scrapes it inside the namespace; token review would need cluster-scoped RBAC
        # (GAIE cmd/epp/runner/runner.go @v1.2.0: filters.WithAuthenticationAndAuthorization)
        args.append("--metrics-endpoint-auth=false")
    if epp.kv_cache_usage_metric_flag:
        args += ["--kv-cache-usage-percentage-metric", "vllm:kv_cache_usage_perc"]
    return args + ["--v", "2"]


def uds_sidecars(image: str, hf_token: dict[str, Any]) -> dict[str, Any]:
    """The UDS tokenizer sidecar, as upstream's precise-prefix-cache guide runs it (llm-d guides/precise-prefix-
    cache-aware/scheduler/patches/uds-tokenizer/patch-uds-sidecar.yaml @v0.7.0), as a native sidecar so it
    starts before the container that connects to its socket; that container mounts /tmp/tokenizer too."""
    tokenizer = {"name": "tokenizer-uds", "image": image, "restartPolicy": "Always",
                 "env": [hf_token, {"name": "TOKENIZERS_DIR", "value": "/tokenizers"},
                         {"name": "HF_HOME", "value": "/tokenizers"}],
                 "resources": {"requests": {"cpu": "8", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
                 "volumeMounts": [{"name": "tokenizers", "mountPath": "/tokenizers"},
                                  {"name": "tokenizer-uds", "mountPath": "/tmp/tokenizer"}]}
    return {"init": [tokenizer], "mounts": [{"name": "tokenizer-uds", "mountPath": "/tmp/tokenizer"}],
            "volumes": [{"name": "tokenizers", "emptyDir": {}}, {"name": "tokenizer-uds", "emptyDir": {}}]}


def sim_tokenizer_sidecars(cell: Cell, entry: catalog.VersionEntry, serving: Serving,
                           hf_token: dict[str, Any]) -> dict[str, Any]:
    """What llm-d-inference-sim needs to tokenize a real model id (it exits, or fails every request, without)."""
    kind, mirrors = entry.contract.sim_tokenizer, serving.registry_mirrors
    if kind == "uds":  # SIM pkg/tokenizer/tokenizer.go @v0.8.2: UDSSocketPath /tmp/tokenizer/tokenizer-uds.socket
        return uds_sidecars(mirrored(entry.images["sim_tokenizer"], mirrors), hf_token)
    if kind == "render":  # ROUTER deploy/components/overlays/simulator/kustomization.yaml @v0.9.0
        return render_sidecars(mirrored(entry.images["sim_render"], mirrors), cell.model, SIM_RENDER_PORT, hf_token)
    return NO_SIDECARS


NO_SIDECARS: dict[str, list[dict[str, Any]]] = {"init": [], "mounts": [], "volumes": []}


def render_sidecars(image: str, model: str, port: int, hf_token: dict[str, Any]) -> dict[str, Any]:
    """vLLM's render service (tokenization over HTTP) as a native sidecar, as upstream runs it
    (ROUTER config/charts/routerlib/templates/_deployment.yaml @v0.10.0)."""
    render = {"name": "vllm-render", "image": image, "restartPolicy": "Always",
              "command": ["vllm"], "args": ["launch", "render", model, f"--port={port}"],
              "env": [hf_token], "ports": [{"name": "render", "containerPort": port}],
              "startupProbe": {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 2, "failureThreshold": 300},
              "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
              "volumeMounts": [{"name": "render-cache", "mountPath": "/root/.cache/huggingface"}]}
    return {"init": [render], "mounts": [], "volumes": [{"name": "render-cache", "emptyDir": {}}]}


def epp_sidecars(cell: Cell, entry: catalog.VersionEntry, serving: Serving, hf_token: dict[str, Any],
                 config: Configuration) -> dict[str, Any]:
    """What the EPP's precise scorer tokenizes with, when the EPP image has no embedded tokenizer."""
    kind, mirrors = entry.contract.precise_scorer.tokenizer, serving.registry_mirrors
    if not config.kv_events or kind == "embedded":
        return NO_SIDECARS
    if kind == "render":
        return render_sidecars(mirrored(entry.images["epp_render"], mirrors), cell.model, EPP_RENDER_PORT, hf_token)
    return uds_sidecars(mirrored(entry.images["uds_tokenizer"], mirrors), hf_token)


def model_server(cell: Cell, params: RunParams, campaign: Campaign, entry: catalog.VersionEntry,
                 names: dict[str, str], namespace: str, index_port: int = INDEX_PORT) -> dict[str, Any]:
    serving, spec, config = campaign.serving, campaign.model(cell.model), campaign.cell_configuration(cell)
    tp = params.tensor_parallel_size
    mirrors = serving.registry_mirrors
    pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
    kv_events = config.kv_events
    if serving.backend == "inference-sim" and kv_events and "{port}" in entry.contract.kv_event_topic:
        # the simulator's topic is kv@$POD_IP@model (SIM pkg/kv-cache/block_cache.go @v0.9.2, where POD_IP is used
        # for nothing else); schedulers from v0.7 key pods as address:port, so the port goes into POD_IP
        ip_env: list[dict[str, Any]] = [{"name": "POD_ADDRESS", "valueFrom": pod_ip},
                                        {"name": "POD_IP", "value": f"$(POD_ADDRESS):{MODEL_PORT}"}]
    else:
        ip_env = [{"name": "POD_IP", "valueFrom": pod_ip}]
    env: list[dict[str, Any]] = [
        {"name": "HF_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": serving.hf_token_secret, "key": "HF_TOKEN", "optional": True}}},
        *ip_env,
        {"name": "PYTHONHASHSEED", "value": serving.hash_seed},
    ]
    if serving.model_cache_pvc:
        env.append({"name": "HF_HOME", "value": "/models"})
    env += [{"name": k, "value": v} for k, v in {**entry.contract.model_server_env, **config.model_server.env}.items()]
    if params.level_isolation == "reset" and not any(e["name"] == "VLLM_SERVER_DEV_MODE" for e in env):
        # POST /reset_prefix_cache is registered only in dev mode (vllm/entrypoints/serve/cache/api_router.py @v0.19.1)
        env.append({"name": "VLLM_SERVER_DEV_MODE", "value": "1"})
    events: dict[str, Any] = {"enable_kv_cache_events": True, "publisher": "zmq",
                              "endpoint": f"tcp://{names['epp']}.{namespace}.svc.cluster.local:{ZMQ_PORT}",
                              "topic": kv_event_topic(entry, cell.model)}
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
        return {"container": "inference-sim", "image": mirrored(entry.images["inference_sim"], mirrors), "security_context": None,
                "command": ["/app/llm-d-inference-sim"], "args": args, "env": env, "kv_events": kv_events,
                "startup_failures": 30, "memory": None, "shm_size": "1Gi", "mounts": [], "volumes": [],
                "sidecars": sim_tokenizer_sidecars(cell, entry, serving, env[0]),
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}}
    offload = config.model_server.kv_offload
    if offload is not None:
        check_connector_in_image(offload, config, entry, cell, params.llmd_version, serving)
    memory = memory_plan(campaign, cell, tp, entry, config)
    gpu_memory_utilization = config.model_server.gpu_memory_utilization or serving.gpu_memory_utilization
    args = [cell.model, "--host", "0.0.0.0", "--port", str(MODEL_PORT), "--tensor-parallel-size", str(tp),
            "--max-num-seqs", str(serving.max_num_seqs), "--gpu-memory-utilization", str(gpu_memory_utilization),
            "--block-size", str(serving.block_size), "--enable-prefix-caching"]
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if offload is not None:
        fs_kind = entry.contract.fs_tier.rendered(own_image=config.model_server.image is not None)
        args += ["--kv-transfer-config", json.dumps(kv_transfer_config(offload, memory, serving, entry, fs_kind),
                                                    separators=(",", ":"))]
        if offload.filesystem is not None:
            if fs_kind == "llmd_fs_backend":
                # llmd_fs_backend README @v0.7.0 recommends the multiprocess executor; the backend creates its
                # directories itself (csrc/storage/backends/fs_io/file_io.cpp @v0.7.0), so no pre-start mkdir is needed.
                # vLLM's fs tier makes its directories at start-up (tiering/fs/manager.py @v0.23.0: os.makedirs)
                args += ["--distributed-executor-backend", "mp"]
            mounts.append({"name": "kv-offload-fs", "mountPath": serving.filesystem_offload.mount_path})
            volumes.append({"name": "kv-offload-fs",
                            "persistentVolumeClaim": {"claimName": fs_claim_name(serving, names)}})
        env += lmcache_env(offload, memory, names, namespace, index_port)
    if kv_events:
        args += ["--prefix-caching-hash-algo", "sha256_cbor", "--kv-events-config", json.dumps(events, separators=(",", ":"))]
    args += config.model_server.extra_args
    # Loading weights takes longer for bigger models: a startup budget of 10 min + 1 min per 2 GB.
    startup_failures = int((600 + 30 * spec.size_gb) / 10)
    gpus = str(tp)
    cpu = f"{memory.cpu:g}"
    image = mirrored(config.model_server.image or entry.images["vllm"], mirrors)
    command = ["vllm", "serve"]
    if config.model_server.pre_start:
        # the commands, then vLLM in the shell's place (signals reach it); the args stay a list ("$@")
        command = ["/bin/sh", "-c", " && ".join([*config.model_server.pre_start, 'exec vllm serve "$@"']), "vllm"]
    return {"container": "vllm", "image": image, "command": command, "security_context": volume_writer(volumes, serving),
            "args": args, "env": env, "kv_events": kv_events, "startup_failures": startup_failures,
            "memory": memory.as_dict(), "shm_size": sizing.quantity(memory.shm_bytes),
            "sidecars": NO_SIDECARS, "mounts": mounts, "volumes": volumes,
            "resources": {"requests": {"nvidia.com/gpu": gpus, "cpu": cpu, "memory": sizing.quantity(memory.request_bytes)},
                          "limits": {"nvidia.com/gpu": gpus, "memory": sizing.quantity(memory.limit_bytes)}}}


FS_CONNECTOR_CONFIG = {
    # llm-d/llm-d-kv-cache kv_connectors/llmd_fs_backend/llmd_fs_backend/spec.py @v0.7.0; vLLM loads spec_module_path's
    # spec_name when the name is not one of its own (vllm/v1/kv_offload/factory.py @v0.19.1)
    "spec_name": "SharedStorageOffloadingSpec", "spec_module_path": "llmd_fs_backend.spec"}
# vLLM's own multi-tier spec, registered in vllm/v1/kv_offload/factory.py from v0.23.0 (no spec_module_path)
TIERING_SPEC = "TieringOffloadingSpec"


def volume_writer(volumes: list[dict[str, Any]], serving: Serving) -> dict[str, Any] | None:
    """The model server's securityContext when it writes a volume (the filesystem tier's claim, the model cache):
    upstream's filesystem-tier guide runs the container as root, since a fresh claim is root-owned and llm-d's
    images run as uid 2000 (LLMD guides/tiered-prefix-cache/modelserver/gpu/vllm/native/fs/base/patch-vllm.yaml
    @v0.8.0-rc: `securityContext: {runAsUser: 0}`, no fsGroup; docker/Dockerfile.cuda: USER 2000). Unset otherwise:
    the image's own user (catalog contract model_server_image_user)."""
    writes = any("persistentVolumeClaim" in v for v in volumes) or bool(serving.model_cache_pvc)
    return {"runAsUser": 0} if writes else None


def kv_transfer_config(offload: KvOffload, memory: sizing.MemoryPlan, serving: Serving, entry: catalog.VersionEntry,
                       fs_kind: str = "llmd_fs_backend") -> dict[str, Any]:
    """vLLM's --kv-transfer-config for the connector and its tiers; the filesystem tier as the release's vLLM carries
    it (fs_kind: catalog contract fs_tier, FsTierContract.rendered)."""
    if offload.connector == "LMCacheConnectorV1":
        # LMCache reads its settings from LMCACHE_* env (lmcache/v1/config.py @v0.4.4), not from the extra config
        return {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    # vllm/v1/kv_offload/base.py @v0.23.0: OffloadingSpec reads offload_prompt_only for every spec
    policy = {} if offload.offload_prompt_only is None else {"offload_prompt_only": offload.offload_prompt_only}
    root = serving.filesystem_offload.mount_path.rstrip("/") + "/kv-cache"
    fs = offload.filesystem
    if fs is not None and fs_kind == "TieringOffloadingSpec":
        # vllm/v1/kv_offload/tiering/spec.py @v0.23.0: one spec, a CPU primary tier (cpu_bytes_to_use, required) and
        # secondary_tiers; block_size is the tokens per offloaded chunk of both tiers; tiering/fs/manager.py: root_dir,
        # n_read_threads, n_write_threads (as upstream's guide: LLMD guides/tiered-prefix-cache/modelserver/gpu/vllm/
        # native/fs/base/patch-vllm.yaml @v0.8.0-rc)
        tier: dict[str, Any] = {"type": entry.contract.fs_tier.tier_type, "root_dir": root}
        if fs.read_threads is not None:
            tier["n_read_threads"] = fs.read_threads
        if fs.write_threads is not None:
            tier["n_write_threads"] = fs.write_threads
        return {"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
            "spec_name": TIERING_SPEC, **memory.offload_setting, "block_size": fs.block_size,
            "secondary_tiers": [tier], **policy}}
    tiers = []
    if offload.cpu:
        tiers.append({"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
                      "kv_connector_extra_config": {**memory.offload_setting, **policy}})
    if fs is not None:
        tiers.append({"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
            **FS_CONNECTOR_CONFIG, "shared_storage_path": root + "/",
            "block_size": fs.block_size, "threads_per_gpu": fs.threads_per_gpu, **policy}})
    if len(tiers) == 1:
        return tiers[0]
    # vllm/distributed/kv_transfer/kv_connector/v1/multi_connector.py @v0.19.1: each entry is a whole KVTransferConfig
    return {"kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_connector_extra_config": {"connectors": tiers}}


def lmcache_env(offload: KvOffload, memory: sizing.MemoryPlan, names: dict[str, str], namespace: str,
                index_port: int = INDEX_PORT) -> list[dict[str, Any]]:
    if offload.connector != "LMCacheConnectorV1":
        return []
    # lmcache/v1/config.py @v0.4.4: LMCACHE_<SETTING>; booleans are 'true'/'1'; max_local_cpu_size in GiB per worker
    env = {"LMCACHE_LOCAL_CPU": "true" if offload.cpu else "false"}
    if offload.cpu:
        env["LMCACHE_MAX_LOCAL_CPU_SIZE"] = f"{memory.lmcache_cpu_gib:g}"
    if offload.remote is not None:
        # redis:// for Valkey too: LMCache's valkey:// adapter imports `glide`, which the lmcache package does not
        # depend on (lmcache/v1/storage_backend/connector/valkey_adapter.py @v0.4.4); Valkey speaks the Redis protocol
        env["LMCACHE_REMOTE_URL"] = f"redis://{names['kv']}.{namespace}.svc.cluster.local:{index_port}"
        env["LMCACHE_REMOTE_SERDE"] = "naive"
    return [{"name": k, "value": v} for k, v in env.items()]


def check_connector_in_image(offload: KvOffload, config: Configuration, entry: catalog.VersionEntry, cell: Cell,
                             version: str, serving: Serving) -> None:
    """Refuse, naming the release and why, an offload the release's model-server image cannot start."""
    fs = offload.filesystem
    if fs is not None and fs.block_size % serving.block_size:
        raise CampaignError(f"{cell}: the filesystem tier's block_size {fs.block_size} is not a multiple of "
                            f"serving.block_size {serving.block_size} (vllm/v1/kv_offload/spec.py requires it)")
    contract = entry.contract
    if offload.offload_prompt_only is not None and not contract.offload_prompt_only.supported:
        raise CampaignError(f"{cell}: model_server.kv_offload.offload_prompt_only is set, but llm-d {version}'s vLLM "
                            f"{entry.vllm_version} has no such key (include/versions.yaml offload_prompt_only: it exists "
                            "from vLLM 0.23.0, vllm/v1/kv_offload/base.py); its OffloadingConnector offloads every "
                            "computed block. Leave it unset for this release")
    own_image = config.model_server.image is not None
    if fs is not None:
        kind = contract.fs_tier.rendered(own_image)
        if kind == "none":
            raise CampaignError(f"{cell}: llm-d {version}'s model-server image has no filesystem tier: neither "
                                f"llmd_fs_backend nor one of vLLM {entry.vllm_version}'s own (include/versions.yaml "
                                "fs_tier: none); use llm-d v0.7.0 (llmd_fs_backend) or v0.8.0 and later (vLLM's "
                                "TieringOffloadingSpec), or give the configuration a model_server.image with the "
                                "filesystem backend")
        if kind == "TieringOffloadingSpec" and not offload.cpu:
            raise CampaignError(f"{cell}: llm-d {version}'s filesystem tier is vLLM {entry.vllm_version}'s "
                                "TieringOffloadingSpec, whose fs tier sits behind a CPU primary tier (cpu_bytes_to_use "
                                "is required: vllm/v1/kv_offload/tiering/spec.py), and this configuration has cpu: false; "
                                "give it a CPU tier (as cpu+fs-offload-20k does) or use llm-d v0.7.0 (llmd_fs_backend)")
    if own_image:
        return  # the configuration brings its own image
    if offload.connector == "LMCacheConnectorV1" and not contract.lmcache_in_image:
        raise CampaignError(f"{cell}: llm-d {version}'s model-server image has no lmcache package "
                            "(include/versions.yaml lmcache_in_image); use llm-d v0.5.0 or later, or give the "
                            "configuration a model_server.image with LMCache")


def unverified_pieces(config: Configuration, backend: str) -> list[str]:
    """The pieces of a release (catalog contract unverified) a cell depends on: every cell deploys the router (the
    EPP and its proxy), a vLLM cell the model server, a simulator cell the simulator; precise routing the precise
    scorer; LMCache and filesystem offload those connectors."""
    pieces = ["router", "model_server" if backend == "vllm" else "inference_sim"]
    if config.kv_events:
        pieces.append("precise_scorer")
    offload = config.model_server.kv_offload
    if backend == "vllm" and offload is not None:
        if offload.connector == "LMCacheConnectorV1":
            pieces.append("lmcache")
        if offload.filesystem is not None:
            pieces.append("fs_tier")
    return pieces


def unverified_refusal(entry: catalog.VersionEntry, config: Configuration, backend: str, version: str,
                       what: str) -> str | None:
    """Why `what` cannot be rendered for this release: the unverified pieces it depends on, each with why; None when
    it depends on none."""
    unverified: dict[str, str] = {str(piece): why for piece, why in entry.contract.unverified.items()}
    found = [(piece, unverified[piece]) for piece in unverified_pieces(config, backend) if piece in unverified]
    if not found:
        return None
    return (f"{what}: refused for llm-d {version}: it depends on what could not be read at the release's tag "
            "(include/versions.yaml contract.unverified): " + "; ".join(f"{piece}: {why}" for piece, why in found))


def fs_claim_name(serving: Serving, names: dict[str, str]) -> str:
    return serving.filesystem_offload.claim or names["kv_fs"]


def context(campaign: Campaign, params: RunParams, cell: Cell, run_id: str, namespace: str,
            lane_node: str | None = None) -> dict[str, Any]:
    serving = campaign.serving
    entry = catalog.entry(params.llmd_version)
    if serving.model_cache_pvc and params.replicas > 1 and serving.model_cache_pvc_access_mode == "ReadWriteOnce":
        raise CampaignError(f"serving.model_cache_pvc {serving.model_cache_pvc!r} is ReadWriteOnce but this run has "
                            f"{params.replicas} replicas: pods on other nodes cannot mount it")
    mirrors = serving.registry_mirrors
    names = cell_names(cell)
    labels, selector = cell_labels(campaign, cell, run_id)
    config = campaign.cell_configuration(cell)
    refused = unverified_refusal(entry, config, serving.backend, params.llmd_version, str(cell))
    if refused:
        raise CampaignError(refused)
    kv = None
    if config.store_kind is not None:
        kind = config.store_kind
        kv = {"kind": kind, "image": mirrored(entry.images[kind], mirrors), "port": INDEX_PORT,
              "cli": "redis-cli" if kind == "redis" else "valkey-cli",
              "placement": pod_placement(serving.scheduling.kv_index, serving),
              # an LMCache remote store fills with KV chunks: evict the least recently used below the pod's 4Gi limit
              # (the evaluation ran its Valkey with --maxmemory 512mb --maxmemory-policy allkeys-lru)
              "extra_args": [] if config.index_kind else ["--maxmemory", "3gb", "--maxmemory-policy", "allkeys-lru"]}
    epp_env = [{"name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": serving.hf_token_secret, "key": "HF_TOKEN", "optional": True}}}]
    if config.kv_events:
        epp_env.append({"name": "PYTHONHASHSEED", "value": serving.hash_seed})
    fs_pvc = None
    if config.filesystem_tier is not None and serving.backend == "vllm":
        fs = serving.filesystem_offload
        if fs.access_mode == "ReadWriteOnce" and params.replicas > 1:
            raise CampaignError(f"{cell}: the filesystem offload volume is ReadWriteOnce but the cell has {params.replicas} "
                                "replicas: pods on other nodes cannot mount it; set serving.filesystem_offload.access_mode: "
                                "ReadWriteMany (and a storage class that provides it)")
        if fs.claim is None:
            fs_pvc = {"name": names["kv_fs"], "size": f"{fs.size_gib}Gi", "access_mode": fs.access_mode,
                      "storage_class": fs.storage_class}
    return {
        "namespace": namespace, "labels": labels, "selector": selector, "names": names, "fs_pvc": fs_pvc,
        "replicas": params.replicas, "model_cache_pvc": serving.model_cache_pvc,
        "server": model_server(cell, params, campaign, entry, names, namespace),
        "server_placement": lane_placement(pod_placement(serving.scheduling.model_server, serving), lane_node),
        "epp": {"image": mirrored(entry.images["epp"], mirrors), "envoy_image": mirrored(entry.images["envoy"], mirrors),
                "args": epp_args(entry, names, namespace), "env": epp_env, "service_account": EPP_SERVICE_ACCOUNT,
                "kv_events": config.kv_events, "placement": pod_placement(serving.scheduling.epp, serving),
                "sidecars": epp_sidecars(cell, entry, serving, epp_env[0], config),
                "config_yaml": yaml.safe_dump(epp_config(cell, serving, names, namespace, entry, config), sort_keys=False),
                "envoy_yaml": yaml.safe_dump(envoy_config(entry), sort_keys=False)},
        "kv": kv,
    }


def _env() -> jinja2.Environment:
    return _templates(paths.home() / "include" / "manifests")


@functools.lru_cache(maxsize=4)
def _templates(folder: Path) -> jinja2.Environment:
    """One environment per templates folder: it keeps the compiled templates (compiling them was nearly half of
    rendering a cell) and recompiles one whose file changed (jinja2's auto_reload)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["combine"] = lambda a, b: {**a, **b}
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


def cell_campaign(campaign: Campaign, cell: Cell) -> Campaign:
    """The campaign as the cell's objects are rendered: the configuration's block_size, if it sets one, in serving."""
    block_size = campaign.cell_configuration(cell).model_server.block_size
    if block_size is not None:  # vLLM, the EPP's indexer, the simulator and the sizing all read serving.block_size
        campaign = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"block_size": block_size})})
    return campaign


def memory_plan(campaign: Campaign, cell: Cell, tp: int, entry: catalog.VersionEntry,
                config: Configuration) -> sizing.MemoryPlan:
    """The model server's memory as its pod is sized: the configuration's offload tiers, the CPU tier for this model
    (size_per_model, else size); `campaign` as cell_campaign gives it."""
    offload = config.model_server.kv_offload
    return sizing.plan(campaign, campaign.model(cell.model), cell.config, tp, entry, offloads=offload is not None,
                       size=offload.size_for(cell.model) if offload else None, offload=offload,
                       own_image=config.model_server.image is not None)


def render_cell(campaign: Campaign, params: RunParams, cell: Cell, run_id: str, namespace: str,
                lane_node: str | None = None) -> list[dict[str, Any]]:
    """The cell's objects, in apply order (its replicas and tensor_parallel_size factors applied); with `lane_node`
    (lanes: auto) its model servers go to that node (lane_placement)."""
    campaign = cell_campaign(campaign, cell)
    ctx = context(campaign, params.for_cell(cell), cell, run_id, namespace, lane_node)
    env = _env()
    docs: list[dict[str, Any]] = []
    templates = ((["cell/kv-offload-pvc.yaml.j2"] if ctx["fs_pvc"] else []) + (["cell/kv-index.yaml.j2"] if ctx["kv"] else [])
                 + ["cell/epp.yaml.j2", "cell/model-server.yaml.j2"])
    for name in templates:
        docs += [d for d in yaml_text.load_all(env.get_template(name).render(**ctx)) if d]
    return docs


def epp_rbac_rules() -> list[dict[str, Any]]:
    """What the EPP reads, for every llm-d release in the catalog (the namespace is set up once for all)."""
    rules: dict[tuple[str, ...], set[str]] = {}
    for entry in catalog.load_catalog().values():
        for rule in entry.contract.epp_rbac:
            for resource in rule.resources:
                rules.setdefault((*rule.api_groups, resource), set()).update(rule.verbs)
    return [{"apiGroups": list(key[:-1]), "resources": [key[-1]], "verbs": sorted(verbs)}
            for key, verbs in sorted(rules.items())]


def render_namespace(namespace: str, secrets: list[str] | None = None) -> list[dict[str, Any]]:
    """The namespace's identities; `secrets` are the Secret names preflight may read (the template's default
    names when None)."""
    extra = {"preflight_secrets": secrets} if secrets else {}
    text = _env().get_template("namespace/rbac.yaml.j2").render(
        namespace=namespace, step_service_account=STEP_SERVICE_ACCOUNT, epp_service_account=EPP_SERVICE_ACCOUNT,
        epp_rules=epp_rbac_rules(), **extra)
    return [d for d in yaml_text.load_all(text) if d]


def write(docs: list[dict[str, Any]], out: Path, prefix: str = "") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, doc in enumerate(docs):
        path = out / f"{prefix}{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    return written
