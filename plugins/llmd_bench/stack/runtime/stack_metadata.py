"""Stack metadata from Kubernetes objects: what ran in a cell, in the shape `Runtime.stack_metadata()` documents.

Plain functions over plain dicts (pods, nodes as the API serves them, the EPP ConfigMap's text), so any
Kubernetes-based runtime (kubernetes, existing) builds the same shape. Nothing is guessed: what the objects
do not tell is listed under `unavailable` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Callable
from typing import Any

# GPU Feature Discovery's node labels (NVIDIA/k8s-device-plugin internal/lm/resource.go and nvml.go @v0.20.0)
GPU_PRODUCT, GPU_COUNT, GPU_MEMORY = "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"
DRIVER_FULL = "nvidia.com/cuda.driver-version.full"
DRIVER_PARTS = ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev")
# the CUDA version the driver supports (NVML's CUDA driver version), not the CUDA toolkit inside an image
CUDA_FULL = "nvidia.com/cuda.runtime-version.full"
CUDA_PARTS = ("nvidia.com/cuda.runtime.major", "nvidia.com/cuda.runtime.minor")
GPU_RESOURCE = "nvidia.com/gpu"
VERSION_TIMEOUT_S = 2.0


def image_digest(status: dict[str, Any] | None) -> str | None:
    """`sha256:...` from a container status's imageID (`docker-pullable://repo@sha256:...`, `repo@sha256:...`)."""
    image_id = (status or {}).get("imageID") or ""
    return image_id.rsplit("@", 1)[-1] if "@" in image_id else None


def _statuses(pod: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}


def container_entry(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """A container's image as specified and as pulled (the digest the kubelet resolved)."""
    st = _statuses(pod).get(container.get("name"), {})
    return {"name": container.get("name"), "image": container.get("image"), "image_digest": image_digest(st)}


def command_line(container: dict[str, Any]) -> list[str]:
    """What the container runs: its command then its args (the image's entrypoint when no command is given)."""
    return [*(container.get("command") or []), *(container.get("args") or [])]


def vllm_version_from_server(url: str, timeout_s: float | None = None) -> str | None:
    """vLLM's own answer to GET /version ({"version": "0.11.2"}), or None when it does not answer in time."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/version", timeout=timeout_s or VERSION_TIMEOUT_S) as resp:
            version = json.loads(resp.read()).get("version")
            return str(version) if version else None
    except (OSError, ValueError):
        return None


def model_servers(pods: list[dict[str, Any]], declared: dict[str, str], port: int | None = None,
                  probe: Callable[[str], str | None] | None = vllm_version_from_server
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One entry per model-server pod (its first container is the server, the others are sidecars).

    `declared`: image -> vLLM version the version catalog names for that image (`vllm_version`). The version is
    the server's GET /version when `probe` reaches http://<podIP>:<port> (source `measured: GET /version`),
    else the catalog's for the image that ran (source `declared: version catalog`), else unavailable."""
    out, unavailable = [], {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        containers = (pod.get("spec") or {}).get("containers") or []
        if not containers:
            unavailable[f"model_servers.{name}"] = "the pod spec has no containers"
            continue
        main = containers[0]
        entry: dict[str, Any] = {"pod": name, "node": (pod.get("spec") or {}).get("nodeName"),
                                 **{k: v for k, v in container_entry(pod, main).items() if k != "name"},
                                 "container": main.get("name"), "args": command_line(main),
                                 "vllm_version": None, "vllm_version_source": None,
                                 "sidecars": [container_entry(pod, c) for c in containers[1:]]}
        ip = (pod.get("status") or {}).get("podIP")
        measured = probe(f"http://{ip}:{port}") if probe and ip and port else None
        if measured:
            entry["vllm_version"], entry["vllm_version_source"] = measured, "measured: GET /version"
        elif main.get("image") in declared:
            entry["vllm_version"] = declared[main["image"]]
            entry["vllm_version_source"] = f"declared: version catalog for {main['image']}"
        else:
            unavailable[f"model_servers.{name}.vllm_version"] = (
                f"GET /version did not answer and the version catalog names no vLLM version for image {main.get('image')}")
        if not entry["image_digest"]:
            unavailable[f"model_servers.{name}.image_digest"] = "the container status has no imageID (not pulled yet?)"
        out.append(entry)
    return out, unavailable


def epp(pods: list[dict[str, Any]], config_text: str | None, container: str = "epp") -> tuple[dict[str, Any] | None,
                                                                                              dict[str, str]]:
    """The EPP's image and digest (all its pods run one template: the first pod's), args, sidecars, and its
    configuration with the sha256 of the text as it is mounted."""
    unavailable: dict[str, str] = {}
    if not pods:
        unavailable["epp"] = "no EPP pod found"
        return None, unavailable
    pod = sorted(pods, key=lambda p: p["metadata"]["name"])[0]
    containers = (pod.get("spec") or {}).get("containers") or []
    main = next((c for c in containers if c.get("name") == container), containers[0] if containers else {})
    out: dict[str, Any] = {"pods": sorted(p["metadata"]["name"] for p in pods),
                           **{k: v for k, v in container_entry(pod, main).items() if k != "name"},
                           "args": command_line(main), "config_sha256": None, "config": config_text,
                           "sidecars": [container_entry(pod, c) for c in containers if c is not main]}
    if config_text is None:
        unavailable["epp.config"] = "the EPP ConfigMap was not found"
    else:
        out["config_sha256"] = hashlib.sha256(config_text.encode()).hexdigest()
    if not out["image_digest"]:
        unavailable["epp.image_digest"] = "the container status has no imageID"
    return out, unavailable


def _joined(labels: dict[str, str], keys: tuple[str, ...]) -> str | None:
    parts = [v for v in (labels.get(k) for k in keys) if v]
    return ".".join(parts) if parts else None


def node_gpus(node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """GPU product, count, memory, driver and the driver's CUDA version from GPU Feature Discovery labels; the
    count falls back to the node's nvidia.com/gpu capacity. Returns (facts, what is missing)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    capacity = ((node.get("status") or {}).get("capacity") or {}).get(GPU_RESOURCE)
    count = labels.get(GPU_COUNT) if str(labels.get(GPU_COUNT, "")).isdigit() else None
    capacity = capacity if str(capacity or "").isdigit() else None
    facts = {"gpu_product": labels.get(GPU_PRODUCT),
             "gpu_count": int(count) if count else (int(capacity) if capacity else None),
             "gpu_count_source": "label" if count else ("capacity" if capacity else None),
             "gpu_memory_mb": int(labels[GPU_MEMORY]) if str(labels.get(GPU_MEMORY, "")).isdigit() else None,
             "driver_version": labels.get(DRIVER_FULL) or _joined(labels, DRIVER_PARTS),
             "cuda_version": labels.get(CUDA_FULL) or _joined(labels, CUDA_PARTS)}
    missing = [k for k in ("gpu_product", "gpu_count", "driver_version", "cuda_version") if facts[k] is None]
    return facts, missing


def nodes(node_objs: list[dict[str, Any]] | None, names: list[str], error: str | None = None
          ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per node a model server ran on, its GPUs. `error` (e.g. a 403 on reading nodes) makes them unavailable."""
    wanted = sorted({n for n in names if n})
    if error is not None or node_objs is None:
        return {}, {"nodes": error or "nodes were not read"}
    by_name = {n["metadata"]["name"]: n for n in node_objs}
    out, unavailable = {}, {}
    for name in wanted:
        if name not in by_name:
            unavailable[f"nodes.{name}"] = "the node was not found"
            continue
        facts, missing = node_gpus(by_name[name])
        out[name] = facts
        if missing:
            unavailable[f"nodes.{name}"] = (f"no GPU Feature Discovery label for {', '.join(missing)} on the node "
                                            "(is GFD / the GPU Operator running there?)")
    if not wanted:
        unavailable["nodes"] = "no model-server pod was scheduled on a node"
    return out, unavailable


def build(platform: str, simulated: bool, replicas: int, servers: list[dict[str, Any]], epp_entry: dict[str, Any] | None,
          node_facts: dict[str, dict[str, Any]], *unavailable: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The documented shape (runtime/base.py Runtime.stack_metadata), plus `extra` keys."""
    merged: dict[str, str] = {}
    for u in unavailable:
        merged.update(u)
    return {"platform": platform, "simulated": simulated, "replicas": replicas, "model_servers": servers,
            "epp": epp_entry, "nodes": node_facts, **extra, "unavailable": merged}


def from_objects(platform: str, model_pods: list[dict[str, Any]], epp_pods: list[dict[str, Any]],
                 epp_config_text: str | None, node_objs: list[dict[str, Any]] | None, node_error: str | None,
                 declared: dict[str, str], port: int | None = None,
                 probe: Callable[[str], str | None] | None = vllm_version_from_server,
                 kv_index_pods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything at once, for a runtime that has listed the cell's pods, its EPP ConfigMap and the nodes."""
    servers, u1 = model_servers(model_pods, declared, port, probe)
    epp_entry, u2 = epp(epp_pods, epp_config_text)
    node_facts, u3 = nodes(node_objs, [s["node"] for s in servers], node_error)
    extra = {"kv_index": pod_images(kv_index_pods[0])} if kv_index_pods else {}
    return build(platform, False, len(servers), servers, epp_entry, node_facts, u1, u2, u3, **extra)


def pod_images(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container's image and digest of a pod (e.g. the Redis/Valkey index)."""
    return [container_entry(pod, c) for c in (pod.get("spec") or {}).get("containers") or []]


def failed(platform: str, simulated: bool, exc: BaseException) -> dict[str, Any]:
    """What is stored when capturing the metadata itself failed (the deploy goes on)."""
    return {"platform": platform, "simulated": simulated, "replicas": None, "model_servers": [], "epp": None,
            "nodes": {}, "unavailable": {"stack": f"capturing the stack metadata failed: {type(exc).__name__}: {exc}"}}
