"""llm-d's Benchmark Report (schema v0.2): export a stored run as one report per cell x trial x level, and read
such reports back into the results store.

The schema is llm-d/llm-d-benchmark's (`llmdbenchmark/analysis/benchmark_report/schema_v0_2.py`, its components
and units in `schema_v0_2_components.py` and `base.py`), read at commit UPSTREAM_COMMIT; include/schemas/ holds the
JSON Schema every exported file is checked against (its README says how it was made).

What goes where (every value comes from the store; what the store does not have is left out, never made up):
- run: uid (a UUID5 of the cell, trial and level), eid (a UUID5 of campaign and run id: groups one run's reports,
  as llm-d-benchmark derives it from its experiment id), time (the level's window), a description naming the cell.
- scenario.stack: `model-server` (an inference_engine: vLLM, or GuideLLM's mock server on the local runtime; model,
  replicas, tensor parallelism; the accelerator model is not recorded by llmd-bench, so it is "" as llm-d-benchmark
  writes an undetected one), `llm-d` (version, component versions, images, the configuration under test and what
  it sets, from the configuration catalog), the KV store when the cell ran one, and `llmd-bench` (campaign, run
  id, cell, factors, trial, level status: what `import --format benchmark-report` reads back).
- scenario.load: GuideLLM version, concurrency, prompt/output/prefix tokens, prefix count at this level, turns;
  the run's params (seed, duration, method) and GuideLLM's own per-level config under native.config.
- results.request_performance.aggregate: request counts, prompt/output token counts, TTFT (ms), TPOT and ITL
  (ms/token), request latency (s), output/input/total token rates (tokens/s), request rate (queries/s), each with
  the statistics stored (mean, p50, p90, p95, p99, stddev, min, max).
- results.observability: model-server metrics the cell measured (KV-cache usage, prefix-cache hit rate, running
  and waiting requests, preemptions, GPU/CPU utilisation and memory, power) and, as upstream allows ad-hoc keys,
  every stored observation of the level under `llmd_bench_observations`.

Invalid levels are not exported: the v0.2 schema has no field that marks a measurement as invalid, so a report
holding one would read as a good measurement. Each skipped level is printed with its reason. Levels whose numbers
describe the load generator rather than the server (suspect) are exported, with the reason in run.description and
in the llmd-bench component.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from llmd_bench import __version__
from llmd_bench.measure.guidellm_levels import LevelResult as ParsedLevel
from llmd_bench.model import catalog, configurations, paths, yaml_text
from llmd_bench.model.campaign import check_model_id, per_level
from llmd_bench.model.campaign_files import campaign_configurations
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.store.rows import (
    LEVEL_STATS,
    CellInfo,
    CellRow,
    LevelRow,
    ObservationRow,
    RunInfo,
    RunRow,
    StoredCell,
    StoredRunParams,
)

SCHEMA_VERSION = "0.2"
UPSTREAM_REPO = "llm-d/llm-d-benchmark"
UPSTREAM_COMMIT = "8bc9f1ddd873a24f1657d6cca2e0d0fb6947dd36"
FORMAT = "benchmark-report"
LLMD_BENCH = "llmd-bench"  # the stack component label holding the cell's identity
MODEL_SERVER = "model-server"
COMPONENT_SCHEMA = "0.0.1"  # ComponentMetadata/LoadMetadata schema_version default upstream
OBSERVATIONS_KEY = "llmd_bench_observations"
GIB = float(1 << 30)


class BenchmarkReportError(LlmdBenchError):
    """A Benchmark Report file is missing, foreign, of another version, or not valid against the schema."""


def schema_path() -> Path:
    return paths.home() / "include" / "schemas" / f"benchmark_report_v{SCHEMA_VERSION}.json"


@lru_cache(maxsize=2)
def _schema(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def schema() -> dict[str, Any]:
    return _schema(str(schema_path()))


def schema_errors(doc: Any) -> list[str]:
    """Every violation of the v0.2 JSON Schema, as '`dotted.path`: message' (the deepest cause of each)."""
    import jsonschema  # deferred: loads jsonschema

    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    out = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        leaf = error
        while leaf.context:  # oneOf/anyOf: the branch that got furthest says what is wrong
            leaf = max(leaf.context, key=lambda e: len(e.absolute_path))
        where = ".".join(str(p) for p in leaf.absolute_path) or "(top level)"
        out.append(f"`{where}`: {leaf.message[:300]}")
    return out


# -- statistics ----------------------------------------------------------------------------------------------
# store metric -> (GuideLLM metric name in the level summary, schema section, schema field, units)
METRICS = {
    "ttft_ms": ("time_to_first_token_ms", "latency", "time_to_first_token", "ms"),
    "tpot_ms": ("time_per_output_token_ms", "latency", "time_per_output_token", "ms/token"),
    "itl_ms": ("inter_token_latency_ms", "latency", "inter_token_latency", "ms/token"),
    "request_latency_s": ("request_latency", "latency", "request_latency", "s"),
    "output_tps": ("output_tokens_per_second", "throughput", "output_token_rate", "tokens/s"),
    "requests_per_s": ("requests_per_second", "throughput", "request_rate", "queries/s"),
}
# metrics only the level summary has: GuideLLM name -> (section, field, units)
SUMMARY_ONLY = {
    "prompt_tokens_per_second": ("throughput", "input_token_rate", "tokens/s"),
    "tokens_per_second": ("throughput", "total_token_rate", "tokens/s"),
    "prompt_token_count": ("requests", "input_length", "count"),
    "output_token_count": ("requests", "output_length", "count"),
}
# schema statistic <- store column stat; the summary gives the rest
COLUMN_STATS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}
SUMMARY_STATS = {"stddev": ("std_dev",), "min": ("min",), "max": ("max",), "p95": ("percentiles", "p95")}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _statistics(units: str, columns: dict[str, float | None], dist: Any) -> dict[str, Any] | None:
    """A Statistics object: mean and percentiles from the typed columns (full precision), the rest from
    GuideLLM's summary of successful requests. None when there is no mean (the schema requires one)."""
    stats: dict[str, Any] = {"units": units}
    for name, stat in COLUMN_STATS.items():
        value = _finite(columns.get(stat))
        if value is None and isinstance(dist, dict):
            value = _finite(dist.get(stat) if stat != "median" else dist.get("median", _dig(dist, "percentiles", "p50")))
            if value is None and stat in ("p90", "p99"):
                value = _finite(_dig(dist, "percentiles", stat))
        if value is not None:
            stats[name] = value
    for name, keys in SUMMARY_STATS.items():
        value = _finite(columns.get(name)) if name in columns else None
        if value is None:
            value = _finite(_dig(dist, *keys))
        if value is not None and not (name == "stddev" and value < 0):
            stats[name] = value
    if "mean" not in stats:
        return None
    return {k: stats[k] for k in ("units", "mean", "stddev", "min", "p50", "p90", "p95", "p99", "max") if k in stats}


# -- building one report -----------------------------------------------------------------------------------------
def _cfg_id(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def iso_duration(seconds: float) -> str:
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


_DURATION = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_iso_duration(text: Any) -> float | None:
    m = _DURATION.match(text) if isinstance(text, str) and text not in ("P", "PT") else None
    if not m:
        return None
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def _configuration(campaign: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """What the configuration sets, from the catalog (or the campaign's own configurations)."""

    try:
        found = configurations.lookup(name, campaign_configurations(campaign))
    except LlmdBenchError:
        return None, None
    if found is None:
        return None, None
    return found.model_dump(mode="json", exclude_none=True), found.description


def _source_and_data(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """How prompts were made and the synthetic-data settings: the run's params (a pipeline run), else the
    GuideLLM spec an imported report carried (`config.spec.data[0]`)."""
    if "prompt_tokens" in params:
        return "random", params  # every pipeline run uses GuideLLM's synthetic_text data
    data = _dig(params, "guidellm_spec", "data")
    first = data[0] if isinstance(data, list) and data else None
    if isinstance(first, str):
        try:
            first = json.loads(first)
        except ValueError:
            first = dict(kv.split("=", 1) for kv in first.split(",") if "=" in kv) or None
    if not isinstance(first, dict):
        return "unknown", {}
    kind = first.get("kind")
    source = "random" if kind == "synthetic_text" or (kind is None and "prompt_tokens" in first) else \
        "sampled" if kind else "unknown"
    return source, first


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _seq_len(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = _finite(data.get(key)) if not isinstance(data.get(key), str) else _finite(_int(data.get(key)))
    if value is None:
        return None
    out: dict[str, Any] = {"distribution": "fixed", "value": int(value) if value.is_integer() else value}
    std, lo, hi = _finite(data.get(f"{key}_stdev")), _int(data.get(f"{key}_min")), _int(data.get(f"{key}_max"))
    if std:
        out.update(distribution="gaussian", std_dev=std)
    elif lo is not None or hi is not None:
        out["distribution"] = "uniform"
    if lo is not None and lo >= 0:
        out["min"] = lo
    if hi is not None and hi >= 1:
        out["max"] = hi
    return out


def _load(run: RunRow, cell: CellRow, level: LevelRow, stage: int) -> dict[str, Any] | None:

    params = run.params.as_stored()
    tool_version = run.guidellm_version or cell.versions.get("guidellm_report")
    source, data = _source_and_data(params)
    isl = _seq_len(data, "prompt_tokens")
    if not tool_version or isl is None:
        return None  # both are required by the schema; without them the load section is left out
    c = level.concurrency
    standardized: dict[str, Any] = {"tool": "guidellm", "tool_version": tool_version, "source": source,
                                    "stage": stage, "input_seq_len": isl, "concurrency": c}
    osl = _seq_len(data, "output_tokens")
    if osl is not None:
        standardized["output_seq_len"] = osl
    prefix_tokens = _int(data.get("prefix_tokens"))
    prefix_count = data.get("prefix_count", 1 if prefix_tokens else None)
    buckets = data.get("prefix_buckets")
    if isinstance(buckets, list) and buckets and isinstance(buckets[0], dict):
        prefix_tokens, prefix_count = _int(buckets[0].get("prefix_tokens")), buckets[0].get("prefix_count")
    if prefix_tokens:
        count = per_level(prefix_count, c, 1) if isinstance(prefix_count, str) and prefix_count.endswith("x") \
            else _int(prefix_count)
        if count and count >= 1:
            standardized["prefix"] = {"prefix_len": {"distribution": "fixed", "value": prefix_tokens},
                                      "num_groups": 1, "num_users_per_group": 1, "num_prefixes": count}
    turns = _int(data.get("turns"))
    if turns and turns > 1:
        standardized["multi_turn"] = {"enabled": True, "max_turns": {"distribution": "fixed", "value": turns}}
    native = {"config": {"llmd_bench_params": params, "guidellm_level": (level.summary or {}).get("config")}}
    return {"metadata": {"schema_version": COMPONENT_SCHEMA, "cfg_id": _cfg_id(native),
                         "description": f"GuideLLM concurrent profile at {c} streams"},
            "standardized": standardized, "native": native}


def _component(label: str, standardized: dict[str, Any], native: dict[str, Any], description: str) -> dict[str, Any]:
    return {"metadata": {"schema_version": COMPONENT_SCHEMA, "label": label,
                         "cfg_id": _cfg_id({"standardized": standardized, "native": native}), "description": description},
            "standardized": standardized, "native": native}


def _stack(run: RunRow, cell: CellRow, level: LevelRow) -> list[dict[str, Any]]:
    versions = cell.versions
    images = dict(run.images or versions.get("images") or {})
    simulated = run.simulated
    replicas = _int(cell.replicas) or _int(run.params.replicas)
    tp = _int(cell.tensor_parallel_size) or _int(run.params.tensor_parallel_size)
    if simulated:
        tool, tool_version = "guidellm-mock-server", run.guidellm_version or ""
        description = "simulated serving (llmd-bench local runtime): GuideLLM's mock server, no vLLM and no GPU"
        native: dict[str, Any] = {}
    else:
        tool, tool_version = "vllm", run.vllm_version or versions.get("vllm") or ""
        description = "vLLM model server"
        native = {"config": {"image": images["vllm"]}} if images.get("vllm") else {}
    # the stack metadata deploy captured (cells.stack): the GPU model from the nodes' GFD labels, the pulled digest
    stored = cell.stack
    servers = stored.get("model_servers") or []
    nodes = stored.get("nodes") or {}
    gpu_models = sorted({gpu for s in servers if (gpu := (nodes.get(s.get("node")) or {}).get("gpu_product")) is not None})
    digests = sorted({s["image_digest"] for s in servers if s.get("image_digest")})
    if digests and not simulated:
        native = {**native, "config": {**native.get("config", {}), "image_digest": ", ".join(digests)}}
    if replicas and tp:
        engine: dict[str, Any] = {
            "kind": "inference_engine", "tool": tool, "tool_version": tool_version, "role": "replica",
            "replicas": replicas, "model": {"name": cell.model},
            # the GPU model from GPU Feature Discovery labels when the stack metadata has it; else "" as
            # llm-d-benchmark writes an undetected one
            "accelerator": {"model": ", ".join(gpu_models), "count": 0 if simulated else tp, "parallelism": {"tp": tp}}}
        if not simulated:
            native = {**native, "args": {"--tensor-parallel-size": tp}}
    else:  # replicas or TP not recorded (an imported GuideLLM report): the fields we have, without required guesses
        engine = {"kind": "generic", "tool": tool, "tool_version": tool_version, "model": {"name": cell.model}}
        if replicas:
            engine["replicas"] = replicas
        if tp:
            engine["tensor_parallel_size"] = tp
    stack = [_component(MODEL_SERVER, engine, native, description)]

    definition, config_description = _configuration(run.campaign, cell.config)
    llmd: dict[str, Any] = {"kind": "generic", "tool": "llm-d", "tool_version": run.llmd_version or "",
                            "configuration": cell.config, "factors": cell.factors,
                            "stack_factors": cell.stack_factors, "config_factors": cell.config_factors,
                            "runtime": run.runtime, "simulated": simulated}
    if versions.get("components"):
        llmd["components"] = versions["components"]
    llmd_native: dict[str, Any] = {"config": {"images": images, "configuration": definition}}
    stack.append(_component("llm-d", llmd, llmd_native,
                            f"configuration {cell.config}: {config_description}" if config_description
                            else f"configuration {cell.config} (not in the configuration catalog)"))

    for kind, server_version in (versions.get("kv_backend") or {}).items():
        stack.append(_component("kv-store", {"kind": "generic", "tool": kind, "tool_version": str(server_version or "")},
                                {"config": {"image": images[kind]}} if images.get(kind) else {},
                                f"{kind} server the cell deployed (KV-block index or offload store)"))

    ours = {"kind": "generic", "tool": LLMD_BENCH, "tool_version": run.llmd_bench_version or "",
            "campaign": run.campaign, "run_id": run.dag_run_id, "runtime": run.runtime,
            "run_status": run.status, "model": cell.model, "short_model": cell.short_model,
            "config": cell.config, "stack_factors": cell.stack_factors, "config_factors": cell.config_factors,
            "factors": cell.factors, "trial": cell.trial, "replicas": replicas, "tensor_parallel_size": tp,
            "cell_status": cell.status, "cell_reason": cell.reason, "config_effect": cell.config_effect,
            "cell_observability": cell.observability, "versions": versions,
            "level": {"concurrency": level.concurrency, "valid": level.valid,
                      "invalid_reason": level.invalid_reason, "suspect_reason": level.suspect_reason,
                      "requests_total": _int(_dig(level.summary, "metrics", "request_totals", "total"))}}
    stack.append(_component(LLMD_BENCH, ours, {}, "the llmd-bench campaign run, cell, trial and level this report "
                            "holds (read back by `llmd-bench import --format benchmark-report`)"))
    return stack


def _aggregate(level: LevelRow) -> dict[str, Any]:
    summary_metrics = _dig(level.summary, "metrics") or {}
    sections: dict[str, dict[str, Any]] = {"requests": {}, "latency": {}, "throughput": {}}
    successful, errored, incomplete = level.requests_successful, level.requests_errored, level.requests_incomplete
    # total = every request the level counted, so successful = total - failures - incomplete
    sections["requests"].update(total=successful + errored + incomplete, failures=errored, incomplete=incomplete)
    for metric, (name, section, field_name, units) in METRICS.items():
        columns = {stat: level.statistic(metric, stat) for stat in LEVEL_STATS}
        if metric == "output_tps":
            columns["stddev"] = level.output_tps_std
        stats = _statistics(units, columns, _dig(summary_metrics, name, "successful"))
        if stats:
            sections[section][field_name] = stats
    for name, (section, field_name, units) in SUMMARY_ONLY.items():
        stats = _statistics(units, {}, _dig(summary_metrics, name, "successful"))
        if stats:
            sections[section][field_name] = stats
    return {k: v for k, v in sections.items() if v}


# model-server metrics the schema has a place for: (source, metric) -> (field, units, scale)
RESOURCE_METRICS = {
    ("vllm", "kv_cache_usage_perc"): ("kv_cache_usage", "fraction", 1.0),  # vLLM's gauge is 0..1
    ("vllm", "prefix_cache_hit_rate"): ("cache_hit_rate", "fraction", 1.0),
    ("vllm", "requests_running"): ("running_requests", "count", 1.0),
    ("vllm", "requests_waiting"): ("waiting_requests", "count", 1.0),
    ("vllm", "preemptions"): ("preemptions", "count", 1.0),
    ("pcp", "gpu_busy_pct"): ("gpu_utilization", "percent", 1.0),
    ("pcp", "cpu_util_pct"): ("cpu_utilization", "percent", 1.0),
    ("pcp", "gpu_mem_used_bytes"): ("gpu_memory_usage", "GiB", 1 / GIB),
    ("pcp", "mem_used_bytes"): ("cpu_memory_usage", "GiB", 1 / GIB),
    ("pcp", "gpu_power_w"): ("power_consumption", "Watts", 1.0),
}


def _observability(observations: list[ObservationRow]) -> dict[str, Any] | None:
    finite = [(o.source, o.metric, o.value) for o in observations if _finite(o.value) is not None]
    if not finite:
        return None
    aggregate = {}
    for src, metric, value in finite:
        if (src, metric) in RESOURCE_METRICS:
            name, units, scale = RESOURCE_METRICS[(src, metric)]
            aggregate[name] = {"units": units, "mean": value * scale}
    out: dict[str, Any] = {OBSERVATIONS_KEY: [{"source": s, "metric": m, "value": v} for s, m, v in finite]}
    if aggregate:
        out["components"] = [{"component_label": MODEL_SERVER, "aggregate": aggregate}]
    return out


def level_report(run: RunRow, stored: StoredCell, lv: LevelRow, stage: int) -> dict[str, Any]:
    cell = stored.cell
    key = [run.campaign, run.dag_run_id, cell.model, cell.config, cell.stack_factors,
           cell.config_factors, str(cell.trial), str(lv.concurrency)]
    factors = cell.factors_label
    description = (f"{cell.short_model} {cell.config}{f' [{factors}]' if factors else ''} trial {cell.trial}, "
                   f"concurrency {lv.concurrency}: llmd-bench campaign {run.campaign}, run {run.dag_run_id}"
                   + (f" (simulated: {run.runtime} runtime)" if run.simulated else ""))
    if lv.suspect_reason:
        description += f"; SUSPECT, measured the load generator rather than the server: {lv.suspect_reason}"
    report: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "run": {"uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "llmd-bench:" + "\x1f".join(key))),
                "eid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"llmd-bench:{run.campaign}\x1f{run.dag_run_id}")),
                "time": {"start": _iso(lv.level_start), "end": _iso(lv.level_end),
                         "duration": iso_duration(lv.duration_s)},
                "description": description},
        "scenario": {"stack": _stack(run, cell, lv)},
        "results": {"request_performance": {"aggregate": _aggregate(lv)}},
    }
    load = _load(run, cell, lv, stage)
    if load is not None:
        report["scenario"]["load"] = load
    observability = _observability(stored.observations_at(lv.concurrency))
    if observability:
        report["results"]["observability"] = observability
    return report


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "_"


def file_name(cell: CellRow, concurrency: int) -> str:
    """<org--model>__<config>[__<factors>]__trial<N>__c<concurrency>.json: deterministic, one path component."""
    parts = [_safe(cell.model.replace("/", "--")), _safe(cell.config)]
    factors = cell.factors_label
    if factors:
        parts.append(_safe(factors.replace("=", "-").replace(",", "_")))
    parts += [f"trial{cell.trial}", f"c{concurrency}"]
    return "__".join(parts) + ".json"


def export_run(run_id: str, out: Path, campaign: str | None = None, url: str | None = None,
               note: Callable[[str], None] = print) -> dict[str, Any]:
    """Write one Benchmark Report v0.2 per cell x trial x valid level of a stored run into `out`."""
    from llmd_bench.store.read import read_stored_run  # deferred: loads sqlalchemy

    stored = read_stored_run(run_id, campaign, url)
    run = stored.run
    reports: dict[str, dict[str, Any]] = {}
    skipped = 0
    for cell_entry in stored.cells:
        cell = cell_entry.cell
        label = f"{cell.short_model}/{cell.config}{f' [{cell.factors_label}]' if cell.factors_label else ''} " \
                f"trial {cell.trial}"
        if not cell_entry.levels:
            note(f"{label}: no levels stored (cell {cell.status}{': ' + cell.reason if cell.reason else ''})")
        for stage, level in enumerate(cell_entry.levels):
            if not level.valid:
                skipped += 1
                note(f"{label} concurrency {level.concurrency}: not exported, invalid level "
                     f"({level.invalid_reason}); the v0.2 schema has no field to mark it")
                continue
            name = file_name(cell, level.concurrency)
            if name in reports:
                raise LlmdBenchError(f"two levels of run {run_id} map to the same file name {name}")
            doc = level_report(run, cell_entry, level, stage)
            problems = schema_errors(doc)
            if problems:  # a bug here, not bad input: say where
                raise LlmdBenchError(f"{name}: the exported report does not validate against {schema_path().name}: "
                                     f"{problems[0]}")
            reports[name] = doc
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in reports.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out / name)
    return {"run_id": run.dag_run_id, "campaign": run.campaign, "format": FORMAT, "schema_version": SCHEMA_VERSION,
            "out": str(out), "files": len(reports), "skipped_invalid_levels": skipped}


# -- import ------------------------------------------------------------------------------------------------------
def load_report(path: Path) -> dict[str, Any]:
    """A Benchmark Report v0.2 file (JSON, or YAML as llm-d-benchmark also writes), checked against the schema."""

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BenchmarkReportError(f"Benchmark Report {path}: not found") from None
    except IsADirectoryError:
        raise BenchmarkReportError(f"Benchmark Report {path}: is a directory; give the report files") from None
    except (PermissionError, UnicodeDecodeError) as exc:
        raise BenchmarkReportError(f"Benchmark Report {path}: not readable ({type(exc).__name__})") from None
    try:
        doc = json.loads(text) if str(path).endswith(".json") else yaml_text.load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise BenchmarkReportError(f"Benchmark Report {path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}"
                                   f" ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise BenchmarkReportError(f"Benchmark Report {path}: not a Benchmark Report v{SCHEMA_VERSION} "
                                   f"(found a {type(doc).__name__}, not an object)")
    if "version" not in doc:
        raise BenchmarkReportError(f"Benchmark Report {path}: not a Benchmark Report v{SCHEMA_VERSION} (no `version` "
                                   f"field; found top-level keys {sorted(map(str, doc))[:8]})")
    if doc["version"] != SCHEMA_VERSION:
        raise BenchmarkReportError(f"Benchmark Report {path}: version {doc['version']!r} found; only "
                                   f"{SCHEMA_VERSION!r} is read")
    problems = schema_errors(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BenchmarkReportError(f"Benchmark Report {path}: not valid against the v{SCHEMA_VERSION} schema: "
                                   f"{problems[0]}{more}")
    return doc


def _stack_component(doc: dict[str, Any], label: str) -> dict[str, Any] | None:
    for component in _dig(doc, "scenario", "stack") or []:
        if _dig(component, "metadata", "label") == label:
            return component
    return None


def _epoch(text: Any, path: Path, where: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        raise BenchmarkReportError(f"Benchmark Report {path}: `{where}` is {text!r}, expected an ISO-8601 time") from None


def _parsed_level(doc: dict[str, Any], ours: dict[str, Any], path: Path):

    level = ours.get("level") or {}
    c = _int(level.get("concurrency")) or _int(_dig(doc, "scenario", "load", "standardized", "concurrency"))
    if not c or c < 1:
        raise BenchmarkReportError(f"Benchmark Report {path}: no concurrency (`scenario.stack[llmd-bench].standardized."
                                   "level.concurrency`)")
    start = _epoch(_dig(doc, "run", "time", "start"), path, "run.time.start")
    end = _epoch(_dig(doc, "run", "time", "end"), path, "run.time.end")
    duration = parse_iso_duration(_dig(doc, "run", "time", "duration"))
    if duration is None:
        raise BenchmarkReportError(f"Benchmark Report {path}: `run.time.duration` is "
                                   f"{_dig(doc, 'run', 'time', 'duration')!r}, expected an ISO-8601 duration like PT120S")
    aggregate = _dig(doc, "results", "request_performance", "aggregate") or {}
    requests = aggregate.get("requests")
    if not isinstance(requests, dict):
        raise BenchmarkReportError(f"Benchmark Report {path}: no `results.request_performance.aggregate.requests`")
    failures, incomplete = requests.get("failures") or 0, requests.get("incomplete") or 0
    successful = requests["total"] - failures - incomplete
    if successful < 0:
        raise BenchmarkReportError(f"Benchmark Report {path}: `results.request_performance.aggregate.requests`: "
                                   f"failures {failures} + incomplete {incomplete} > total {requests['total']}")
    metrics: dict[str, dict[str, float | None]] = {}
    summary_metrics: dict[str, Any] = {}
    for metric, (name, section, field_name, _units) in METRICS.items():
        stats = _dig(aggregate, section, field_name)
        if not isinstance(stats, dict):
            continue
        metrics[metric] = {"mean": stats.get("mean"), "median": stats.get("p50"), "p90": stats.get("p90"),
                           "p99": stats.get("p99"), "std_dev": stats.get("stddev")}
        summary_metrics[name] = {"successful": _summary_distribution(stats)}
    for name, (section, field_name, _units) in SUMMARY_ONLY.items():
        stats = _dig(aggregate, section, field_name)
        if isinstance(stats, dict):
            summary_metrics[name] = {"successful": _summary_distribution(stats)}
    summary_metrics["request_totals"] = {"successful": successful, "errored": failures, "incomplete": incomplete,
                                         "total": level.get("requests_total") or requests["total"]}
    summary = {"start_time": start, "end_time": end, "duration": duration, "metrics": summary_metrics}
    parsed = ParsedLevel(c, start, end, duration, successful, failures, incomplete, metrics, summary,
                         invalid_reason=level.get("invalid_reason") if level.get("valid") is False else None,
                         requests_total=_int(level.get("requests_total")))
    return parsed, level.get("suspect_reason")


def _summary_distribution(stats: dict[str, Any]) -> dict[str, Any]:
    out = {k: stats[s] for k, s in (("mean", "mean"), ("median", "p50"), ("std_dev", "stddev"), ("min", "min"),
                                    ("max", "max")) if stats.get(s) is not None}
    pct = {k: stats[k] for k in ("p50", "p90", "p95", "p99") if stats.get(k) is not None}
    if pct:
        out["percentiles"] = pct
    return out


def _observations(doc: dict[str, Any], concurrency: int) -> list[tuple[int, str, str, float]]:
    rows = _dig(doc, "results", "observability", OBSERVATIONS_KEY) or []
    return [(concurrency, str(r["source"]), str(r["metric"]), float(r["value"])) for r in rows
            if isinstance(r, dict) and {"source", "metric", "value"} <= set(r) and _finite(r["value"]) is not None]


def _first_error(exc: ValueError) -> str:
    """A pydantic validation error as one line naming the field (`cell_reason: Input should be a valid string`)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = {"reason": "cell_reason", "observability": "cell_observability"}.get(str(first["loc"][0]), str(first["loc"][0])) \
            if first["loc"] else "params"
        return f"`{where}`: {first['msg']} (got {first.get('input')!r:.100})"
    return str(exc).splitlines()[0]


def _llmd_version(doc: dict[str, Any], ours: dict[str, Any]) -> str:
    """The llm-d release a report was measured on: the `llm-d` stack component's tool_version (what _stack writes),
    else the llmd-bench component's versions.llmd."""
    llmd = _dig(_stack_component(doc, "llm-d"), "standardized") or {}
    return str(llmd.get("tool_version") or (ours.get("versions") or {}).get("llmd") or "")


def import_reports(files: list[Path], run_id: str | None = None, campaign: str = "imported",
                   url: str | None = None) -> dict[str, Any]:
    """Load Benchmark Report v0.2 files written by `llmd-bench export` into the results store as one run. A model id
    that is not a Hugging Face one or an llm-d version not in the catalog is refused naming the file and the field, as
    `import --format guidellm` refuses them (importer.py), before anything is written."""
    from llmd_bench.store import db  # deferred: loads sqlalchemy

    if not files:
        raise BenchmarkReportError("no Benchmark Report files given")
    docs = []
    for f in files:
        doc = load_report(f)
        ours = _dig(_stack_component(doc, LLMD_BENCH), "standardized")
        if not isinstance(ours, dict):
            raise BenchmarkReportError(f"Benchmark Report {f}: a v{SCHEMA_VERSION} report without the `{LLMD_BENCH}` "
                                       f"stack component (scenario.stack[].metadata.label {LLMD_BENCH!r}): only reports "
                                       "written by `llmd-bench export --format benchmark-report` can be imported")
        for required in ("model", "config", "trial"):
            if ours.get(required) in (None, ""):
                raise BenchmarkReportError(f"Benchmark Report {f}: the {LLMD_BENCH} component has no `{required}`")
        try:
            check_model_id(str(ours["model"]))
        except ValueError as exc:
            raise BenchmarkReportError(f"Benchmark Report {f}: the {LLMD_BENCH} component's `model`: {exc}") from None
        version, known = _llmd_version(doc, ours), catalog.known_versions()
        if version not in known:
            where = f"the `llm-d` stack component's tool_version, else the {LLMD_BENCH} component's versions.llmd"
            found = (f"llm-d version {version[:100]!r} ({where}) is not in the version catalog" if version else
                     f"no llm-d version ({where}), so none in the version catalog")
            raise BenchmarkReportError(f"Benchmark Report {f}: {found} ({paths.catalog_file()}); allowed: {known}")
        docs.append((f, doc, ours))
    sources = {(o.get("campaign"), o.get("run_id")) for _, _, o in docs}
    if len(sources) > 1:
        raise BenchmarkReportError(f"the files come from {len(sources)} runs {sorted(map(str, sources))}; "
                                   "import one run's files at a time")
    digest = hashlib.sha256()
    for f, _, _ in docs:
        digest.update(Path(f).read_bytes())
    run_id = run_id or "import__" + digest.hexdigest()[:12]
    first_doc, first = docs[0][1], docs[0][2]
    server = _dig(_stack_component(first_doc, MODEL_SERVER), "standardized") or {}
    images = _dig(_stack_component(first_doc, "llm-d"), "native", "config", "images") or {}
    params = dict(_dig(first_doc, "scenario", "load", "native", "config", "llmd_bench_params") or {})
    params["imported_from"] = [str(f) for f, _, _ in docs]
    try:
        stored_params = StoredRunParams.model_validate(params)
    except ValueError as exc:
        raise BenchmarkReportError(f"Benchmark Report {docs[0][0]}: scenario.load.native.config.llmd_bench_params: "
                                   f"{_first_error(exc)}") from None
    run = RunInfo(campaign=campaign, dag_run_id=run_id, runtime=first.get("runtime") or "imported",
                  llmd_version=_llmd_version(first_doc, first),
                  vllm_version=(server.get("tool_version") or None) if server.get("tool") == "vllm" else
                  (first.get("versions") or {}).get("vllm"),
                  guidellm_version=_dig(first_doc, "scenario", "load", "standardized", "tool_version"),
                  llmd_bench_version=first.get("tool_version") or __version__, images=images, params=stored_params)
    cells: dict[tuple, dict[str, Any]] = {}
    for f, doc, ours in docs:
        key = (ours["model"], ours["config"], ours.get("stack_factors") or "", ours.get("config_factors") or "",
               int(ours["trial"]))
        entry = cells.setdefault(key, {"info": ours, "source": f, "levels": [], "suspects": {}, "observations": [],
                                       "files": {}})
        parsed, suspect = _parsed_level(doc, ours, f)
        if parsed.concurrency in entry["files"]:
            raise BenchmarkReportError(f"Benchmark Reports {entry['files'][parsed.concurrency]} and {f} hold the same "
                                       f"level (concurrency {parsed.concurrency}) of {ours['model']} {ours['config']} "
                                       f"trial {ours['trial']}")
        entry["files"][parsed.concurrency] = f
        entry["levels"].append(parsed)
        if suspect:
            entry["suspects"][parsed.concurrency] = suspect
        entry["observations"] += _observations(doc, parsed.concurrency)

    # every cell checked before anything is written
    rows = []
    for (model, config, stack_factors, config_factors, trial), entry in cells.items():
        ours = entry["info"]
        levels = sorted(entry["levels"], key=lambda lv: lv.concurrency)
        status = ours.get("cell_status") or ("ok" if any(lv.valid for lv in levels) else "invalid")
        try:
            info = CellInfo(
                model=model, short_model=ours.get("short_model") or paths.model_short_name(model), config=config,
                trial=trial, status=status, reason=ours.get("cell_reason"), stack_factors=stack_factors,
                config_factors=config_factors, factors=ours.get("factors") or {}, replicas=_int(ours.get("replicas")),
                tensor_parallel_size=_int(ours.get("tensor_parallel_size")), versions=ours.get("versions") or {},
                config_effect=ours.get("config_effect") or {}, observability=ours.get("cell_observability") or {})
        except ValueError as exc:
            raise BenchmarkReportError(f"Benchmark Report {entry['source']}: the {LLMD_BENCH} component's "
                                       f"{_first_error(exc)}") from None
        rows.append((info, levels, entry["observations"], entry["suspects"]))

    def load(writer: db.Writer) -> None:
        for info, levels, observations, suspects in rows:
            writer.store_cell(run, info, levels, observations, suspects)
        writer.finish_run(campaign, run_id, "ok")

    db.in_transaction(load, "importing Benchmark Reports", url)
    return {"run_id": run_id, "campaign": campaign, "format": FORMAT, "files": len(docs), "cells": len(cells),
            "levels": sum(len(e["levels"]) for e in cells.values())}
