"""GuideLLM report layouts: one adapter per layout, picked by the version the report names.

From GuideLLM 0.5.0 on, a report names the version that wrote it in `metadata.guidellm_version` and its
layout in `metadata.version` (guidellm/benchmark/schemas/generative/report.py @v0.5.0-v0.6.0,
guidellm/benchmark/schemas/report.py @v0.8.1); 0.4.x wrote `args` and `benchmarks` and no `metadata`
(report.py @v0.4.0). Only versions whose real reports are in tests/fixtures/guidellm (or, for 0.8, made by the
test session) are read: a new layout is a module here with a Layout subclass, and its LAYOUT added below.
"""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.guidellm_layouts import v0_5, v0_6, v0_8
from llmd_bench.measure.guidellm_layouts.base import Layout
from llmd_bench.model.errors import ReportError

# newest first: messages list the supported versions in this order
LAYOUTS: tuple[Layout, ...] = (v0_8.LAYOUT, v0_6.LAYOUT, v0_5.LAYOUT)


def supported() -> str:
    """e.g. 'GuideLLM 0.8.x (layout 2); 0.6.0, 0.5.4, 0.5.3 (layout 1)'."""
    groups: dict[int, list[str]] = {}
    for layout in LAYOUTS:
        groups.setdefault(layout.layout, []).extend(layout.versions)
    return "GuideLLM " + "; ".join(f"{', '.join(versions)} (layout {lid})" for lid, versions in groups.items())


def detect(doc: Any, source: str) -> Layout:
    """The adapter for `doc`, or a ReportError naming the version found and the supported ones."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        if isinstance(doc, dict) and isinstance(doc.get("args"), dict) and isinstance(doc.get("benchmarks"), list):
            raise ReportError(f"GuideLLM report {source}: written by GuideLLM 0.4.x or earlier (`args` and no "
                              f"`metadata`; GuideLLM names its version from 0.5.0 on); supported: {supported()}")
        raise ReportError(f"GuideLLM report {source}: not a GuideLLM report (no `metadata` object)")
    version = doc["metadata"].get("guidellm_version")
    if not isinstance(version, str):
        raise ReportError(f"GuideLLM report {source}: not a GuideLLM report (no `metadata.guidellm_version`)")
    layout_id = doc["metadata"].get("version")
    for layout in LAYOUTS:
        if layout.matches(version, layout_id):
            return layout
    raise ReportError(f"GuideLLM report {source}: written by GuideLLM {version} (layout {layout_id}); "
                      f"supported: {supported()}")


def expected_duration(doc: Any) -> float | None:
    """Seconds each level was asked to run, from the settings `doc` records; None when unknown (an unsupported
    report is refused by parse_report, with its file name, not here)."""
    try:
        layout = detect(doc, "<report>")
    except ReportError:
        return None
    return layout.expected_duration(doc)
