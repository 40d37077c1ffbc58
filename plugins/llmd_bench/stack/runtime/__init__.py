"""The platform layer: where a cell's serving stack runs, behind one interface (runtime/base.py: Runtime).

`local`: processes on this machine (GuideLLM mock servers, Redis/Valkey servers), simulated serving.
`kubernetes`: pods and manifests in a cluster; with the campaign's `serving.mode: existing`, an llm-d stack
already installed there (runtime/existing.py) instead of one deployed per cell.
The runtime is chosen by the deployment (LLMD_BENCH_RUNTIME or AIRFLOW_VAR_LLMD_BENCH_RUNTIME),
never per trigger; `bind` chooses the implementation once per step.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmd_bench.model.settings import settings

if TYPE_CHECKING:
    from llmd_bench.stack.context import StepContext
    from llmd_bench.stack.runtime.base import Runtime



# implementation name -> "module:Class"; a new runtime is a module and a line here
IMPLEMENTATIONS = {
    "local": "llmd_bench.stack.runtime.local:LocalRuntime",
    "kubernetes": "llmd_bench.stack.runtime.kubernetes:KubernetesRuntime",
    "existing": "llmd_bench.stack.runtime.existing:ExistingRuntime",
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
