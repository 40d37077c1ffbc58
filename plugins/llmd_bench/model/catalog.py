"""The llm-d version catalog (include/versions.yaml): per llm-d release, the images, component versions and
the contract with upstream: every setting that differs between releases (EPP flags and serving mode, the
precise scorer's config layout, the KV-event topic, offload parameter names, RBAC, required CRDs). Each
value in the YAML names the upstream file and tag it was read from."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmd_bench.model import paths, yaml_text
from llmd_bench.model.errors import CampaignError

REQUIRED_IMAGES = ("vllm", "epp", "inference_sim", "envoy", "guidellm", "redis", "valkey")
UDS_TOKENIZER_IMAGE = "uds_tokenizer"
# The pieces of a release an entry may mark unverified (contract.unverified), and the images each one names:
# model_server (the vLLM version and image), router (the EPP image, flags and config API), precise_scorer (the
# precise prefix-cache plugin's config), inference_sim (the simulator), lmcache, fs_tier.
UnverifiedPiece = Literal["model_server", "router", "precise_scorer", "inference_sim", "lmcache", "fs_tier"]
PIECE_IMAGES: dict[str, tuple[str, ...]] = {"model_server": ("vllm",), "router": ("epp", "envoy"),
                                            "inference_sim": ("inference_sim",)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RbacRule(_Strict):
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...] = ("get", "list", "watch")


class EppContract(_Strict):
    """The EPP's command line at this release."""

    # --secure-serving: the ext_proc gRPC server speaks TLS (self-signed) unless set to false. We set it
    # explicitly and Envoy's `epp` cluster follows it, so the two can never disagree.
    secure_serving: bool = True
    # --tracing exists (and defaults to true, exporting to an OTLP collector that is not there).
    tracing_flag: bool = True
    # --metrics-endpoint-auth exists (token review of metrics scrapes needs cluster-scoped RBAC).
    metrics_endpoint_auth_flag: bool = True
    # --kv-cache-usage-percentage-metric exists as a flag (else the metric name lives elsewhere).
    kv_cache_usage_metric_flag: bool = True


class PreciseScorerContract(_Strict):
    # where `tokenProcessorConfig` (blockSize, hashSeed) is read: under `indexerConfig` (kv-cache < 0.5.0)
    # or at the top level of the plugin's parameters (kv-cache >= 0.5.0; nested, it is ignored)
    token_processor_at: Literal["indexerConfig", "top_level"] = "indexerConfig"
    # a default in-memory index wins over Redis/Valkey unless `inMemoryConfig` is cleared (kv-cache < 0.5.0)
    inmemory_index_default: bool = False
    # `kvEventsConfig.discoverPods` exists (kv-cache >= 0.5.0, default true: the EPP would dial each pod's
    # ZMQ socket); we set it false because vLLM connects to the EPP's bound endpoint
    discover_pods_key: bool = False
    # the key of the block size in `tokenProcessorConfig` (`blockSizeTokens` from kv-cache 0.9, `blockSize` deprecated)
    block_size_key: Literal["blockSize", "blockSizeTokens"] = "blockSize"
    # `tokenizersPoolConfig.modelName` exists (required from kv-cache 0.5.0; before, the request's model is used)
    tokenizer_model_name: bool = True
    # how the EPP tokenizes: `embedded` (hf in the EPP), `uds` (a tokenizer sidecar on a Unix socket; the EPP
    # image is built without embedded tokenizers and exits when the socket does not answer) or `render`
    # (a `token-producer` calling a vLLM render sidecar over HTTP, router >= v0.10)
    tokenizer: Literal["embedded", "uds", "render"] = "embedded"
    # `scorer`: the precise-prefix-cache-scorer plugin; `producer`: precise-prefix-cache-producer feeding the
    # prefix-cache-scorer (router >= v0.10, where the scorer plugin is a deprecated wrapper)
    plugin: Literal["scorer", "producer"] = "scorer"
    # `valkeyConfig` (with backendType) exists; router v0.10 removed it (Valkey is reached through redisConfig)
    valkey_config_key: bool = True


class PrefixCacheResetContract(_Strict):
    """vLLM's `POST /reset_prefix_cache`, served only with VLLM_SERVER_DEV_MODE=1 at every catalog release, always
    answering 200 even when nothing was reset (vllm/entrypoints/serve/cache/api_router.py @v0.19.1; serve/dev/cache
    @v0.23.0); what level_isolation: reset relies on."""

    # `reset_running_requests` and `reset_external` exist (vLLM >= 0.14.1; vllm/entrypoints/openai/api_server.py
    # @v0.11.2 takes no parameters)
    query_params: bool = True
    # connectors whose reset_cache() empties their tier when reset_external=true: OffloadingConnector from vLLM
    # 0.23.0 (offloading_connector.py, kv_offload/cpu/manager.py); before, and for LMCacheConnectorV1
    # (lmcache_connector.py @v0.19.1, @v0.23.0), the base class's no-op
    connectors: tuple[str, ...] = ()


class FsTierContract(_Strict):
    """The filesystem tier of vLLM's OffloadingConnector this release's model-server image can start, as vLLM's
    OffloadingSpecFactory loads it (vllm/v1/kv_offload/factory.py): `none` (the image ships neither llm-d's backend
    nor an upstream tier: filesystem configurations are refused), `llmd_fs_backend` (llm-d-kv-cache's
    SharedStorageOffloadingSpec, out of tree: spec_module_path llmd_fs_backend.spec; keys shared_storage_path,
    block_size, threads_per_gpu) or `TieringOffloadingSpec` (vLLM's own multi-tier spec from vLLM 0.23.0: a CPU
    primary tier, cpu_bytes_to_use required, with `secondary_tiers: [{type: fs, root_dir, n_read_threads,
    n_write_threads}]`; vllm/v1/kv_offload/tiering/spec.py and tiering/fs/manager.py @v0.23.0)."""

    kind: Literal["none", "llmd_fs_backend", "TieringOffloadingSpec"] = "none"
    # upstream tier only: the secondary tier's `type` as SecondaryTierFactory registers it
    tier_type: str | None = None
    # upstream tier only: its I/O thread defaults (FileSystemTierManager.__init__ n_read_threads / n_write_threads)
    default_read_threads: int | None = None
    default_write_threads: int | None = None

    def rendered(self, own_image: bool) -> Literal["none", "llmd_fs_backend", "TieringOffloadingSpec"]:
        """The tier a configuration gets: the release's; where the release's image has none, a configuration that
        brings its own model_server.image gets llm-d's backend (as before vLLM carried a tier of its own)."""
        return "llmd_fs_backend" if self.kind == "none" and own_image else self.kind

    @model_validator(mode="after")
    def _keys_go_with_the_kind(self) -> FsTierContract:
        upstream = self.kind == "TieringOffloadingSpec"
        if upstream != (self.tier_type is not None):
            raise ValueError("tier_type is given exactly for kind TieringOffloadingSpec")
        return self


class OffloadPromptOnlyContract(_Strict):
    """`kv_connector_extra_config.offload_prompt_only`, read by vLLM's OffloadingSpec base class for every spec of
    the OffloadingConnector (vllm/v1/kv_offload/base.py @v0.23.0: `extra_config.get("offload_prompt_only", True)`):
    only prompt blocks are offloaded, never the blocks decode generates. Absent before vLLM 0.23 (base.py, spec.py
    @v0.19.1): every computed block is offloaded there."""

    supported: bool = False
    # vLLM's default where the key exists; None where it does not (the policy is then "offload every block")
    default: bool | None = None

    @model_validator(mode="after")
    def _default_goes_with_support(self) -> OffloadPromptOnlyContract:
        if self.supported != (self.default is not None):
            raise ValueError("default is given exactly when the key is supported")
        return self

    @property
    def policy(self) -> str:
        """What the OffloadingConnector stores when a configuration does not set the key."""
        return "prompt blocks only" if self.default else "every computed block (prompt and decode)"


class Contract(_Strict):
    epp: EppContract = EppContract()
    prefix_cache_reset: PrefixCacheResetContract = PrefixCacheResetContract()
    # EndpointPickerConfig's apiVersion (`llm-d.ai/v1alpha1` from router v0.9; the old group then only warns)
    epp_config_api_version: str = "inference.networking.x-k8s.io/v1alpha1"
    precise_scorer: PreciseScorerContract = PreciseScorerContract()
    # the ZMQ topic vLLM publishes KV events on; {port} is the model server's port, {model} the model id.
    # Scheduler < v0.7 keys pods by IP, >= v0.7 by `address:port`.
    kv_event_topic: str = "kv@$(POD_IP)@{model}"
    # OffloadingConnector size: `num_cpu_blocks` (vLLM 0.11-0.13, per TP worker) or `cpu_bytes_to_use`
    # (vLLM >= 0.14; num_cpu_blocks then fails at start-up)
    offload_size_key: Literal["num_cpu_blocks", "cpu_bytes_to_use"] = "num_cpu_blocks"
    # cpu_bytes_to_use counts the whole engine (all TP workers) or one worker
    offload_bytes_scope: Literal["per_worker", "total"] = "total"
    # the CPU tier is allocated in /dev/shm (shared between workers) rather than private pinned memory
    offload_buffer_in_shm: bool = False
    # Envoy's ext_proc processing mode, as upstream's standalone config sets it (every catalog release: LLMD
    # guides/inference-scheduling/standalone-inference-scheduling/values.yaml @v0.4.0, GAIE config/charts/standalone
    # @v1.4.0/v1.5.0, ROUTER config/charts/llm-d-router-standalone/values.yaml @v0.9.0/v0.10.0)
    envoy_processing_mode: dict[str, str] = Field(default_factory=lambda: {
        "request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED",
        "response_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"})
    # what the simulator needs to tokenize a real model id: nothing (sim < v0.8), the UDS tokenizer sidecar on
    # /tmp/tokenizer (sim v0.8.x; it exits without one) or a `vllm launch render` sidecar on :8082 (sim v0.9)
    sim_tokenizer: Literal["none", "uds", "render"] = "none"
    # extra environment of the model server this release's images need
    model_server_env: dict[str, str] = {}
    # the model-server image has the lmcache package (LMCacheConnectorV1); without it those configurations need
    # their own model_server.image
    lmcache_in_image: bool = False
    # the filesystem tier the model-server image can start (FsTierContract); kind none refuses filesystem
    # configurations unless they name their own model_server.image
    fs_tier: FsTierContract = FsTierContract()
    # the OffloadingConnector's offload_prompt_only key at this release's vLLM (OffloadPromptOnlyContract)
    offload_prompt_only: OffloadPromptOnlyContract = OffloadPromptOnlyContract()
    # the user the catalog's model-server image runs as (its Dockerfile's USER; 0 = root); None where not read.
    # A pod that writes a volume (filesystem tier, model cache) runs the container as root, as upstream's guide does
    model_server_image_user: int | None = None
    # pieces of the release that could not be read at its tag, piece -> why; the configurations that depend on a
    # piece are refused naming it (manifests.unverified_refusal)
    unverified: dict[UnverifiedPiece, str] = {}
    # pieces the release names but that cannot be read at the pin, run from another release that can be read:
    # piece -> what runs instead and why (shown with the stack; nothing is refused for it)
    stand_ins: dict[str, str] = {}
    # what the EPP's service account must read (besides pods and the InferencePool)
    epp_rbac: tuple[RbacRule, ...] = ()
    # CRDs (`<plural>.<group>`) that must exist in the cluster before the EPP starts
    required_crds: tuple[str, ...] = ("inferencepools.inference.networking.k8s.io",)


class VersionEntry(_Strict):
    released: str | None = None
    # "" (left out) only where contract.unverified has model_server (the release's vLLM could not be read)
    vllm_version: str = ""
    components: dict[str, str] = {}
    images: dict[str, str] = {}
    contract: Contract = Contract()

    def model_post_init(self, __context: object) -> None:
        unverified = self.contract.unverified
        if not self.vllm_version and "model_server" not in unverified:
            raise ValueError("vllm_version: missing (only an entry whose contract.unverified has model_server "
                             "may leave it out)")
        needed = REQUIRED_IMAGES + {"embedded": (), "uds": (UDS_TOKENIZER_IMAGE,),
                                    "render": ("epp_render",)}[self.contract.precise_scorer.tokenizer]
        needed += {"none": (), "uds": ("sim_tokenizer",), "render": ("sim_render",)}[self.contract.sim_tokenizer]
        excused = {image for piece in unverified for image in PIECE_IMAGES.get(piece, ())}
        if "router" in unverified:
            excused |= {UDS_TOKENIZER_IMAGE, "epp_render"}
        if "inference_sim" in unverified:
            excused |= {"sim_tokenizer", "sim_render"}
        missing = [k for k in needed if k not in self.images and k not in excused]
        if missing:
            raise ValueError(f"images: missing {missing}; every entry names {list(REQUIRED_IMAGES)} (except the "
                             "images of the pieces its contract.unverified names)")

    # Short names the rest of the code reads.
    @property
    def required_crds(self) -> tuple[str, ...]:
        return self.contract.required_crds


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, VersionEntry]:
    try:
        raw = yaml_text.load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise CampaignError(f"version catalog {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("versions"), dict):
        raise CampaignError(f"version catalog {path}: expected a mapping `versions: {{<llm-d tag>: {{...}}}}`")
    out: dict[str, VersionEntry] = {}
    for key, value in raw["versions"].items():
        try:
            out[str(key)] = VersionEntry.model_validate(value)
        except ValidationError as exc:
            fields = "; ".join(f"field `{'.'.join(str(p) for p in e['loc']) or '(entry)'}`: {e['msg']}" for e in exc.errors())
            raise CampaignError(f"version catalog {path}: entry {key}: {fields}") from None
    return out


def load_catalog(path: Path | None = None) -> dict[str, VersionEntry]:
    path = path or paths.catalog_file()
    if not path.exists():
        raise CampaignError(f"version catalog {path}: not found")
    return _load(str(path), path.stat().st_mtime)


def known_versions() -> list[str]:
    return list(load_catalog())


def entry(version: str) -> VersionEntry:
    catalog = load_catalog()
    if version not in catalog:
        raise CampaignError(f"llm-d version {version!r} is not in the version catalog; known: {list(catalog)}")
    return catalog[version]


class PolicyChange(_Strict):
    """A change of upstream behaviour between two catalog releases that is not performance: a cross-version
    difference of the configurations it applies to is attributed to it (report: cross-version section)."""

    field: str                      # the contract field it is derived from
    before_version: str
    after_version: str
    before: str
    after: str
    # which configurations it changes: "offload" (OffloadingConnector configurations that leave the field to
    # vLLM's default), "filesystem" (configurations with a filesystem tier)
    applies_to: Literal["offload", "filesystem"]

    @property
    def text(self) -> str:
        return (f"policy changed between {self.before_version} and {self.after_version}: "
                f"{self.field} {self.before} -> {self.after}")


def policy_changes(before: str, after: str) -> list[PolicyChange]:
    """The policy changes the catalog records between two releases (in either order), derived from the contract
    fields: the OffloadingConnector's offload_prompt_only default, and the filesystem tier's implementation."""
    catalog = load_catalog()
    for version in (before, after):
        if version not in catalog:
            raise CampaignError(f"llm-d version {version!r} is not in the version catalog; known: {list(catalog)}")
    a, b = catalog[before].contract, catalog[after].contract
    out = []
    if a.offload_prompt_only.default != b.offload_prompt_only.default:
        out.append(PolicyChange(field="offload_prompt_only", before_version=before, after_version=after,
                                before=_prompt_only(catalog[before]), after=_prompt_only(catalog[after]),
                                applies_to="offload"))
    if a.fs_tier.kind != b.fs_tier.kind:
        out.append(PolicyChange(field="fs_tier", before_version=before, after_version=after, before=a.fs_tier.kind,
                                after=b.fs_tier.kind, applies_to="filesystem"))
    return out


def _prompt_only(entry: VersionEntry) -> str:
    contract = entry.contract.offload_prompt_only
    state = f"default {str(contract.default).lower()}" if contract.supported else "absent"
    return f"{state} (vLLM {entry.vllm_version or 'unverified'}: offloads {contract.policy})"
