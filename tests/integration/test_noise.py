"""The noise model (noise.py) on synthetic histories, and the judgements built on it (analysis.judge).

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_noise.py.
"""

from __future__ import annotations

from unit.test_noise import _seed


def test_without_history_a_3_percent_drop_is_within_the_campaign_floor(db_url, real_report, tmp_path, monkeypatch):
    from llmd_bench.report.generate import generate_report

    _seed(db_url, real_report, tmp_path, [1.0], 0.97)  # one earlier run: too short a history
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    report = generate_report("now", tmp_path / "r", campaign="noisy")
    cmp = report.comparisons.set_index("config").loc["llm-d-redis"]
    assert (cmp["judgement"], cmp["basis"]) == ("within noise", "1 trial; campaign noise_floor_pct 5 % (no history)")
    prev = report.previous_run.set_index("config").loc["llm-d-redis"]
    assert prev["judgement"] == "within noise" and report.regressions == []
