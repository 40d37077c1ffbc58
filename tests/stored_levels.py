"""Levels to store for tests of the results store's history: the committed real GuideLLM report's first level, copied
to each concurrency with a chosen mean output tokens/s (None: an invalid level)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llmd_bench.measure.guidellm_levels import LevelResult
from llmd_bench.measure.guidellm_report import parse_report_file


def levels_at(real_report: Path, tps_by_level: dict[int, float | None]) -> list[LevelResult]:
    template = parse_report_file(real_report).levels[0]
    out = []
    for c, tps in tps_by_level.items():
        metrics = {k: dict(v) for k, v in template.metrics.items()}
        metrics["output_tps"] = {**metrics["output_tps"], "mean": tps if tps is not None else 1.0}
        out.append(dataclasses.replace(template, concurrency=c, metrics=metrics,
                                       invalid_reason=None if tps is not None else "errors above 5 %"))
    return out
