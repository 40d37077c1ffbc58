"""What vLLM (and the EPP) print about the configuration they run, read back; and, for the local runtime's simulated
servers, the same lines written. One place for these formats, each cited at the upstream tag it was read from.

Read: `non_default_args` (the start-up log), `created_connector`, `cache_config_info` (/metrics), `epp_loaded_config`.
Written (simulation): `startup_log`, `cache_config_metric`.
"""

from __future__ import annotations

import ast
import json
import re
import time
from typing import Any

# vllm/entrypoints/utils.py log_non_default_args (v0.10 on): logger.info("non-default args: %s", non_default_args), a
# dict of argparse dest -> value whose config values print as their dataclass repr
NON_DEFAULT_ARGS = re.compile(r"non-default args: (\{.*\})\s*$")
# vllm/distributed/kv_transfer/kv_connector/factory.py: "Creating v1 connector with name: %s and engine_id: %s"
CONNECTOR_CREATED = re.compile(r"Creating v1 connector with name: (\w+)")
# vllm/v1/metrics/loggers.py PrometheusStatLogger.log_metrics_info("cache_config", ...): a gauge set to 1 whose
# labels are the CacheConfig's fields as strings
CACHE_CONFIG_INFO = "vllm:cache_config_info"
_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class _Unreadable(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """A Python literal, where a call `Name(k=v, ...)` (a dataclass repr) reads as {"__class__": Name, k: v, ...}."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Dict):
        return {_literal(k) if k is not None else "**": _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return -value
    if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        out: dict[str, Any] = {"__class__": name}
        out.update({kw.arg or "**": _literal(kw.value) for kw in node.keywords})
        if node.args:
            out["__args__"] = [_literal(a) for a in node.args]
        return out
    if isinstance(node, ast.Name):  # an enum member or constant printed bare
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    raise _Unreadable(ast.dump(node)[:80])


def _enum_reprs(text: str) -> str:
    """`<CacheDType.auto: 'auto'>` (an enum repr) -> `'auto'`, so the line parses as Python."""
    return re.sub(r"<[\w.]+: ('[^']*'|\"[^\"]*\"|[-\w.]+)>", r"\1", text)


# vllm/utils/system_utils.py _add_prefix: "(APIServer pid=1) " wrapped in colour codes (always at v0.11.2; unless
# NO_COLOR at v0.14.1/v0.15.1; only on a terminal from v0.17.1)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def non_default_args(log: str) -> dict[str, Any] | None:
    """The last 'non-default args' dict a vLLM log printed (a restarted container prints it again), or None.
    vllm/entrypoints/utils.py @v0.11.2..v0.19.1, entrypoints/serve/utils/api_utils.py @v0.23.0..v0.30.0:
    logger.info("non-default args: %s", non_default_args), argparse dests whose value differs from a fresh parse's."""
    found = None
    for line in _ANSI.sub("", log).splitlines():
        m = NON_DEFAULT_ARGS.search(line)
        if m:
            try:
                value = _literal(ast.parse(_enum_reprs(m.group(1)), mode="eval").body)
            except (SyntaxError, _Unreadable, ValueError):
                continue
            if isinstance(value, dict):
                found = value
    return found


def created_connector(log: str) -> str | None:
    names = CONNECTOR_CREATED.findall(log)
    return names[0] if names else None


def cache_config_info(metrics: str) -> dict[str, str] | None:
    """The labels of vllm:cache_config_info (the first engine's), or None when the metric is not served."""
    for line in metrics.splitlines():
        if line.startswith(CACHE_CONFIG_INFO + "{"):
            labels = dict(_LABELS.findall(line[len(CACHE_CONFIG_INFO):line.rindex("}") + 1]))
            labels.pop("engine", None)
            labels.pop("model_name", None)
            return {k: v.replace('\\"', '"') for k, v in labels.items()}
    return None


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None
    return None


# the engine args the proof compares, by their dest names in the non-default args
DIRECT_ARGS = ("block_size", "enable_prefix_caching", "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs",
               "prefix_caching_hash_algo")


def flatten_engine_args(args: dict[str, Any], version: str = "") -> dict[str, str]:
    """The proof's keys from the non-default args: the direct ones, the KV connector and its CPU tier's size (and
    offload_prompt_only, given or the release's default), the KV-events publisher."""
    out = {k: _text(args[k]) for k in DIRECT_ARGS if k in args and args[k] is not None}
    transfer = _as_dict(args.get("kv_transfer_config"))
    if "kv_transfer_config" in args:
        out["kv_connector"] = "none" if transfer is None else str(transfer.get("kv_connector"))
    if transfer is not None:
        extra = _as_dict(transfer.get("kv_connector_extra_config")) or {}
        tiers = [transfer] if transfer.get("kv_connector") != "MultiConnector" else [
            t for t in (_as_dict(c) for c in extra.get("connectors") or []) if t is not None]
        for tier in tiers:
            tier_extra = _as_dict(tier.get("kv_connector_extra_config")) or {}
            # the CPU tier's size: of a plain OffloadingConnector, or the CPU primary of vLLM's TieringOffloadingSpec
            # (vllm/v1/kv_offload/tiering/spec.py @v0.23.0); llm-d's filesystem backend sizes no CPU tier
            if tier.get("kv_connector") == "OffloadingConnector" and "spec_module_path" not in tier_extra:
                for key in ("cpu_bytes_to_use", "num_cpu_blocks"):
                    if key in tier_extra:
                        out[f"kv_offload.{key}"] = _text(tier_extra[key])
            for key in ("spec_name", "offload_prompt_only"):
                if key in tier_extra:
                    out.setdefault(f"kv_offload.{key}", _text(tier_extra[key]))
            default = offload_prompt_only_default(version)
            if tier.get("kv_connector") == "OffloadingConnector" and default is not None:
                out.setdefault("kv_offload.offload_prompt_only", _text(default))
    events = _as_dict(args.get("kv_events_config"))
    if events is not None:
        for key in ("enable_kv_cache_events", "publisher", "endpoint", "topic"):
            if key in events:
                out[f"kv_events.{key}"] = _text(events[key])
    return out


def _vllm(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return (0,)


def cli_defaults(version: str) -> dict[str, Any]:
    """`vllm serve`'s parser defaults for the flags the renderer sets (vllm/engine/arg_utils.py EngineArgs and
    vllm/entrypoints/openai/cli_args.py, read at v0.11.2, v0.14.1, v0.15.1, v0.17.1, v0.19.1, v0.23.0, v0.26.0,
    v0.30.0): what the non-default args leave out."""
    return {"port": 8000, "tensor_parallel_size": 1, "block_size": None, "enable_prefix_caching": None,
            # 0.9 up to v0.19.1, 0.92 from v0.23.0 (vllm/config/cache.py)
            "gpu_memory_utilization": 0.92 if _vllm(version) >= (0, 23) else 0.9,
            "prefix_caching_hash_algo": "sha256", "kv_transfer_config": None, "kv_events_config": None}


def offload_prompt_only_default(version: str) -> bool | None:
    """vllm/v1/kv_offload/base.py @v0.23.0, v0.26.0, v0.30.0: extra_config.get("offload_prompt_only", True); the key
    does not exist before v0.23.0 (None)."""
    return True if _vllm(version) >= (0, 23) else None


def engine_arg_defaults(version: str) -> dict[str, str]:
    """What a key's absence from the non-default args means: vLLM's default for it (cli_defaults), for the keys
    whose default is a value (block size and prefix caching default to None, resolved later: /metrics tells)."""
    d = cli_defaults(version)
    return {"tensor_parallel_size": str(d["tensor_parallel_size"]), "kv_connector": "none",
            "gpu_memory_utilization": _text(d["gpu_memory_utilization"]),
            "prefix_caching_hash_algo": str(d["prefix_caching_hash_algo"])}


# The EPP logs the plugin configuration it loaded, at Info: GAIE pkg/epp/config/loader/configloader.go @v1.2.0
# "Loaded configuration" / "Configuration with defaults set"; @v1.3.0..fd30cb97714a "Loaded raw configuration" /
# "Effective configuration loaded"; @v1.4.0, v1.5.0 and llm-d-router @v0.9.0, v0.10.0 "Loaded raw configuration" /
# "Instantiated all plugins and applied system defaults. Effective raw configuration" (config: rawConfig.String()),
# and the router's cmd/epp/runner/runner.go "Raw config after phase one" (config: a JSON object). What it read from
# the file we gave it is the proof; the effective configuration (system defaults added) only when nothing else is.
EPP_CONFIG_MESSAGES = ("Raw config after phase one", "Loaded raw configuration", "Loaded configuration",
                       "Effective configuration loaded", "Configuration with defaults set",
                       "Instantiated all plugins and applied system defaults. Effective raw configuration")
# EndpointPickerConfig String() (apix/config/v1alpha1/endpointpickerconfig_types.go): a plugin is "{name/type, ...}"
# @v1.2.0 and "{Name: x, Type: y, Parameters: {...}}" from v1.4.0; a profile's scorer "{PluginRef: x, Weight: 2.00}"
_PLUGIN_TYPE = re.compile(r"Type: ([\w-]+)|\{([\w-]+)/([\w-]+)")
_WEIGHT = re.compile(r"PluginRef: ([\w-]+)(?:, Weight: ([\d.]+))?")
_BLOCK = re.compile(r'"blockSize(?:Tokens)?"\s*:\s*(\d+)')
_INDEX = re.compile(r'"(redisConfig|valkeyConfig)"')


def _epp_config_field(line: str) -> tuple[str, Any] | None:
    """(message, config) of one EPP log line that logs its configuration: zap JSON, or the console encoder's
    `ts\tINFO\tcaller\tmessage\t{"config": ...}`."""
    text = line.strip()
    start = text.find("{")
    if start < 0:
        return None
    if start == 0:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        message = doc.get("msg") if isinstance(doc, dict) else None
        return (message, doc.get("config")) if message in EPP_CONFIG_MESSAGES and "config" in doc else None
    message = next((m for m in EPP_CONFIG_MESSAGES if m in text[:start]), None)
    if message is None:
        return None
    try:
        fields = json.loads(text[start:])
    except ValueError:
        return None
    return (message, fields.get("config")) if isinstance(fields, dict) and "config" in fields else None


def epp_loaded_config(log: str) -> dict[str, str] | None:
    """The EPP's plugin configuration as it logged it at start (as read from its file, else the effective one), reduced to the
    proof's keys: epp.plugins (types), epp.weights (the profile's scorer weights), epp.block_size and epp.index
    (the precise scorer's token processor and KV-block index). None when no such line was logged."""
    found: dict[str, tuple[int, Any]] = {}
    for line in log.splitlines():
        got = _epp_config_field(line)
        if got is not None:
            message, config = got
            found[message] = (EPP_CONFIG_MESSAGES.index(message), config)
    if not found:
        return None
    _, config = min(found.values(), key=lambda v: v[0])
    return _epp_keys(config)


def epp_config_keys(config: Any) -> dict[str, str]:
    """The proof's keys of an EndpointPickerConfig: as we render it (a dict) or as the EPP logs it."""
    return _epp_keys(config)


def _epp_keys(config: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(config, dict):  # the router's "Raw config after phase one": the EndpointPickerConfig as JSON
        plugins = [p.get("type") for p in config.get("plugins") or [] if isinstance(p, dict)]
        refs = [(r.get("pluginRef"), r.get("weight")) for prof in config.get("schedulingProfiles") or []
                for r in (prof.get("plugins") or []) if isinstance(r, dict)]
        text = json.dumps(config)
    else:
        text = str(config)
        plugins = [m.group(1) or m.group(3) for m in _PLUGIN_TYPE.finditer(text)]
        refs = [(m.group(1), m.group(2)) for m in _WEIGHT.finditer(text)]
    out["epp.plugins"] = ",".join(sorted({p for p in plugins if p}))
    out["epp.weights"] = ",".join(sorted(f"{ref}={_weight(w)}" for ref, w in refs if ref and w is not None))
    block = _BLOCK.search(text)
    if block:
        out["epp.block_size"] = block.group(1)
    index = _INDEX.search(text)
    if index:
        out["epp.index"] = index.group(1)
    return out


def _weight(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:g}"


# ---------------------------------------------------------------------------------------------------------------------
# The local runtime's simulated vLLM: the same lines, from the command line it was given


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def parse_vllm_argv(argv: list[str]) -> dict[str, Any]:
    """`vllm serve MODEL --flag value --switch ...` as vLLM's parser leaves it: dest -> value (JSON configs decoded)."""
    args: dict[str, Any] = {}
    i = 0
    if argv and not argv[0].startswith("-"):
        args["model"] = argv[0]  # `vllm serve MODEL` lists it as 'model' (vllm/entrypoints/utils.py @v0.11.2)
        i = 1
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            i += 1
            continue
        name, _, inline = token.partition("=")
        if inline or "=" in token:
            value: Any = inline
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 2
        else:
            value = True
            i += 1
        dest = _dest(name)
        if dest.startswith("no_") and value is True:
            dest, value = dest[3:], False
        if isinstance(value, str):
            if dest.endswith("_config"):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            else:
                value = _number(value)
        args[dest] = value
    return args


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _config_repr(name: str, value: dict[str, Any]) -> str:
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + ")"


def startup_log(args: dict[str, Any], version: str, pid: int = 1) -> list[str]:
    """The start-up lines a vLLM server prints for these engine args: the non-default args (those differing from
    the parser's defaults, as log_non_default_args compares them) and the KV connector it creates."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    defaults = cli_defaults(version)
    shown = {k: v for k, v in args.items() if k not in defaults or defaults[k] != v}
    parts = []
    for key, value in shown.items():
        if key == "kv_transfer_config" and isinstance(value, dict):
            parts.append(f"{key!r}: {_config_repr('KVTransferConfig', {'engine_id': 'llmd-bench-simulated', **value})}")
        elif key == "kv_events_config" and isinstance(value, dict):
            parts.append(f"{key!r}: {_config_repr('KVEventsConfig', value)}")
        else:
            parts.append(f"{key!r}: {value!r}")
    lines = [f"(APIServer pid={pid}) INFO {stamp} [utils.py:253] non-default args: {{{', '.join(parts)}}}"]
    transfer = args.get("kv_transfer_config")
    if isinstance(transfer, dict) and transfer.get("kv_connector"):
        lines.append(f"(EngineCore pid={pid + 1}) INFO {stamp} [factory.py:64] Creating v1 connector with name: "
                     f"{transfer['kv_connector']} and engine_id: llmd-bench-simulated")
    return lines


def cache_config_metric(args: dict[str, Any], model: str, gpu_blocks: int, version: str) -> str:
    """vllm:cache_config_info as the simulated server serves it: the resolved values (block size 16 and prefix caching
    on when not given, as the CUDA platform and CacheConfig resolve them: vllm/platforms/cuda.py @v0.11.2,
    vllm/config/cache.py @v0.14.1 on). `model` is not a label of the real metric."""
    defaults = cli_defaults(version)
    labels = {"block_size": str(args.get("block_size") or 16), "cache_dtype": "auto",
              "enable_prefix_caching": str(args.get("enable_prefix_caching", True)),
              "gpu_memory_utilization": str(args.get("gpu_memory_utilization", defaults["gpu_memory_utilization"])),
              "num_cpu_blocks": "None", "num_gpu_blocks": str(gpu_blocks or None),
              "prefix_caching_hash_algo": str(args.get("prefix_caching_hash_algo", defaults["prefix_caching_hash_algo"])),
              "kv_offloading_size": "None", "kv_offloading_backend": "native"}
    text = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "engine": "0"}.items()))
    return (f"# HELP {CACHE_CONFIG_INFO} Information of the LLMEngine CacheConfig\n# TYPE {CACHE_CONFIG_INFO} gauge\n"
            f"{CACHE_CONFIG_INFO}{{{text}}} 1.0\n")
