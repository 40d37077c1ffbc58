"""level_isolation: reset — caches and index emptied between levels without reloading the model, allowed only
where it is shown equivalent to a fresh server, refused otherwise.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_level_reset.py.
"""

from __future__ import annotations

from conftest import REFERENCE
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from unit.test_level_reset import RESET


def test_the_epp_is_rolled_to_new_ready_pods_to_empty_its_in_memory_index(monkeypatch, results_dir):
    from fake_kube import FakeKube
    from llmd_bench.stack.runtime import kubernetes as k8s

    fake = FakeKube("ready")
    try:
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "3")
        campaign = load_campaign(REFERENCE)
        params = resolve_params(campaign, {**RESET, "configs": ["no-offload"]}, catalog.known_versions())
        ctx = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
        k8s.deploy(ctx)
        epp = "llmd-bench/component=epp"
        before = {p["metadata"]["uid"] for p in fake.list("pods", "bench", epp)}
        servers = {p["metadata"]["uid"] for p in fake.list("pods", "bench", "llmd-bench/component=model-server")}
        k8s.restart_epp(ctx)
        after = fake.list("pods", "bench", epp)
        assert after and not before & {p["metadata"]["uid"] for p in after}
        assert all(p["metadata"]["annotations"].get(k8s.RESTARTED_AT) for p in after)
        # the model servers (and their loaded weights) are untouched
        assert {p["metadata"]["uid"] for p in fake.list("pods", "bench", "llmd-bench/component=model-server")} == servers
        k8s.teardown(ctx)
    finally:
        fake.close()
