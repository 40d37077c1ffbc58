"""report.html: the report as one self-contained page, plots embedded (templates/report.html.j2, autoescaped)."""

from __future__ import annotations

import base64

from llmd_bench.report.render import OutputFormat, _jinja, register


def render(document, report=None) -> str:
    return _jinja.render("report.html.j2", title=document.title, blocks=list(document.blocks()),
                         base64=lambda png: base64.b64encode(png).decode())


FORMAT = register(OutputFormat("html", "report.html", render))
