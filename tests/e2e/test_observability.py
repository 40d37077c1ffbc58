"""Evidence: real pmcd/pmlogger archives summarised per level, model-server metrics scraped from a local
server that serves real vLLM metric text, real Redis/Valkey index stats, and the verdict on each outcome.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_observability.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import BIN, MOCK_SERVER, tiny_campaign, write_campaign
from llmd_bench.measure import processes
from llmd_bench.measure.cell_folder import GENERATOR_CPU_FILE
from llmd_bench.measure.observe import pcp, verdict
from llmd_bench.measure.observe.sampler import Sampler, read
from unit.test_observability import VLLM_TEXT, _serve


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
    mock = processes.start("mock", [*MOCK_SERVER, "--host", "127.0.0.1", "--port", str(port),
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
