"""Policy over the whole DagBag, as the Astro project template checks its DAGs: every shipped campaign
becomes a DAG (never an `invalid_campaign__*` one), under both runtimes, with the tags, run limits, retries
and callbacks a scheduled benchmark campaign needs."""

from __future__ import annotations

import pytest

from conftest import ROOT
from llmd_bench.model.campaign_files import campaign_files, load_campaign

# Steps that hold or change GPUs: a blind retry would deploy twice or spend GPU time again; a user clears them.
NO_RETRY = {"deploy", "warmup", "sweep", "teardown", "preflight"}


@pytest.fixture(scope="module", params=["local", "kubernetes"])
def dagbag(request):
    import os

    from airflow.dag_processing.dagbag import DagBag

    before = os.environ.get("LLMD_BENCH_RUNTIME")
    os.environ["LLMD_BENCH_RUNTIME"] = request.param
    try:
        yield request.param, DagBag(dag_folder=str(ROOT / "dags"))
    finally:
        os.environ["LLMD_BENCH_RUNTIME"] = before or "local"


def test_tags_limits_and_callbacks(dagbag):
    runtime, bag = dagbag
    for dag_id, dag in bag.dags.items():
        campaign = next(load_campaign(f) for f in campaign_files(ROOT / "include" / "campaigns")
                        if load_campaign(f).dag_id == dag_id)
        assert f"runtime:{runtime}" in dag.tags and set(campaign.tags) <= set(dag.tags), dag_id
        assert dag.max_active_runs == 1, dag_id  # the cells of two runs would share the GPUs
        assert dag.doc_md and campaign.name in dag.doc_md, dag_id
        assert dag.on_failure_callback, dag_id  # notifications, off unless configured
        assert dag.params, dag_id


def test_retries_follow_what_each_step_does(dagbag):
    runtime, bag = dagbag
    for dag in bag.dags.values():
        steps = {t.task_id.split(".")[-1]: t for t in dag.tasks}
        for task in dag.tasks:
            step = task.task_id.split(".")[-1]
            if step in NO_RETRY:
                assert task.retries == 0, task.task_id
            if step == "load_results":
                assert task.retries >= 1, task.task_id  # the store may be briefly down; loading is idempotent
        assert ("preflight" in steps) == (runtime == "kubernetes"), dag.dag_id
