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
    if already_stored(ctx):
        raise NotSelected(f"cell {ctx.cell} is already stored for run {ctx.run_id}; not benchmarked again")
    found = ctx.stack.leftovers()
    for what in found:
        print(f"left by an earlier run or attempt: {what}", flush=True)
    state = ctx.stack.deploy()
    stack = stack_metadata(ctx)  # before taking the record's lock: it may ask the cluster and the servers
    with ctx.update_record() as record:
        record["serving"] = {
            "replicas": len(state["replicas"]),
            "endpoint": state["endpoint"],
            "kv_backend": state.get("kv_backend"),
            "simulated": ctx.stack.simulated,
            "leftovers_found": found,
        }
        if state.get("kv_backend"):
            record["versions"]["kv_backend"] = {state["kv_backend"]["kind"]: state["kv_backend"]["server_version"]}
        record["stack"] = stack
    return {"endpoint": state["endpoint"], "replicas": len(state["replicas"]), "kv_backend": state.get("kv_backend")}


def stack_metadata(ctx: StepContext) -> dict[str, Any]:
    """What ran, stored with the cell (runtime/base.py Runtime.stack_metadata). Never fails the deploy: an error
    while capturing it is recorded under `unavailable`."""
    from llmd_bench.runtime.stack_metadata import failed

    try:
        return ctx.stack.stack_metadata()
    except Exception as exc:  # noqa: BLE001 - metadata must not cost the cell its benchmark
        print(f"could not capture the stack metadata ({type(exc).__name__}: {exc}); recorded as unavailable", flush=True)
        return failed(ctx.stack.name, ctx.stack.simulated, exc)


def already_stored(ctx: StepContext) -> bool:
    """A cleared or re-run DAG run must not benchmark a cell whose results are already stored.
    If the store cannot be asked, benchmark anyway: load_results will retry the store."""
    from sqlalchemy.orm import Session

    from llmd_bench.db import store as db

    assert ctx.cell is not None
    try:
        engine = db.make_engine()
        try:
            with Session(engine) as session:
                return db.cell_stored(session, ctx.campaign.dag_id, ctx.run_id, ctx.cell.model, ctx.cell.config,
                                      ctx.params.trials, ctx.cell.stack_factors, ctx.cell.config_factors)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - a missing table or a down server is "not stored"
        print(f"could not check the results store ({type(exc).__name__}); deploying", flush=True)
        return False
