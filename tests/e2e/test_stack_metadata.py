"""Stack metadata (Runtime.stack_metadata): the kubernetes shape from the fake API (GPU Feature Discovery node
labels, a 403 on nodes), the local shape from a real local deploy, stored by load_results in the real PostgreSQL
test store (idempotent) and shown in the report's versions section.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_stack_metadata.py.
"""

from __future__ import annotations

import shutil
from importlib import metadata

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import tiny_campaign, write_campaign
from integration.test_stack_metadata import (
    DIGEST,
    _report,
    k8s_ctx,
    kube,  # noqa: F401  (fixtures these tests request)
)
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import guidellm_mock_server, local
from llmd_bench.steps import deploy, load_results
from llmd_bench.steps.sweep import report_path
from llmd_bench.store import db
from llmd_bench.store.schema import Cell as CellRow


def local_ctx(campaigns_dir, config="llm-d-valkey", **conf):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload", "llm-d-redis", "llm-d-valkey"])))
    params = resolve_params(campaign, conf, catalog.known_versions())
    return StepContext(campaign, params, "run-local", "local", Cell("Qwen/Qwen3-0.6B", config))


def test_local_shape_from_a_real_local_deploy(campaigns_dir, results_dir):
    c = local_ctx(campaigns_dir, replicas=2)
    deploy.run(c)
    try:
        stack = c.read_record()["stack"]
    finally:
        local.teardown(c)
    assert (stack["platform"], stack["simulated"], stack["replicas"]) == ("local", True, 2)
    for i, s in enumerate(stack["model_servers"]):
        assert s["pod"] == f"mock-server-{i}" and "Qwen/Qwen3-0.6B" in s["args"]
        assert s["args"][1:3] == [str(guidellm_mock_server.SCRIPT), "mock-server"]  # GuideLLM's, without PyTorch
        assert s["guidellm_version"] == metadata.version("guidellm") and s["image"] is None
    # each mock server behind its simulated vLLM replica (started with the rendered vLLM command line), then the router
    assert [r["name"] for r in stack["router"]] == ["prefix-cache-0", "prefix-cache-1", "router"]
    assert all("llmd_bench.stack.runtime.router" in r["args"] for r in stack["router"])
    assert all("--vllm-args" in r["args"] for r in stack["router"][:2])
    assert stack["kv_backend"]["kind"] == "valkey" and stack["kv_backend"]["server_version"].startswith("9.")
    (host,) = stack["nodes"].values()
    assert host["cpu_model"] and host["gpu_count"] == 0
    assert stack["unavailable"]["gpus"].startswith("simulated") and stack["epp"] is None


def _load(ctx, real_report, monkeypatch, db_url):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    path = report_path(ctx, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_report, path)
    load_results.run(ctx)


def test_stored_with_the_cell_idempotently_and_shown_in_the_report(kube, campaigns_dir, db_url, real_report, monkeypatch):
    # kubernetes: deploy against the fake API, then load the cell twice
    fake = kube()
    fake.add_gfd_node("gpu-node-0")
    fake.add_gfd_node("gpu-node-1")
    kc = k8s_ctx("llm-d-redis", run_id="run-k8s")
    deploy.run(kc)
    recorded = kc.read_record()["stack"]
    _load(kc, real_report, monkeypatch, db_url)
    _load(kc, real_report, monkeypatch, db_url)
    engine = db.make_engine(db_url)
    try:
        with Session(engine) as s:
            assert s.execute(select(func.count()).select_from(CellRow)).scalar_one() == 1
            assert s.execute(select(CellRow.stack)).scalar_one() == recorded
    finally:
        engine.dispose()
    data, (md, html) = _report(db_url, "run-k8s")
    assert data.cells.iloc[0]["stack"] == recorded
    versions = md.split("## Versions and parameters", 1)[1]
    assert "### Stack per cell" in versions
    assert f"ghcr.io/llm-d/llm-d-cuda:v0.4.0@{DIGEST}" in versions
    assert f"ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0@{DIGEST}" in versions
    assert "0.11.2 (declared: version catalog for ghcr.io/llm-d/llm-d-cuda:v0.4.0)" in versions
    assert recorded["epp"]["config_sha256"] in versions
    assert "gpu-node-0: NVIDIA-H100-80GB-HBM3 x 8, driver 570.124.06, CUDA 12.8" in versions
    assert "vllm serve Qwen/Qwen3-8B --host 0.0.0.0" in versions
    assert "was simulated" not in md and "Stack per cell" in html
    # the Benchmark Report export carries the GPU model and the pulled digest
    from llmd_bench.integrations import benchmark_report as br
    from llmd_bench.store.read import read_stored_run

    stored = read_stored_run("run-k8s", url=db_url)
    (cell,) = stored.cells
    doc = br.level_report(stored.run, cell, cell.levels[0], 0)
    assert br.schema_errors(doc) == []
    (server,) = [c for c in doc["scenario"]["stack"] if c["standardized"].get("kind") == "inference_engine"]
    assert server["standardized"]["accelerator"]["model"] == "NVIDIA-H100-80GB-HBM3"
    assert server["native"]["config"]["image_digest"] == DIGEST

    # local: a real local deploy, loaded the same way; the report says plainly it was simulated
    lc = local_ctx(campaigns_dir, config="no-offload")
    deploy.run(lc)
    local.teardown(lc)
    _load(lc, real_report, monkeypatch, db_url)
    data, (md, _) = _report(db_url, "run-local")
    versions = md.split("## Versions and parameters", 1)[1]
    assert "**The stack of Qwen3-0.6B/no-offload was simulated** (local runtime)" in versions
    cpu = next(iter(data.cells.iloc[0]["stack"]["nodes"].values()))["cpu_model"]
    assert f"simulated: GuideLLM {metadata.version('guidellm')} mock-server" in versions and cpu in versions
