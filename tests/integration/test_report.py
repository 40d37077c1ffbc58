"""The comparison report: the published peak table recomputed from per-level data, noise judgement,
edge cases, CSV round trip, and the HTML in a real browser.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_report.py.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import BIN


@pytest.mark.parametrize("content, needle", [
    ("model,config,concurrency\nM,no-offload,1\n", "missing column(s) ['output_tps_mean'"),
    ("model,config,concurrency,output_tps_mean,ttft_mean_ms,tpot_mean_ms,requests_successful,requests_errored\n"
     "M,no-offload,-1,5,1,1,1,0\n", "`concurrency` must hold integers >= 1"),
])
def test_bad_metrics_csv_is_rejected_clearly(tmp_path, content, needle):
    (tmp_path / "M_no-offload_metrics.csv").write_text(content)
    out = subprocess.run([str(BIN / "llmd-bench"), "report", "--from-csv", str(tmp_path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and needle in out.stderr and "M_no-offload_metrics.csv" in out.stderr
    assert not (tmp_path / "o").exists()
