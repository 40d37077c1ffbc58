"""Stack metadata (Runtime.stack_metadata): the kubernetes shape from the fake API (GPU Feature Discovery node
labels, a 403 on nodes), the local shape from a real local deploy, stored by load_results in the real PostgreSQL
test store (idempotent) and shown in the report's versions section.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_stack_metadata.py.
"""

from __future__ import annotations

from llmd_bench.stack.runtime import stack_metadata as sm


def test_deprecated_gfd_labels_and_unknown_nodes():
    old = {"metadata": {"name": "n1", "labels": {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8",
        "nvidia.com/cuda.driver.major": "535", "nvidia.com/cuda.driver.minor": "104", "nvidia.com/cuda.driver.rev": "05",
        "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "2"}}, "status": {}}
    facts, unavailable = sm.nodes([old], ["n1", "n2", None])
    assert (facts["n1"]["driver_version"], facts["n1"]["cuda_version"]) == ("535.104.05", "12.2")
    assert unavailable == {"nodes.n2": "the node was not found"}
