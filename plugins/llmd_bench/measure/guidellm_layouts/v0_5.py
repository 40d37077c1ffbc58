"""GuideLLM 0.5.3 and 0.5.4 reports (layout 1): the CLI's arguments in `args`, no `config`.

Layout: guidellm/benchmark/schemas/generative/report.py @v0.5.3 and @v0.5.4 (metadata.version 1,
`args` = BenchmarkGenerativeTextArgs, `benchmarks`); args: guidellm/benchmark/schemas/generative/entrypoints.py
(`profile` the rate type, `rate` the levels, `max_seconds`, `max_requests`, `warmup`, `cooldown`, `data`,
`random_seed`; `target` and `model` at the top). The two versions write the same layout; they differ only in
`sample_requests` (0.5.3 records 20 but saves every request, 0.5.4 records null).
Units as in 0.8: request_latency in seconds, time_to_first_token_ms / time_per_output_token_ms /
inter_token_latency_ms in milliseconds (guidellm/schemas/request_stats.py @v0.5.3, @v0.5.4).
"""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.guidellm_layouts.base import Layout, number
from llmd_bench.measure.guidellm_levels import Report, ValidityRules

# guidellm/scheduler/worker.py @v0.5.3-v0.6.0: a concurrent stream's `targeted_start` stays the time its first
# request was due instead of the time the stream became free (0.8.1's resolve_dequeued_target_start), so these
# averages grow through a level; observe/generator.start_lag_pct would read them as a saturated load generator.
_NOT_COMPARABLE = ("request_targeted_start_delay_avg", "resolve_targeted_start_delay_avg")


class V0_5(Layout):
    versions: tuple[str, ...] = ("0.5.4", "0.5.3")
    layout = 1

    def spec(self, doc: dict[str, Any]) -> dict[str, Any]:
        args = doc.get("args")
        return args if isinstance(args, dict) else {}

    def expected_duration(self, doc: dict[str, Any]) -> float | None:
        args = self.spec(doc)
        if args.get("max_requests") is not None:
            return None  # a request cap may end a level before its duration
        if args.get("warmup") is not None or args.get("cooldown") is not None:
            # the measured window is max_seconds less a warmup and cooldown GuideLLM sizes per level
            # (benchmark.py's warmup_duration/cooldown_duration): not judged rather than guessed
            return None
        return number(args.get("max_seconds"))

    def parse(self, doc: dict[str, Any], *, source: str, expected_duration_s: float | None,
              rules: ValidityRules) -> Report:
        report = super().parse(doc, source=source, expected_duration_s=expected_duration_s, rules=rules)
        for level in report.levels:
            scheduler = level.summary.get("scheduler_metrics")
            if isinstance(scheduler, dict):
                for key in _NOT_COMPARABLE:
                    scheduler.pop(key, None)
        return report


LAYOUT = V0_5()
