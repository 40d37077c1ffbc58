"""Evidence: real pmcd/pmlogger archives summarised per level, model-server metrics scraped from a local
server that serves real vLLM metric text, real Redis/Valkey index stats, and the verdict on each outcome."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmd_bench.measure.observe import pcp, prometheus

VLLM_TEXT = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="Qwen/Qwen3-8B"}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="Qwen/Qwen3-8B"}} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="Qwen/Qwen3-8B"}} 0.42
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0",model_name="Qwen/Qwen3-8B"}} {queries}
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0",model_name="Qwen/Qwen3-8B"}} {hits}
# TYPE vllm:external_prefix_cache_queries_total counter
vllm:external_prefix_cache_queries_total{{engine="0",model_name="Qwen/Qwen3-8B"}} {ext}
# TYPE vllm:external_prefix_cache_hits_total counter
vllm:external_prefix_cache_hits_total{{engine="0",model_name="Qwen/Qwen3-8B"}} {ext_hits}
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",model_name="Qwen/Qwen3-8B"}} 3.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="Qwen/Qwen3-8B"}} 123456.0
"""


def _serve(text_for_scrape):
    """A local HTTP server answering /metrics with text_for_scrape(n) on the n-th scrape."""
    class Handler(BaseHTTPRequestHandler):
        scrapes = 0

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            Handler.scrapes += 1
            body = text_for_scrape(Handler.scrapes).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/metrics"


def test_parse_sums_label_sets_and_ignores_unknown_metrics():
    text = VLLM_TEXT.format(running=2, queries=10, hits=5, ext=0, ext_hits=0)
    text += 'vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen3-8B"} 30\n'
    values = prometheus.parse(text)
    assert values["vllm:prefix_cache_queries_total"] == 40
    assert values["vllm:kv_cache_usage_perc"] == 0.42
    assert "vllm:generation_tokens_total" not in values


EPP_TEXT = """# HELP kvcache_index_admissions_total Total number of KV-block admissions
# TYPE kvcache_index_admissions_total counter
kvcache_index_admissions_total {admissions}
# TYPE kvcache_index_evictions_total counter
kvcache_index_evictions_total 0
# TYPE kvcache_index_lookup_requests_total counter
kvcache_index_lookup_requests_total {lookups}
# TYPE kvcache_index_lookup_hits_total counter
kvcache_index_lookup_hits_total {hits}
# TYPE kvcache_index_lookup_latency_seconds histogram
kvcache_index_lookup_latency_seconds_bucket{{le="0.001"}} 10
# TYPE inference_pool_ready_pods gauge
inference_pool_ready_pods{{name="pool"}} 2
"""


def test_counters_that_restart_count_from_zero_and_nodes_without_data_do_not_blank_the_others():
    # a replica restarts in the middle of the window: 100 -> 160, restart, 0 -> 30 = 90, not 30 - 100
    samples = [{"time": t, "replica": "r", "values": {"vllm:prefix_cache_queries_total": v}}
               for t, v in ((0, 100.0), (1, 160.0), (2, 10.0), (3, 30.0))]
    (row,) = prometheus.per_level(samples, [{"concurrency": 1, "start": 0.5, "end": 3.5}])
    assert row["prefix_cache_queries"] == 160 - 100 + 10 + 20

    empty = [{"concurrency": 1, "trial": 1, "samples": 0, "cpu_util_pct": None, "mem_used_bytes": None}]
    full = [{"concurrency": 1, "trial": 1, "samples": 4, "cpu_util_pct": 50.0, "mem_used_bytes": 2e9}]
    (combined,) = pcp.combine_nodes({"gpu-node-0": empty, "gpu-node-1": full})
    assert combined["cpu_util_pct"] == 50.0 and combined["mem_used_bytes"] == 2e9 and combined["nodes"] == 1
    (both,) = pcp.combine_nodes({"a": full, "b": full})
    assert both["cpu_util_pct"] == 50.0 and both["mem_used_bytes"] == 4e9 and both["nodes"] == 2


def test_saturated_levels_are_suspect_with_the_reason():
    from llmd_bench.measure.observe import generator

    # GuideLLM's own scheduler timing (scheduler_metrics of a 0.8.1 report): requests sent late by 30 % of
    # their time is a saturated generator; 4 % is its ordinary overhead; -1 means it had no estimate
    late = {"scheduler_metrics": {"request_targeted_start_delay_avg": 0.12, "request_time_avg": 0.40}}
    fine = {"scheduler_metrics": {"request_targeted_start_delay_avg": 0.016, "request_time_avg": 0.40}}
    unknown = {"scheduler_metrics": {"request_targeted_start_delay_avg": -1.0, "request_time_avg": 0.40}}
    assert generator.start_lag_pct(late) == 30.0 and generator.start_lag_pct(fine) == 4.0
    assert generator.start_lag_pct(unknown) is None and generator.start_lag_pct({}) is None
    assert generator.suspect_reason(30.0) == (
        "load generator saturated (it sent requests 30 % of a request's time late; limit 25 %)")
    assert generator.suspect_reason(4.0) is None and generator.suspect_reason(None) is None


def test_a_real_guidellm_run_within_the_generators_capacity_is_not_suspect(real_report):
    """The session's real GuideLLM report (1 and 4 streams against the mock) is within capacity: nothing suspect."""
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.measure.observe import generator
    from llmd_bench.steps.load_results import suspect_levels

    report = parse_report_file(real_report)
    levels = suspect_levels([(1, report)])
    assert [lv["concurrency"] for lv in levels] == [lv.concurrency for lv in report.levels]
    assert all(lv["start_lag_pct"] is not None and lv["start_lag_pct"] < generator.START_LAG_LIMIT_PCT
               for lv in levels), levels
    assert all(lv["reason"] is None for lv in levels)
