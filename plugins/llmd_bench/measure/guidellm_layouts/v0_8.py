"""GuideLLM 0.8.x reports (layout 2): settings in `config.spec`, constraints as a list of {kind, ...}.

Layout: guidellm/benchmark/schemas/report.py @v0.8.1 (metadata.version 2, `config.spec` = the run's spec);
constraint kinds: guidellm/schemas/scheduler/constraints/request.py @v0.8.1 (max_duration `seconds`,
max_requests `count`).
"""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.guidellm_layouts.base import Layout, number


class V0_8(Layout):
    versions = ("0.8.x",)
    layout = 2

    def spec(self, doc: dict[str, Any]) -> dict[str, Any]:
        config = doc.get("config")
        spec = config.get("spec") if isinstance(config, dict) else None
        return spec if isinstance(spec, dict) else {}

    def expected_duration(self, doc: dict[str, Any]) -> float | None:
        constraints = self.spec(doc).get("constraints") or []
        if not isinstance(constraints, list):
            return None
        if any(isinstance(c, dict) and c.get("kind") == "max_requests" for c in constraints):
            return None  # a request cap may end a level before its duration
        for c in constraints:
            if isinstance(c, dict) and c.get("kind") == "max_duration" and number(c.get("seconds")) is not None:
                return number(c["seconds"])
        return None


LAYOUT = V0_8()
