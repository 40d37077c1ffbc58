"""Property-based: the report parser on mutated real GuideLLM reports either loads them or raises the
project's own ReportError, never anything else (no KeyError, TypeError, ... reaching a user).

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_report_properties.py.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmd_bench.measure.guidellm_report import parse_report
from llmd_bench.model.errors import ReportError
from unit.test_report_properties import json_values


@pytest.fixture(scope="module")
def base_doc(real_report):
    doc = json.loads(real_report.read_text())
    for b in doc["benchmarks"]:
        b.pop("requests", None)  # the parser never reads per-request records; keep examples small
    return doc


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _apply(doc, path, action, value):
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if action == "delete":
        del parent[key]
    else:
        parent[key] = value
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_reports_load_or_raise_report_error(base_doc, data):
    doc = copy.deepcopy(base_doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["delete", "replace"]))
        doc = _apply(doc, path, action, data.draw(json_values))
    try:
        report = parse_report(doc, source="mutated.json")
    except ReportError:
        return
    for lv in report.levels:
        assert isinstance(lv.concurrency, int) and lv.concurrency >= 0
        assert lv.valid or lv.invalid_reason
