"""report.md: the report in Markdown (templates/report.md.j2)."""

from __future__ import annotations

from llmd_bench.report.render import OutputFormat, _jinja, register


def render(document, report=None) -> str:
    return _jinja.render("report.md.j2", blocks=list(document.blocks()))


FORMAT = register(OutputFormat("markdown", "report.md", render))
