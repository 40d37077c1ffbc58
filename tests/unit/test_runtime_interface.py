"""The Runtime interface: steps reach the platform only through it, and each runtime is chosen once."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REFERENCE
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import IMPLEMENTATIONS, implementation_name
from llmd_bench.stack.runtime.base import Runtime

STEPS = Path(__file__).resolve().parents[2] / "plugins" / "llmd_bench" / "steps"


def _runtime_name_comparisons(source: str) -> list[int]:
    """Lines comparing something called `runtime` (or a runtime's name) in a step module."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None) for n in operands}
            constants = {n.value for n in operands if isinstance(n, ast.Constant)}
            if "runtime" in names or constants & {"local", "kubernetes", "existing"}:
                lines.append(node.lineno)
    return lines


def test_no_step_module_compares_runtime_names():
    found = {p.name: lines for p in sorted(STEPS.glob("*.py")) if (lines := _runtime_name_comparisons(p.read_text()))}
    assert found == {}
    # the check itself sees such a comparison
    assert _runtime_name_comparisons('if ctx.runtime == "local":\n    pass\n') == [1]


def test_each_runtime_is_one_registered_class_chosen_from_the_deployment_and_the_serving_mode():
    import importlib

    for name, where in IMPLEMENTATIONS.items():
        module, _, cls = where.partition(":")
        impl = getattr(importlib.import_module(module), cls)
        assert issubclass(impl, Runtime) and impl.name == name
    assert implementation_name("local") == "local"
    assert implementation_name("kubernetes") == "kubernetes"
    assert implementation_name("kubernetes", "existing") == "existing"


def test_a_step_context_binds_its_runtime_once():
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, "run-1", "local", Cell("Qwen/Qwen3-8B", "no-offload"))
    assert ctx.stack is ctx.stack and ctx.stack.name == "local" and ctx.stack.simulated
    k8s = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
    assert k8s.stack.name == "kubernetes" and not k8s.stack.simulated


