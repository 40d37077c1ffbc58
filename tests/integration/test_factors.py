"""Factors: cells are models x configurations x factor values (replicas, tensor parallel size, memory regime,
offload size); each cell runs, renders, stores and reports with its own values.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_factors.py.
"""

from __future__ import annotations

import subprocess

from conftest import BIN, write_campaign
from unit.test_factors import _pressure_campaign


def test_step_cli_names_a_cell_by_its_factors_and_refuses_others(campaigns_dir, results_dir):
    write_campaign(campaigns_dir, _pressure_campaign())
    base = [str(BIN / "llmd-bench"), "render", "--campaign", "tiny", "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
            "--out", str(results_dir / "m")]
    ok = subprocess.run(base + ["--factors", "memory_regime=pressure"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(base, capture_output=True, text=True)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "['memory_regime=default', 'memory_regime=pressure']" in missing.stderr
    wrong = subprocess.run(base + ["--factors", "memory_regime=tight"], capture_output=True, text=True)
    assert "memory_regime=tight is not one of campaign llmd_tiny's values ['default', 'pressure']" in wrong.stderr
