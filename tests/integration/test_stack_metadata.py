"""Stack metadata (Runtime.stack_metadata): the kubernetes shape from the fake API (GPU Feature Discovery node
labels, a 403 on nodes), the local shape from a real local deploy, stored by load_results in the real PostgreSQL
test store (idempotent) and shown in the report's versions section."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.orm import Session

from conftest import REFERENCE
from fake_kube import FakeKube
from llmd_bench import report as rpt
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.report.data import from_store
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import kubernetes as k8s
from llmd_bench.stack.runtime import stack_metadata as sm
from llmd_bench.steps import deploy
from llmd_bench.store import db

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def kube(monkeypatch, results_dir):
    fakes = []

    def make(**kw):
        fake = FakeKube("ready", **kw)
        fakes.append(fake)
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "3")
        monkeypatch.setenv("LLMD_BENCH_TEARDOWN_TIMEOUT_S", "1")
        monkeypatch.setattr(sm, "VERSION_TIMEOUT_S", 0.2)  # the fake's pod IPs answer nothing
        return fake

    yield make
    for f in fakes:
        f.close()


def k8s_ctx(config="llm-d-redis", run_id="run-k8s"):
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {"replicas": 2, "trials": 1}, catalog.known_versions())
    return StepContext(campaign, params, run_id, "kubernetes", Cell("Qwen/Qwen3-8B", config))


def test_kubernetes_shape_from_the_fake_api(kube):
    fake = kube()
    fake.add_gfd_node("gpu-node-0")
    fake.add_node("gpu-node-1", gpus=4)  # a GPU node without GPU Feature Discovery
    c = k8s_ctx()
    k8s.deploy(c)
    stack = k8s.KubernetesRuntime(c).stack_metadata()
    json.dumps(stack)  # stored as JSONB
    assert (stack["platform"], stack["simulated"], stack["replicas"]) == ("kubernetes", False, 2)
    servers = stack["model_servers"]
    assert [s["node"] for s in servers] == ["gpu-node-0", "gpu-node-1"]
    for s in servers:
        assert (s["image"], s["image_digest"]) == ("ghcr.io/llm-d/llm-d-cuda:v0.4.0", DIGEST)
        assert s["args"][:3] == ["vllm", "serve", "Qwen/Qwen3-8B"] and "--tensor-parallel-size" in s["args"]
        assert "--kv-events-config" in s["args"]  # the routing config's vLLM flags, as the pod runs them
        # no pod answered GET /version: the catalog's version for the image it names, labelled declared
        assert s["vllm_version"] == "0.11.2"
        assert s["vllm_version_source"] == "declared: version catalog for ghcr.io/llm-d/llm-d-cuda:v0.4.0"
    epp = stack["epp"]
    assert (epp["image"], epp["image_digest"]) == ("ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0", DIGEST)
    (cm,) = [o for (p, _, n), o in fake.objects.items() if p == "configmaps" and n.endswith("-epp-cfg")]
    text = cm["data"]["epp-config.yaml"]
    assert epp["config"] == text and epp["config_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert "precise-prefix-cache-scorer" in text and "--config-file" in epp["args"]
    assert any(sc["image"].startswith("docker.io/envoyproxy/envoy") or "envoy" in sc["image"] for sc in epp["sidecars"])
    assert stack["kv_index"][0]["image"] == catalog.entry("v0.4.0").images["redis"]
    assert stack["nodes"]["gpu-node-0"] == {"gpu_product": "NVIDIA-H100-80GB-HBM3", "gpu_count": 8,
                                            "gpu_count_source": "label", "gpu_memory_mb": 81559,
                                            "driver_version": "570.124.06", "cuda_version": "12.8"}
    # without GFD: the count from the node's capacity, the rest unavailable with the reason
    assert stack["nodes"]["gpu-node-1"]["gpu_count"] == 4 and stack["nodes"]["gpu-node-1"]["gpu_product"] is None
    assert "GPU Feature Discovery" in stack["unavailable"]["nodes.gpu-node-1"]
    assert "gpu_product" in stack["unavailable"]["nodes.gpu-node-1"]
    assert set(stack["unavailable"]) == {"nodes.gpu-node-1"}


def test_forbidden_nodes_are_unavailable_not_a_failure(kube):
    kube(forbidden=("nodes",))
    c = k8s_ctx("no-offload")
    k8s.deploy(c)
    stack = k8s.KubernetesRuntime(c).stack_metadata()
    assert stack["nodes"] == {}
    assert "forbidden (403)" in stack["unavailable"]["nodes"] and "llmd-bench-node-reader" in stack["unavailable"]["nodes"]
    assert stack["replicas"] == 2 and stack["epp"]["config_sha256"]  # everything else is still there


class _VersionServer:
    def __init__(self, version: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = json.dumps({"version": version}).encode() if self.path == "/version" else b"{}"
                self.send_response(200 if self.path == "/version" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pod(name, image, ip="127.0.0.1"):
    return {"metadata": {"name": name}, "spec": {"nodeName": "n1", "containers": [
                {"name": "vllm", "image": image, "command": ["vllm", "serve"], "args": ["m", "--port", "8000"]}]},
            "status": {"podIP": ip, "containerStatuses": [
                {"name": "vllm", "image": image, "imageID": f"docker-pullable://{image.split(':')[0]}@{DIGEST}"}]}}


def test_vllm_version_measured_when_the_server_answers_else_declared_else_unavailable(monkeypatch):
    monkeypatch.setattr(sm, "VERSION_TIMEOUT_S", 0.5)
    server = _VersionServer("0.11.2.dev7+patched")
    try:
        servers, unavailable = sm.model_servers([_pod("a", "custom/vllm:x")], {}, server.port)
    finally:
        server.close()
    assert (servers[0]["vllm_version"], servers[0]["vllm_version_source"]) == ("0.11.2.dev7+patched",
                                                                              "measured: GET /version")
    assert servers[0]["image_digest"] == DIGEST and servers[0]["args"] == ["vllm", "serve", "m", "--port", "8000"]
    assert unavailable == {}
    # nothing answers and the catalog names no version for this image: unavailable, never guessed
    servers, unavailable = sm.model_servers([_pod("b", "custom/vllm:x")], {"ghcr.io/llm-d/llm-d-cuda:v0.4.0": "0.11.2"},
                                            server.port)
    assert servers[0]["vllm_version"] is None and "custom/vllm:x" in unavailable["model_servers.b.vllm_version"]


def test_deploy_records_the_stack_and_a_metadata_error_does_not_fail_it(kube, monkeypatch):
    fake = kube()
    fake.add_gfd_node("gpu-node-0")
    fake.add_gfd_node("gpu-node-1", product="NVIDIA-L40S", gpus=4, driver="550.90.07", cuda="12.4")
    c = k8s_ctx("no-offload", run_id="run-deploy")
    deploy.run(c)
    stack = c.read_record()["stack"]
    assert stack["nodes"]["gpu-node-1"]["gpu_product"] == "NVIDIA-L40S" and stack["replicas"] == 2

    def broken(self):
        raise RuntimeError("the API went away")

    monkeypatch.setattr(k8s.KubernetesRuntime, "stack_metadata", broken)
    c2 = k8s_ctx("native-offload", run_id="run-deploy")
    out = deploy.run(c2)
    assert out["replicas"] == 2
    stack = c2.read_record()["stack"]
    assert stack["unavailable"] == {"stack": "capturing the stack metadata failed: RuntimeError: the API went away"}
    assert stack["model_servers"] == [] and stack["platform"] == "kubernetes"


def _report(db_url, run_id):
    engine = db.make_engine(db_url)
    try:
        data = from_store(engine, run_id)
    finally:
        engine.dispose()
    return data, rpt.render_report(rpt.build(data), {})


def test_existing_and_unrecorded_cells_say_what_is_missing(db_url, real_report):
    """A cell whose stack could not be captured stores and shows why (the existing runtime's own capture is tested
    through the DAG in test_existing.py); imported cells carry none."""
    from llmd_bench.integrations.importer import import_reports
    from llmd_bench.measure.guidellm_report import parse_report_file
    from llmd_bench.stack.runtime.stack_metadata import failed

    existing = failed("existing", False, RuntimeError("the API server did not answer"))
    run = db.RunInfo(campaign="reference", dag_run_id="run-existing", runtime="kubernetes", llmd_version="v0.4.0",
                     vllm_version="0.11.2", guidellm_version="0.8.1", llmd_bench_version=None, images={}, params={})
    engine = db.make_engine(db_url)
    db.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            db.store_cell(s, run, db.CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config="no-offload", trial=1,
                                                 status="ok", stack=existing),
                          parse_report_file(real_report).levels)
    finally:
        engine.dispose()
    _, (md, _) = _report(db_url, "run-existing")
    assert "| Qwen3-8B/no-offload | existing |" in md
    assert "stack: capturing the stack metadata failed: RuntimeError: the API server did not answer" in md
    import_reports([real_report], "Qwen/Qwen3-8B", "llm-d-redis", "v0.4.0", run_id="past-1", url=db_url)
    _, (md, _) = _report(db_url, "past-1")
    assert "No stack metadata for Qwen3-8B/llm-d-redis: stored before it was captured, or imported." in md
