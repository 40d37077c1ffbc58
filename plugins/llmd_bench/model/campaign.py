"""The campaign model: what a campaign file holds (Campaign and its parts: models, workload, method, serving,
factors, simulation) and its cells. Reading the files: campaign_files.py; the params of a run: params.py.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmd_bench.model import configurations, paths
from llmd_bench.model.configurations import CONFIG_NAME_PATTERN, Configuration, OffloadSize
from llmd_bench.model.errors import CampaignError, ParamsError
from llmd_bench.model.runtimes import cluster_runtime

__all__ = ["OffloadSize"]  # defined with the configurations that size it; campaigns' serving.offload uses it too
# The published evaluation's baseline; a campaign names its own with `baseline:`.
DEFAULT_BASELINE = "no-offload"
ConfigName = Annotated[str, Field(pattern=CONFIG_NAME_PATTERN)]

# Airflow's schedule presets (a cron expression is the other form)
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
TrialIsolation = Literal["redeploy", "same-server"]
TRIAL_ISOLATIONS: tuple[str, ...] = ("redeploy", "same-server")
# The smallest difference between two single-trial peaks called higher or lower when the cells have no
# history in the results store (noise.py). Measured: see the README's "Noise" section.
DEFAULT_NOISE_FLOOR_PCT = 5.0
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
ServingMode = Literal["deploy", "existing"]
SERVING_MODES: tuple[str, ...] = ("deploy", "existing")
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class AdaptiveSettings(BaseModel):
    """`adaptive:` in a campaign file (used with `sweep: adaptive`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patience: int = Field(1, ge=1, description="levels in a row that do not raise the best throughput beyond noise "
                          "before the sweep stops (a level that falls below the best beyond noise stops it at once)")
    refine: int = Field(1, ge=0, le=4, description="levels measured after the stop between the best level and its "
                        "neighbours, to place the peak more precisely than the grid")


class SeededSettings(BaseModel):
    """`seeded:` in a campaign file (used with `sweep: seeded`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    full_grid_every: int = Field(4, ge=1, description="every N-th run of a cell measures the full grid (1: always), so "
                                 "a seeded campaign re-checks the whole curve; a changed served stack also runs it")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    """What sizes the KV cache: from the model's config.json (num_hidden_layers, num_key_value_heads,
    head_dim or hidden_size / num_attention_heads) and the KV-cache dtype vLLM stores."""

    layers: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    kv_dtype_bytes: Literal[1, 2, 4] = Field(2, description="2 for bf16/fp16 KV (vLLM's default 'auto'), 1 for fp8")


class PodResources(_Strict):
    """Host resources of one model-server pod, per GPU it holds (the offload buffer comes on top)."""

    cpu_per_gpu: PositiveFloat = 4
    memory_gib_per_gpu: PositiveFloat = Field(16, description="vLLM's own host memory per TP worker")


# huggingface_hub/utils/_validators.py validate_repo_id (huggingface_hub 2.4.0, REPO_ID_REGEX): each part 1-96 of
# [A-Za-z0-9_.-] (ASCII), starting and ending with a letter, digit or '_', no '--' or '..', no '.git' ending. A bare
# 'name' is a repo id there too; a model id here is always 'owner/name' (the model's folders and labels need both).
_HF_ID_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HF_MODEL_ID = re.compile(rf"{_HF_ID_PART}/{_HF_ID_PART}")


def check_model_id(name: str) -> str:
    """`name` if it is a Hugging Face model id, else a ValueError saying what one is. The one check of every model id
    that comes in: campaign files (ModelSpec) and `llmd-bench import --model`."""
    if not HF_MODEL_ID.fullmatch(name) or "--" in name or ".." in name or name.endswith(".git"):
        raise ValueError(f"{name[:200]!r} is not a Hugging Face model id: owner/name (e.g. Qwen/Qwen3-8B), each part 1 "
                         "to 96 ASCII letters, digits, '_', '-' or '.', starting and ending with a letter, digit or '_' "
                         f"(pattern {HF_MODEL_ID.pattern}), with no '--' or '..' and no '.git' ending")
    return name


class ModelSpec(_Strict):
    name: Annotated[str, AfterValidator(check_model_id), Field(description="Hugging Face model id")]
    size_gb: PositiveFloat = Field(10.0, description="weights size; sets the readiness timeout")
    max_concurrency: PositiveInt | None = Field(None, description="levels above this are not run")
    architecture: Architecture | None = Field(None, description="overrides include/models.yaml")
    resources: PodResources | None = Field(None, description="overrides serving.resources for this model")

    @property
    def short_name(self) -> str:
        return paths.model_short_name(self.name)


# A per-level multiplier: "2x" is 2 x concurrency (prefix_count) or 2 x concurrency x turns (max_requests).
Multiplier = Annotated[str, Field(pattern=r"^[1-9][0-9]*x$")]
Runs = Literal["per-cell", "per-level"]
LevelIsolation = Literal["none", "restart", "reset"]
RUNS: tuple[str, ...] = ("per-cell", "per-level")
Sweep = Literal["grid", "adaptive", "seeded"]
SWEEPS: tuple[str, ...] = ("grid", "adaptive", "seeded")
LEVEL_ISOLATIONS: tuple[str, ...] = ("none", "restart", "reset")


class Method(_Strict):
    """How GuideLLM runs a cell's levels, besides the workload. The defaults are the February evaluation's
    method: one GuideLLM run per cell over all levels, GuideLLM's single shared prefix, no request cap, the
    servers left running between levels. They are a workload's defaults, and the method of runs stored
    before it was a setting (the report and the store's earlier-run comparison read them here)."""

    runs: Runs = "per-cell"
    prefix_count: PositiveInt | Multiplier = 1
    max_requests: PositiveInt | Multiplier | None = None
    level_isolation: LevelIsolation = "none"


METHOD_DEFAULTS = Method()


class PublishedMethod(_Strict):
    """The published February evaluation's whole method: its workload (the reference campaign,
    include/campaigns/kv_cache_eval.yaml, runs it), one trial, and the method defaults. The report says where a
    run's method differs from it."""

    concurrency: list[int] = [1, 50, 100, 150, 300, 400, 500, 650]
    duration_s: float = 120
    prompt_tokens: int = 128
    output_tokens: int = 128
    prefix_tokens: int = 10000
    turns: int = 5
    seed: int = 889
    trials: int = 1
    method: Method = METHOD_DEFAULTS

    def as_params(self) -> dict[str, Any]:
        """As the keys and values of a stored run's params, the workload first."""
        return {**self.model_dump(exclude={"method"}), **self.method.model_dump()}


FEBRUARY_METHOD = PublishedMethod()


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"values must be unique, got {values}")
    return values


@dataclass(frozen=True)
class FromCampaign:
    """Field metadata: where a run param's default lives in the campaign (a dotted attribute path)."""

    path: str


# Each run param is defined once, here: its type, limits and description serve the campaign file (which
# sets the default), RunParams (which validates a trigger), the trigger form's JSON schema and the defaults.
Trials = Annotated[PositiveInt, Field(description="Sweeps per cell; 2 or more give confidence intervals.")]
TrialIsolationParam = Annotated[TrialIsolation, Field(
    description="redeploy: each trial after the first redeploys and warms up the cell, so the trials' spread "
    "includes deployment variance; same-server: trials share the running servers.")]
NoiseFloorPct = Annotated[float, Field(
    ge=0, le=100, description="With one trial and no earlier runs of a cell, differences up to this % are within "
    "noise (a percentage from 0 to 100).")]
Baseline = Annotated[ConfigName, Field(description="The configuration the others are compared with.")]
SweepParam = Annotated[Sweep, Field(
    description="grid: every level; adaptive: levels in order until throughput stops rising beyond the noise floor, "
    "then refinement levels around the best (levels past it are shown as not run; adaptive.py); seeded: a cell with "
    "stored runs measures only its last peak and the grid levels either side, widening while the peak is at an edge, "
    "and the full grid every `seeded.full_grid_every` runs or when the served stack changed (seeded.py).")]


class PercentileLimits(_Strict):
    """Latency limits in ms at GuideLLM's percentiles of a level's successful requests (any of them)."""

    p50: PositiveFloat | None = None
    p90: PositiveFloat | None = None
    p95: PositiveFloat | None = None
    p99: PositiveFloat | None = None

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Slo(_Strict):
    """`slo:` latency targets a level must meet for its throughput to count as goodput (any of them; none set: no
    goodput). TTFT, inter-token latency and request latency, each at p50/p90/p95/p99, in ms."""

    ttft_ms: PercentileLimits | None = None
    itl_ms: PercentileLimits | None = None
    request_latency_ms: PercentileLimits | None = None

    def targets(self) -> dict[str, dict[str, float]]:
        """metric -> percentile -> limit in ms, the metrics and percentiles set only."""
        out = {}
        for metric in ("ttft_ms", "itl_ms", "request_latency_ms"):
            limits = getattr(self, metric)
            if limits is not None and limits.limits():
                out[metric] = limits.limits()
        return out


SloParam = Annotated[Slo, Field(
    description="Latency targets for goodput: {ttft_ms|itl_ms|request_latency_ms: {p50|p90|p95|p99: ms}}; the "
    "highest measured level meeting every one is each cell's goodput. Empty: no goodput.")]
Design = Literal["auto", "single", "aba"]
DesignParam = Annotated[Design, Field(
    description="aba: the baseline cell runs first and again last, and the drift between its two runs widens the "
    "noise floor and is shown; single: each cell once; auto: aba on the local runtime (a shared host drifts), "
    "single on a cluster.")]


class _Selection(_Strict):
    """Which cells a run covers (first in the trigger form)."""

    models: Annotated[list[str], Field(min_length=1, description="Models to benchmark.",
                                       json_schema_extra={"uniqueItems": True}),
                      AfterValidator(_unique), FromCampaign("model_names")]
    configs: Annotated[list[ConfigName], Field(min_length=1, description="Configurations to benchmark.",
                                               json_schema_extra={"uniqueItems": True}),
                       AfterValidator(_unique), FromCampaign("configs")]


class _WorkloadParams(_Strict):
    """The workload and method: a campaign file's `workload:` and the run params that override it."""

    concurrency: Annotated[list[PositiveInt], Field(
        min_length=1, description="GuideLLM concurrent streams, one level each (integers >= 1). Levels above a "
        "model's max_concurrency are not run for it.")]
    duration_s: Annotated[PositiveFloat, Field(description="Seconds per concurrency level (> 0).")]
    prompt_tokens: Annotated[PositiveInt, Field(description="Prompt tokens per turn.")]
    output_tokens: Annotated[PositiveInt, Field(description="Output tokens per turn.")]
    prefix_tokens: Annotated[NonNegativeInt, Field(description="Shared prefix tokens (the KV-cache reuse under test).")]
    turns: Annotated[PositiveInt, Field(description="Turns per conversation.")]
    seed: Annotated[int, Field(description="GuideLLM data seed.")]
    # The method, its defaults the February evaluation's (METHOD_DEFAULTS)
    prefix_count: PositiveInt | Multiplier = Field(
        METHOD_DEFAULTS.prefix_count, description="Shared prefixes in the synthetic data (GuideLLM synthetic_text "
        "prefix_count): a number, or 'Nx' for N x concurrency at each level (needs runs: per-level).")
    max_requests: PositiveInt | Multiplier | None = Field(
        METHOD_DEFAULTS.max_requests, description="Requests per level besides the duration: a number, 'Nx' for N x "
        "concurrency x turns (needs runs: per-level), or empty for none.")
    runs: Runs = Field(METHOD_DEFAULTS.runs, description="per-cell: one GuideLLM run sweeps every level (February); "
                       "per-level: one run per level.")
    level_isolation: LevelIsolation = Field(
        METHOD_DEFAULTS.level_isolation, description="restart: fresh model servers and an emptied index before every "
        "level after the first; reset: caches and index emptied without reloading the model, checked against a "
        "fresh server before every level (both need runs: per-level).")

    @model_validator(mode="after")
    def _method_is_consistent(self) -> _WorkloadParams:
        check_method(self.runs, self.level_isolation, self.prefix_count, self.max_requests)
        return self


class Workload(_WorkloadParams):
    warmup_requests: NonNegativeInt = 8


def check_method(runs: str, level_isolation: str, prefix_count: int | str, max_requests: int | str | None) -> None:
    if level_isolation in ("restart", "reset") and runs != "per-level":
        raise ValueError(f"level_isolation: {level_isolation} needs runs: per-level (one GuideLLM run cannot be paused "
                         f"for a {level_isolation})")
    per_level = [name for name, v in (("prefix_count", prefix_count), ("max_requests", max_requests))
                 if isinstance(v, str)]
    if per_level and runs != "per-level":
        raise ValueError(f"{' and '.join(per_level)} as a per-level multiplier ('2x') needs runs: per-level "
                         "(one GuideLLM run takes one data and request setting for all its levels)")


def per_level(value: int | str | None, concurrency: int, turns: int = 1) -> int | None:
    """A method value at one level: a number as is, 'Nx' as N x concurrency (x turns for request counts)."""
    if value is None or isinstance(value, int):
        return value
    return int(value[:-1]) * concurrency * turns


class Placement(_Strict):
    """Where one component's pods may run (Kubernetes runtime)."""

    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    affinity: dict[str, Any] | None = None
    runtime_class_name: str | None = None
    priority_class_name: str | None = None


class Scheduling(_Strict):
    model_server: Placement = Placement()
    epp: Placement = Placement()
    kv_index: Placement = Placement()
    steps: Placement = Placement()


class FilesystemOffload(_Strict):
    """The volume behind a filesystem offload tier (Kubernetes runtime): an existing PVC, or one per cell that
    teardown deletes, so every cell starts with an empty tier."""

    claim: str | None = Field(None, description="an existing PersistentVolumeClaim; default: one per cell")
    size_gib: PositiveInt = Field(256, description="size of the per-cell claim (the evaluation's 256Gi)")
    storage_class: str | None = Field(None, description="storage class of the per-cell claim; default the cluster's")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        "ReadWriteOnce", description="replicas > 1 on several nodes need ReadWriteMany")
    mount_path: Annotated[str, Field(pattern=r"^/[\w./-]+$")] = "/kvcache"


class ExistingModelServers(_Strict):
    """The installed model-server Deployment(s): by name, or by a label selector (exactly one of the two)."""

    names: list[Annotated[str, Field(pattern=DNS_NAME)]] = Field(
        [], description="Deployment names, e.g. [ms-qwen3-8b-llm-d-modelservice-decode]")
    selector: str | None = Field(None, description="label selector of the Deployments, e.g. llm-d.ai/role=decode")
    container: Annotated[str, Field(pattern=DNS_NAME)] | None = Field(
        None, description="the vLLM container; default the one named vllm, else the only container")

    @model_validator(mode="after")
    def _one_way(self) -> ExistingModelServers:
        if bool(self.names) == bool(self.selector):
            raise ValueError("give exactly one of `names` (Deployment names) or `selector` (a label selector)")
        if self.selector is not None and not re.fullmatch(r"[\w./-]+(!?=[\w.-]*)?(,[\w./-]+(!?=[\w.-]*)?)*",
                                                          self.selector):
            raise ValueError(f"selector {self.selector!r} is not an equality-based label selector (k=v,k2!=v2)")
        return self


class ExistingEpp(_Strict):
    """The installed endpoint picker: its Deployment and the ConfigMap its --config-file comes from."""

    deployment: Annotated[str, Field(pattern=DNS_NAME)]
    configmap: Annotated[str, Field(pattern=DNS_NAME)]
    config_key: str | None = Field(None, description="the ConfigMap key holding the EndpointPickerConfig; "
                                   "default the ConfigMap's only key")
    service: Annotated[str, Field(pattern=DNS_NAME)] | None = Field(
        None, description="the EPP's Service (vLLM publishes KV events to it); default the Deployment's name, as "
                          "the GAIE inferencepool chart names both (`gateway-api-inference-extension.name`)")
    container: Annotated[str, Field(pattern=DNS_NAME)] | None = Field(
        None, description="the EPP container; default the one named epp, else the only container")


class ExistingStack(_Strict):
    """An llm-d stack installed by someone else (campaign `serving.mode: existing`)."""

    namespace: Annotated[str, Field(pattern=DNS_NAME)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")] = Field(
        ..., description="the gateway or Service URL the load goes to, e.g. http://infra-gateway.llm-d.svc:80")
    model_servers: ExistingModelServers
    epp: ExistingEpp
    index_service: Annotated[str, Field(pattern=DNS_NAME)] | None = Field(
        None, description="the Redis/Valkey Service of a precise-routing index (emptied before measuring)")
    read_only: bool = Field(False, description="touch nothing: benchmark the stack as it is when it matches the "
                                               "configuration, refuse with the differences otherwise")


class Serving(_Strict):
    llmd_version: str
    tensor_parallel_size: PositiveInt
    replicas: PositiveInt = 1
    # Kubernetes runtime only
    backend: Literal["vllm", "inference-sim"] = Field("vllm", description="inference-sim rehearses on CPU-only clusters")
    max_num_seqs: PositiveInt = 1024
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # vLLM's default (vllm/config/cache.py); passed explicitly so the EPP's indexer hashes the same blocks
    block_size: PositiveInt = 16
    hash_seed: str = "42"
    model_cache_pvc: str | None = None
    model_cache_pvc_access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"] = Field(
        "ReadWriteMany", description="what the PVC provides; replicas > 1 need ReadWriteMany or ReadOnlyMany")
    hf_token_secret: str = "llmd-bench-hf-token"
    offload: OffloadSize = OffloadSize(num_cpu_blocks=10000, block_size=16)
    filesystem_offload: FilesystemOffload = FilesystemOffload()
    resources: PodResources = PodResources()
    memory_headroom_pct: Annotated[float, Field(ge=0, le=200)] = Field(
        25, description="limit = (vLLM host memory + offload buffer) x (1 + headroom)")
    max_pod_memory_gib: PositiveFloat | None = Field(
        None, description="largest memory limit a model-server pod may have (the GPU nodes' allocatable memory)")
    scheduling: Scheduling = Scheduling()
    image_pull_secrets: list[str] = []
    registry_mirrors: dict[str, str] = Field(
        {}, description="image prefix -> mirror prefix, e.g. {'ghcr.io': 'registry.internal/ghcr'}")
    mode: ServingMode = Field("deploy", description="deploy: each cell's own stack from our manifests; existing: an "
                              "installed llm-d stack, patched per cell and restored (needs the kubernetes runtime)")
    existing: ExistingStack | None = Field(None, description="the installed stack (serving.mode: existing)")

    @model_validator(mode="after")
    def _existing_mode(self) -> Serving:
        if self.mode == "existing" and self.existing is None:
            raise ValueError("serving.mode is existing but serving.existing is missing: give its namespace, url, "
                             "model_servers and epp")
        if self.mode == "deploy" and self.existing is not None:
            raise ValueError("serving.existing is set but serving.mode is deploy: set `mode: existing` to benchmark "
                             "the installed stack, or remove serving.existing")
        return self

    @model_validator(mode="after")
    def _cache_shared_by_replicas(self) -> Serving:
        if self.model_cache_pvc and self.replicas > 1 and self.model_cache_pvc_access_mode == "ReadWriteOnce":
            raise ValueError(f"model_cache_pvc {self.model_cache_pvc!r} is ReadWriteOnce but replicas is "
                             f"{self.replicas}: pods on other nodes cannot mount it; use a ReadWriteMany volume")
        return self


class PrefixCacheSimulation(_Strict):
    """A simulated vLLM prefix cache in front of each mock server (runtime/prefix_cache_sim.py): vLLM's
    prefix-cache counters and reset endpoint, so serving metrics and level_isolation: reset run locally."""

    gpu_blocks: PositiveInt = Field(description="blocks the GPU tier keeps (least recently used go first)")
    block_tokens: PositiveInt = 16
    offload_blocks: NonNegativeInt = Field(0, description="blocks of an offload tier (0: none)")
    offload_survives_reset: bool = Field(False, description="rehearse a server whose reset leaves the offload tier")


class ServerFault(_Strict):
    """A simulated vLLM that does not serve what it was asked, to rehearse the served-configuration proof (served.py):
    it drops flags (as a shell script that never passes them on would) or runs another block size."""

    ignore_flags: list[str] = Field([], description="vLLM flags the simulated server never receives, e.g. "
                                    "['--kv-transfer-config']")
    block_size: PositiveInt | None = Field(None, description="serve this KV block size whatever --block-size says")


class SimulationProfile(_Strict):
    """GuideLLM mock-server settings standing in for one configuration on the local runtime."""

    ttft_ms: PositiveFloat
    ttft_ms_std: NonNegativeFloat = 0.0
    itl_ms: PositiveFloat
    itl_ms_std: NonNegativeFloat = 0.0
    max_concurrent_requests: PositiveInt | None = None
    capacity: PositiveInt | None = Field(None, description="requests one replica serves at once, whole streamed "
                                         "responses included; the local router queues the rest (a saturating server)")
    overload_ms: NonNegativeFloat = Field(0.0, description="with capacity: ms an admitted request loses per request "
                                          "still queued, so throughput falls past capacity (an over-committed server)")
    prefix_cache: PrefixCacheSimulation | None = None
    server_fault: ServerFault | None = Field(None, description="rehearse a server that ignores flags: its deploy must "
                                             "fail the served-configuration proof")


# Factors a campaign may vary besides models and configurations. Stack factors change the whole serving
# stack, so every configuration is compared with the baseline under the same stack factors; configuration
# factors (offload_size) only apply to configurations they change (those that offload).
STACK_FACTORS: tuple[str, ...] = ("replicas", "tensor_parallel_size", "memory_regime")
CONFIG_FACTORS: tuple[str, ...] = ("offload_size",)
FACTORS: tuple[str, ...] = STACK_FACTORS + CONFIG_FACTORS
# The memory regime every campaign has: the configuration's or serving's gpu_memory_utilization unchanged.
DEFAULT_REGIME = "default"
FactorLabel = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]


class MemoryRegime(_Strict):
    """A GPU memory setting applied to every configuration, e.g. memory pressure: a lower
    gpu_memory_utilization per model so the GPU KV cache overflows and an offload tier has work to do."""

    description: str = ""
    gpu_memory_utilization: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        description="model id (or '*' for every other model) -> vLLM --gpu-memory-utilization")

    def for_model(self, model: str) -> float | None:
        return self.gpu_memory_utilization.get(model, self.gpu_memory_utilization.get("*"))


class Factors(_Strict):
    """What a campaign varies besides models and configurations: cells are models x configurations x every
    combination of these values."""

    replicas: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_unique)] | None = Field(
        None, description="model-server replicas per cell (routing needs more than one)")
    tensor_parallel_size: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_unique)] | None = Field(
        None, description="GPUs per replica")
    memory_regime: Annotated[list[FactorLabel], Field(min_length=1), AfterValidator(_unique)] | None = Field(
        None, description=f"names of `memory_regimes:` ('{DEFAULT_REGIME}' leaves gpu_memory_utilization unchanged)")
    offload_size: Annotated[dict[FactorLabel, OffloadSize], Field(min_length=1)] | None = Field(
        None, description="label -> CPU tier size; applies to configurations that offload")

    def declared(self) -> list[str]:
        return [name for name in FACTORS if getattr(self, name) is not None]

    def values(self, name: str) -> list[Any]:
        value = getattr(self, name)
        return list(value) if value is not None else []


def _defined_config(name: str, info: ValidationInfo) -> str:
    own = info.data.get("configurations") or {}
    if configurations.lookup(name, own) is None:
        raise ValueError(f"{name!r} is not in the configuration catalog (include/configurations.yaml) nor in this "
                         f"file's `configurations:`; known: {configurations.known_names(own)}")
    return name


class Campaign(_Strict):
    dag_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")]
    description: str = ""
    schedule: str | None = None
    catchup: bool = False
    lanes: PositiveInt | Literal["auto"] = Field(
        1, description="cells that may run at the same time: a number (they share the cluster's GPUs), or auto (the "
        "kubernetes runtime runs as many cells at once as the nodes' allocatable GPUs hold, each on its own GPUs)")
    trials: Trials = 1
    trial_isolation: TrialIsolationParam = "redeploy"
    noise_floor_pct: NoiseFloorPct = DEFAULT_NOISE_FLOOR_PCT
    tags: list[str] = []
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    # before `configs`, which are checked against it
    configurations: dict[str, Configuration] = Field(
        {}, description="this campaign's own configurations, besides include/configurations.yaml's")
    configs: Annotated[list[Annotated[ConfigName, AfterValidator(_defined_config)]], Field(min_length=1)]
    # default no-offload when the campaign has it, else its first config (_default_baseline)
    baseline: Baseline = DEFAULT_BASELINE
    workload: Workload
    serving: Serving
    factors: Factors = Field(Factors(), description="what the campaign varies besides models and configurations")
    sweep: SweepParam = "grid"
    adaptive: AdaptiveSettings = AdaptiveSettings()
    seeded: SeededSettings = SeededSettings()
    slo: SloParam = Slo()
    design: DesignParam = "auto"
    gpu_hour_cost: NonNegativeFloat | None = Field(None, description="what one GPU-hour costs (any currency): the "
                                                   "report adds each cell's cost and the cost per million output tokens")
    memory_regimes: dict[FactorLabel, MemoryRegime] = Field(
        {}, description="named GPU memory settings the memory_regime factor chooses from")
    local_simulation: dict[ConfigName, SimulationProfile]

    # Set by the loader, not by the file.
    source: str = Field("", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_baseline(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "baseline" not in raw and isinstance(raw.get("configs"), list) and raw["configs"]:
            configs = raw["configs"]
            raw = {**raw, "baseline": DEFAULT_BASELINE if DEFAULT_BASELINE in configs else configs[0]}
        return raw

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None) -> str | None:
        if schedule is None or schedule in SCHEDULE_PRESETS:
            return schedule
        try:
            from croniter import croniter  # deferred: optional (it comes with Airflow; a step pod may not have it)
        except ImportError:  # pragma: no cover - croniter comes with Airflow
            return schedule
        if not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a schedule; use a cron expression ('0 6 * * 1') or one of "
                             f"{list(SCHEDULE_PRESETS)}, or leave it out for manual runs only")
        return schedule

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in models]
        shorts = [m.short_name for m in models]
        if len(set(names)) != len(names) or len(set(shorts)) != len(shorts):
            raise ValueError(f"model names (and their short names) must be unique, got {names}")
        return models

    @field_validator("configs")
    @classmethod
    def _unique_configs(cls, configs: list[str]) -> list[str]:
        if len(set(configs)) != len(configs):
            raise ValueError(f"configs must be unique, got {configs}")
        return configs

    @field_validator("configurations", mode="before")
    @classmethod
    def _new_configurations(cls, raw: Any) -> Any:
        try:
            return configurations.validate_extension(raw) if raw else {}
        except CampaignError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _configs_are_defined(self) -> Campaign:
        if self.baseline not in self.configs:
            raise ValueError(f"baseline {self.baseline!r} is not one of this campaign's configs {list(self.configs)}")
        groups = [cell.group_id for cell in self.cells()]
        if len(set(groups)) != len(groups):
            raise ValueError(f"two cells (model/config/factors) make the same task-group id: {sorted(groups)}")
        return self

    @model_validator(mode="after")
    def _regimes_are_defined(self) -> Campaign:
        if DEFAULT_REGIME in self.memory_regimes:
            raise ValueError(f"memory_regimes: {DEFAULT_REGIME!r} is built in (no change); give the regime another name")
        for regime in self.factors.values("memory_regime"):
            if regime == DEFAULT_REGIME:
                continue
            if regime not in self.memory_regimes:
                raise ValueError(f"factors.memory_regime: {regime!r} is not defined under memory_regimes; "
                                 f"defined: {[DEFAULT_REGIME, *self.memory_regimes]}")
            missing = [m.name for m in self.models if self.memory_regimes[regime].for_model(m.name) is None]
            if missing:
                raise ValueError(f"memory_regimes.{regime}.gpu_memory_utilization has no value for {missing} "
                                 "(give each model, or '*' for all others)")
        if self.factors.offload_size is not None:
            if not any(self.configuration(c).offloads for c in self.configs):
                raise ValueError("factors.offload_size varies the offload tier, but none of this campaign's configs offloads")
            if self.configuration(self.baseline).offloads:
                raise ValueError(f"baseline {self.baseline!r} offloads, so factors.offload_size would split it into several "
                                 "cells; compare against a configuration that does not offload")
        return self

    @model_validator(mode="after")
    def _simulation_covers_configs(self) -> Campaign:
        missing = [c for c in self.configs if c not in self.local_simulation]
        if missing:
            raise ValueError(f"local_simulation has no profile for {missing}")
        return self

    @model_validator(mode="after")
    def _existing_stack_can_take_configs(self) -> Campaign:
        """serving.mode: existing patches args, env, image and replicas into installed objects: configurations that
        need objects of their own (a volume, an index server) or another entrypoint are refused, named."""
        if self.serving.mode != "existing":
            return self
        assert self.serving.existing is not None
        problems = []
        for name in self.configs:
            config = self.configuration(name)
            if config.model_server.pre_start:
                problems.append(f"{name}: model_server.pre_start changes the container's command, which existing mode "
                                "never patches (only args, env, image and replicas)")
            if config.filesystem_tier is not None:
                problems.append(f"{name}: a filesystem offload tier needs a volume mounted into the model servers, "
                                "which existing mode does not add")
            if config.store_kind is not None and self.serving.existing.index_service is None:
                problems.append(f"{name}: it needs a {config.store_kind} server; give serving.existing.index_service "
                                "(the installed index's Service)")
        if problems:
            raise ValueError("serving.mode existing cannot benchmark " + "; ".join(problems))
        return self

    def check_runtime(self, runtime: str) -> None:
        """serving.mode: existing patches an installed stack in a cluster: refused on any other runtime."""
        if self.serving.mode == "existing" and not cluster_runtime(runtime):
            raise CampaignError(f"campaign {self.dag_id}: serving.mode existing benchmarks an llm-d stack installed in "
                                f"a cluster and needs the kubernetes runtime (LLMD_BENCH_RUNTIME=kubernetes); this "
                                f"step runs with the {runtime} runtime")

    @property
    def known_configs(self) -> list[str]:
        return configurations.known_names(self.configurations)

    def configuration(self, name: str) -> Configuration:
        found = configurations.lookup(name, self.configurations)
        if found is None:
            raise ParamsError(f"configuration {name!r} is not in the catalog nor in campaign {self.dag_id}; "
                              f"known: {self.known_configs}")
        return found

    @property
    def name(self) -> str:
        """The file stem, used by steps to find the campaign again (`--campaign kv_cache_eval`)."""
        return Path(self.source).stem if self.source else self.dag_id

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if name in (spec.name, spec.short_name):
                return spec
        raise ParamsError(f"model {name!r} is not in campaign {self.dag_id}; allowed: {self.model_names}")

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def cells(self, narrowed: dict[str, list[Any]] | None = None) -> list[Cell]:
        """Models x configs x every combination of the factor values that applies to the config (offload_size
        only to configs that offload), in file order; `narrowed` keeps only some values of a factor."""
        narrowed = narrowed or {}
        cells = []
        for m in self.models:
            for c in self.configs:
                offloads = self.configuration(c).offloads
                names = [f for f in self.factors.declared() if f in STACK_FACTORS or offloads]
                choices = [[v for v in self.factors.values(f) if f not in narrowed or v in narrowed[f]] for f in names]
                for combo in itertools.product(*choices):
                    cells.append(Cell(m.name, c, tuple(zip(names, combo, strict=True))))
        return cells

    def cell_configuration(self, cell: Cell) -> Configuration:
        """The configuration as this cell runs it: the memory regime's gpu_memory_utilization and the
        offload_size factor's tier applied."""
        config = self.configuration(cell.config)
        factors = dict(cell.factors)
        server = config.model_server
        regime = factors.get("memory_regime")
        if regime is not None and regime != DEFAULT_REGIME:
            server = server.model_copy(update={
                "gpu_memory_utilization": self.memory_regimes[regime].for_model(cell.model)})
        size = factors.get("offload_size")
        if size is not None and server.kv_offload is not None and self.factors.offload_size:
            server = server.model_copy(update={
                "kv_offload": server.kv_offload.model_copy(update={"size": self.factors.offload_size[size]})})
        return config.model_copy(update={"model_server": server})

    @property
    def factor_values(self) -> dict[str, list[Any]]:
        return {name: self.factors.values(name) for name in self.factors.declared()}


@dataclass(frozen=True)
class Cell:
    model: str
    config: str
    # (factor, value) in FACTORS order; empty when the campaign varies nothing besides models and configs
    factors: tuple[tuple[str, Any], ...] = ()

    @property
    def short_model(self) -> str:
        return paths.model_short_name(self.model)

    @property
    def stack_factors(self) -> str:
        """The stack factors' values as one label, 'replicas=2,memory_regime=pressure' ('' when none)."""
        return factor_label(self.factors, STACK_FACTORS)

    @property
    def config_factors(self) -> str:
        return factor_label(self.factors, CONFIG_FACTORS)

    @property
    def variant(self) -> str:
        """Every factor's value, for folder names and ids: 'replicas-2_offload_size-20k' ('' when none)."""
        return "_".join(f"{name}-{value}" for name, value in self.factors)

    @property
    def group_id(self) -> str:
        """TaskGroup id, named after all: `Qwen3-8B__llm-d-redis`, `Qwen3-8B__native-offload__replicas-2`
        (Airflow allows no dots: 0.6B -> 0_6B)."""
        base = f"{self.short_model.replace('.', '_')}__{self.config.replace('.', '_').replace('+', '_')}"
        return f"{base}__{self.variant.replace('.', '_')}" if self.factors else base

    @property
    def factors_arg(self) -> str:
        """The step CLI's --factors value."""
        return ",".join(f"{name}={value}" for name, value in self.factors)

    def __str__(self) -> str:
        return f"{self.short_model}/{self.config}" + (f" [{self.factors_arg}]" if self.factors else "")


def factor_label(factors: tuple[tuple[str, Any], ...] | dict[str, Any], names: tuple[str, ...]) -> str:
    items = factors.items() if isinstance(factors, dict) else factors
    return ",".join(f"{name}={value}" for name, value in items if name in names)


def parse_factors_arg(campaign: Campaign, text: str | None) -> tuple[tuple[str, Any], ...]:
    """`replicas=2,memory_regime=pressure` -> the cell's factors, checked against the campaign's."""
    if not text:
        return ()
    found: dict[str, Any] = {}
    for item in text.split(","):
        name, sep, raw = item.partition("=")
        if not sep or name not in FACTORS:
            raise ParamsError(f"--factors {text!r}: {item!r} is not factor=value; factors: {list(FACTORS)}")
        allowed = campaign.factors.values(name)
        value: Any = int(raw) if name in ("replicas", "tensor_parallel_size") and raw.isdigit() else raw
        if value not in allowed:
            raise ParamsError(f"--factors: {name}={raw} is not one of campaign {campaign.dag_id}'s values {allowed}")
        found[name] = value
    return tuple((name, found[name]) for name in FACTORS if name in found)
