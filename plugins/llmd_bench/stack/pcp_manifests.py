"""The PCP DaemonSet on the GPU nodes (include/manifests/pcp/), applied once by an administrator."""

from __future__ import annotations

from typing import Any

from llmd_bench.model import yaml_text
from llmd_bench.model.settings import settings
from llmd_bench.stack.manifests import _env

PCP_NODE_IMAGE = "ghcr.io/llmd-bench/llmd-bench-pcp-node:6.0.3"  # docker/pcp-node.Dockerfile
PMCD_PORT = 44321
# Its own namespace: the DaemonSet is privileged (host network and PID), and only this namespace is labelled
# for Pod Security level `privileged`, never the bench namespace where step pods and model servers run.
PCP_NAMESPACE = "llmd-bench-pcp"
# With the GPU Operator's CDI default, a pod that requests no GPU gets no libnvidia-ml unless it runs with
# the NVIDIA runtime class; None leaves runtimeClassName out (a node whose default runtime is NVIDIA's).
PCP_RUNTIME_CLASS = "nvidia"


def render_pcp(namespace: str = PCP_NAMESPACE, image: str | None = None, node_selector: dict[str, str] | None = None,
               runtime_class: str | None = PCP_RUNTIME_CLASS) -> list[dict[str, Any]]:
    """The PCP namespace (Pod Security `privileged`) and its DaemonSet on the GPU nodes, in apply order."""
    text = _env().get_template("pcp/daemonset.yaml.j2").render(
        namespace=namespace, image=image or settings().pcp_image or PCP_NODE_IMAGE,
        node_selector=node_selector or {"nvidia.com/gpu.present": "true"}, runtime_class=runtime_class,
        pmcd_port=PMCD_PORT)
    return [d for d in yaml_text.load_all(text) if d]
