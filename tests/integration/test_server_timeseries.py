"""Server time series per level, from what the observe step collects: the real Sampler (measure/observe/sampler.py)
scraping vLLM-format /metrics (the local runtime's simulated prefix cache, stack/runtime/prefix_cache_sim.py) into the
cell folder, and the cell stored in PostgreSQL with levels from a real GuideLLM 0.8.1 report whose windows lie in the
sampled time. The plot draws what was collected and says in its panels why a series was not."""

from __future__ import annotations

import dataclasses
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmd_bench.measure.observe.sampler import Sampler
from llmd_bench.report import build, timeseries
from llmd_bench.report.data import from_store
from llmd_bench.report.render import markdown
from llmd_bench.report.sections import document
from llmd_bench.stack.runtime.prefix_cache_sim import SimulatedPrefixCache
from llmd_bench.store import db
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2], "duration_s": 1, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1, "llmd_version": "v0.9.0"}
NO_METRICS = "not available: no replica exports Prometheus metrics (1 scraped: http://127.0.0.1:9/)"
PCP_DOWN = {"status": "not measured", "reason": "pmcd is not running on this host"}


def serve_simulated_vllm(cache: SimulatedPrefixCache):
    """/metrics as the local runtime's simulated server writes it; each scrape first serves a prompt sharing a prefix."""
    class Handler(BaseHTTPRequestHandler):
        scrapes = 0

        def log_message(self, *a):
            pass

        def do_GET(self):
            Handler.scrapes += 1
            cache.request(" ".join(["shared"] * 64 + [f"tail{Handler.scrapes}-{i}" for i in range(32)]))
            body = cache.metrics("Qwen/Qwen3-8B", running=2 + Handler.scrapes % 3).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def test_the_plot_draws_what_was_sampled_and_says_why_a_series_was_not(db_url, real_report, tmp_path, artifacts):
    cell_dir = tmp_path / "results" / "run-ts" / "Qwen3-8B" / "no-offload"
    (cell_dir / "trial-1").mkdir(parents=True)
    server = serve_simulated_vllm(SimulatedPrefixCache(gpu_blocks=64, block_tokens=16))
    try:
        # two 1 s levels inside the sampled time (sampler every 0.1 s)
        with Sampler(cell_dir / "trial-1" / "serving_samples.jsonl", [f"http://127.0.0.1:{server.server_address[1]}"],
                     None, interval_s=0.1):
            starts = [time.time() + 0.2, time.time() + 1.4]
            time.sleep(2.8)
    finally:
        server.shutdown()
        server.server_close()
    levels = [dataclasses.replace(lv, start=s, end=s + 1.0, duration_s=1.0)
              for lv, s in zip(levels_at(real_report, {1: 60.0, 2: 100.0}), starts, strict=True)]
    run = RunInfo(campaign="weekly", dag_run_id="run-ts", runtime="local", llmd_version="v0.9.0", vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate(PARAMS))

    def load(w: db.Writer) -> None:
        sampled = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config="no-offload", trial=1, status="ok",
                           report_path=str(cell_dir / "trial-1" / "guidellm_report.json"),
                           observability={"serving_metrics": {"available": True}, "kv_index": None, "pcp": PCP_DOWN})
        w.store_cell(run, sampled, levels)
        # a cell whose servers had no /metrics (GuideLLM's mock server), whose sampler file is not on this machine
        w.store_cell(run, CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config="llm-d-redis", trial=1,
                                   status="ok", report_path=str(tmp_path / "elsewhere" / "trial-1" / "guidellm_report.json"),
                                   observability={"serving_metrics": {"available": False, "reason": NO_METRICS},
                                                  "kv_index": {"server": "valkey 8.1", "max_keys": 412}, "pcp": PCP_DOWN}),
                     levels, observations=[(1, "pcp", "cpu_util_pct", 35.0), (2, "pcp", "cpu_util_pct", 61.0)])

    db.in_transaction(load, "test", db_url)
    engine = db.make_engine(db_url)
    try:
        data = from_store(engine, "run-ts")
    finally:
        engine.dispose()
    cells = {c.config: c for c in data.server}
    sampled = {s.key: s for s in timeseries.series(cells["no-offload"], data.observations)}
    # drawn from the samples: running requests each scrape, the prefix-cache hit rate between scrapes (the shared prefix
    # hits from the second prompt on), KV-cache usage as the simulated server reports it
    assert len(sampled["requests_running"].points) >= 10
    assert {v for _, v in sampled["requests_running"].points} <= {2.0, 3.0, 4.0}
    assert sampled["prefix_hit_rate"].points and 0 < max(v for _, v in sampled["prefix_hit_rate"].points) <= 100
    assert sampled["kv_cache_usage"].drawn and sampled["requests_waiting"].drawn
    # not collected, with why: no offload tier exports no external counters, no index, no PCP
    assert sampled["external_hit_rate"].why == "the servers' /metrics had no vllm:external_prefix_cache_queries_total"
    assert sampled["index_keys"].why == "no Redis/Valkey KV index in this configuration"
    assert sampled["host_cpu"].why == "PCP: not measured (pmcd is not running on this host)"
    unsampled = {s.key: s for s in timeseries.series(cells["llm-d-redis"], data.observations)}
    assert {unsampled[k].why for k in ("kv_cache_usage", "requests_running", "prefix_hit_rate")} == {NO_METRICS}
    assert "at most 412 keys" in unsampled["index_keys"].why and "is not on this machine" in unsampled["index_keys"].why
    assert [v for _, v in unsampled["host_cpu"].per_level] == [35.0, 61.0]  # PCP's level means across each window

    # the plot says it, in the panel of each missing series
    fig = timeseries.figure(cells["no-offload"], list(sampled.values()))
    said = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    for why in ("offload / external hit rate: not collected: the servers' /metrics had no "
                "vllm:external_prefix_cache_queries_total", "index keys: not collected: no Redis/Valkey KV index",
                "host CPU (PCP): not collected: PCP: not measured (pmcd is not running on this host)", "c=1", "c=2"):
        assert why in said.replace("\n", " "), why
    fig = timeseries.figure(cells["llm-d-redis"], list(unsampled.values()))
    said = " ".join(t.get_text() for ax in fig.axes for t in ax.texts).replace("\n", " ")
    assert f"KV-cache usage: not collected: {NO_METRICS.removeprefix('not available: ')}" in said
    assert "host CPU" not in said

    report = build(data)
    images = timeseries.report_plots(report)
    assert set(images) == {"server_timeseries_Qwen3-8B_no-offload.png", "server_timeseries_Qwen3-8B_llm-d-redis.png"}
    for name, png in images.items():
        (artifacts / name).write_bytes(png)
    text = markdown.render(document(report, images))
    section = text.split("## Server time series")[1].split("\n## ")[0]
    assert "**Qwen3-8B/no-offload** (2 level(s); drawn from samples)" in section
    assert f"- Not collected: running: {NO_METRICS}" in section
    assert section.count("server_timeseries_Qwen3-8B_") == 2
    assert text.count("(server_timeseries_Qwen3-8B_no-offload.png)") == 1  # in its section only, not again in Plots


def test_a_report_without_the_store_says_why_there_are_no_server_series():
    from llmd_bench.report.document import DocumentBuilder

    doc = DocumentBuilder("r")
    doc.h(1, "r")
    timeseries.section(doc, None, None, {}, unavailable="this report was made from CSV files in x, not from the store")
    assert "Not available: this report was made from CSV files in x" in markdown.render(doc.document)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
