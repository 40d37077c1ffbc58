"""Export to llm-d's Benchmark Report v0.2 and import back, against a real PostgreSQL results store: every file
validates against the JSON Schema in include/schemas/, its numbers are the store's in the schema's units, invalid
levels are left out with a note, a round trip keeps every key metric, and foreign files are refused by name.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_benchmark_report.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from integration.test_benchmark_report import (
    export,
    run_cli,
    stored_levels,
    stored_run,  # noqa: F401  (fixtures these tests request)
)


@pytest.mark.parametrize("make, needles", [
    (lambda doc, report: report.read_text(), ["report.json: not a Benchmark Report v0.2 (no `version` field; found "
                                              "top-level keys ['benchmarks'"]),
    (lambda doc, report: json.dumps({**doc, "version": "0.1"}), ["version '0.1' found; only '0.2' is read"]),
    (lambda doc, report: json.dumps([1, 2]), ["not a Benchmark Report v0.2 (found a list"]),
    (lambda doc, report: "{not json", ["not valid JSON"]),
    (lambda doc, report: json.dumps(_set(doc, ["results", "request_performance", "aggregate", "latency",
                                               "time_to_first_token", "units"], "ms/token")),
     ["not valid against the v0.2 schema: `results.request_performance.aggregate.latency.time_to_first_token.units`",
      "'ms/token' is not one of ['ms', 's']"]),
    (lambda doc, report: json.dumps(_set(doc, ["run", "colour"], "blue")),
     ["`run`: Additional properties are not allowed ('colour' was unexpected)"]),
    (lambda doc, report: json.dumps({**doc, "scenario": {"stack": [c for c in doc["scenario"]["stack"]
                                                                   if c["metadata"]["label"] != "llmd-bench"]}}),
     ["a v0.2 report without the `llmd-bench` stack component", "only reports written by `llmd-bench export"]),
])
def test_a_file_that_is_not_an_llmd_bench_benchmark_report_is_refused_by_name(stored_run, capsys, tmp_path, real_report,
                                                                              make, needles):
    out, _ = export(capsys, tmp_path)
    doc = json.loads(next(out.glob("*.json")).read_text())
    bad = tmp_path / "report.json"
    bad.write_text(make(doc, real_report))
    rc, stdout, err = run_cli(capsys, "import", "--format", "benchmark-report", str(bad), "--run-id", "never")
    assert rc == 1 and err.count("\n") == 1, err
    assert str(bad) in err
    for needle in needles:
        assert needle in err, err
    assert stored_levels(stored_run, "never") == {}  # nothing of a refused import is stored


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc
