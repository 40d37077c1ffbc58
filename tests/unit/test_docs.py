"""The documentation a user reads: a README that fits on a screen and links one docs/ page per topic, every section
the long README had kept in docs/, links and anchors that resolve, and the generated tables current with the code."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from llmd_bench.model import docs_tables
from llmd_bench.model.params import RunParams

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Every section of the README as it was before the reference moved to docs/ (1,124 lines): each is a heading there.
FORMER_SECTIONS = [
    "Quick start (Python 3.11, Linux)", "The Airflow UI", "Backfilling a new llm-d version", "Running a campaign",
    "The method is data; `llmd-bench plan`", "Level isolation without reloading weights: `level_isolation: reset`",
    "Adaptive sweeps: stop past saturation", "GPU time and cost", "Configurations are data",
    "Factors: replicas, tensor parallel size, memory regime, offload size", "The results store (PostgreSQL)",
    "Export to llm-d's Benchmark Report", "Reading the report", "Judging differences (noise)",
    "Did the configuration take effect?", "Running on a Kubernetes cluster", "Prerequisites and the per-release contract",
    "Memory sizing", "Placement, images and pod security", "Benchmark your installed llm-d", "Environment variables",
    "Layout", "Notifications", "MLflow", "Troubleshooting",
]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def broken_links(page: Path) -> list[str]:
    """The links of a page whose file or anchor does not exist."""
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_file():
            broken.append(f"{page.name}: {target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}: {target} (no heading #{anchor} in {dest.name})")
    return broken


def test_the_readme_fits_on_a_screen_and_names_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) < 250, f"README.md has {len(text.splitlines())} lines; the reference goes to docs/"
    for command in ("make demo", "make test", "bash .ci/run"):
        assert command in text


def test_every_docs_page_is_linked_from_the_readme_and_every_link_resolves():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in local_links(README) if t.startswith("docs/")}
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [p.name for p in pages if p.resolve() not in linked] == [], "docs pages the README does not link"
    assert broken_links(README) == []


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_and_anchors_in_docs_pages_resolve(page):
    assert broken_links(DOCS / page) == []


def test_every_section_the_long_readme_had_is_a_heading_in_docs():
    headings = {h.strip() for p in DOCS.glob("*.md") for h in re.findall(r"^#{1,6} (.+)$", p.read_text(), re.M)}
    assert [s for s in FORMER_SECTIONS if s not in headings] == []
    readme_headings = set(re.findall(r"^#{1,6} (.+)$", README.read_text(), re.M))
    assert readme_headings.isdisjoint(FORMER_SECTIONS), "a reference section is back in the README"


def test_the_airflow_screenshots_are_shown_from_docs():
    shown = local_links(DOCS / "airflow-ui.md")
    assert {"airflow-trigger-form.png", "airflow-run-report-tab.png"} <= set(shown)


def test_the_generated_tables_are_current():
    assert docs_tables.stale() == [], "regenerate with `PYTHONPATH=plugins .venv/bin/python -m llmd_bench.model.docs_tables`"


def test_the_params_table_has_one_row_per_run_param_with_its_default_key():
    table = docs_tables.marked((DOCS / "params.md").read_text(), "params")
    assert table is not None
    rows = table.splitlines()[2:]
    assert [re.match(r"\| `(\w+)` \|", r).group(1) for r in rows] == list(RunParams.model_fields)
    by_name = {re.match(r"\| `(\w+)` \|", r).group(1): r for r in rows}
    assert "`workload.concurrency` (required)" in by_name["concurrency"]
    assert "`serving.replicas` (default `1`)" in by_name["replicas"]
    assert "`per-cell`, `per-level`" in by_name["runs"]


def test_regenerating_rewrites_only_the_tables(tmp_path):
    for page in docs_tables.TABLES:
        shutil.copy(DOCS / page, tmp_path / page)
    page = tmp_path / "params.md"
    before = page.read_text()
    page.write_text(before.replace("| `turns` |", "| `turns_old` |"))
    assert docs_tables.stale(tmp_path) == [str(page)]
    assert docs_tables.write(tmp_path) == [str(page)]
    assert page.read_text() == before and docs_tables.stale(tmp_path) == []


def test_a_page_without_its_table_markers_is_refused_naming_it(tmp_path):
    for page in docs_tables.TABLES:
        shutil.copy(DOCS / page, tmp_path / page)
    (tmp_path / "params.md").write_text("# Run params\n")
    stale_settings = (tmp_path / "settings.md").read_text().replace("| `LLMD_BENCH_HOME` |", "| `OLD_HOME` |")
    (tmp_path / "settings.md").write_text(stale_settings)
    with pytest.raises(SystemExit, match=r"params\.md: no `<!-- params-table:start -->`"):
        docs_tables.write(tmp_path)
    assert (tmp_path / "settings.md").read_text() == stale_settings, "nothing is written when a page lacks its markers"
