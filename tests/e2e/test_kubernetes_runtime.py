"""Deploy, wait, failure detection and teardown against a local fake of the Kubernetes API.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_kubernetes_runtime.py.
"""

from __future__ import annotations

import pytest

from fake_kube import FakeKube
from integration.test_kubernetes_runtime import (
    ctx,
    kube,  # noqa: F401  (fixtures these tests request)
)
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.stack.runtime import kubernetes as k8s


def test_not_ready_in_time_names_what_is_missing(kube, monkeypatch):
    fake = kube("ready")
    monkeypatch.setattr(FakeKube, "_make_pods", lambda self, dep: dep["status"].update(readyReplicas=0))
    with pytest.raises(RuntimeStepError, match=r"not ready after 3 s: .*qwen3-8b-no-offload-ms 0/2 ready"):
        k8s.deploy(ctx("no-offload"))
    assert fake.calls


def _pcp_ready() -> bool:
    import os
    import shutil
    return bool(shutil.which("pmlogger") or os.path.exists("/usr/lib/pcp/bin/pmlogger")) and os.geteuid() == 0


@pytest.mark.skipif(not _pcp_ready(), reason="PCP is not installed here (make setup installs it as root)")
def test_sweep_pod_records_each_nodes_pmcd_and_collect_pcp_summarises_it(kube, tmp_path, monkeypatch):
    """Cluster PCP path with real pmcd/pmlogger: the fake API puts the two model servers on two nodes whose
    host IP is this machine, so the sweep pod's per-node pmloggers record the real local pmcd."""
    import time

    from llmd_bench.measure.observe import pcp
    from llmd_bench.steps import collect_pcp, sweep

    pcp.ensure_pmcd(tmp_path / "pmcd-logs")
    kube("ready", host_ips=("127.0.0.1", "127.0.0.1"))
    # the sweep pod's own node (the downward API's env): a CPU node whose pmcd is this machine's too
    monkeypatch.setenv("LLMD_BENCH_NODE_NAME", "cpu-node-7")
    monkeypatch.setenv("LLMD_BENCH_NODE_IP", "127.0.0.1")
    c = ctx("llm-d-redis")
    k8s.deploy(c)
    start = time.time()
    with sweep.host_recording(c) as state:
        time.sleep(4.5)
    end = time.time()
    assert sorted(state["nodes"]) == ["gpu-node-0", "gpu-node-1"], state
    assert sorted(state["generator"]["nodes"]) == ["cpu-node-7"], state["generator"]
    with c.update_record() as record:
        record["sweep"] = {"target": "http://epp", "levels": [1], "pcp": state, "trials": [
            {"trial": 1, "report": "trial-1/guidellm_report.json", "level_windows": [
                {"trial": 1, "concurrency": 1, "start": start + 0.5, "end": end - 0.5}]}]}
    status, levels = collect_pcp.host_summaries(c, collect_pcp.level_windows(c.record()))
    assert status["status"] == "recorded" and status["nodes"] == ["gpu-node-0", "gpu-node-1"], status
    assert "no nvidia PMDA" in status["gpu"]
    assert any(a.endswith("gpu-node-0/host.0.xz") for a in status["archive"])
    (level,) = levels
    assert level["nodes"] == 2 and level["samples"] >= 2
    assert 0 < level["cpu_util_pct"] <= 100 and level["mem_used_bytes"] > 0
    # the load generator's node, summarised apart from the model servers'
    gen_status, gen_levels = collect_pcp.generator_host_summaries(c, collect_pcp.level_windows(c.record()))
    assert gen_status["status"] == "recorded" and gen_status["nodes"] == ["cpu-node-7"], gen_status
    assert any(a.endswith("cpu-node-7/host.0.xz") for a in gen_status["archive"])
    (gen_level,) = gen_levels
    assert gen_level["samples"] >= 2 and 0 < gen_level["cpu_util_pct"] <= 100
    # a sweep pod that shares a model server's node points there instead of recording it twice
    monkeypatch.setenv("LLMD_BENCH_NODE_NAME", "gpu-node-1")
    with sweep.host_recording(c) as state:
        pass
    assert state["generator"] == {"same_node": "gpu-node-1"}
