"""The comparison report of a run: tables, plots and CSVs generated from data, with noise and config-effect judgement.

- data.py: where a report's data comes from (the results store, or a folder of metrics CSVs): ReportInput.
- analysis.py: the numbers (peaks, intervals, judgement against noise, the baseline comparisons, Redis vs
  Valkey, scaling, the cross-version and previous-run comparisons): build(ReportInput) -> Report.
- document.py: the report as plain data (sections of headings, paragraphs, notes, lists, tables, figures);
  sections.py builds it from a Report.
- render/: one module per output format (report.md, report.html), registered in render/__init__.py; the
  Jinja2 templates are in templates/.
- csv.py (the CSV outputs), plots.py (the PNG plots), write.py (the report folder, written atomically).

Outputs in one folder: report.md, report.html (self-contained, plots embedded), PNG plots, report.json,
all_peak_metrics.csv, performance_comparisons.csv and <model>_<config>_metrics.csv per cell.
"""

from __future__ import annotations

from llmd_bench.report.analysis import PEAK_COLUMNS, Report, baseline_of, build, natural_key, noise_floor_pct
from llmd_bench.report.csv import CELL_METRIC_COLUMNS
from llmd_bench.report.data import ReportInput
from llmd_bench.report.render import html, markdown
from llmd_bench.report.sections import SIMULATED_BANNER, STACK_HEADER, document, peak_table_text, stack_row
from llmd_bench.report.write import point_latest, write

__all__ = ["CELL_METRIC_COLUMNS", "PEAK_COLUMNS", "SIMULATED_BANNER", "STACK_HEADER", "Report", "ReportInput",
           "baseline_of", "build", "natural_key", "noise_floor_pct", "peak_table_text",
           "point_latest", "render_report", "stack_row", "write"]


def render_report(report: Report, plots: dict[str, bytes]) -> tuple[str, str]:
    """The report's Markdown and HTML, with these plots (name -> PNG), without writing anything."""

    doc = document(report, plots)
    return markdown.render(doc, report), html.render(doc, report)
