"""Model-server metrics: scrape Prometheus text from each replica's /metrics and aggregate per level.

Counters are summed over the replicas and differenced across the level's window; gauges are averaged.
A server without the endpoint (GuideLLM's mock server has none) yields `not available`, never a value.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

# vLLM metric -> (kind, short name used in the store and report)
VLLM_METRICS = {
    "vllm:prefix_cache_queries_total": ("counter", "prefix_cache_queries"),
    "vllm:prefix_cache_hits_total": ("counter", "prefix_cache_hits"),
    "vllm:external_prefix_cache_queries_total": ("counter", "external_prefix_cache_queries"),
    "vllm:external_prefix_cache_hits_total": ("counter", "external_prefix_cache_hits"),
    "vllm:num_preemptions_total": ("counter", "preemptions"),
    "vllm:kv_cache_usage_perc": ("gauge", "kv_cache_usage_perc"),
    "vllm:num_requests_running": ("gauge", "requests_running"),
    "vllm:num_requests_waiting": ("gauge", "requests_waiting"),
}
# The EPP's KV-block index (llm-d-kv-cache; registered when kvBlockIndexConfig.enableMetrics is true).
EPP_METRICS = {
    "kvcache_index_admissions_total": ("counter", "index_admissions"),
    "kvcache_index_evictions_total": ("counter", "index_evictions"),
    "kvcache_index_lookup_requests_total": ("counter", "index_lookups"),
    "kvcache_index_lookup_hits_total": ("counter", "index_lookup_hits"),
}
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse(text: str, known: dict[str, tuple[str, str]] = VLLM_METRICS) -> dict[str, float]:
    """Sum every sample of each known metric over its label sets (engines, models)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        name = m.group(1)
        if name not in known:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        totals[name] = totals.get(name, 0.0) + value
    return totals


def fetch_text(url: str, timeout_s: float = 5.0) -> tuple[str | None, str | None]:
    """(the body at `url`, None) or (None, why it could not be read): a server's whole /metrics text."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.read().decode(errors="replace"), None
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code} at {url}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{exc} at {url}"


def scrape(url: str, timeout_s: float = 3.0, known: dict[str, tuple[str, str]] = VLLM_METRICS) -> dict[str, float] | str:
    """Known metrics at `url`, or the reason they are not available."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return f"not available (HTTP {exc.code} at {url})"
    except (urllib.error.URLError, OSError) as exc:
        return f"not available ({exc} at {url})"
    values = parse(body, known)
    kind = "vLLM" if known is VLLM_METRICS else "KV-index"
    return values if values else f"not available (no {kind} metrics at {url})"


def per_level(samples: list[dict[str, Any]], windows: list[dict[str, Any]],
              known: dict[str, tuple[str, str]] = VLLM_METRICS) -> list[dict[str, Any]]:
    """samples: [{"time": t, "replica": url, "values": {...}}]. One summary per level window."""
    out = []
    for w in windows:
        row: dict[str, Any] = {"concurrency": w["concurrency"], "trial": w.get("trial", 1)}
        for metric, (kind, short) in known.items():
            if kind == "counter":
                row[short] = _counter_delta(samples, metric, w["start"], w["end"])
            else:
                vals = [s["values"][metric] for s in samples
                        if w["start"] <= s["time"] <= w["end"] and metric in s["values"]]
                row[short] = sum(vals) / len(vals) if vals else None
        if known is VLLM_METRICS:
            q, h = row.get("prefix_cache_queries"), row.get("prefix_cache_hits")
            row["prefix_cache_hit_rate"] = h / q if q and h is not None else None
        out.append(row)
    return out


def _counter_delta(samples: list[dict[str, Any]], metric: str, start: float, end: float) -> float | None:
    """Sum over replicas of how much the counter grew from the last sample before the window's start to
    the last sample up to its end; a drop is a restart (the counter began again from 0), as in PromQL."""
    total, seen = 0.0, False
    for replica in {s["replica"] for s in samples}:
        series = sorted((s["time"], s["values"][metric]) for s in samples if s["replica"] == replica and metric in s["values"])
        if not series:
            continue
        before = [i for i, (t, _) in enumerate(series) if t <= start]
        upto = [i for i, (t, _) in enumerate(series) if t <= end]
        first = before[-1] if before else 0
        last = upto[-1] if upto else len(series) - 1
        for (_, prev), (_, cur) in zip(series[first:last], series[first + 1:last + 1]):
            total += cur - prev if cur >= prev else cur
        seen = True
    return total if seen else None


def counter_totals(samples: list[dict[str, Any]], known: dict[str, tuple[str, str]]) -> dict[str, float | None]:
    """How much each counter moved over the whole sampling period."""
    if not samples:
        return {short: None for _, short in known.values()}
    start, end = min(s["time"] for s in samples), max(s["time"] for s in samples)
    return {short: _counter_delta(samples, metric, start - 1e-9, end) if kind == "counter" else None
            for metric, (kind, short) in known.items()}
