"""Evidence: real pmcd/pmlogger archives summarised per level, model-server metrics scraped from a local
server that serves real vLLM metric text, real Redis/Valkey index stats, and the verdict on each outcome.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_observability.py.
"""

from __future__ import annotations

import time

import pytest

from llmd_bench.measure import processes
from llmd_bench.measure.observe import kv_index, prometheus, verdict
from llmd_bench.measure.observe.sampler import Sampler, read
from unit.test_observability import EPP_TEXT, _serve


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
