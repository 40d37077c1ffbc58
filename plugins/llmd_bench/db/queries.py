"""Read side of the results store: aggregated in SQL, never by pulling every row into pandas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

LATEST_RUN_PEAKS = text("""
WITH latest AS (
    SELECT id FROM runs WHERE campaign = :campaign ORDER BY created_at DESC, id DESC LIMIT 1
)
SELECT DISTINCT ON (c.id)
       c.model, c.short_model, c.config, c.trial, c.status,
       l.concurrency AS optimal_concurrency, l.output_tps_mean AS peak_output_tps,
       l.ttft_ms_mean, l.tpot_ms_mean, l.output_tps_std
FROM cells c
JOIN latest ON c.run_id = latest.id
LEFT JOIN level_results l ON l.cell_id = c.id AND l.valid AND l.output_tps_mean IS NOT NULL
ORDER BY c.id, l.output_tps_mean DESC NULLS LAST, l.concurrency ASC
""")


def latest_run_peaks(session: Session, campaign: str) -> list[dict[str, Any]]:
    """Per cell of the campaign's latest run: the valid level with the highest mean output tokens/s."""
    return [dict(r._mapping) for r in session.execute(LATEST_RUN_PEAKS, {"campaign": campaign})]
