"""The noise model (noise.py) on synthetic histories, and the judgements built on it (analysis.judge).

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_noise.py.
"""

from __future__ import annotations

from unit.test_noise import QUIET, _seed


def test_a_quiet_history_lets_one_trial_show_a_3_percent_drop(db_url, real_report, tmp_path, monkeypatch):
    from llmd_bench.report.generate import generate_report

    _seed(db_url, real_report, tmp_path, QUIET, 0.97)
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    report = generate_report("now", tmp_path / "r", campaign="noisy")
    peaks = report.peaks.set_index("config")
    assert int(peaks.loc["llm-d-redis", "history_n"]) == len(QUIET)
    assert float(peaks.loc["llm-d-redis", "history_sd"]) < 0.005
    cmp = report.comparisons.set_index("config").loc["llm-d-redis"]
    assert cmp["judgement"] == "lower" and "run-to-run spread (8 and 8 peaks)" in cmp["basis"], cmp["basis"]
    prev = report.previous_run.set_index("config")
    assert prev.loc["llm-d-redis", "judgement"] == "REGRESSION" and "run-to-run spread" in prev.loc["llm-d-redis", "basis"]
    assert prev.loc["no-offload", "judgement"] == "within noise"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Run-to-run spread of each cell's peak from its earlier runs" in md


def test_a_suspect_peak_level_gets_no_verdict_and_pages_nobody(db_url, real_report, tmp_path, monkeypatch):
    from sqlalchemy import text

    from llmd_bench.report.generate import generate_report
    from llmd_bench.store.db import make_engine

    _seed(db_url, real_report, tmp_path, QUIET, 0.7)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("""UPDATE level_results l SET suspect_reason = 'load generator saturated (test)'
                             FROM cells c JOIN runs r ON r.id = c.run_id
                             WHERE l.cell_id = c.id AND r.dag_run_id = 'now' AND c.config = 'llm-d-redis'"""))
    engine.dispose()
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    report = generate_report("now", tmp_path / "r", campaign="noisy")
    cmp = report.comparisons.set_index("config").loc["llm-d-redis"]
    assert cmp["judgement"] == "no verdict" and "load generator saturated (test)" in cmp["basis"]
    assert report.previous_run.set_index("config").loc["llm-d-redis", "judgement"] == "no verdict"
    assert report.regressions == []
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Peaks measured at a suspect level" in md
    assert "Qwen3-0.6B: no verdict for llm-d-redis: a peak was measured at a suspect level" in md
    assert "no configuration differs" not in md  # never "no difference" where nothing was judged
