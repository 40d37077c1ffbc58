"""Memory sizing of a model-server pod from the model's architecture.

The CPU tier of vLLM's OffloadingConnector is pinned host memory in every TP worker:
blocks x block size x KV bytes per token per rank, where
KV bytes/token/rank = 2 (K and V) x layers x KV heads per rank x head dim x KV dtype bytes.
The pod's memory request is vLLM's own host memory plus that buffer; the limit adds headroom; /dev/shm
holds the buffer too where the vLLM version puts it there (shared-memory pages count against the
container's memory limit, so they are not added twice). A cell that cannot fit is refused before deploy.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmd_bench.model import paths, yaml_text
from llmd_bench.model.campaign import Architecture, Campaign, ModelSpec, OffloadSize, PodResources, Serving
from llmd_bench.model.catalog import VersionEntry
from llmd_bench.model.configurations import FilesystemTier, KvOffload
from llmd_bench.model.errors import CampaignError

GIB = 2**30
# NCCL and vLLM's inter-process queues use /dev/shm besides any offload buffer
BASE_SHM_GIB_PER_GPU = 2.0
MIN_SHM_GIB = 4.0
# llmd_fs_backend's cap on staging memory per worker (llmd_fs_backend/worker.py @v0.7.0 DEFAULT_MAX_STAGING_MEMORY_GB);
# the renderer leaves it at the default
FS_MAX_STAGING_GB = 150


@lru_cache(maxsize=4)
def _models(path: str, mtime: float) -> dict[str, Architecture]:
    raw = yaml_text.load(Path(path).read_text()) or {}
    out = {}
    for name, arch in (raw.get("models") or {}).items():
        try:
            out[str(name)] = Architecture.model_validate(arch)
        except ValidationError as exc:
            raise CampaignError(f"model catalog {path}: model {name}: {exc.errors()[0]['msg']} "
                                f"(field `{'.'.join(map(str, exc.errors()[0]['loc']))}`)") from None
    return out


def model_catalog() -> dict[str, Architecture]:
    path = paths.models_file()
    return _models(str(path), path.stat().st_mtime) if path.exists() else {}


def architecture_from_config(config: dict[str, Any], kv_dtype_bytes: int = 2) -> Architecture:
    """From a Hugging Face config.json (text_config for multimodal models)."""
    cfg = config.get("text_config") or config
    try:
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    except (KeyError, TypeError, ValueError) as exc:
        raise CampaignError(f"config.json lacks what sizes the KV cache ({exc}); give `architecture:` in the campaign") from None
    return Architecture(layers=layers, kv_heads=kv_heads, head_dim=head_dim, kv_dtype_bytes=kv_dtype_bytes)


def _config_json_from_hub(model: str) -> dict[str, Any] | None:
    """config.json from the Hub when this process can read it (a step pod with network and HF_TOKEN)."""
    try:
        from huggingface_hub import hf_hub_download  # deferred: loads huggingface_hub

        return json.loads(Path(hf_hub_download(model, "config.json")).read_text())
    except Exception:  # noqa: BLE001 - offline, gated without a token, no such model: the caller says what to do
        return None


def architecture(spec: ModelSpec) -> Architecture:
    if spec.architecture is not None:
        return spec.architecture
    known = model_catalog()
    if spec.name in known:
        return known[spec.name]
    config = _config_json_from_hub(spec.name)
    if config is not None:
        return architecture_from_config(config)
    raise CampaignError(f"model {spec.name}: its architecture is unknown (not in {paths.models_file()}, and its "
                        "config.json could not be read); add `architecture: {layers, kv_heads, head_dim}` to the "
                        "model in the campaign file")


def kv_bytes_per_token_per_rank(arch: Architecture, tp: int) -> int:
    # vLLM splits KV heads across TP ranks; with more ranks than KV heads each rank holds one (replicated)
    heads_per_rank = max(1, arch.kv_heads // tp)
    return 2 * arch.layers * heads_per_rank * arch.head_dim * arch.kv_dtype_bytes


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    tensor_parallel_size: int
    kv_bytes_per_token_per_rank: int
    offload_bytes_per_rank: int         # 0 without native offload
    offload_setting: dict[str, int]     # the OffloadingConnector's size key and value, as vLLM reads it
    offload_in_shm: bool
    request_bytes: int
    limit_bytes: int
    shm_bytes: int
    cpu: float
    # LMCache's CPU tier per worker (LMCACHE_MAX_LOCAL_CPU_SIZE, GiB: lmcache/v1/config.py @v0.4.4 multiplies it by 1024**3)
    lmcache_cpu_gib: float | None = None
    # llm-d's filesystem backend: pinned staging buffers per worker, one file per I/O thread
    staging_bytes_per_rank: int = 0

    @property
    def offload_bytes_per_pod(self) -> int:
        return self.offload_bytes_per_rank * self.tensor_parallel_size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"offload_bytes_per_pod": self.offload_bytes_per_pod}

    def describe(self) -> str:
        staging = self.staging_bytes_per_rank * self.tensor_parallel_size
        base = self.request_bytes - self.offload_bytes_per_pod - staging
        parts = [f"vLLM host memory {gib(base)}"]
        if self.offload_bytes_per_rank:
            parts.append(f"offload buffer {self.tensor_parallel_size} x {gib(self.offload_bytes_per_rank)} "
                         f"({self.kv_bytes_per_token_per_rank} KV bytes per token per rank)")
        if staging:
            parts.append(f"filesystem staging {self.tensor_parallel_size} x {gib(self.staging_bytes_per_rank)}")
        return (f"request {gib(self.request_bytes)} = " + " + ".join(parts)
                + f"; limit {gib(self.limit_bytes)}; /dev/shm {gib(self.shm_bytes)}")


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


def quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity, rounded up to a whole MiB."""
    return f"{math.ceil(n / 2**20)}Mi"


def offload_setting(offload: OffloadSize, serving: Serving, entry: VersionEntry, per_rank_bytes: int,
                    kv_per_token: int) -> dict[str, int]:
    contract = entry.contract
    if contract.offload_size_key == "num_cpu_blocks":
        # vLLM 0.11-0.13: blocks of the GPU block size, allocated in each TP worker
        if offload.num_cpu_blocks is not None and (offload.block_size or serving.block_size) == serving.block_size:
            return {"num_cpu_blocks": offload.num_cpu_blocks}
        return {"num_cpu_blocks": max(1, per_rank_bytes // (serving.block_size * kv_per_token))}
    scope = serving.tensor_parallel_size if contract.offload_bytes_scope == "total" else 1
    return {"cpu_bytes_to_use": per_rank_bytes * scope}


def staging_bytes(kv_per_token: int, fs: FilesystemTier) -> int:
    """llmd_fs_backend's pinned staging memory per worker: one file (block_size tokens of every layer's KV) per I/O
    thread, threads capped by max_staging_memory_gb (llmd_fs_backend/worker.py @v0.7.0: _compute_buffer_size_mb
    rounds a file up to whole MiB; DEFAULT_MAX_STAGING_MEMORY_GB = 150)."""
    file_mib = math.ceil(kv_per_token * fs.block_size / 2**20)
    threads = min(fs.threads_per_gpu, int(FS_MAX_STAGING_GB * 1024 / file_mib))
    return file_mib * threads * 2**20


def plan(campaign: Campaign, spec: ModelSpec, config: str, tp: int, entry: VersionEntry, offloads: bool,
         size: OffloadSize | None = None, offload: KvOffload | None = None, own_image: bool = False) -> MemoryPlan:
    """size: the configuration's own CPU tier (configurations.KvOffload.size); default serving.offload.
    offload: the connector and its tiers (default: native offload with a CPU tier). own_image: the configuration
    brings its own model-server image (which filesystem tier it gets: catalog FsTierContract.rendered)."""
    serving = campaign.serving.model_copy(update={"tensor_parallel_size": tp})
    resources: PodResources = spec.resources or serving.resources
    arch = architecture(spec)
    kv = kv_bytes_per_token_per_rank(arch, tp)
    per_rank, setting, lmcache_gib = 0, {}, None
    connector = offload.connector if offload else "OffloadingConnector"
    if offloads and (offload is None or offload.cpu):
        off = size or serving.offload
        if off.num_cpu_blocks is not None:
            per_rank = off.num_cpu_blocks * (off.block_size or serving.block_size) * kv
        else:
            per_rank = int((off.cpu_gib_per_gpu or 0) * GIB)
        if connector == "LMCacheConnectorV1":
            lmcache_gib = round(per_rank / GIB, 2)
            per_rank = int(lmcache_gib * GIB)
        else:
            setting = offload_setting(off, serving, entry, per_rank, kv)
            if "num_cpu_blocks" in setting:  # what vLLM will really allocate
                per_rank = setting["num_cpu_blocks"] * serving.block_size * kv
    fs_kind = entry.contract.fs_tier.rendered(own_image) if offloads and offload and offload.filesystem else None
    # llmd_fs_backend stages files in pinned buffers of its own; vLLM's fs tier reads and writes the CPU primary
    # tier (vllm/v1/kv_offload/tiering/fs/manager.py @v0.23.0: primary_kv_view), which lives in /dev/shm
    # (tiering/spec.py: SharedOffloadRegion, cpu/shared_offload_region.py: /dev/shm/vllm_offload_<id>.mmap)
    staging = staging_bytes(kv, offload.filesystem) if fs_kind == "llmd_fs_backend" and offload and offload.filesystem else 0
    in_shm = offloads and connector == "OffloadingConnector" and per_rank > 0 and (
        entry.contract.offload_buffer_in_shm or fs_kind == "TieringOffloadingSpec")
    base = int(resources.memory_gib_per_gpu * tp * GIB)
    request = base + (per_rank + staging) * tp
    limit = int(request * (1 + serving.memory_headroom_pct / 100))
    shm = int(max(MIN_SHM_GIB, BASE_SHM_GIB_PER_GPU * tp) * GIB) + (int(per_rank * tp * 1.05) if in_shm else 0)
    result = MemoryPlan(model=spec.name, tensor_parallel_size=tp, kv_bytes_per_token_per_rank=kv,
                        offload_bytes_per_rank=per_rank, offload_setting=setting, offload_in_shm=in_shm,
                        request_bytes=request, limit_bytes=limit, shm_bytes=shm, cpu=resources.cpu_per_gpu * tp,
                        lmcache_cpu_gib=lmcache_gib, staging_bytes_per_rank=staging)
    if serving.max_pod_memory_gib is not None and limit > serving.max_pod_memory_gib * GIB:
        raise CampaignError(
            f"{spec.short_name}/{config} cannot fit: its model-server pod needs a memory limit of {gib(limit)} "
            f"({result.describe()}) but serving.max_pod_memory_gib is {serving.max_pod_memory_gib:g} GiB; "
            "lower serving.offload, the headroom or tensor_parallel_size, or raise max_pod_memory_gib")
    return result
