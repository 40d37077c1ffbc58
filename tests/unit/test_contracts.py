"""Every llm-d release in the catalog x model x configuration renders manifests that keep the contract with
upstream. The facts below were read in each release's upstream source (file and tag in include/versions.yaml);
they are written here independently of the catalog, so a catalog entry that drifts from upstream fails.

A release added to the catalog without its facts here fails `test_every_catalog_release_has_its_upstream_facts`.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REFERENCE, ROOT
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell, OffloadSize
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import CampaignError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack import manifests, sizing

K8S_VERSION = "1.33.0"
CRD = ROOT.parent / "shared" / "schemas" / "inferencepools.inference.networking.k8s.io-v1.2.0.crd.yaml"
GIB = 2**30
SCALAR = None  # a leaf in a parameter schema

# Flags each release's EPP binary accepts that we may pass (an unknown flag makes the Go binary exit).
_GAIE_1_2_FLAGS = {"--pool-name", "--pool-namespace", "--config-file", "--grpc-port", "--grpc-health-port", "--metrics-port",
                   "--secure-serving", "--tracing", "--metrics-endpoint-auth", "--kv-cache-usage-percentage-metric", "--v"}

# Parameter keys of the precise-prefix-cache-scorer, as the release's Go structs define them (unknown keys are
# ignored silently before v0.8 and are fatal from it: both are defects).
_X_API = "inference.networking.x-k8s.io/v1alpha1"
_KVM_0_4_PARAMS = {
    "indexerConfig": {
        "prefixStoreConfig": SCALAR,
        "tokenProcessorConfig": {"blockSize": SCALAR, "hashSeed": SCALAR},
        "kvBlockIndexConfig": {"inMemoryConfig": SCALAR, "redisConfig": {"address": SCALAR, "backendType": SCALAR},
                               "valkeyConfig": {"address": SCALAR, "backendType": SCALAR, "enableRDMA": SCALAR},
                               "costAwareMemoryConfig": SCALAR, "enableMetrics": SCALAR, "metricsLoggingInterval": SCALAR},
        "tokenizersPoolConfig": {"workersCount": SCALAR, "minPrefixOverlapRatio": SCALAR,
                                 "hf": {"enabled": SCALAR, "huggingFaceToken": SCALAR, "tokenizersCacheDir": SCALAR},
                                 "local": SCALAR, "uds": SCALAR},
        "kvCacheBackendConfigs": SCALAR,
    },
    "kvEventsConfig": {"zmqEndpoint": SCALAR, "topicFilter": SCALAR, "concurrency": SCALAR},
}
_INDEX_0_5 = {"inMemoryConfig": SCALAR, "redisConfig": {"address": SCALAR, "backendType": SCALAR, "enableRDMA": SCALAR},
              "valkeyConfig": {"address": SCALAR, "backendType": SCALAR, "enableRDMA": SCALAR},
              "costAwareMemoryConfig": SCALAR, "enableMetrics": SCALAR, "metricsLoggingInterval": SCALAR}
_EVENTS_0_5 = {"zmqEndpoint": SCALAR, "topicFilter": SCALAR, "concurrency": SCALAR, "discoverPods": SCALAR,
               "podDiscoveryConfig": SCALAR}
_KVC_0_5_PARAMS = {
    "tokenProcessorConfig": {"blockSize": SCALAR, "hashSeed": SCALAR},
    "indexerConfig": {
        "prefixStoreConfig": SCALAR,
        "tokenizersPoolConfig": {"modelName": SCALAR, "workersCount": SCALAR, "minPrefixOverlapRatio": SCALAR,
                                 "hf": {"enabled": SCALAR, "huggingFaceToken": SCALAR, "tokenizersCacheDir": SCALAR},
                                 "local": SCALAR, "uds": {"socketFile": SCALAR}},
        "kvBlockIndexConfig": _INDEX_0_5,
        "kvCacheBackendConfigs": SCALAR,
    },
    "kvEventsConfig": _EVENTS_0_5,
}
_KVC_0_6_PARAMS = {  # default (non-embedded) build: UDS tokenizer only; prefixStoreConfig removed
    "tokenProcessorConfig": {"blockSize": SCALAR, "hashSeed": SCALAR},
    "indexerConfig": {
        "tokenizersPoolConfig": {"modelName": SCALAR, "workersCount": SCALAR,
                                 "uds": {"socketFile": SCALAR, "useTCP": SCALAR, "modelTokenizerMap": SCALAR}},
        "kvBlockIndexConfig": _INDEX_0_5,
        "kvCacheBackendConfigs": SCALAR,
    },
    "kvEventsConfig": _EVENTS_0_5,
}

_KVC_0_7_PARAMS = {  # SCHED v0.7.1/v0.8.0 PrecisePrefixCachePluginConfig (json.Unmarshal, unknown keys ignored)
    "tokenProcessorConfig": {"blockSize": SCALAR, "hashSeed": SCALAR},
    "speculativeIndexing": SCALAR, "speculativeTTL": SCALAR,
    "indexerConfig": {
        "tokenizersPoolConfig": {"modelName": SCALAR, "workersCount": SCALAR,
                                 "uds": {"socketFile": SCALAR, "useTCP": SCALAR, "modelTokenizerMap": SCALAR}},
        "kvBlockIndexConfig": _INDEX_0_5,
        "kvCacheBackendConfigs": SCALAR,
    },
    "kvEventsConfig": {**_EVENTS_0_5, "engineType": SCALAR},
}
# ROUTER v0.9.0: the same keys (decoded strictly from now on: an unknown key is fatal), plus blockSizeTokens
_ROUTER_0_9_PARAMS = {**_KVC_0_7_PARAMS,
                      "tokenProcessorConfig": {"blockSizeTokens": SCALAR, "blockSize": SCALAR, "hashSeed": SCALAR}}
_ROUTER_0_10_PRODUCER = {  # ROUTER v0.10.0 precise-prefix-cache-producer PluginConfig, decoded strictly
    "tokenProcessorConfig": {"blockSizeTokens": SCALAR, "blockSize": SCALAR, "hashSeed": SCALAR},
    "speculativeIndexing": SCALAR, "speculativeTTL": SCALAR,
    "indexerConfig": {
        "kvBlockIndexConfig": {"inMemoryConfig": SCALAR, "redisConfig": {"address": SCALAR},  # no valkeyConfig
                               "costAwareMemoryConfig": SCALAR, "enableMetrics": SCALAR, "metricsLoggingInterval": SCALAR},
        "kvCacheBackendConfigs": SCALAR,
    },
    "kvEventsConfig": {**_EVENTS_0_5, "engineType": SCALAR},
}
_ROUTER_0_10_TOKEN_PRODUCER = {"modelName": SCALAR, "vllm": {"url": SCALAR, "timeout": SCALAR, "mmTimeout": SCALAR},
                               "udsTokenizerConfig": SCALAR, "estimate": SCALAR}
# From GAIE v1.4.0 setting --kv-cache-usage-percentage-metric is a fatal validation error
_GAIE_1_4_FLAGS = _GAIE_1_2_FLAGS - {"--kv-cache-usage-percentage-metric"}
_OBJECTIVES_X = {("inference.networking.x-k8s.io", "inferenceobjectives"),
                 ("inference.networking.x-k8s.io", "inferencemodelrewrites")}
_POOL_AND_PODS = {("inference.networking.k8s.io", "inferencepools"), ("", "pods")}

UPSTREAM: dict[str, dict[str, Any]] = {
    # GAIE v1.2.0 runner.go, KVM v0.4.0, SCHED v0.4.0, vLLM 0.11.2
    "v0.4.0": {"tls_default": True, "flags": _GAIE_1_2_FLAGS, "tracing_default": True, "api_version": _X_API,
               "precise_params": _KVM_0_4_PARAMS, "token_processor_path": ("indexerConfig", "tokenProcessorConfig"),
               "inmemory_must_be_cleared": True, "topic": "kv@$(POD_IP)@{model}", "offload_key": "num_cpu_blocks",
               "offload_in_shm": False, "uds_tokenizer": False,
               "epp_watches": {("inference.networking.x-k8s.io", "inferenceobjectives"),
                               ("inference.networking.k8s.io", "inferencepools"), ("", "pods")},
               "crds": {"inferencepools.inference.networking.k8s.io", "inferenceobjectives.inference.networking.x-k8s.io"}},
    # GAIE v1.3.0 options.go (no InferenceObjective watch: PopulateControllerConfig is never called), KVC v0.5.0, vLLM 0.14.1
    "v0.5.0": {"tls_default": True, "flags": _GAIE_1_2_FLAGS, "tracing_default": True, "api_version": _X_API,
               "precise_params": _KVC_0_5_PARAMS, "token_processor_path": ("tokenProcessorConfig",),
               "inmemory_must_be_cleared": False, "topic": "kv@$(POD_IP)@{model}", "offload_key": "cpu_bytes_to_use",
               "offload_in_shm": False, "uds_tokenizer": False,
               "epp_watches": {("inference.networking.k8s.io", "inferencepools"), ("", "pods")},
               "crds": {"inferencepools.inference.networking.k8s.io"}},
    # scheduler v0.6.0 on GAIE fd30cb97, KVC v0.6.0 (UDS tokenizer only), vLLM 0.15.1
    "v0.5.1": {"tls_default": True, "flags": _GAIE_1_2_FLAGS, "tracing_default": True, "api_version": _X_API,
               "precise_params": _KVC_0_6_PARAMS, "token_processor_path": ("tokenProcessorConfig",),
               "inmemory_must_be_cleared": False, "topic": "kv@$(POD_IP)@{model}", "offload_key": "cpu_bytes_to_use",
               "offload_in_shm": False, "uds_tokenizer": True,
               "epp_watches": {("inference.networking.k8s.io", "inferencepools"), ("", "pods")},
               "crds": {"inferencepools.inference.networking.k8s.io"}},
    # scheduler v0.7.1 on GAIE v1.4.0, KVC v0.7.1, vLLM 0.17.1
    "v0.6.0": {"tls_default": True, "flags": _GAIE_1_4_FLAGS, "tracing_default": True, "api_version": _X_API,
               "precise_params": _KVC_0_7_PARAMS, "token_processor_path": ("tokenProcessorConfig",),
               "inmemory_must_be_cleared": False, "topic": "kv@$(POD_IP):8000@{model}", "offload_key": "cpu_bytes_to_use",
               "offload_in_shm": False, "uds_tokenizer": True, "epp_watches": _POOL_AND_PODS | _OBJECTIVES_X,
               "crds": {"inferencepools.inference.networking.k8s.io"}},
    # scheduler v0.8.0 on GAIE v1.5.0, KVC v0.7.1, vLLM 0.19.1
    "v0.7.0": {"tls_default": True, "flags": _GAIE_1_4_FLAGS, "tracing_default": True, "api_version": _X_API,
               "precise_params": _KVC_0_7_PARAMS, "token_processor_path": ("tokenProcessorConfig",),
               "inmemory_must_be_cleared": False, "topic": "kv@$(POD_IP):8000@{model}", "offload_key": "cpu_bytes_to_use",
               "offload_in_shm": False, "uds_tokenizer": True, "epp_watches": _POOL_AND_PODS | _OBJECTIVES_X,
               "crds": {"inferencepools.inference.networking.k8s.io"}},
    # router v0.9.0 (strict plugin parameters, llm-d.ai config group), KVC v0.9.0, vLLM 0.23.0
    "v0.8.0": {"tls_default": True, "flags": _GAIE_1_4_FLAGS, "tracing_default": True, "api_version": "llm-d.ai/v1alpha1",
               "precise_params": _ROUTER_0_9_PARAMS, "token_processor_path": ("tokenProcessorConfig",),
               "inmemory_must_be_cleared": False, "topic": "kv@$(POD_IP):8000@{model}", "offload_key": "cpu_bytes_to_use",
               "offload_in_shm": False, "uds_tokenizer": True,
               "epp_watches": _POOL_AND_PODS | _OBJECTIVES_X | {("llm-d.ai", "inferenceobjectives"),
                                                                 ("llm-d.ai", "inferencemodelrewrites")},
               "crds": {"inferencepools.inference.networking.k8s.io"}},
}
UPSTREAM["v0.8.1"] = UPSTREAM["v0.8.0"]  # the same router, kv-cache and vLLM
# router v0.10.0: the producer path (the scorer plugin is a deprecated wrapper), render tokenizer, no valkeyConfig
UPSTREAM["v0.9.0"] = {**UPSTREAM["v0.8.0"], "precise_plugin": "precise-prefix-cache-producer",
                      "precise_params": _ROUTER_0_10_PRODUCER, "uds_tokenizer": False, "render_tokenizer": True}
# llm-d v0.10.0: vLLM 0.30.0 (artifacts.md), whose CPU tier lives in /dev/shm (vllm/v1/kv_offload/cpu/spec.py
# @v0.30.0: SharedOffloadRegion on CUDA); its router cannot be read at the tag: router v0.10.0 stands in, and
# precise routing, whose contract with vLLM 0.30.0 was not read, is refused
UPSTREAM["v0.10.0"] = {**UPSTREAM["v0.9.0"], "offload_in_shm": True, "refused": {"llm-d-redis", "llm-d-valkey"}}
# llm-d v1.0: nothing of it could be read at its tag; every configuration is refused
ALL_CONFIGS = {"no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"}
UPSTREAM["v1.0.0"] = {"refused": ALL_CONFIGS, "epp_watches": set(), "crds": set()}

# Qwen3 config.json: (layers, KV heads, head dim); the KV cache is 16-bit
ARCH = {"Qwen/Qwen3-0.6B": (28, 8, 128), "Qwen/Qwen3-8B": (36, 8, 128), "Qwen/Qwen3-14B": (40, 8, 128),
        "Qwen/Qwen3-32B-AWQ": (64, 8, 128)}


def kv_per_token_per_rank(model: str, tp: int) -> int:
    layers, kv_heads, head_dim = ARCH[model]
    return 2 * layers * (kv_heads // tp) * head_dim * 2


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(REFERENCE)


def render(campaign, version, model, config, backend="vllm", **conf):
    c = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"backend": backend})})
    params = resolve_params(c, {"llmd_version": version, **conf}, catalog.known_versions())
    return manifests.render_cell(c, params, Cell(model, config), "scheduled__2026-11-22T00:00:00+00:00", "bench")


def deployment(docs, suffix):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(suffix))


def containers(dep):
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def unknown_keys(value, schema, path=""):
    """Keys in `value` that `schema` (nested dicts, SCALAR leaves) does not define."""
    if schema is SCALAR or not isinstance(value, dict):
        return []
    out = []
    for key, sub in value.items():
        if key not in schema:
            out.append(f"{path}{key}")
        else:
            out += unknown_keys(sub, schema[key], f"{path}{key}.")
    return out


def dig(value, path):
    for p in path:
        value = (value or {}).get(p)
    return value


CELLS = [(v, m, c) for v in UPSTREAM for m in ARCH for c in ("no-offload", "native-offload", "llm-d-redis", "llm-d-valkey")]


def test_every_catalog_release_has_its_upstream_facts():
    missing = [v for v in catalog.known_versions() if v not in UPSTREAM]
    assert not missing, f"catalog releases without upstream facts in this test: {missing}"


@pytest.mark.parametrize("version, model, config", CELLS)
def test_rendered_cell_keeps_the_upstream_contract(campaign, version, model, config):
    facts = UPSTREAM[version]
    if config in facts.get("refused", ()):
        with pytest.raises(CampaignError, match=rf"refused for llm-d {version}: .*contract.unverified"):
            render(campaign, version, model, config)
        return
    docs = render(campaign, version, model, config)
    for doc in docs:
        if doc["kind"] != "InferencePool":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    epp_dep = deployment(docs, "-epp")
    epp_pod = containers(epp_dep)
    args = epp_pod["epp"]["args"]

    # every flag is one this release's EPP accepts
    passed = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert passed <= facts["flags"], (version, passed - facts["flags"])
    # Envoy speaks TLS to the EPP exactly when the EPP serves it (the flag, or upstream's default)
    serves_tls = {None: facts["tls_default"], "true": True, "false": False}[flag_value(args, "--secure-serving")]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    envoy = yaml.safe_load(cm["data"]["envoy.yaml"])
    epp_cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "epp")
    tls = epp_cluster.get("transport_socket", {}).get("typed_config", {})
    assert bool(tls) == serves_tls, (version, "Envoy and the EPP disagree on TLS")
    if tls:
        assert tls["@type"].endswith("UpstreamTlsContext") and "h2" in tls["common_tls_context"]["alpn_protocols"]
    ext_proc = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    assert ext_proc["typed_config"]["processing_mode"] == {
        "request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED",
        "response_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"}
    # no OTLP collector: tracing off where the flag exists
    if "--tracing" in facts["flags"]:
        assert flag_value(args, "--tracing") == "false"

    cfg = yaml.safe_load(cm["data"]["epp-config.yaml"])
    assert cfg["apiVersion"] == facts["api_version"]
    if config in ("no-offload", "native-offload"):
        (approx,) = [p for p in cfg["plugins"] if p["type"] == "prefix-cache-scorer"]
        assert "parameters" not in approx  # its blockSize counts bytes; later releases refuse any
    weighted = {p["pluginRef"]: p.get("weight") for p in cfg["schedulingProfiles"][0]["plugins"]}
    assert set(weighted) <= {p["type"] for p in cfg["plugins"]} and sorted(w for w in weighted.values() if w) == [2, 2, 3]
    vllm = containers(deployment(docs, "-ms"))["vllm"]
    vargs = vllm["args"]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    if config in ("llm-d-redis", "llm-d-valkey"):
        plugin = facts.get("precise_plugin", "precise-prefix-cache-scorer")
        scorer = next(p for p in cfg["plugins"] if p["type"] == plugin)["parameters"]
        assert unknown_keys(scorer, facts["precise_params"]) == [], version
        token = dig(scorer, facts["token_processor_path"])
        assert token, f"{version}: tokenProcessorConfig not where the release reads it ({facts['token_processor_path']})"
        # vLLM's block size is what the indexer chunks by (blockSizeTokens wins over the deprecated blockSize)
        assert int(flag_value(vargs, "--block-size")) == token.get("blockSizeTokens", token.get("blockSize"))
        assert env["PYTHONHASHSEED"] == token["hashSeed"]
        index = scorer["indexerConfig"]["kvBlockIndexConfig"]
        assert ("inMemoryConfig" in index and index["inMemoryConfig"] is None) == facts["inmemory_must_be_cleared"]
        events = json.loads(flag_value(vargs, "--kv-events-config"))
        assert events["topic"] == facts["topic"].format(model=model)
        if "discoverPods" in facts["precise_params"]["kvEventsConfig"]:
            assert scorer["kvEventsConfig"]["discoverPods"] is False  # vLLM connects to the EPP's bound endpoint
        init = {c["name"]: c for c in epp_dep["spec"]["template"]["spec"]["initContainers"]}
        assert list(init)[0] == "wait-for-index"  # the index answers before the EPP pings it
        assert ("tokenizer-uds" in init) == facts["uds_tokenizer"]
        assert ("vllm-render" in init) == facts.get("render_tokenizer", False)
        if facts.get("render_tokenizer"):
            # the token-producer (named as its type) tokenizes through the render sidecar; the scorer reads the producer
            token = next(p for p in cfg["plugins"] if p["type"] == "token-producer")["parameters"]
            assert unknown_keys(token, _ROUTER_0_10_TOKEN_PRODUCER) == [] and token["modelName"] == model
            port = int(token["vllm"]["url"].rsplit(":", 1)[1])
            assert f"--port={port}" in init["vllm-render"]["args"] and init["vllm-render"]["args"][2] == model
            scorer_params = next(p for p in cfg["plugins"] if p["type"] == "prefix-cache-scorer")["parameters"]
            assert scorer_params == {"prefixMatchInfoProducerName": facts["precise_plugin"]}
        if facts["uds_tokenizer"]:
            pool = scorer["indexerConfig"]["tokenizersPoolConfig"]
            assert pool["workersCount"] > 0  # kv-cache >= 0.8 no longer pre-fills it: 0 workers never answer
            assert init["tokenizer-uds"]["restartPolicy"] == "Always"  # a native sidecar: up before the EPP
            socket_dir = pool["uds"]["socketFile"].rsplit("/", 1)[0]
            for c in (epp_pod["epp"], init["tokenizer-uds"]):
                assert socket_dir in [m["mountPath"] for m in c["volumeMounts"]], c["name"]
    else:
        assert "--kv-events-config" not in vargs and "initContainers" not in epp_dep["spec"]["template"]["spec"]

    # the offload buffer: the release's key, the seed's size, inside the container's memory
    request = sizing_bytes(vllm["resources"]["requests"]["memory"])
    limit = sizing_bytes(vllm["resources"]["limits"]["memory"])
    shm = sizing_bytes(next(v for v in deployment(docs, "-ms")["spec"]["template"]["spec"]["volumes"]
                            if v["name"] == "shm")["emptyDir"]["sizeLimit"])
    per_rank = 10000 * 16 * kv_per_token_per_rank(model, 2)  # the published 10000 blocks of 16 tokens
    if config == "native-offload":
        extra = json.loads(flag_value(vargs, "--kv-transfer-config"))["kv_connector_extra_config"]
        assert list(extra) == [facts["offload_key"]]
        assert extra[facts["offload_key"]] == (10000 if facts["offload_key"] == "num_cpu_blocks" else 2 * per_rank)
        assert request >= 2 * per_rank + 2 * 8 * GIB  # the buffer in both TP workers plus vLLM's own memory
        assert limit >= request * 1.2
        if facts["offload_in_shm"]:
            assert shm >= 2 * per_rank
    assert limit >= request and shm < limit


def sizing_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


@pytest.mark.parametrize("version", list(UPSTREAM))
def test_simulator_cells_validate_and_the_index_comes_first(campaign, version):
    for config in ("no-offload", "llm-d-valkey"):
        if config in UPSTREAM[version].get("refused", ()):
            with pytest.raises(CampaignError, match=rf"refused for llm-d {version}"):
                render(campaign, version, "Qwen/Qwen3-8B", config, backend="inference-sim", replicas=2)
            continue
        docs = render(campaign, version, "Qwen/Qwen3-8B", config, backend="inference-sim", replicas=2)
        for doc in docs:
            if doc["kind"] != "InferencePool":
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        # the simulator tokenizes a real model id through a sidecar from v0.8 (it exits, or fails every request,
        # without): the UDS tokenizer on /tmp/tokenizer (v0.8.x) or vLLM's render service on :8082 (v0.9.x)
        sim_version = catalog.entry(version).images["inference_sim"].rsplit(":v", 1)[1]
        pod = deployment(docs, "-ms")["spec"]["template"]["spec"]
        sidecars = {c["name"]: c for c in pod.get("initContainers", [])}
        sim = pod["containers"][0]
        if sim_version.startswith("0.7"):
            assert sidecars == {}
        elif sim_version.startswith("0.8"):
            assert "/tmp/tokenizer" in [m["mountPath"] for m in sim["volumeMounts"]]
            assert "/tmp/tokenizer" in [m["mountPath"] for m in sidecars["tokenizer-uds"]["volumeMounts"]]
        else:
            render_args = sidecars["vllm-render"]["args"]
            assert render_args[:3] == ["launch", "render", "Qwen/Qwen3-8B"] and "--port=8082" in render_args
        assert all(c["restartPolicy"] == "Always" for c in sidecars.values())
        kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
        if config == "llm-d-valkey":
            index, epp = ("Deployment", "qwen3-8b-llm-d-valkey-kv"), ("Deployment", "qwen3-8b-llm-d-valkey-epp")
            assert kinds.index(index) < kinds.index(epp)
            # the simulator publishes kv@$POD_IP@model: where the scheduler keys pods as address:port, so must POD_IP
            sim = containers(deployment(docs, "-ms"))["inference-sim"]
            pod_ip = next(e for e in sim["env"] if e["name"] == "POD_IP")
            if ":8000@" in UPSTREAM[version]["topic"]:
                names = [e["name"] for e in sim["env"]]
                assert pod_ip["value"] == "$(POD_ADDRESS):8000" and names.index("POD_ADDRESS") < names.index("POD_IP")
            else:
                assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_namespace_rbac_lets_every_release_s_epp_read_what_it_watches():
    (epp_role,) = [d for d in manifests.render_namespace("bench")
                   if d["kind"] == "Role" and d["metadata"]["name"] == "llmd-bench-epp"]
    kubernetes_validate.validate(epp_role, K8S_VERSION, strict=True)
    granted = {(g, r) for rule in epp_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               if {"get", "list", "watch"} <= set(rule["verbs"])}
    for version, facts in UPSTREAM.items():
        if version in catalog.known_versions():
            assert facts["epp_watches"] <= granted, (version, facts["epp_watches"] - granted)


@pytest.mark.parametrize("version", list(UPSTREAM))
def test_catalog_names_the_crds_each_release_needs(version):
    assert UPSTREAM[version]["crds"] <= set(catalog.entry(version).required_crds)


def test_inference_pool_validates_against_its_crd(campaign):
    if not CRD.exists():
        pytest.skip("shared/schemas is not beside this checkout")
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    for version in UPSTREAM:
        config = "llm-d-redis" if "llm-d-redis" not in UPSTREAM[version].get("refused", ()) else "no-offload"
        if config in UPSTREAM[version].get("refused", ()):
            continue
        pool = next(d for d in render(campaign, version, "Qwen/Qwen3-8B", config) if d["kind"] == "InferencePool")
        jsonschema.validate(pool["spec"], schema["properties"]["spec"])


# -- memory sizing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, published_gib", [("Qwen/Qwen3-0.6B", 137), ("Qwen/Qwen3-8B", 176),
                                                  ("Qwen/Qwen3-14B", 195), ("Qwen/Qwen3-32B-AWQ", 312)])
def test_the_old_offload_setting_is_refused_with_its_numbers(campaign, model, published_gib):
    """20000 blocks of 64 tokens per TP worker: what the first manifests asked for, far beyond a 64 GiB pod."""
    serving = campaign.serving.model_copy(update={"offload": campaign.serving.offload.model_copy(
        update={"num_cpu_blocks": 20000, "block_size": 64}), "max_pod_memory_gib": 64})
    c = campaign.model_copy(update={"serving": serving})
    with pytest.raises(CampaignError) as err:
        sizing.plan(c, c.model(model), "native-offload", 2, catalog.entry("v0.4.0"), offloads=True)
    msg = str(err.value)
    assert "cannot fit" in msg and "max_pod_memory_gib is 64" in msg
    buffer_gib = 2 * 20000 * 64 * kv_per_token_per_rank(model, 2) / GIB
    assert abs(buffer_gib - published_gib) < 1.5  # the review's figures
    assert f"2 x {buffer_gib / 2:.1f} GiB" in msg


def test_offload_size_in_gib_per_gpu_becomes_blocks_or_bytes_per_release(campaign):
    serving = campaign.serving.model_copy(update={"offload": OffloadSize(cpu_gib_per_gpu=8)})
    c = campaign.model_copy(update={"serving": serving})
    old = sizing.plan(c, c.model("Qwen/Qwen3-8B"), "native-offload", 2, catalog.entry("v0.4.0"), offloads=True)
    blocks = 8 * GIB // (16 * kv_per_token_per_rank("Qwen/Qwen3-8B", 2))
    assert old.offload_setting == {"num_cpu_blocks": blocks}
    new = sizing.plan(c, c.model("Qwen/Qwen3-8B"), "native-offload", 2, catalog.entry("v0.5.0"), offloads=True)
    assert new.offload_setting == {"cpu_bytes_to_use": 2 * 8 * GIB}  # all TP ranks together
    assert new.request_bytes == 2 * 16 * GIB + 2 * 8 * GIB


def test_architecture_comes_from_config_json_and_an_unknown_model_is_refused_clearly(campaign):
    cfg = {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128}
    arch = sizing.architecture_from_config(cfg)
    assert (arch.layers, arch.kv_heads, arch.head_dim) == ARCH["Qwen/Qwen3-8B"]
    no_head_dim = sizing.architecture_from_config({"num_hidden_layers": 32, "num_attention_heads": 32,
                                                   "num_key_value_heads": 8, "hidden_size": 4096})
    assert no_head_dim.head_dim == 128
    spec = campaign.models[0].model_copy(update={"name": "acme/unknown-model"})
    with pytest.raises(CampaignError, match="architecture: {layers, kv_heads, head_dim}"):
        sizing.architecture(spec)
    assert sizing.kv_bytes_per_token_per_rank(arch, 16) == 2 * 36 * 1 * 128 * 2  # more ranks than KV heads: replicated


# -- every configuration x release; the filesystem tier and who writes its claim -------------------------------------

FACTS = yaml.safe_load((ROOT / "tests" / "fixtures" / "upstream_facts" / "filesystem_tier.yaml").read_text())


def _validate_strictly(docs, pool_schema):
    for doc in docs:
        if doc["kind"] == "InferencePool":
            if pool_schema is not None:
                jsonschema.validate(doc["spec"], pool_schema["properties"]["spec"])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _pool_schema():
    if not CRD.exists():
        return None
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def test_every_configuration_x_release_renders_strictly_or_is_refused_naming_the_release(campaign):
    """The whole catalog of configurations against the whole version catalog, on both backends: a cell either renders
    manifests that pass strict validation or is refused with a message naming the llm-d release (never a traceback
    or a KeyError from a piece the release's entry could not name)."""
    from llmd_bench.model import configurations

    schema = _pool_schema()
    rendered: dict[str, int] = {}
    for version in catalog.known_versions():
        entry = catalog.entry(version)
        for name in configurations.catalog():
            for backend in ("vllm", "inference-sim"):
                try:
                    docs = render(campaign, version, "Qwen/Qwen3-8B", name, backend=backend)
                except CampaignError as err:
                    assert f"llm-d {version}" in str(err), (version, name, backend, str(err))
                    if entry.contract.unverified and "refused for llm-d" in str(err):
                        assert any(f"{piece}: " in str(err) for piece in entry.contract.unverified), str(err)
                    continue
                _validate_strictly(docs, schema)
                rendered[version] = rendered.get(version, 0) + 1
    # every release whose pieces could be read renders most of the catalog; v1.0.0 none
    assert set(rendered) == {v for v in catalog.known_versions() if v != "v1.0.0"}
    assert rendered["v0.10.0"] >= 12  # all but precise routing and the CPU-less filesystem tier


def _image_facts(image: str) -> dict[str, Any]:
    repo, tag = image.rsplit(":", 1)
    assert repo in FACTS["images"] and tag in FACTS["images"][repo]["tags"], f"no upstream fact for image {image}"
    return {"user": FACTS["images"][repo]["user"], **FACTS["images"][repo]["tags"][tag]}


def _effective_user(pod: dict[str, Any], container: dict[str, Any], image_user: int) -> int:
    for context in (container.get("securityContext") or {}, pod.get("securityContext") or {}):
        if "runAsUser" in context:
            return context["runAsUser"]
    return image_user


def _writes_fresh_claim(pod: dict[str, Any], container: dict[str, Any], image_user: int) -> bool:
    writers = FACTS["fresh_claim_writers"]
    has_fs_group = "fsGroup" in (pod.get("securityContext") or {})
    return _effective_user(pod, container, image_user) in writers["uids"] or (has_fs_group and writers["fs_group_makes_writable"])


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@pytest.mark.parametrize("version", [v for v in UPSTREAM])
@pytest.mark.parametrize("config", ["fs-offload", "cpu+fs-offload-20k"])
def test_filesystem_cells_start_a_tier_their_image_ships_and_can_write_its_claim(campaign, version, config):
    """Checked against upstream facts (tests/fixtures/upstream_facts/filesystem_tier.yaml), not against the catalog:
    a filesystem cell is refused naming the release, or its image ships the spec it renders (llm-d's backend built for
    the image's vLLM line, or the image's vLLM's own tier with the keys that vLLM reads) and the container's user can
    write the freshly provisioned claim mounted where the tier writes."""
    try:
        docs = render(campaign, version, "Qwen/Qwen3-8B", config)
    except CampaignError as err:
        assert f"llm-d {version}" in str(err)
        return
    ms = deployment(docs, "-ms")
    pod = ms["spec"]["template"]["spec"]
    vllm = containers(ms)["vllm"]
    image = _image_facts(vllm["image"])
    transfer = json.loads(flag_value(vllm["args"], "--kv-transfer-config"))
    specs = [c["kv_connector_extra_config"] for c in transfer["kv_connector_extra_config"]["connectors"]] \
        if transfer["kv_connector"] == "MultiConnector" else [transfer["kv_connector_extra_config"]]
    fs_specs = [s for s in specs if s.get("spec_name", "CPUOffloadingSpec") != "CPUOffloadingSpec"]
    assert len(fs_specs) == 1, specs
    spec = fs_specs[0]
    backend = FACTS["llmd_fs_backend"]
    upstream = FACTS["vllm"][image["vllm"]]["fs_spec"]
    if spec["spec_name"] == backend["spec_name"]:
        assert spec.get("spec_module_path") == backend["spec_module_path"]
        assert image["llmd_fs_backend"] == _minor(image["vllm"]), (
            f"{vllm['image']} (vLLM {image['vllm']}) ships llmd_fs_backend {image['llmd_fs_backend']}")
        assert set(spec) <= set(backend["keys"])
        path = spec[backend["path_key"]]
    else:
        assert upstream is not None and spec["spec_name"] == upstream["spec_name"], (
            f"{vllm['image']} (vLLM {image['vllm']}) has no {spec['spec_name']}")
        assert set(spec) <= set(upstream["keys"]) and set(upstream["required"]) <= set(spec), spec
        (tier,) = spec["secondary_tiers"]
        assert tier["type"] == upstream["tier_type"] and set(tier) <= set(upstream["tier_keys"]), tier
        path = tier[upstream["path_key"]]
    claim_mounts = [m for m in vllm["volumeMounts"] if any(v["name"] == m["name"] and "persistentVolumeClaim" in v
                                                           for v in pod["volumes"])]
    assert any(path.startswith(m["mountPath"].rstrip("/") + "/") for m in claim_mounts), (path, claim_mounts)
    assert _writes_fresh_claim(pod, vllm, image["user"]), (
        f"{vllm['image']} runs as uid {_effective_user(pod, vllm, image['user'])}, which cannot write a fresh claim")


@pytest.mark.parametrize("version", [v for v in UPSTREAM if v != "v1.0.0"])
def test_a_pod_mounting_the_model_cache_can_write_it(campaign, version):
    serving = campaign.serving.model_copy(update={"model_cache_pvc": "models"})
    docs = render(campaign.model_copy(update={"serving": serving}), version, "Qwen/Qwen3-8B", "no-offload")
    ms = deployment(docs, "-ms")
    pod = ms["spec"]["template"]["spec"]
    vllm = containers(ms)["vllm"]
    assert {"name": "model-cache", "mountPath": "/models"} in vllm["volumeMounts"]
    assert _writes_fresh_claim(pod, vllm, _image_facts(vllm["image"])["user"])
    kubernetes_validate.validate(ms, K8S_VERSION, strict=True)
    # a pod that writes no volume keeps its image's user
    plain = containers(deployment(render(campaign, version, "Qwen/Qwen3-8B", "no-offload"), "-ms"))["vllm"]
    assert "securityContext" not in plain


@pytest.mark.parametrize("version", [v for v in UPSTREAM if v != "v1.0.0"])
def test_catalog_records_offload_prompt_only_as_each_vllm_has_it(version):
    entry = catalog.entry(version)
    fact = FACTS["vllm"][entry.vllm_version]["offload_prompt_only"]
    recorded = entry.contract.offload_prompt_only
    assert recorded.supported == (fact is not None) and recorded.default == fact, (version, recorded, fact)
    # and the image the catalog names runs that vLLM
    image = entry.images["vllm"]
    assert _image_facts(image)["vllm"] == entry.vllm_version


def test_policy_changes_between_releases_are_derived_from_the_contract():
    found = {c.field: c for c in catalog.policy_changes("v0.7.0", "v0.8.0")}
    assert found["offload_prompt_only"].applies_to == "offload"
    assert "absent" in found["offload_prompt_only"].before and "default true" in found["offload_prompt_only"].after
    assert found["offload_prompt_only"].text.startswith("policy changed between v0.7.0 and v0.8.0: offload_prompt_only")
    assert found["fs_tier"].before == "llmd_fs_backend" and found["fs_tier"].after == "TieringOffloadingSpec"
    assert catalog.policy_changes("v0.8.0", "v0.9.0") == []  # the same defaults
    assert [c.field for c in catalog.policy_changes("v0.4.0", "v0.10.0")] == ["offload_prompt_only", "fs_tier"]
    with pytest.raises(CampaignError, match="'v9.9.9' is not in the version catalog"):
        catalog.policy_changes("v0.4.0", "v9.9.9")


def _report_stub(cross_rows, configs, llmd_version):
    from types import SimpleNamespace

    import pandas as pd

    cells = pd.DataFrame({"config": configs, "configuration": configs})
    data = SimpleNamespace(campaign="llmd_kv_cache_eval", cells=cells, llmd_version=llmd_version,
                           params={"llmd_version": llmd_version})
    return SimpleNamespace(data=data, cross_version=pd.DataFrame(cross_rows) if cross_rows else None)


def test_the_report_attributes_a_cross_version_change_to_the_recorded_policy_change():
    """v0.7.0 -> v0.8.0: vLLM 0.23 offloads prompt blocks only by default (vllm/v1/kv_offload/base.py @v0.23.0). A
    native-offload change between the two is attributed to that; a configuration without offload, or a release pair
    with the same default, is not."""
    from llmd_bench.report import sections

    rows = [{"model": "Qwen3-8B", "config": c, "version": "v0.8.0", "other_version": other}
            for c, other in [("native-offload", "v0.7.0"), ("no-offload", "v0.7.0"), ("native-offload", "v0.8.1"),
                             ("native-offload-20k [offload_size=20k]", "v0.4.0"), ("cpu+fs-offload-20k", "v0.7.0")]]
    report = _report_stub(rows, ["native-offload", "no-offload", "native-offload-20k", "cpu+fs-offload-20k"], "v0.8.0")
    found = sections.cross_version_attributions(report)
    assert found[0] == ["policy changed between v0.7.0 and v0.8.0: offload_prompt_only absent (vLLM 0.19.1: offloads "
                        "every computed block (prompt and decode)) -> default true (vLLM 0.23.0: offloads prompt "
                        "blocks only)"]
    assert found[1] == [] and found[2] == []
    assert found[3] and found[3][0].startswith("policy changed between v0.4.0 and v0.8.0: offload_prompt_only")
    assert [t.split(": ")[1].split(" ")[0] for t in found[4]] == ["offload_prompt_only", "fs_tier"]
    # a configuration that sets the key itself is not subject to vLLM's default
    own = _report_stub([{"model": "m", "config": "x", "version": "v0.8.0", "other_version": "v0.7.0"}], ["x"], "v0.8.0")
    assert sections.cross_version_attributions(own) == [[]]  # unknown to the catalog: nothing attributed

    text = sections.offload_policy_item(report, "v0.8.0")
    assert text.startswith("Offload policy: at llm-d v0.8.0 (vLLM 0.23.0) offload_prompt_only defaults to true, so "
                           "vLLM's OffloadingConnector offloads prompt blocks only")
    old = sections.offload_policy_item(report, "v0.7.0")
    assert "there is no offload_prompt_only" in old and "every computed block (prompt and decode)" in old
    assert sections.offload_policy_item(_report_stub([], ["no-offload"], "v0.8.0"), "v0.8.0") is None
