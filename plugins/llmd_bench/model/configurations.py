"""The configuration catalog: what each configuration under test changes in the serving stack, as data.

`include/configurations.yaml` holds the published configurations and the later ones; a campaign adds its
own under `configurations:` (new names only: a catalog name always means the same stack). The renderer
(manifests.py), the runtimes, the effect verdict and the report read these fields; none of them compares
configuration names.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmd_bench.model import paths, yaml_text
from llmd_bench.model.errors import CampaignError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
# Task-group ids, folder names and Kubernetes labels are made from it (Airflow keys allow [\w.-]; '+' and '.'
# become '_' in group ids, names.dns_label handles the rest).
CONFIG_NAME_PATTERN = r"^[a-z0-9][a-z0-9+._-]{0,62}$"
IndexBackend = Literal["in-memory", "redis", "valkey"]
Evidence = Literal["none", "offload-counters", "index-keys"]

# vLLM flags and env the renderer sets from other fields (serving.*, model_server.kv_offload, the router);
# a configuration's extra_args/env may not set them a second time.
RENDERER_FLAGS = {
    "--host": "fixed", "--port": "fixed", "--tensor-parallel-size": "tensor_parallel_size (a factor/param)",
    "--max-num-seqs": "serving.max_num_seqs", "--gpu-memory-utilization": "model_server.gpu_memory_utilization",
    "--block-size": "model_server.block_size or serving.block_size", "--enable-prefix-caching": "always on",
    "--kv-transfer-config": "model_server.kv_offload", "--kv-events-config": "router.prefix_scorer: precise",
    "--prefix-caching-hash-algo": "router.prefix_scorer: precise",
}
RENDERER_ENV = {"HF_TOKEN": "serving.hf_token_secret", "HF_HOME": "serving.model_cache_pvc",
                "POD_IP": "set for KV events", "PYTHONHASHSEED": "serving.hash_seed",
                "LMCACHE_LOCAL_CPU": "model_server.kv_offload.cpu", "LMCACHE_MAX_LOCAL_CPU_SIZE": "model_server.kv_offload.size",
                "LMCACHE_REMOTE_URL": "model_server.kv_offload.remote", "LMCACHE_REMOTE_SERDE": "model_server.kv_offload.remote"}
RENDERER_FLAGS["--distributed-executor-backend"] = "model_server.kv_offload.filesystem (mp)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OffloadSize(_Strict):
    """The CPU tier of native offload, stated the way users think of it: GiB per GPU, or the seed's
    num_cpu_blocks with the block size they count. Converted per vLLM version (sizing.py)."""

    cpu_gib_per_gpu: PositiveFloat | None = None
    num_cpu_blocks: PositiveInt | None = None
    block_size: PositiveInt | None = Field(None, description="tokens per block num_cpu_blocks counts; default serving.block_size")

    @model_validator(mode="after")
    def _one_form(self) -> OffloadSize:
        if (self.cpu_gib_per_gpu is None) == (self.num_cpu_blocks is None):
            raise ValueError("give exactly one of cpu_gib_per_gpu or num_cpu_blocks")
        if self.block_size is not None and self.num_cpu_blocks is None:
            raise ValueError("block_size goes with num_cpu_blocks")
        return self


class FilesystemTier(_Strict):
    """A filesystem tier behind vLLM's OffloadingConnector: KV blocks as files on a volume. Rendered per release
    (catalog contract fs_tier): llm-d's backend, llm-d/llm-d-kv-cache kv_connectors/llmd_fs_backend/llmd_fs_backend/
    spec.py @v0.7.0 (SharedStorageOffloadingSpec; threads_per_gpu default 64, block_size default 256), or vLLM's own
    `fs` secondary tier of TieringOffloadingSpec (vllm/v1/kv_offload/tiering/fs/manager.py @v0.23.0: root_dir,
    n_read_threads and n_write_threads, 16 each by default)."""

    # tokens per file; a multiple of the GPU block size (vllm/v1/kv_offload/spec.py @v0.19.1, base.py @v0.23.0 assert it)
    block_size: PositiveInt = 256
    threads_per_gpu: PositiveInt = Field(128, description="llmd_fs_backend: I/O threads per GPU (the evaluation's 128; "
                                         "upstream default 64)")
    read_threads: PositiveInt | None = Field(None, description="vLLM's fs tier: n_read_threads (None: vLLM's default)")
    write_threads: PositiveInt | None = Field(None, description="vLLM's fs tier: n_write_threads (None: vLLM's default)")


class KvOffload(_Strict):
    """A KV-transfer connector that offloads the GPU's KV cache: to CPU memory, a filesystem, or both
    (OffloadingConnector; both through vLLM's MultiConnector), or LMCache's CPU tier and remote store."""

    # vLLM's native offload (vllm/distributed/kv_transfer/kv_connector/v1/offloading_connector.py @v0.11.2), its size key
    # differing per vLLM version (catalog contract offload_size_key, sizing.py); LMCacheConnectorV1 is registered
    # in vllm/distributed/kv_transfer/kv_connector/factory.py @v0.14.1 and later and imports the lmcache package
    connector: Literal["OffloadingConnector", "LMCacheConnectorV1"] = "OffloadingConnector"
    cpu: bool = Field(True, description="a CPU tier (native: the CPU spec; LMCache: LMCACHE_LOCAL_CPU)")
    size: OffloadSize | None = Field(None, description="the CPU tier per GPU; default serving.offload")
    size_per_model: dict[str, OffloadSize] = Field({}, description="model id -> the CPU tier for that model")
    filesystem: FilesystemTier | None = Field(None, description="OffloadingConnector only: a filesystem tier on a "
                                              "volume (serving.filesystem_offload)")
    remote: Literal["redis", "valkey"] | None = Field(None, description="LMCacheConnectorV1 only: a remote store "
                                                      "the cell deploys (LMCACHE_REMOTE_URL)")
    # vllm/v1/kv_offload/base.py @v0.23.0: kv_connector_extra_config.offload_prompt_only (default true there; absent
    # before vLLM 0.23, where every computed block is offloaded). None leaves it to the release's vLLM
    offload_prompt_only: bool | None = Field(None, description="OffloadingConnector only: offload prompt blocks only "
                                             "(true) or decode blocks too (false); None: the release's vLLM default "
                                             "(catalog contract offload_prompt_only); refused where the key does not exist")

    @model_validator(mode="after")
    def _tiers_fit_the_connector(self) -> KvOffload:
        if self.filesystem is not None and self.connector != "OffloadingConnector":
            raise ValueError("filesystem is a tier of connector OffloadingConnector (llmd_fs_backend), not of "
                             f"{self.connector}")
        if self.offload_prompt_only is not None and self.connector != "OffloadingConnector":
            raise ValueError("offload_prompt_only is a setting of connector OffloadingConnector, not of "
                             f"{self.connector}")
        if self.remote is not None and self.connector != "LMCacheConnectorV1":
            raise ValueError("remote is a tier of connector LMCacheConnectorV1, not of OffloadingConnector")
        if not self.cpu and self.filesystem is None and self.remote is None:
            raise ValueError("cpu: false leaves no tier; add filesystem (OffloadingConnector) or remote (LMCache)")
        if not self.cpu and (self.size is not None or self.size_per_model):
            raise ValueError("size and size_per_model size the CPU tier, which cpu: false turns off")
        return self

    def size_for(self, model: str) -> OffloadSize | None:
        return self.size_per_model.get(model, self.size)


class ModelServerPart(_Strict):
    kv_offload: KvOffload | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="overrides serving.gpu_memory_utilization (a memory-pressure regime lowers it)")
    image: str | None = Field(None, description="model-server image instead of the version catalog's")
    block_size: PositiveInt | None = Field(None, description="vLLM's KV block size in tokens instead of "
                                           "serving.block_size (the precise scorer's indexer hashes the same blocks)")
    extra_args: list[str] = Field([], description="vLLM flags appended verbatim (not those the renderer sets)")
    env: dict[str, str] = Field({}, description="model-server environment (not the variables the renderer sets)")
    pre_start: list[str] = Field([], description="shell commands run in the model-server container before vLLM "
                                 "starts (e.g. installing a connector's package the image lacks)")

    @field_validator("extra_args")
    @classmethod
    def _no_renderer_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in RENDERER_FLAGS:
                raise ValueError(f"{flag} is set by the renderer from {RENDERER_FLAGS[flag]}; "
                                 "set it there instead of in extra_args")
        return args

    @field_validator("env")
    @classmethod
    def _no_renderer_env(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(env) & set(RENDERER_ENV))
        if taken:
            raise ValueError(f"{taken} are set by the renderer ({', '.join(RENDERER_ENV[k] for k in taken)})")
        return env


class ScorerWeights(_Strict):
    """The EPP scheduling profile's scorer weights (EndpointPickerConfig schedulingProfiles[].plugins[].weight);
    the defaults are the published configuration's. 0 leaves a scorer out of the profile."""

    queue: Annotated[int, Field(ge=0)] = 2
    kv_cache_utilization: Annotated[int, Field(ge=0)] = 2
    prefix: Annotated[int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _something_scores(self) -> ScorerWeights:
        if not (self.queue or self.kv_cache_utilization or self.prefix):
            raise ValueError("every scorer weight is 0: the picker would choose at random")
        return self


class RouterPart(_Strict):
    # approximate: the EPP's prefix-cache-scorer guesses from the requests it routed; precise: the
    # precise-prefix-cache-scorer reads the KV blocks vLLM reports over KV events from an index
    prefix_scorer: Literal["approximate", "precise"] = "approximate"
    index: IndexBackend = Field("in-memory", description="where the precise scorer's KV-block index lives")
    weights: ScorerWeights = ScorerWeights()

    @model_validator(mode="after")
    def _index_goes_with_scorer(self) -> RouterPart:
        if self.prefix_scorer == "precise" and self.index == "in-memory":
            raise ValueError("prefix_scorer: precise needs index: redis or valkey (an in-memory index per EPP "
                             "replica is not what this catalog measures)")
        if self.prefix_scorer == "approximate" and self.index != "in-memory":
            raise ValueError(f"index: {self.index} is only read by prefix_scorer: precise")
        return self


class Configuration(_Strict):
    description: str
    model_server: ModelServerPart = ModelServerPart()
    router: RouterPart = RouterPart()
    evidence: Evidence = Field(description="what proves the configuration took effect: none (a baseline), "
                               "offload-counters (vLLM's external prefix-cache lookups), index-keys (keys in the "
                               "Redis/Valkey index and EPP index lookups)")

    @model_validator(mode="after")
    def _evidence_matches(self) -> Configuration:
        if self.evidence == "offload-counters" and self.model_server.kv_offload is None:
            raise ValueError("evidence offload-counters needs model_server.kv_offload")
        if self.evidence == "index-keys" and self.router.prefix_scorer != "precise":
            raise ValueError("evidence index-keys needs router.prefix_scorer: precise")
        remote = self.model_server.kv_offload.remote if self.model_server.kv_offload else None
        if remote is not None and self.router.index != "in-memory":
            raise ValueError(f"an LMCache remote ({remote}) and a {self.router.index} index would each need the cell's "
                             "one Redis/Valkey store; benchmark them as separate configurations")
        return self

    @property
    def offloads(self) -> bool:
        return self.model_server.kv_offload is not None

    @property
    def kv_events(self) -> bool:
        """vLLM publishes KV events to the EPP, which indexes them in a Redis/Valkey server."""
        return self.router.prefix_scorer == "precise"

    @property
    def index_kind(self) -> Literal["redis", "valkey"] | None:
        return None if self.router.index == "in-memory" else self.router.index

    @property
    def store_kind(self) -> Literal["redis", "valkey"] | None:
        """The Redis/Valkey server the cell deploys: the precise scorer's index or LMCache's remote store."""
        return self.index_kind or (self.model_server.kv_offload.remote if self.model_server.kv_offload else None)

    @property
    def cpu_tier(self) -> bool:
        return self.model_server.kv_offload is not None and self.model_server.kv_offload.cpu

    @property
    def filesystem_tier(self) -> FilesystemTier | None:
        return self.model_server.kv_offload.filesystem if self.model_server.kv_offload else None

    @property
    def needs_replicas(self) -> bool:
        """Routing by cache contents only differs from the baseline when there is more than one endpoint."""
        return self.router.prefix_scorer == "precise"


def catalog_path() -> Path:
    return paths.home() / "include" / "configurations.yaml"


def _validate(raw: object, where: str) -> dict[str, Configuration]:
    if not isinstance(raw, dict):
        raise CampaignError(f"{where}: expected a mapping of configuration name -> definition, got {type(raw).__name__}")
    found: dict[str, Configuration] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not re.match(CONFIG_NAME_PATTERN, name):
            raise CampaignError(f"{where}: configuration name {name!r} must match {CONFIG_NAME_PATTERN} "
                                "(lower case, digits and . _ + -)")
        try:
            found[name] = Configuration.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(f"field `{name}.{'.'.join(str(p) for p in e['loc'])}`: {e['msg']}" if e["loc"]
                                 else f"`{name}`: {e['msg']}" for e in exc.errors())
            raise CampaignError(f"{where}: {problems}") from None
    return found


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, Configuration]:
    try:
        raw = yaml_text.load(Path(path).read_text())
    except FileNotFoundError:
        raise CampaignError(f"configuration catalog {path}: not found") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"configuration catalog {path}: not valid YAML: {exc}") from None
    return _validate(raw, f"configuration catalog {path}")


def catalog() -> dict[str, Configuration]:
    """The shipped catalog, name -> definition, in file order."""
    path = catalog_path()
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise CampaignError(f"configuration catalog {path}: not found") from None
    return _load(str(path), mtime)


def validate_extension(raw: object) -> dict[str, Configuration]:
    """A campaign's own `configurations:`: new names, each a full definition."""
    found = _validate(raw, "configurations")
    clash = sorted(set(found) & set(catalog()))
    if clash:
        raise ValueError(f"{clash} already in the catalog ({catalog_path().name}): a catalog name always means "
                         "the same stack; give the campaign's variant its own name")
    return found


def known_names(extension: dict[str, Configuration] | None = None) -> list[str]:
    """The catalog's names, then a campaign's own: what an error lists as allowed."""
    return [*catalog(), *(extension or {})]


def lookup(name: str, extension: dict[str, Configuration] | None = None) -> Configuration | None:
    return (extension or {}).get(name) or catalog().get(name)


def cache_reset_refusals(configuration: Any, contract: Any, backend: str, version: str) -> list[str]:
    """level_isolation: reset (level_reset.py): why a reset cannot empty this configuration's caches at this
    llm-d version (empty: allowed).
    `configuration`: configurations.Configuration; `contract`: catalog.Contract."""
    reasons = []
    if backend == "inference-sim":
        reasons.append("llm-d-inference-sim serves no /reset_prefix_cache (pkg/communication/http.go @v0.9.2)")
    offload = configuration.model_server.kv_offload
    if offload is not None:
        if offload.connector == "LMCacheConnectorV1":
            reasons.append("vLLM's LMCacheConnectorV1 has no reset_cache (lmcache_connector.py @v0.19.1, @v0.23.0): "
                           "the LMCache tier would keep the previous level's blocks")
        elif offload.filesystem is not None:
            reasons.append("the filesystem offload tier's files outlive a reset of the server")
        elif offload.cpu and "OffloadingConnector" not in contract.prefix_cache_reset.connectors:
            reasons.append(f"llm-d {version}'s vLLM has no OffloadingConnector.reset_cache (added in vLLM 0.23.0, "
                           "offloading_connector.py): the CPU tier would keep the previous level's blocks")
    return reasons
