"""Property-based: the report parser on mutated real GuideLLM reports either loads them or raises the
project's own ReportError, never anything else (no KeyError, TypeError, ... reaching a user)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmd_bench.measure.guidellm_report import parse_report_file
from llmd_bench.model.errors import ReportError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.999), junk=st.binary(max_size=16))
def test_truncated_or_garbled_files_raise_report_error(real_report, tmp_path_factory, cut, junk):
    raw = real_report.read_bytes()
    path = tmp_path_factory.mktemp("cut") / "r.json"
    path.write_bytes(raw[: int(len(raw) * cut)] + junk)
    with pytest.raises(ReportError):
        parse_report_file(path)
