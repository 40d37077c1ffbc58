"""What a GuideLLM report layout adapter is: which reports it reads, their settings, and their levels."""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.guidellm_levels import Report, ValidityRules, parse_levels


class Layout:
    """One report layout. `versions` are exact GuideLLM versions ("0.6.0") or a line ("0.8.x": 0.8 and 0.8.*),
    newest first; `layout` is the layout id the report carries in `metadata.version`."""

    versions: tuple[str, ...] = ()
    layout: int = 0

    def matches(self, version: str, layout: Any) -> bool:
        if layout != self.layout or isinstance(layout, bool):
            return False
        return any(version == v or (v.endswith(".x") and (version == v[:-2] or version.startswith(v[:-1])))
                   for v in self.versions)

    def spec(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The run's settings as the report records them (stored with an imported run)."""
        raise NotImplementedError

    def expected_duration(self, doc: dict[str, Any]) -> float | None:
        """Seconds each level was asked to run, when the report says so and nothing else may end a level early."""
        raise NotImplementedError

    def parse(self, doc: dict[str, Any], *, source: str, expected_duration_s: float | None,
              rules: ValidityRules) -> Report:
        levels = parse_levels(doc, source, expected_duration_s, rules)
        return Report(guidellm_version=doc["metadata"]["guidellm_version"], levels=levels, spec=self.spec(doc))


def number(value: Any) -> float | None:
    """A setting that is a plain number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
