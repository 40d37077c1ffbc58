"""Each level's latency percentiles as GuideLLM summarised them, read from the stored summary (level_results.summary
JSONB) in SQL: goodput under SLOs and the latency-against-throughput plot need p95, which no typed column holds, and
the report reads the levels without their summaries (~7 KiB each).

Where GuideLLM keeps them: a benchmark's metrics.<metric>.successful.percentiles.{p50,p90,p95,p99}
(guidellm/benchmark/schemas/metrics.py GenerativeMetrics and guidellm/schemas/base/statistics.py Percentiles @v0.8.1;
the same fields @v0.5.3-v0.6.0), kept by measure/guidellm_levels.compact_summary (_KEEP_PERCENTILES). Units as
GuideLLM writes them: time_to_first_token_ms and inter_token_latency_ms in ms, request_latency in seconds
(tests/fixtures/guidellm/0.8.1/report.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from llmd_bench.store.rows import factors_suffix

if TYPE_CHECKING:
    from sqlalchemy import Engine

# our short name -> GuideLLM's metric in the summary (units: ms, ms, s)
SUMMARY_METRICS = {"ttft_ms": "time_to_first_token_ms", "itl_ms": "inter_token_latency_ms",
                   "request_latency_s": "request_latency"}
PERCENTILES = ("p50", "p90", "p95", "p99")


def _column(metric: str, pct: str) -> str:
    return f"{metric}_{pct}"


class LevelLatencyRow(BaseModel):
    """One level of one cell x trial: its successful requests' latency percentiles (None where the summary has none)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    short_model: str
    stack_factors: str
    config: str
    config_factors: str
    trial: int
    concurrency: int
    ttft_ms_p50: float | None
    ttft_ms_p90: float | None
    ttft_ms_p95: float | None
    ttft_ms_p99: float | None
    itl_ms_p50: float | None
    itl_ms_p90: float | None
    itl_ms_p95: float | None
    itl_ms_p99: float | None
    request_latency_s_p50: float | None
    request_latency_s_p90: float | None
    request_latency_s_p95: float | None
    request_latency_s_p99: float | None

    @property
    def model_label(self) -> str:
        """As the report names the model (rows._Labelled.model_label)."""
        return self.short_model + factors_suffix(self.stack_factors)

    @property
    def config_label(self) -> str:
        return self.config + factors_suffix(self.config_factors)

    def percentile(self, metric: str, pct: str) -> float | None:
        value = getattr(self, _column(metric, pct))
        assert value is None or isinstance(value, float)
        return value


# jsonb_typeof guards a summary that holds something else than a number there (never cast text)
_PERCENTILE = ("CASE WHEN jsonb_typeof(l.summary #> '{{metrics,{name},successful,percentiles,{pct}}}') = 'number' "
               "THEN (l.summary #>> '{{metrics,{name},successful,percentiles,{pct}}}')::float END AS {column}")
LEVEL_LATENCY_SQL = f"""
SELECT c.short_model, c.stack_factors, c.config, c.config_factors, c.trial, l.concurrency,
       {', '.join(_PERCENTILE.format(name=name, pct=pct, column=_column(metric, pct))
                  for metric, name in SUMMARY_METRICS.items() for pct in PERCENTILES)}
FROM level_results l JOIN cells c ON c.id = l.cell_id
WHERE c.run_id = :run_pk
ORDER BY c.short_model, c.stack_factors, c.config, c.config_factors, c.trial, l.concurrency
"""


def level_latency(engine: Engine, run_pk: int) -> list[LevelLatencyRow]:
    """Every level of the run (its primary key `run_pk`, runs.id): the latency percentiles of its summary."""
    from sqlalchemy import text  # deferred: the report imports this module's row without loading sqlalchemy

    with engine.connect() as conn:
        return [LevelLatencyRow.model_validate(dict(r))
                for r in conn.execute(text(LEVEL_LATENCY_SQL), {"run_pk": run_pk}).mappings()]
