"""Notifications: a real SMTP server and a local stand-in for a Slack webhook receive what the callbacks
send; off without connections; a send error is a warning; regressions against the previous run of the
same llm-d version are found, persisted with the report, and sent.

The callbacks are run the way Airflow runs them: the DAG's failure callback through the dag-processor's
own dispatch (`_execute_dag_callbacks`, with the supervisor answering the task-state query), compare's
success callback through the task runner's dispatch with a task instance's template context.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_notify.py.
"""

from __future__ import annotations

from types import SimpleNamespace


def test_a_backfilled_older_version_being_slower_is_not_a_regression():

    import pandas as pd

    from llmd_bench.report import Report

    row = {"model": "Qwen3-8B", "config": "llm-d-redis", "peak_output_tps": 900.0, "other_peak_output_tps": 1000.0,
           "change_pct": -10.0, "judgement": "REGRESSION"}
    cv = pd.DataFrame([row | {"version": "v0.4.0", "other_version": "v0.8.0"},    # backfilled older: expected
                       row | {"version": "v0.10.0", "other_version": "v0.8.0"}])  # newer and slower: a regression
    found = Report.regressions.fget(SimpleNamespace(cross_version=cv, previous_run=None))
    assert [(g["version"], g["other"]) for g in found] == [("v0.10.0", "v0.8.0")]
