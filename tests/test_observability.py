"""Evidence: real pmcd/pmlogger archives summarised per level, model-server metrics scraped from a local
server that serves real vLLM metric text, real Redis/Valkey index stats, and the verdict on each outcome."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import BIN, tiny_campaign, write_campaign
from llmd_bench.measure import processes
from llmd_bench.measure.cell_folder import GENERATOR_CPU_FILE
from llmd_bench.measure.observe import kv_index, pcp, prometheus, verdict
from llmd_bench.measure.observe.sampler import Sampler, read

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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/metrics"


class FakeVllm:
    """A local vLLM /metrics whose counters grow with each scrape, like a busy server."""

    def __init__(self, offload_moves: bool) -> None:
        self.server, metrics_url = _serve(lambda n: VLLM_TEXT.format(
            running=4.0, queries=1000.0 * n, hits=750.0 * n, ext=(100.0 * n if offload_moves else 0.0),
            ext_hits=(60.0 * n if offload_moves else 0.0)))
        self.url = metrics_url.removesuffix("/metrics")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_parse_sums_label_sets_and_ignores_unknown_metrics():
    text = VLLM_TEXT.format(running=2, queries=10, hits=5, ext=0, ext_hits=0)
    text += 'vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen3-8B"} 30\n'
    values = prometheus.parse(text)
    assert values["vllm:prefix_cache_queries_total"] == 40
    assert values["vllm:kv_cache_usage_perc"] == 0.42
    assert "vllm:generation_tokens_total" not in values


@pytest.mark.parametrize("offload_moves, expected", [(True, verdict.CONFIRMED), (False, verdict.NOT_EFFECTIVE)])
def test_scraped_offload_counters_decide_native_offload(tmp_path, offload_moves, expected):
    from llmd_bench.steps.collect_pcp import serving_summaries

    server = FakeVllm(offload_moves)
    try:
        out = tmp_path / "samples.jsonl"
        start = time.time()
        with Sampler(out, [server.url], None, interval_s=0.2):
            time.sleep(1.2)
        end = time.time()
    finally:
        server.close()
    samples = read(out)
    assert len(samples) >= 4 and all(s["source"] == "vllm" for s in samples)
    serving, levels = serving_summaries(samples, [server.url], [{"trial": 1, "concurrency": 8, "start": start, "end": end}])
    level = levels[0]
    assert level["prefix_cache_hit_rate"] == pytest.approx(0.75)
    assert level["kv_cache_usage_perc"] == pytest.approx(0.42) and level["requests_running"] == pytest.approx(4)
    assert level["prefix_cache_queries"] > 0 and level["preemptions"] == 0
    result = verdict.judge("offload-counters", 1, serving, None)
    assert result["verdict"] == expected
    if not offload_moves:
        assert "did not move" in result["evidence"]


def test_a_server_without_metrics_is_not_measured_never_zero(tmp_path):
    from llmd_bench.steps.collect_pcp import serving_summaries

    port = processes.free_port()
    mock = processes.start("mock", [str(BIN / "guidellm"), "mock-server", "--host", "127.0.0.1", "--port", str(port),
                                    "--model", "m/x"], port, tmp_path / "mock.log")
    try:
        processes.wait_http(mock, f"http://127.0.0.1:{port}/health", 60)
        url = f"http://127.0.0.1:{port}"
        with Sampler(tmp_path / "s.jsonl", [url], None, interval_s=0.2) as sampler:
            time.sleep(0.5)
        assert "HTTP 404" in sampler.unavailable[url]
    finally:
        processes.stop(mock)
    serving, levels = serving_summaries(read(tmp_path / "s.jsonl"), [url], [{"concurrency": 1, "start": 0, "end": 1e12}])
    assert serving["available"] is False and levels == []
    assert verdict.judge("offload-counters", 1, serving, None)["verdict"] == verdict.NOT_MEASURED


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_index_stats_and_verdicts_on_real_servers(tmp_path, kind):
    from llmd_bench.stack.runtime.local import kv_server_bin, kv_server_version

    port = processes.free_port()
    server = processes.start(kind, [kv_server_bin(kind), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                             port, tmp_path / "kv.log")
    try:
        processes.wait_resp_ping(server, 30)
        name = f"{kind} {kv_server_version(port)}"
        empty = kv_index.stats(port)
        assert empty["keys"] == 0 and empty["used_memory_bytes"] > 0
        v = verdict.judge("index-keys", 2, {}, {"server": name, "max_keys": 0, "final": empty})
        assert v["verdict"] == verdict.NOT_EFFECTIVE and "stayed empty" in v["evidence"]
        # something publishes KV blocks into the index while the sweep runs
        with Sampler(tmp_path / "s.jsonl", [], port, interval_s=0.1):
            for i in range(25):
                processes.resp_command(port, "HSET", f"kv@10.0.0.{i % 3}@Qwen/Qwen3-8B:{i}", "pod", f"10.0.0.{i % 3}")
            processes.resp_command(port, "GET", "kv@10.0.0.1@Qwen/Qwen3-8B:1")
            time.sleep(0.3)
        counts = [s["keys"] for s in read(tmp_path / "s.jsonl")]
        assert max(counts) == 25
        final = kv_index.stats(port)
        assert final["keys"] == 25
        assert final["total_commands_processed"] > empty["total_commands_processed"] + 25
        confirmed = verdict.judge("index-keys", 2, {}, {"server": name, "max_keys": 25, "final": final})
        assert confirmed == {"verdict": verdict.CONFIRMED,
                             "evidence": f"the {name} index held up to 25 keys; 2 replicas to route between"}
        one = verdict.judge("index-keys", 1, {}, {"server": name, "max_keys": 25, "final": final})
        assert one["verdict"] == verdict.NOT_EFFECTIVE and "1 replica: a router with one endpoint" in one["evidence"]
    finally:
        processes.stop(server)


def _pcp_ready() -> bool:
    try:
        pcp.tools()
    except pcp.PcpUnavailable:
        return False
    return os.geteuid() == 0 or subprocess.run(["pminfo", "hinv.ncpu"], capture_output=True).returncode == 0


@pytest.mark.e2e
@pytest.mark.skipif(not _pcp_ready(), reason="PCP is not installed here (make setup installs it as root)")
def test_cell_archive_is_recorded_summarised_per_level_and_stored(campaigns_dir, results_dir, db_url, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    doc = tiny_campaign(configs=["llm-d-valkey"])
    doc["workload"].update(concurrency=[1, 4], duration_s=3)
    write_campaign(campaigns_dir, doc)
    args = ["--campaign", "tiny", "--run-id", "pcp-run", "--model", "Qwen/Qwen3-0.6B", "--config", "llm-d-valkey"]
    for step in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"):
        out = subprocess.run([str(BIN / "llmd-bench"), step, *args], capture_output=True, text=True)
        assert out.returncode == 0, (step, out.stdout[-1500:], out.stderr[-1500:])
    cell = results_dir / "pcp-run" / "Qwen3-0.6B" / "llm-d-valkey"
    obs = json.loads((cell / "observations.json").read_text())
    assert obs["pcp"]["status"] == "recorded", obs["pcp"]
    assert (cell / "pcp" / "host.0.xz").exists() and not (cell / "pcp" / "host.0").exists()
    # the compressed archive is still a readable PCP archive
    rows = pcp.samples(pcp.tools(), cell / "pcp" / "host", ["kernel.all.cpu.idle", "hinv.ncpu"])
    assert len(rows) >= 6
    windows = json.loads((cell / "cell.json").read_text())["sweep"]["trials"][0]["level_windows"]
    for level, window in zip(obs["host_levels"], windows):
        assert level["concurrency"] == window["concurrency"]
        assert level["samples"] >= 2  # 1 s samples inside a 3 s window
        assert 0 < level["cpu_util_pct"] <= 100 and level["mem_used_bytes"] > 0
    # the local simulator never writes to the index: not taking effect, never confirmed
    assert obs["config_effect"]["verdict"] == verdict.NOT_EFFECTIVE
    assert "stayed empty" in obs["config_effect"]["evidence"] and "1 replica" in obs["config_effect"]["evidence"]
    assert obs["serving_metrics"]["available"] is False
    # the load generator's own CPU use, per level of the trial
    gen = obs["generator_levels"]
    assert [g["concurrency"] for g in gen] == [1, 4]
    assert all(g["processes"] >= 1 and 0 < g["cpu_cores"] and 0 < g["busiest_process_pct"] <= 100.5 for g in gen)
    from sqlalchemy import text

    from llmd_bench.store.db import make_engine
    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT o.concurrency, o.value FROM level_observations o JOIN cells c ON c.id = o.cell_id "
                                   "WHERE o.source = 'pcp' AND o.metric = 'cpu_util_pct' ORDER BY 1")).all()
        effect = conn.execute(text("SELECT config_effect->>'verdict', observability->'pcp'->>'status' FROM cells")).one()
        generator_rows = conn.execute(text("SELECT count(*) FILTER (WHERE metric = 'busiest_process_pct'), "
                                           "count(*) FILTER (WHERE metric = 'start_lag_pct') FROM level_observations "
                                           "WHERE source = 'generator'")).one()
    engine.dispose()
    assert [c for c, _ in stored] == [1, 4]
    assert effect == ("not taking effect", "recorded")
    assert tuple(generator_rows) == (2, 2)  # CPU and GuideLLM's start lag for both levels
    out = subprocess.run([str(BIN / "llmd-bench"), "report", "--run-id", "pcp-run", "--out", str(results_dir / "rep")],
                         capture_output=True, text=True, env={**os.environ, "LLMD_BENCH_DB_URL": db_url})
    assert out.returncode == 0, out.stderr
    md = (results_dir / "rep" / "report.md").read_text()
    assert "| Qwen3-0.6B | llm-d-valkey | 1 | not taking effect |" in md
    assert (results_dir / "rep" / "host_use_per_level.png").exists()
    # the load generator's lag and CPU per level, apart from the host's
    assert "Load generator (GuideLLM): how late it sent requests" in md
    assert "| Concurrency | Start lag % of request | Generator cores | Busiest process % |" in md


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


def test_epp_admitting_blocks_while_the_backend_stays_empty_is_the_in_memory_index_pitfall(tmp_path):
    """llm-d v0.4.0: the EPP's default in-memory index wins over Valkey. The EPP's metrics show blocks
    admitted and looked up; the real Valkey server holds nothing: not taking effect, and the evidence says why."""
    from llmd_bench.stack.runtime.local import kv_server_bin, kv_server_version

    epp, url = _serve(lambda n: EPP_TEXT.format(admissions=400 * n, lookups=50 * n, hits=30 * n))
    port = processes.free_port()
    valkey = processes.start("valkey", [kv_server_bin("valkey"), "--port", str(port), "--bind", "127.0.0.1",
                                        "--save", ""], port, tmp_path / "kv.log")
    try:
        processes.wait_resp_ping(valkey, 30)
        with Sampler(tmp_path / "s.jsonl", [], ("127.0.0.1", port), interval_s=0.1, epp_metrics=url) as sampler:
            time.sleep(0.6)
        assert sampler.unavailable == {}
        samples = read(tmp_path / "s.jsonl")
        epp_samples = [s for s in samples if s["source"] == "epp"]
        assert len(epp_samples) >= 3 and "inference_pool_ready_pods" not in epp_samples[0]["values"]
        totals = prometheus.counter_totals(epp_samples, prometheus.EPP_METRICS)
        n = len(epp_samples)
        assert totals["index_admissions"] == 400 * (n - 1) and totals["index_lookup_hits"] == 30 * (n - 1)
        name = f"valkey {kv_server_version(port)}"
        kv = {"server": name, "max_keys": max(s["keys"] for s in samples if s["source"] == "kv_index"),
              "final": kv_index.stats(port), "epp_index": totals}
        v = verdict.judge("index-keys", 2, {}, kv)
        assert v["verdict"] == verdict.NOT_EFFECTIVE
        assert f"stayed empty while the EPP admitted {400 * (n - 1)} blocks" in v["evidence"]
        # the same EPP with a backend that holds the blocks: confirmed, with the EPP's lookups as evidence
        processes.resp_command(port, "HSET", "kv@10.0.0.1@Qwen/Qwen3-8B:1", "pod", "10.0.0.1")
        held = kv_index.stats(port)
        assert held["keys"] == 1
        ok = verdict.judge("index-keys", 2, {}, kv | {"max_keys": held["keys"], "final": held})
        assert ok["verdict"] == verdict.CONFIRMED and f"the EPP looked it up {50 * (n - 1)} times" in ok["evidence"]
    finally:
        processes.stop(valkey)
        epp.shutdown()


def test_an_epp_without_index_metrics_is_not_available_never_zero(tmp_path):
    server, url = _serve(lambda n: "# TYPE inference_pool_ready_pods gauge\ninference_pool_ready_pods 2\n")
    try:
        with Sampler(tmp_path / "s.jsonl", [], None, interval_s=0.1, epp_metrics=url) as sampler:
            time.sleep(0.3)
        assert "no KV-index metrics" in sampler.unavailable[url]
        assert [s for s in read(tmp_path / "s.jsonl") if s["source"] == "epp"] == []
    finally:
        server.shutdown()


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


def test_the_generators_cpu_is_measured_per_process_of_its_group(tmp_path):
    """A real process group with one busy process and one idle one, sampled from /proc like a sweep's GuideLLM."""
    from llmd_bench.measure.observe import generator

    busy = subprocess.Popen(["sh", "-c", "sleep 30 & exec python3 -c 'while True: pass'"], start_new_session=True)
    try:
        out = tmp_path / GENERATOR_CPU_FILE
        start = time.time()
        with generator.CpuSampler(out, busy.pid, interval_s=0.5):
            time.sleep(3.5)
        end = time.time()
    finally:
        os.killpg(busy.pid, 9)
        busy.wait()
    levels = generator.per_level(generator.read(out), [{"trial": 1, "concurrency": 8, "start": start, "end": end}])
    assert len(levels) == 1 and levels[0]["processes"] == 2
    assert levels[0]["busiest_process_pct"] > 50  # one core's worth minus what the rest of the machine takes
    assert levels[0]["cpu_cores"] == pytest.approx(levels[0]["busiest_process_pct"] / 100, abs=0.05)
    # a window with fewer than two samples gives nothing rather than a made-up rate
    assert generator.per_level(generator.read(out), [{"concurrency": 1, "start": end + 10, "end": end + 20}]) == []


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
