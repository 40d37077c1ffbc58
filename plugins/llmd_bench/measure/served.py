"""Served-configuration proof: what each running server says it serves, against what the cell's configuration demands.

A cell's numbers count only when the servers under test showed they served its configuration. After deploy (and
after every redeploy, restart and reset) the runtime hands us, per model-server pod, what vLLM itself printed and
serves: its start-up log (the non-default engine args, the KV connector it created) and `/metrics`
(`vllm:cache_config_info`). This module derives what the configuration demands, reads what was served, and compares
key by key: `proven` (the server showed the wanted value), `differs` (it showed another: the deploy fails with a
table), `not provable` (nothing the server shows at this version can tell; the reason is kept, never silently passed).

Pure: no I/O. The runtimes collect `ServedSource`s; the deploy step stores the `ServedProof` (cell.json `served`,
cells.served) and the report shows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd_bench.measure import vllm_formats

if TYPE_CHECKING:  # annotations only: cell_folder imports the record shapes below, below the campaign model
    from llmd_bench.model.campaign import Campaign, Cell
    from llmd_bench.model.catalog import VersionEntry
    from llmd_bench.model.configurations import Configuration
    from llmd_bench.model.params import RunParams

Status = Literal["proven", "differs", "not provable"]
Role = Literal["model-server", "epp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Wanted(_Strict):
    """One value the cell's configuration demands of a server."""

    key: str
    value: str
    because: str = Field(description="what in the configuration demands it")


class ServedSource(_Strict):
    """What one server said, as the runtime collected it: its log since start and its /metrics text."""

    pod: str
    role: Role = "model-server"
    log: str | None = None
    metrics: str | None = None
    # why a part could not be collected (e.g. "metrics: pod IP unreachable from the step"), kept in the proof
    unavailable: dict[str, str] = {}


class KeyProof(_Strict):
    key: str
    wanted: str
    served: str | None
    status: Status
    source: str | None = Field(None, description="where the served value was read (log line, metric)")
    why: str | None = Field(None, description="why a key is not provable")


class PodProof(_Strict):
    pod: str
    role: Role
    keys: tuple[KeyProof, ...]


class ServedProof(_Strict):
    """cell.json `served` and cells.served: the proof of every check of the cell (deploy, then each redeploy/reset)."""

    status: Status
    when: str = Field(description="deploy | redeploy (trial N) | restart (level L) | reset (level L)")
    pods: tuple[PodProof, ...]
    vllm_version: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def differences(self) -> list[tuple[str, KeyProof]]:
        return [(p.pod, k) for p in self.pods for k in p.keys if k.status == "differs"]

    @property
    def not_provable(self) -> list[tuple[str, KeyProof]]:
        return [(p.pod, k) for p in self.pods for k in p.keys if k.status == "not provable"]

    def summary(self) -> str:
        """One line for logs and the report: 'proven: 7 keys on 2 pods', 'differs: ...', 'not provable: ...'."""
        keys = sum(len(p.keys) for p in self.pods)
        proven = sum(k.status == "proven" for p in self.pods for k in p.keys)
        text = f"{self.status}: {proven} of {keys} keys proven on {len(self.pods)} pod(s)"
        if self.differences:
            text += "; differs: " + ", ".join(sorted({k.key for _, k in self.differences}))
        if self.not_provable:
            text += "; not provable: " + ", ".join(sorted({k.key for _, k in self.not_provable}))
        return text


class ServedHistory(_Strict):
    """Every check of a cell, in order; the cell's status is the worst of them."""

    status: Status
    checks: tuple[ServedProof, ...]


# ---------------------------------------------------------------------------------------------------------------------
# What the configuration demands


def _num(value: float) -> str:
    return f"{float(value):g}"


def wanted_model_server(campaign: Campaign, params: RunParams, cell: Cell, entry: VersionEntry,
                        offload_setting: dict[str, Any] | None) -> list[Wanted]:
    """What every vLLM pod of the cell must serve, from the configuration (not from the rendered command line).
    `offload_setting` is the CPU tier's kv_connector_extra_config as sized for this cell (sizing.MemoryPlan)."""
    config: Configuration = campaign.cell_configuration(cell)
    serving = campaign.serving
    block = config.model_server.block_size or serving.block_size
    gmu = config.model_server.gpu_memory_utilization or serving.gpu_memory_utilization
    wanted = [
        Wanted(key="block_size", value=str(block), because="model_server.block_size or serving.block_size"),
        Wanted(key="enable_prefix_caching", value="True", because="every configuration runs vLLM's prefix cache"),
        Wanted(key="gpu_memory_utilization", value=_num(gmu),
               because="model_server.gpu_memory_utilization (a memory regime) or serving.gpu_memory_utilization"),
        Wanted(key="tensor_parallel_size", value=str(params.tensor_parallel_size), because="tensor_parallel_size"),
        Wanted(key="max_num_seqs", value=str(serving.max_num_seqs), because="serving.max_num_seqs"),
    ]
    offload = config.model_server.kv_offload
    if offload is None:
        wanted.append(Wanted(key="kv_connector", value="none", because="no model_server.kv_offload"))
    elif offload.connector == "LMCacheConnectorV1":
        wanted.append(Wanted(key="kv_connector", value="LMCacheConnectorV1", because="model_server.kv_offload.connector"))
    else:
        tiers = (["cpu"] if offload.cpu else []) + (["filesystem"] if offload.filesystem is not None else [])
        fs_kind = entry.contract.fs_tier.rendered(config.model_server.image is not None)
        # two tiers: vLLM's MultiConnector over two OffloadingConnectors (llm-d's backend), or one OffloadingConnector
        # with vLLM's own TieringOffloadingSpec (catalog contract fs_tier, vllm/v1/kv_offload/tiering/spec.py @v0.23.0)
        tiering = offload.filesystem is not None and fs_kind == "TieringOffloadingSpec"
        connector = "MultiConnector" if len(tiers) > 1 and not tiering else "OffloadingConnector"
        wanted.append(Wanted(key="kv_connector", value=connector,
                             because=f"model_server.kv_offload: OffloadingConnector, tiers {'+'.join(tiers)}"))
        if offload.filesystem is not None:
            spec = "TieringOffloadingSpec" if tiering else "SharedStorageOffloadingSpec"
            wanted.append(Wanted(key="kv_offload.spec_name", value=spec,
                                 because=f"model_server.kv_offload.filesystem on this release (fs_tier {fs_kind})"))
        if offload.cpu and offload_setting:
            size_key, size = next(iter(offload_setting.items()))
            wanted.append(Wanted(key=f"kv_offload.{size_key}", value=str(size),
                                 because="model_server.kv_offload.size (or serving.offload) sized for this vLLM"))
        policy = entry.contract.offload_prompt_only
        if policy.supported:
            value = offload.offload_prompt_only if offload.offload_prompt_only is not None else policy.default
            wanted.append(Wanted(key="kv_offload.offload_prompt_only", value=str(value),
                                 because="model_server.kv_offload.offload_prompt_only, else the release's default "
                                 "(include/versions.yaml offload_prompt_only)"))
    if config.kv_events:
        wanted.append(Wanted(key="prefix_caching_hash_algo", value="sha256_cbor",
                             because="router.prefix_scorer: precise (the indexer hashes blocks as vLLM does)"))
        wanted.append(Wanted(key="kv_events.enable_kv_cache_events", value="True", because="router.prefix_scorer: precise"))
        wanted.append(Wanted(key="kv_events.publisher", value="zmq", because="router.prefix_scorer: precise"))
    return wanted


# ---------------------------------------------------------------------------------------------------------------------
# What a server shows


def served_values(source: ServedSource, version: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(key -> (served value, where it was read)) and (key -> why it cannot be read) from one model server's log and
    metrics, in the format of vLLM `version`."""
    values: dict[str, tuple[str, str]] = {}
    missing: dict[str, str] = dict(source.unavailable)
    if source.log is not None:
        args = vllm_formats.non_default_args(source.log)
        if args is None:
            missing["log"] = "no 'non-default args' line in the server's start-up log"
        else:
            where = "start-up log: non-default args"
            for key, value in args.items():
                values.setdefault(f"arg.{key}", (_canonical(value), where))
            for key, value in vllm_formats.flatten_engine_args(args, version).items():
                values.setdefault(key, (value, where))
            defaults = vllm_formats.engine_arg_defaults(version)
            for key, default in defaults.items():
                if key not in values:
                    values[key] = (default, f"start-up log: not among the non-default args, so vLLM {version}'s default")
        connector = vllm_formats.created_connector(source.log)
        if connector is not None:
            values.setdefault("kv_connector.created", (connector, "start-up log: connector created"))
    if source.metrics is not None:
        info = vllm_formats.cache_config_info(source.metrics)
        if info is None:
            missing.setdefault("metrics", "no vllm:cache_config_info in /metrics")
        else:
            for key, value in info.items():
                values[key] = (value, "/metrics vllm:cache_config_info")  # the engine's own state wins over args
    return values, missing


def _canonical(value: Any) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def prove_pod(source: ServedSource, wanted: Iterable[Wanted], version: str) -> PodProof:
    values, missing = served_values(source, version)
    keys = []
    for w in wanted:
        got = values.get(w.key)
        if got is None:
            why = _why_not(w.key, missing, version)
            keys.append(KeyProof(key=w.key, wanted=w.value, served=None, status="not provable", why=why))
            continue
        served, where = got
        same = _same(w.value, served)
        keys.append(KeyProof(key=w.key, wanted=w.value, served=served, status="proven" if same else "differs",
                             source=where))
    return PodProof(pod=source.pod, role=source.role, keys=tuple(keys))


def _same(wanted: str, served: str) -> bool:
    if wanted == served:
        return True
    try:
        return float(wanted) == float(served)
    except ValueError:
        return wanted.lower() == served.lower() and wanted.lower() in ("true", "false", "none")


def _why_not(key: str, missing: dict[str, str], version: str) -> str:
    parts = [f"{k}: {v}" for k, v in missing.items()]
    if not parts:
        parts = [f"vLLM {version} shows {key} neither in its start-up log nor in /metrics"]
    return "; ".join(parts)


def prove(sources: list[ServedSource], wanted: list[Wanted], version: str, when: str,
          epp_wanted: list[Wanted] | None = None, notes: Iterable[str] = ()) -> ServedProof:
    """The proof of one check: every model-server pod against `wanted` (and the EPP pods against `epp_wanted`)."""
    pods = []
    for s in sources:
        if s.role == "model-server":
            pods.append(prove_pod(s, wanted, version))
        elif epp_wanted:
            pods.append(prove_epp(s, epp_wanted))
    all_keys = [k for p in pods for k in p.keys]
    status: Status = ("differs" if any(k.status == "differs" for k in all_keys)
                      else "not provable" if not all_keys or any(k.status == "not provable" for k in all_keys)
                      else "proven")
    notes = list(notes)
    if not any(s.role == "model-server" for s in sources):
        notes.append("no model-server pod answered: nothing could be proven")
    return ServedProof(status=status, when=when, pods=tuple(pods), vllm_version=version, notes=tuple(notes))


def wanted_epp(rendered: dict[str, Any]) -> list[Wanted]:
    """What the EPP must have loaded: the plugin types, the profile's weights, and for the precise scorer the block
    size and index of the EndpointPickerConfig the cell gave it (rendered, or patched into an installed stack)."""
    because = "the EndpointPickerConfig the cell gave the EPP (router.prefix_scorer, router.index, router.weights)"
    return [Wanted(key=k, value=v, because=because) for k, v in vllm_formats.epp_config_keys(rendered).items()]


def prove_epp(source: ServedSource, wanted: list[Wanted]) -> PodProof:
    """The EPP's plugin configuration as it logged it at start (router log formats: vllm_formats.epp_loaded_config)."""
    loaded = vllm_formats.epp_loaded_config(source.log) if source.log is not None else None
    keys = []
    for w in wanted:
        if loaded is None:
            why = source.unavailable.get("log") or "the EPP's log does not show the plugin configuration it loaded"
            keys.append(KeyProof(key=w.key, wanted=w.value, served=None, status="not provable", why=why))
            continue
        served = loaded.get(w.key)
        if served is None:
            keys.append(KeyProof(key=w.key, wanted=w.value, served=None, status="not provable",
                                 why="the EPP's logged configuration does not carry this key"))
        else:
            # the EPP may add system defaults (pickers, handlers): every plugin we gave it must be among its own
            same = (set(w.value.split(",")) <= set(served.split(",")) if w.key == "epp.plugins"
                    else _same(w.value, served))
            keys.append(KeyProof(key=w.key, wanted=w.value, served=served, status="proven" if same else "differs",
                                 source="EPP log: the configuration it loaded"))
    return PodProof(pod=source.pod, role="epp", keys=tuple(keys))


def worst(statuses: Iterable[Status]) -> Status:
    found = set(statuses)
    return "differs" if "differs" in found else "not provable" if "not provable" in found or not found else "proven"


def history(previous: dict[str, Any] | None, proof: ServedProof) -> ServedHistory:
    """The cell's checks so far plus this one."""
    checks: tuple[ServedProof, ...] = ()
    if previous:
        checks = ServedHistory.model_validate(previous).checks
    checks = (*checks, proof)
    return ServedHistory(status=worst(c.status for c in checks), checks=checks)


def diff_table(proof: ServedProof) -> str:
    """The table a failed deploy prints: pod, key, wanted, served."""
    rows = [("pod", "key", "wanted", "served", "read from")]
    rows += [(pod, k.key, k.wanted, k.served or "-", k.source or "-") for pod, k in proof.differences]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def not_provable_lines(proof: ServedProof) -> list[str]:
    seen: dict[str, str] = {}
    for _, k in proof.not_provable:
        seen.setdefault(k.key, k.why or "")
    return [f"not provable: {key}: {why}" for key, why in seen.items()]


__all__ = ["KeyProof", "PodProof", "ServedHistory", "ServedProof", "ServedSource", "Wanted", "diff_table", "history",
           "not_provable_lines", "prove", "wanted_epp", "wanted_model_server", "worst"]
