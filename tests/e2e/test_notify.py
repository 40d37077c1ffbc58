"""Notifications: a real SMTP server and a local stand-in for a Slack webhook receive what the callbacks
send; off without connections; a send error is a warning; regressions against the previous run of the
same llm-d version are found, persisted with the report, and sent.

The callbacks are run the way Airflow runs them: the DAG's failure callback through the dag-processor's
own dispatch (`_execute_dag_callbacks`, with the supervisor answering the task-state query), compare's
success callback through the task runner's dispatch with a task instance's template context.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_notify.py.
"""

from __future__ import annotations

import pytest

from integration.test_notify import (
    DAG_ID,
    RUN_ID,
    _stored_regressions,
    seed_two_weeks,
    store,  # noqa: F401  (fixtures these tests request)
)


@pytest.mark.parametrize("factor, expected", [(0.7, "REGRESSION"), (0.99, "within noise")])
def test_regression_against_the_previous_run_of_the_same_version(store, real_report, tmp_path, factor, expected):
    from llmd_bench.report.generate import generate_report

    seed_two_weeks(store, real_report, tmp_path, factor)
    report = generate_report(RUN_ID, tmp_path / "r", campaign=DAG_ID, store=True)
    prev = report.previous_run.set_index("config")
    assert set(prev["other_run"]) == {"week-1"}
    assert prev.loc["no-offload", "judgement"] == "within noise"
    assert prev.loc["llm-d-redis", "judgement"] == expected
    assert prev.loc["llm-d-redis", "change_pct"] == pytest.approx((factor - 1) * 100, abs=0.01)
    assert report.cross_version is None  # one llm-d version: that table has nothing to say
    stored = _stored_regressions(store)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Since the previous run" in md and (tmp_path / "r" / "previous_run.csv").exists()
    if expected == "REGRESSION":
        assert len(stored) == 1
        g = stored[0]
        assert (g["kind"], g["model"], g["config"], g["version"], g["other"], g["judgement"]) == (
            "previous run", "Qwen3-0.6B", "llm-d-redis", "v0.4.0", "week-1", "REGRESSION")
        assert g["change_pct"] == pytest.approx(-30, abs=0.01)
        assert "1 regression(s) beyond noise" in md
    else:
        assert stored == []
        assert "No regression beyond noise" in md.split("## Since the previous run")[1]
    # the first week has nothing earlier to be compared with
    first = generate_report("week-1", tmp_path / "w1", campaign=DAG_ID, store=True)
    assert first.previous_run is None and _stored_regressions(store, "week-1") == []
