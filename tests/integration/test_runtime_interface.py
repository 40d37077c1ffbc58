"""The Runtime interface: steps reach the platform only through it, and each runtime is chosen once.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_runtime_interface.py.
"""

from __future__ import annotations

from conftest import REFERENCE
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext


def test_the_kubernetes_runtime_lists_an_earlier_runs_objects_without_touching_them(monkeypatch, results_dir):
    from fake_kube import FakeKube

    fake = FakeKube("ready")
    try:
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "3")
        campaign = load_campaign(REFERENCE)
        params = resolve_params(campaign, {}, catalog.known_versions())
        first = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
        first.stack.deploy()  # ... and its teardown never ran
        objects = fake.kinds_left()
        later = StepContext(campaign, params, "run-2", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
        found = later.stack.leftovers()
        assert found and all("(run run-1)" in f for f in found)
        assert fake.kinds_left() == objects  # listed, not removed
        assert first.stack.leftovers() == []  # a run's own objects are not leftovers
        later.stack.deploy()
        assert later.stack.leftovers() == []
        later.stack.teardown()
    finally:
        fake.close()
