"""Factors: cells are models x configurations x factor values (replicas, tensor parallel size, memory regime,
offload size); each cell runs, renders, stores and reports with its own values.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_factors.py.
"""

from __future__ import annotations

import pytest

from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import find_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack import manifests
from unit.test_factors import SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_cell_of_every_shipped_campaign_renders_strictly_and_builds_its_task_group(name):
    import kubernetes_validate

    from llmd_bench.model import design
    from llmd_bench.orchestration.airflow_dag import build_dag

    campaign = find_campaign(name)
    params = resolve_params(campaign, {}, catalog.known_versions())
    cells = campaign.cells()
    for cell in cells:
        for doc in manifests.render_cell(campaign, params, cell, "scheduled__2026-11-22T00:00:00+00:00", "bench"):
            if doc["kind"] != "InferencePool":
                kubernetes_validate.validate(doc, "1.33.0", strict=True)
    dag = build_dag(campaign, runtime="kubernetes")
    groups = {t.task_id.split(".")[0] for t in dag.tasks if "." in t.task_id}
    # every cell, and the baseline's repeat of each model (design: aba; its select_cells skips it under single)
    assert groups == {c.group_id for c in cells} | {r.group_id for r in design.repeat_cells(campaign)}
    deploy = dag.get_task(f"{cells[-1].group_id}.deploy")
    if cells[-1].factors:
        assert deploy.arguments[deploy.arguments.index("--factors") + 1] == cells[-1].factors_arg
