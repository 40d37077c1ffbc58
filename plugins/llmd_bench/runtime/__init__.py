"""The platform layer: where a cell's serving stack runs, behind one interface (runtime/base.py: Runtime).

`local`: processes on this machine (GuideLLM mock servers, Redis/Valkey servers), simulated serving.
`kubernetes`: pods and manifests in a cluster; with the campaign's `serving.mode: existing`, an llm-d stack
already installed there (runtime/existing.py) instead of one deployed per cell.
The runtime is chosen by the deployment (LLMD_BENCH_RUNTIME or AIRFLOW_VAR_LLMD_BENCH_RUNTIME),
never per trigger; `bind` chooses the implementation once per step.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmd_bench.settings import settings

if TYPE_CHECKING:
    from llmd_bench.context import StepContext
    from llmd_bench.runtime.base import Runtime



@dataclass(frozen=True)
class RuntimeFacts:
    """What the rest of the package may know about a runtime, decided here once; nothing outside runtime/ compares
    runtime names (tests/test_layering.py)."""

    # the serving layer is simulated: reports and exports say so, its numbers are compared only with other simulated
    # runs', its GPUs are simulated, GuideLLM uses the offline tokenizer set-up made
    simulated: bool
    # the cells run in a Kubernetes cluster: steps run as pods, preflight checks the cluster first, results go
    # through object storage, the release is rendered (and refused) as a cluster would run it
    in_cluster: bool


# by runtime name (a deployment's LLMD_BENCH_RUNTIME, stored with every run) and implementation name
FACTS = {
    "local": RuntimeFacts(simulated=True, in_cluster=False),
    "kubernetes": RuntimeFacts(simulated=False, in_cluster=True),
    "existing": RuntimeFacts(simulated=False, in_cluster=True),
}
# a name no runtime has (an imported run's "imported", a CSV folder's "unknown"): neither simulated nor a cluster
UNKNOWN = RuntimeFacts(simulated=False, in_cluster=False)


def facts(name: str | None) -> RuntimeFacts:
    return FACTS.get(name or "", UNKNOWN)


def simulated_runtime(name: str | None) -> bool:
    """Whether runs of this runtime simulate the serving layer (the local runtime)."""
    return facts(name).simulated


def simulated_runtimes() -> list[str]:
    """Every runtime name whose serving is simulated (what the results store filters stored runs by)."""
    return [name for name, f in FACTS.items() if f.simulated]


def cluster_runtime(name: str | None) -> bool:
    """Whether this runtime runs cells in a Kubernetes cluster."""
    return facts(name).in_cluster
# implementation name -> "module:Class"; a new runtime is a module and a line here
IMPLEMENTATIONS = {
    "local": "llmd_bench.runtime.local:LocalRuntime",
    "kubernetes": "llmd_bench.runtime.kubernetes:KubernetesRuntime",
    "existing": "llmd_bench.runtime.existing:ExistingRuntime",
}


def selected_runtime() -> str:
    runtime = settings().runtime  # a SettingsError (a ValueError) names the variable and the allowed runtimes
    assert runtime is not None  # Settings._resolve always sets it
    return runtime


def implementation_name(runtime: str, serving_mode: str = "deploy") -> str:
    """The Runtime implementation for the deployment's runtime and the campaign's serving mode."""
    if runtime == "kubernetes" and serving_mode == "existing":
        return "existing"
    return runtime


def bind(ctx: StepContext) -> Runtime:
    """The Runtime running this step's cell."""
    name = implementation_name(ctx.runtime, getattr(ctx.campaign.serving, "mode", "deploy"))
    module, _, cls = IMPLEMENTATIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(ctx)
