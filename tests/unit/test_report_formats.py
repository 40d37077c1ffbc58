"""The report's output formats: each is one module registering an OutputFormat (llmd_bench.report.render); a new
one is written by generate_report next to report.md and report.html, and one that fails fails the report.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_report_formats.py.
"""

from __future__ import annotations

import pytest

from llmd_bench.report import render


def test_the_built_in_formats_are_one_module_each():
    found = {f.name: f.filename for f in render.formats()}
    assert found["markdown"] == "report.md" and found["html"] == "report.html"
    with pytest.raises(ValueError, match="report.md is already written by 'markdown'"):
        render.register(render.OutputFormat("other-markdown", "report.md", lambda d, r: ""))
