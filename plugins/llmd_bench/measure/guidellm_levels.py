"""What a GuideLLM report holds, read the same way for every layout: the levels (LevelResult), the report
(Report), the validity rules, and the parsing and judging of `benchmarks` entries that every layout
(guidellm_layouts/) shares. Reading a report file and picking its layout: guidellm_report.py."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from llmd_bench.model.errors import ReportError

# metric name in the report -> short name used in tables and the database
METRICS = {
    "output_tokens_per_second": "output_tps",
    "requests_per_second": "requests_per_s",
    "time_to_first_token_ms": "ttft_ms",
    "time_per_output_token_ms": "tpot_ms",
    "inter_token_latency_ms": "itl_ms",
    "request_latency": "request_latency_s",
}
STATS = ("mean", "median", "p90", "p99", "std_dev")

# Metrics every value of which is a rate, a latency, a token or iteration count or a concurrency, so never negative:
# GenerativeMetrics in guidellm/benchmark/schemas/metrics.py @v0.8.1 and in
# guidellm/benchmark/schemas/generative/metrics.py @v0.5.3, @v0.5.4, @v0.6.0 (the same fields in all four).
# Delays (request_dispatch_delay, turn_*_delay) and round-trip differences are left out: they are differences of
# two clocks and may be negative.
NON_NEGATIVE_METRICS = (
    "requests_per_second", "request_concurrency", "request_latency", "request_streaming_iterations_count",
    "prompt_token_count", "output_token_count", "total_token_count", "time_to_first_token_ms",
    "time_per_output_token_ms", "inter_token_latency_ms", "prompt_tokens_per_second", "output_tokens_per_second",
    "tokens_per_second", "output_tokens_per_iteration", "iter_tokens_per_iteration")
_OUTCOMES = ("successful", "errored", "incomplete", "total")  # StatusDistributionSummary's four summaries
_SCALAR_STATS = ("mean", "median", "mode", "variance", "std_dev", "min", "max", "count", "total_sum")
# guidellm/schemas/statistics.py @v0.8.1 (and @v0.5.3-v0.6.0, unchanged): DistributionSummary.from_pdf takes values
# sorted ascending, min and max are the first and last, and every percentile (Percentiles.from_pdf: np.searchsorted
# on the cumulative probabilities) is one of those values; so min <= p001 <= ... <= p999 <= max, and median = p50.
PERCENTILE_ORDER = ("p001", "p01", "p05", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p999")


@dataclass(frozen=True)
class ValidityRules:
    max_error_ratio: float = 0.05
    min_successful: int = 5
    min_duration_ratio: float = 0.95


@dataclass
class LevelResult:
    concurrency: int
    start: float
    end: float
    duration_s: float
    requests_successful: int
    requests_errored: int
    requests_incomplete: int
    # short metric -> stat -> value, successful requests only (the published method)
    metrics: dict[str, dict[str, float | None]]
    summary: dict[str, Any] = field(repr=False, default_factory=dict)
    invalid_reason: str | None = None
    requests_total: int | None = None  # GuideLLM's own count of requests made, when it gives one

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None

    def value(self, metric: str, stat: str = "mean") -> float | None:
        return self.metrics.get(metric, {}).get(stat)


@dataclass
class Report:
    guidellm_version: str
    levels: list[LevelResult]
    spec: dict[str, Any] = field(repr=False, default_factory=dict)

    def level(self, concurrency: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)


def _get(obj: Any, dotted: str, source: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ReportError(f"GuideLLM report {source}: missing `{dotted}`")
        cur = cur[part]
    return cur


def _number(value: Any, where: str, source: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"GuideLLM report {source}: `{where}` is {value!r}, expected a number")
    try:
        number = float(value)  # an integer past the float range (JSON allows any length) is no measurement either
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        shown = value if isinstance(value, float) else "an integer past the float range"
        raise ReportError(f"GuideLLM report {source}: `{where}` is not finite ({shown})")
    return number


def _count(value: Any, where: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"GuideLLM report {source}: `{where}` is {value!r}, expected a count >= 0")
    return value


def _check_possible(bench: dict[str, Any], where: str, source: str) -> None:
    """Refuse a level whose numbers GuideLLM cannot have written: a negative or non-finite rate, latency, token count
    or concurrency (NON_NEGATIVE_METRICS, every request outcome), or a distribution whose percentiles are out of
    order. Such a report is broken or edited, not a measurement: it is refused whole, so nothing of it is stored."""
    metrics = bench.get("metrics")
    if not isinstance(metrics, dict):
        return  # the caller names the missing block
    for name in NON_NEGATIVE_METRICS:
        summary = metrics.get(name)
        for outcome in _OUTCOMES:
            dist = summary.get(outcome) if isinstance(summary, dict) else None
            if not isinstance(dist, dict):
                continue
            at = f"{where}.metrics.{name}.{outcome}"
            pct = dist.get("percentiles")
            if pct is not None and not isinstance(pct, dict):
                raise ReportError(f"GuideLLM report {source}: `{at}.percentiles` is not an object")
            values = {stat: _number(dist.get(stat), f"{at}.{stat}", source) for stat in _SCALAR_STATS}
            values |= {f"percentiles.{p}": _number((pct or {}).get(p), f"{at}.percentiles.{p}", source)
                       for p in PERCENTILE_ORDER}
            for key, value in values.items():
                if value is not None and value < 0:
                    raise ReportError(f"GuideLLM report {source}: `{at}.{key}` is {value!r}; impossible: {name} is "
                                      "never negative")
            # min <= p001 <= ... <= p999 <= max, and the median within min and max
            chain = ["min", *(f"percentiles.{p}" for p in PERCENTILE_ORDER), "max"]
            known = [(key, value) for key in chain if (value := values[key]) is not None]
            for (low_key, low), (high_key, high) in itertools.pairwise(known):
                if low > high:
                    raise ReportError(f"GuideLLM report {source}: `{at}.{low_key}` is {low!r}, above `{at}.{high_key}` "
                                      f"{high!r}: percentiles out of order (GuideLLM's are min <= p001 <= ... <= p50 <= "
                                      "... <= p999 <= max)")
            median, lowest, highest = values["median"], values["min"], values["max"]
            if median is not None and ((lowest is not None and median < lowest)
                                       or (highest is not None and median > highest)):
                raise ReportError(f"GuideLLM report {source}: `{at}.median` is {median!r}, outside its min {lowest!r} "
                                  f"and max {highest!r}")


def parse_levels(doc: dict[str, Any], source: str, expected_duration_s: float | None,
                 rules: ValidityRules) -> list[LevelResult]:
    """The levels of `doc["benchmarks"]`, each judged. One benchmark entry's layout is the same from GuideLLM 0.5.3
    to 0.8.1 for everything read here (config.strategy, metrics.request_totals, the six metrics' `successful`
    distributions, start_time/end_time/duration): guidellm/benchmark/schemas/generative/{benchmark,metrics}.py
    @v0.5.3-v0.6.0, guidellm/benchmark/schemas/{benchmark,metrics}.py @v0.8.1."""
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise ReportError(f"GuideLLM report {source}: no benchmarks (the run produced no level)")
    levels = []
    seen: set[int] = set()
    for i, bench in enumerate(benchmarks):
        level = _parse_level(bench, i, source, expected_duration_s, rules)
        if level.concurrency in seen:
            raise ReportError(f"GuideLLM report {source}: concurrency {level.concurrency} appears twice")
        seen.add(level.concurrency)
        levels.append(level)
    return levels


def _parse_level(bench: Any, i: int, source: str, expected_duration_s: float | None,
                 rules: ValidityRules) -> LevelResult:
    where = f"benchmarks[{i}]"
    if not isinstance(bench, dict):
        raise ReportError(f"GuideLLM report {source}: `{where}` is not an object")
    strategy = _get(bench, "config.strategy", f"{source} {where}")
    kind = strategy.get("type_") if isinstance(strategy, dict) else strategy
    if kind != "concurrent":
        raise ReportError(f"GuideLLM report {source}: `{where}` is not a concurrent-profile level (strategy {kind!r})")
    concurrency = _count(strategy.get("streams"), f"{where}.config.strategy.streams", source)
    # from here on every message names the level as well as the file
    lsrc = f"{source} (level at concurrency {concurrency})"
    _check_possible(bench, where, lsrc)
    totals = _get(bench, "metrics.request_totals", f"{lsrc} {where}")
    successful = _count(totals.get("successful") if isinstance(totals, dict) else None,
                        f"{where}.metrics.request_totals.successful", lsrc)
    errored = _count(totals.get("errored"), f"{where}.metrics.request_totals.errored", lsrc)
    incomplete = _count(totals.get("incomplete"), f"{where}.metrics.request_totals.incomplete", lsrc)
    metrics: dict[str, dict[str, float | None]] = {}
    for name, short in METRICS.items():
        dist = _get(bench, f"metrics.{name}.successful", f"{lsrc} {where}")
        if not isinstance(dist, dict):
            raise ReportError(f"GuideLLM report {lsrc}: `{where}.metrics.{name}.successful` is not an object")
        pct = dist.get("percentiles")
        if pct is None:
            pct = {}
        elif not isinstance(pct, dict):
            raise ReportError(f"GuideLLM report {lsrc}: `{where}.metrics.{name}.successful.percentiles` "
                              "is not an object")
        metrics[short] = {
            "mean": _number(dist.get("mean"), f"{where}.metrics.{name}.successful.mean", lsrc),
            "median": _number(dist.get("median"), f"{where}.metrics.{name}.successful.median", lsrc),
            "p90": _number(pct.get("p90"), f"{where}.metrics.{name}.successful.percentiles.p90", lsrc),
            "p99": _number(pct.get("p99"), f"{where}.metrics.{name}.successful.percentiles.p99", lsrc),
            "std_dev": _number(dist.get("std_dev"), f"{where}.metrics.{name}.successful.std_dev", lsrc),
        }
    start = _number(bench.get("start_time"), f"{where}.start_time", lsrc)
    end = _number(bench.get("end_time"), f"{where}.end_time", lsrc)
    duration = _number(bench.get("duration"), f"{where}.duration", lsrc)
    if start is None or end is None or duration is None:
        raise ReportError(f"GuideLLM report {lsrc}: `{where}` has no start_time/end_time/duration")
    summary = compact_summary(bench)
    total = totals.get("total")
    level = LevelResult(concurrency, start, end, duration, successful, errored, incomplete, metrics, summary,
                        requests_total=None if total is None else
                        _count(total, f"{where}.metrics.request_totals.total", lsrc))
    level.invalid_reason = judge_level(level, expected_duration_s, rules)
    return level


def judge_level(level: LevelResult, expected_duration_s: float | None, rules: ValidityRules) -> str | None:
    """Why a level cannot be trusted, or None. Reasons are written for the report reader."""
    reasons = []
    finished = level.requests_successful + level.requests_errored
    if finished and level.requests_errored / finished > rules.max_error_ratio:
        reasons.append(f"error ratio {level.requests_errored / finished:.1%} > {rules.max_error_ratio:.0%}")
    # At most `concurrency` requests can legitimately be in flight when the level's window closes.
    if level.requests_incomplete > level.concurrency:
        reasons.append(f"{level.requests_incomplete} incomplete requests > concurrency {level.concurrency}")
    if level.requests_successful < rules.min_successful:
        reasons.append(f"only {level.requests_successful} successful requests (< {rules.min_successful})")
    if expected_duration_s and level.duration_s < expected_duration_s * rules.min_duration_ratio:
        reasons.append(f"ran {level.duration_s:.1f} s of the {expected_duration_s:g} s asked")
    if level.value("output_tps") is None:
        reasons.append("no output tokens/s for successful requests")
    # a window that ends before it starts (a negative rate or latency never gets here: _check_possible refuses the
    # whole report)
    if level.end < level.start or level.duration_s < 0:
        reasons.append(f"impossible window: start {level.start}, end {level.end}, duration {level.duration_s}")
    elif level.duration_s > (level.end - level.start) + 1.0:
        reasons.append(f"impossible window: a duration of {level.duration_s:g} s in a window of "
                       f"{level.end - level.start:g} s")
    counted = level.requests_successful + level.requests_errored + level.requests_incomplete
    if level.requests_total is not None and counted > level.requests_total:
        reasons.append(f"impossible counts: {counted} successful, errored and incomplete requests of "
                       f"{level.requests_total} made")
    return "; ".join(reasons) or None


# What a level keeps from GuideLLM's summary in the results store: every metric's scalar statistics and
# headline percentiles for each request outcome. The full report (with per-turn and per-modality
# breakdowns and the per-request records) stays in the results folder, referenced by path and sha256.
# mode (of a continuous latency), total_sum (mean x count) and mean_ci (from mean, std_dev and count) are
# left to the report file: each row's JSONB is what a 10,000-row load spends its time on.
_KEEP_STATS = ("mean", "median", "std_dev", "min", "max", "count")
_KEEP_PERCENTILES = ("p50", "p90", "p95", "p99")
_SKIP_METRICS = {"text", "image", "video", "audio", "turns", "tool_call"}
_KEEP_TOP = ("type_", "start_time", "end_time", "duration", "warmup_duration", "cooldown_duration", "warnings",
             "scheduler_metrics")


def _round(value: Any) -> Any:
    # 6 significant digits in the JSONB copy; the typed columns keep full precision.
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _compact_distribution(dist: Any) -> Any:
    if not isinstance(dist, dict):
        return dist
    out = {k: _round(dist[k]) for k in _KEEP_STATS if dist.get(k) is not None}
    pct = dist.get("percentiles")
    if isinstance(pct, dict):
        out["percentiles"] = {k: _round(pct[k]) for k in _KEEP_PERCENTILES if k in pct}
    return out


def _compact_tree(node: Any) -> Any:
    if isinstance(node, dict):
        if "percentiles" in node:
            return _compact_distribution(node)
        return {k: _compact_tree(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_compact_tree(v) for v in node]
    return node  # scalars outside distributions (timestamps among them) stay exact


def compact_summary(bench: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {k: _compact_tree(bench[k]) for k in _KEEP_TOP if k in bench}
    config = bench.get("config")
    if not isinstance(config, dict):
        config = {}
    summary["config"] = {k: config[k] for k in ("strategy", "constraints", "run_id", "run_index") if k in config}
    metrics = bench.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {}
    compact: dict[str, Any] = {}
    for name, value in metrics.items():
        if name in _SKIP_METRICS:
            continue
        if isinstance(value, dict) and isinstance(value.get("successful"), dict):
            # Successful requests in full (the published method uses them); errored and incomplete
            # ones by count and mean where there are any; `total` is left to the report file.
            entry = {"successful": _compact_distribution(value.get("successful"))}
            for outcome in ("errored", "incomplete"):
                dist = value.get(outcome)
                if isinstance(dist, dict) and dist.get("count"):
                    entry[outcome] = {"count": dist["count"], "mean": _round(dist.get("mean"))}
            compact[name] = entry
        else:
            compact[name] = value
    summary["metrics"] = compact
    return summary
