"""The report's output formats: each is one module registering an OutputFormat (llmd_bench.report.render); a new
one is written by generate_report next to report.md and report.html, and one that fails fails the report."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from conftest import ROOT
from llmd_bench.integrations.importer import import_reports
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.report import render

FIXTURE = ROOT / "tests" / "fixtures" / "guidellm" / "0.5.4" / "guidellm-results.json.zst"

OUTLINE = """
from llmd_bench.report.render import OutputFormat, register


def outline(document, report):
    '''The headings of the report, indented by level, and the run they belong to.'''
    lines = [f"{'  ' * (b.level - 1)}{b.text}" for b in document.blocks() if b.kind == "heading"]
    return f"run {report.data.run_id}\\n" + "\\n".join(lines) + "\\n"


register(OutputFormat("outline", "outline.txt", outline))
"""

BROKEN = """
from llmd_bench.report.render import OutputFormat, register


def broken(document, report):
    raise KeyError("no such block")


register(OutputFormat("broken", "broken.txt", broken))
"""


@pytest.fixture
def format_module(tmp_path, monkeypatch):
    """Load a module (the text of one file) that registers an output format; unregistered afterwards."""
    folder = tmp_path / "formats"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    loaded = []

    def load(name: str, source: str) -> None:
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.import_module(name)
        loaded.append(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
    render.unregister("outline")
    render.unregister("broken")


@pytest.fixture
def stored_run(db_url, monkeypatch):
    for config in ("no-offload", "llm-d-valkey"):
        import_reports([FIXTURE], "Qwen/Qwen3-8B", config, "v0.5.0", run_id="formats", campaign="past", url=db_url)
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    return "formats"


def test_a_format_registered_as_one_module_is_written_by_generate_report(stored_run, format_module, tmp_path):
    from llmd_bench.report.generate import generate_report

    format_module("llmd_outline_format", OUTLINE)
    out = tmp_path / "report"
    generate_report(stored_run, out, campaign="past")
    outline = (out / "outline.txt").read_text().splitlines()
    headings = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("#")]
    assert outline[0] == "run formats"
    # the same document as report.md: every heading, in order, at its level
    assert outline[1:] == [f"{'  ' * (len(h) - len(h.lstrip('#')) - 1)}{h.lstrip('#').strip()}" for h in headings]
    assert outline[1] == "llm-d KV-cache evaluation: past, run formats" and "  Peak output throughput" in outline
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_format_that_fails_fails_the_report_and_writes_nothing(stored_run, format_module, tmp_path):
    from llmd_bench.report.generate import generate_report

    format_module("llmd_broken_format", BROKEN)
    out = tmp_path / "report"
    with pytest.raises(LlmdBenchError, match=r"report output format 'broken' \(broken.txt\) failed: KeyError"):
        generate_report(stored_run, out, campaign="past")
    assert not out.exists()  # rendered in memory first: no half-written report
