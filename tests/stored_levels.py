"""Levels to store for tests of the results store's history: the committed real GuideLLM report's first level, copied
to each concurrency with a chosen mean output tokens/s (None: an invalid level), and where asked its latencies scaled."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from llmd_bench.measure.guidellm_levels import METRICS, LevelResult
from llmd_bench.measure.guidellm_report import parse_report_file

# our short metric -> GuideLLM's (the summary's names)
_GUIDELLM = {short: name for name, short in METRICS.items()}
_SCALED = ("mean", "median", "std_dev", "min", "max", "p90", "p99")


def levels_at(real_report: Path, tps_by_level: dict[int, float | None],
              latency_x: dict[int, dict[str, float]] | None = None) -> list[LevelResult]:
    """latency_x: concurrency -> {ttft_ms | itl_ms | request_latency_s | tpot_ms: factor}: that level's statistics and
    its summary's percentiles of the metric (p50, p90, p95, p99) multiplied by the factor, as a level under more load."""
    template = parse_report_file(real_report).levels[0]
    out = []
    for c, tps in tps_by_level.items():
        metrics = {k: dict(v) for k, v in template.metrics.items()}
        metrics["output_tps"] = {**metrics["output_tps"], "mean": tps if tps is not None else 1.0}
        summary = template.summary
        factors = (latency_x or {}).get(c, {})
        if factors:
            summary = copy.deepcopy(template.summary)
            for short, factor in factors.items():
                metrics[short] = {k: (v * factor if v is not None and k in _SCALED else v) for k, v in metrics[short].items()}
                dist = summary["metrics"][_GUIDELLM[short]]["successful"]
                for k in _SCALED:
                    if isinstance(dist.get(k), float):
                        dist[k] *= factor
                dist["percentiles"] = {p: v * factor for p, v in dist["percentiles"].items()}
        out.append(dataclasses.replace(template, concurrency=c, metrics=metrics, summary=summary,
                                       invalid_reason=None if tps is not None else "errors above 5 %"))
    return out
