"""The GuideLLM report parser on real 0.8.1 reports, and the sweep's command line.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_guidellm_report.py.
"""

from __future__ import annotations

import pytest

from unit.test_guidellm_report import _check_levels_and_metrics


def test_todays_guidellm_writes_a_report_that_parses_as_the_committed_one(live_report):
    _check_levels_and_metrics(live_report)


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "not a GuideLLM report (no `metadata` object)"),
    ('"a string"', "not a GuideLLM report (no `metadata` object)"),
    ("null", "not a GuideLLM report"),
    (None, "is a directory; give the report files"),
])
def test_import_of_a_report_that_is_not_an_object_fails_cleanly(tmp_path, content, needle):
    """No traceback, the file named, and the results store never touched (no database is configured here)."""
    import subprocess

    from conftest import BIN

    target = tmp_path / "bad"
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    env = {k: v for k, v in __import__("os").environ.items() if k != "LLMD_BENCH_DB_URL"}
    env["LLMD_BENCH_DB_URL"] = "postgresql://nobody:x@127.0.0.1:1/none"  # any write attempt would fail loudly
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(target), "--model", "Qwen/Qwen3-8B", "--config",
                          "no-offload", "--llmd-version", "v0.4.0"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert needle in out.stderr and str(target) in out.stderr
    assert "unreachable" not in out.stderr  # refused before any database access
