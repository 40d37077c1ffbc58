"""deploy: bring the cell's serving stack up and ready (an Airflow setup task)."""

from __future__ import annotations

from typing import Any

from llmd_bench.measure import served
from llmd_bench.model import catalog, design
from llmd_bench.model.errors import NotSelected, RuntimeStepError
from llmd_bench.stack import manifests
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime.stack_metadata import failed


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
    try:
        prove_served(ctx, "deploy")  # the servers' own word that they serve the configuration, or the deploy fails
    except Exception:
        if state.get("lane"):
            free_lane(ctx)
        raise
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
    # lanes: auto: the lane the runtime took (cell.json `placement` has the whole of it)
    lane = {"lane": state["lane"]} if state.get("lane") else {}
    return {"endpoint": state["endpoint"], "replicas": len(state["replicas"]), "kv_backend": state.get("kv_backend"), **lane}


def free_lane(ctx: StepContext) -> None:
    """lanes: auto: a deploy that fails after the runtime took a lane tears the cell down, which frees the lane (Airflow
    runs no teardown after a failed setup task: the lane and the pods' GPUs would stay held until the lease expires).
    The deploy's own error is the one reported."""
    try:
        ctx.stack.teardown()
    except Exception as exc:  # noqa: BLE001 - the deploy's own error is the one to report
        print(f"could not tear the cell down after its failed deploy ({type(exc).__name__}: {exc}): its lane stays "
              "held until its lease expires", flush=True)


def stack_metadata(ctx: StepContext) -> dict[str, Any]:
    """What ran, stored with the cell (runtime/base.py Runtime.stack_metadata). Never fails the deploy: an error
    while capturing it is recorded under `unavailable`."""

    try:
        return ctx.stack.stack_metadata()
    except Exception as exc:  # noqa: BLE001 - metadata must not cost the cell its benchmark
        print(f"could not capture the stack metadata ({type(exc).__name__}: {exc}); recorded as unavailable", flush=True)
        return failed(ctx.stack.name, ctx.stack.simulated, exc)


def already_stored(ctx: StepContext) -> bool:
    """A cleared or re-run DAG run must not benchmark a cell whose results are already stored.
    If the store cannot be asked, benchmark anyway: load_results will retry the store."""
    from llmd_bench.store import db  # deferred: loads sqlalchemy

    assert ctx.cell is not None
    try:
        # design: aba's repeat is stored as the baseline's trials after the run's trials (model/design.py)
        return db.cell_stored(ctx.campaign.dag_id, ctx.run_id, ctx.cell.model, ctx.cell.config,
                              design.stored_trial(ctx.params.trials, ctx.params.trials, ctx.cell),
                              ctx.cell.stack_factors, ctx.cell.config_factors)
    except Exception as exc:  # noqa: BLE001 - a missing table or a down server is "not stored"
        print(f"could not check the results store ({type(exc).__name__}); deploying", flush=True)
        return False


def wanted(ctx: StepContext) -> list[served.Wanted]:
    """What every model server of the cell must serve (served.wanted_model_server), the CPU tier sized as its pod is."""
    assert ctx.cell is not None
    campaign = manifests.cell_campaign(ctx.campaign, ctx.cell)
    entry = catalog.entry(ctx.params.llmd_version)
    config = campaign.cell_configuration(ctx.cell)
    setting = None
    if config.model_server.kv_offload is not None and config.model_server.kv_offload.connector == "OffloadingConnector":
        setting = dict(manifests.memory_plan(campaign, ctx.cell, ctx.params.tensor_parallel_size, entry, config)
                       .offload_setting) or None
    return served.wanted_model_server(campaign, ctx.params, ctx.cell, entry, setting)


def prove_served(ctx: StepContext, when: str) -> served.ServedProof:
    """Read back what each server says it serves, record it in cell.json `served` (every check of the cell), print
    it, and fail with a table (pod, key, wanted, served) when a server serves something else."""
    assert ctx.cell is not None
    entry = catalog.entry(ctx.params.llmd_version)
    notes = []
    if ctx.campaign.serving.backend == "inference-sim":
        notes.append("the llm-d inference simulator stands in for vLLM: it prints no vLLM start-up args and serves no "
                     "vllm:cache_config_info")
    given, no_epp = ctx.stack.epp_config_given()
    if given is None:
        notes.append(f"EPP: {no_epp}")
    proof = served.prove(ctx.stack.served_sources(), wanted(ctx), entry.vllm_version, when,
                         epp_wanted=served.wanted_epp(given) if given is not None else None, notes=notes)
    with ctx.update_record() as record:
        record["served"] = served.history(record.get("served"), proof).model_dump(mode="json")
    print(f"served configuration ({when}): {proof.summary()}", flush=True)
    for line in served.not_provable_lines(proof):
        print(f"  {line}", flush=True)
    if proof.differences:
        raise RuntimeStepError(f"cell {ctx.cell}: the servers do not serve the cell's configuration ({when}); the "
                               f"numbers would measure something else:\n{served.diff_table(proof)}")
    return proof
