"""The rows of the trends over a campaign's runs (store/read.py campaign_trends), typed like store/rows.py's."""

from __future__ import annotations

from datetime import datetime

from llmd_bench.store.rows import _Labelled

# The goodput of a cell in a stored report's peak table and the SLO it was measured under (report/analysis.py's peak
# table columns, stored as reports.peak_table by report/generate.py)
GOODPUT_KEY = "goodput_output_tps"
GOODPUT_SLO_KEY = "goodput_slo"


class TrendPeakRow(_Labelled):
    """Per run x cell of a campaign, up to a run (is_current) and among the runs that measured what it measured: the
    peak output tokens/s over the run's trials, the goodput its stored report recorded and the SLO it met (None when
    it has none), and whether a trial's peak level was suspect. campaign_runs: the campaign's runs up to that run."""

    run_pk: int
    dag_run_id: str
    llmd_version: str
    t: datetime
    is_current: bool
    samples: int
    peak_output_tps: float
    peak_std: float | None
    goodput_output_tps: float | None
    goodput_slo: str | None
    suspect: bool
    campaign_runs: int
