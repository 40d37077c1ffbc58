"""Numbers derived from per-level results: peaks per cell (the published method)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Peak:
    output_tps: float
    concurrency: int
    ttft_ms: float | None
    tpot_ms: float | None


def peak(levels: Iterable[dict[str, Any]]) -> Peak | None:
    """The valid level with the highest mean successful output tokens/s; ties go to the lower concurrency."""
    best = None
    for lv in levels:
        if not lv.get("valid", True):
            continue
        tps = lv["metrics"]["output_tps"]["mean"]
        if tps is None:
            continue
        key = (tps, -lv["concurrency"])
        if best is None or key > best[0]:
            best = (key, lv)
    if best is None:
        return None
    lv = best[1]
    return Peak(lv["metrics"]["output_tps"]["mean"], lv["concurrency"],
                lv["metrics"]["ttft_ms"]["mean"], lv["metrics"]["tpot_ms"]["mean"])
