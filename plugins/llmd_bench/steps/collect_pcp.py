"""collect_pcp: the cell's evidence. Stops the cell's pmlogger, summarises its archive per concurrency
level (xz-compressed archive kept in the cell folder), aggregates the model-server metrics sampled during
the sweep, reads the KV index's final stats, and decides whether the configuration took effect.

Writes observations.json; load_results stores it with the levels. Missing evidence is recorded with its
reason (`not measured`), so this step fails only on a bug, never because PCP or a metric is absent.
"""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.cell_folder import CellRecord, write_observations
from llmd_bench.measure.observe import generator, kv_index, pcp, prometheus, verdict
from llmd_bench.measure.observe.sampler import read as read_samples
from llmd_bench.stack.context import StepContext
from llmd_bench.steps import observation_targets


def level_windows(record: CellRecord | None) -> list[dict[str, Any]]:
    """Every trial's level windows (trial, concurrency, start, end): where the samples of each level lie."""
    if record is None or record.sweep is None:
        return []
    return [w.model_dump() for t in record.sweep.trials for w in t.level_windows]


def host_summaries(ctx: StepContext, windows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Local runtime: stop the cell's pmlogger. Kubernetes: the per-node archives the sweep pod recorded
    from each GPU node's pmcd (they arrive with the cell's files). Both: summarise per level, xz."""
    archives, rec = ctx.stack.host_archives()
    if not archives:
        return {"status": "not measured", "reason": rec.get("unavailable", "PCP did not record this cell")}, []
    return summarise(ctx, archives, windows)


def generator_host_summaries(ctx: StepContext,
                             windows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The load generator's host per level. Local runtime: the one host (host_levels). Kubernetes: the sweep
    pod's node, which the sweep recorded beside the model servers' nodes."""
    archives, status = ctx.stack.generator_archives()
    if archives is None:
        return status, []
    return summarise(ctx, archives, windows)


def summarise(ctx: StepContext, archives: dict[str, Any],
              windows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-level summaries of recorded PCP archives (combined over nodes), each archive xz-compressed."""
    per_node: dict[str, list[dict[str, Any]]] = {}
    files, sample_count = [], 0
    try:
        tools = pcp.tools()
        for node, info in sorted(archives.items()):
            archive = ctx.cell_dir / info["archive"]
            if not pcp.archive_files(archive):
                raise pcp.PcpUnavailable(f"the PCP archive of {node} ({info['archive']}) is missing from the cell's results")
            rows = pcp.samples(tools, archive, info["metrics"])
            per_node[node] = pcp.per_level(rows, windows)
            files += pcp.compress(archive)
            sample_count += len(rows)
    except (pcp.PcpUnavailable, OSError) as exc:
        return {"status": "not measured", "reason": str(exc)}, []
    gpu = any(m.startswith("nvidia.") for info in archives.values() for m in info["metrics"])
    status = {"status": "recorded", "archive": [str(f.relative_to(ctx.cell_dir)) for f in files],
              "nodes": sorted(per_node), "samples": sample_count,
              "gpu": "recorded" if gpu else f"not available (no nvidia PMDA on {', '.join(sorted(per_node))})"}
    return status, pcp.combine_nodes(per_node)


def serving_summaries(samples: list[dict[str, Any]], replicas: list[str],
                      windows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    vllm = [s for s in samples if s.get("source") == "vllm"]
    scraped = {s["replica"] for s in vllm}
    if not vllm:
        reason = f"no replica exports Prometheus metrics ({len(replicas)} scraped: {', '.join(replicas) or 'none'})"
        return {"available": False, "reason": f"not available: {reason}"}, []
    levels = prometheus.per_level(vllm, windows)

    def total(key: str) -> float | None:
        values = [v for lv in levels if (v := lv.get(key)) is not None]
        return sum(values) if values else None

    return {"available": True, "replicas_scraped": sorted(scraped),
            "external_prefix_cache_queries": total("external_prefix_cache_queries"),
            "external_prefix_cache_hits": total("external_prefix_cache_hits"),
            "prefix_cache_queries": total("prefix_cache_queries"), "prefix_cache_hits": total("prefix_cache_hits")}, levels


def kv_summary(ctx: StepContext, samples: list[dict[str, Any]], kv: tuple[str, int] | None) -> dict[str, Any] | None:
    record = ctx.record()
    backend = record.serving.kv_backend if record is not None and record.serving is not None else None
    host, port = kv if kv else ((backend.host or "127.0.0.1", backend.port) if backend else ("127.0.0.1", None))
    if port is None:
        return None
    server = f"{backend.kind} {backend.server_version}" if backend else "None None"
    counts = [s["keys"] for s in samples if s.get("source") == "kv_index" and s.get("keys") is not None]
    summary: dict[str, Any] = {"server": server}
    epp = [s for s in samples if s.get("source") == "epp"]
    if epp:
        # The EPP's own view of its index: blocks admitted from KV events, lookups and hits while routing.
        summary["epp_index"] = prometheus.counter_totals(epp, prometheus.EPP_METRICS)
    try:
        final = kv_index.stats(port, host=host)
    except OSError as exc:
        return summary | {"max_keys": max(counts) if counts else None,
                          "error": f"could not read the index after the sweep: {exc}"}
    observed = counts + ([final["keys"]] if final.get("keys") is not None else [])
    return summary | {"max_keys": max(observed) if observed else None, "samples": len(counts), "final": final}


def run(ctx: StepContext) -> dict[str, Any]:
    assert ctx.cell is not None
    record = ctx.record()
    windows = level_windows(record)
    targets = observation_targets(ctx)
    trials = range(1, ctx.params.trials + 1)
    samples = [s for t in trials for s in read_samples(ctx.folder.serving_samples(t))]
    host, host_levels = host_summaries(ctx, windows)
    generator_host, generator_host_levels = generator_host_summaries(ctx, windows)
    serving, serving_levels = serving_summaries(samples, targets.replicas, windows)
    epp_samples = [s for s in samples if s.get("source") == "epp"]
    epp_levels = prometheus.per_level(epp_samples, windows, prometheus.EPP_METRICS) if epp_samples else []
    kv = kv_summary(ctx, samples, targets.kv)
    cpu = [s for t in trials for s in generator.read(ctx.folder.generator_cpu_samples(t))]
    generator_levels = generator.per_level(cpu, windows)
    replica_count = record.serving.replicas if record is not None and record.serving is not None else None
    effect = verdict.judge(ctx.configuration.evidence, replica_count, serving, kv)
    observations = {"pcp": host, "host_levels": host_levels, "serving_metrics": serving,
                    "serving_levels": serving_levels, "epp_levels": epp_levels, "kv_index": kv, "config_effect": effect,
                    "generator_levels": generator_levels, "generator_host": generator_host,
                    "generator_host_levels": generator_host_levels}
    write_observations(ctx.folder, observations)
    with ctx.update_record() as rec:
        rec["pcp"] = host
        rec["serving_metrics"] = serving
        rec["kv_index"] = kv
        rec["config_effect"] = effect
    print(f"configuration effect: {effect['verdict']} ({effect['evidence']})")
    print(f"PCP: {host.get('status')} {host.get('reason', '')}; serving metrics: "
          f"{'available' if serving.get('available') else serving.get('reason')}")
    return {"pcp": host.get("status"), "config_effect": effect["verdict"]}
