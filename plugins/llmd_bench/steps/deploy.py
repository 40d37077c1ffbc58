"""deploy: bring the cell's serving stack up and ready (an Airflow setup task)."""

from __future__ import annotations

from typing import Any

from llmd_bench.context import StepContext
from llmd_bench.errors import NotSelected


def run(ctx: StepContext) -> dict[str, Any]:
    assert ctx.cell is not None
    if not ctx.params.selects(ctx.cell):
        raise NotSelected(f"cell {ctx.cell} is not selected by this run's params "
                          f"(models={ctx.params.models}, configs={ctx.params.configs})")
    if ctx.runtime == "local":
        from llmd_bench.runtime import local
        state = local.deploy(ctx)
    else:
        from llmd_bench.runtime import kubernetes
        state = kubernetes.deploy(ctx)
    with ctx.update_record() as record:
        record["serving"] = {
            "replicas": len(state["replicas"]),
            "endpoint": state["endpoint"],
            "kv_backend": state.get("kv_backend"),
            "simulated": ctx.runtime == "local",
        }
        if state.get("kv_backend"):
            record["versions"]["kv_backend"] = {state["kv_backend"]["kind"]: state["kv_backend"]["server_version"]}
    return {"endpoint": state["endpoint"], "replicas": len(state["replicas"]), "kv_backend": state.get("kv_backend")}
