"""The results store against a real PostgreSQL server: migrations, idempotent loads, imports, bad input,
a database that is down and comes back, and a cleared run that does not benchmark stored cells again.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_store.py.
"""

from __future__ import annotations

import json

import pytest


def test_a_runs_params_read_back_are_what_was_stored(tiny_params_run):
    """StoredRunParams types what the code reads and keeps the rest: the params a run stored (a pipeline run's, an
    import's, an older version's with keys this one does not know) come back unchanged, numbers with their JSON type."""
    from llmd_bench.store.rows import StoredRunParams

    for stored in tiny_params_run:
        back = StoredRunParams.model_validate(json.loads(json.dumps(stored))).as_stored()
        assert {k: (v, type(v)) for k, v in back.items()} == {k: (v, type(v)) for k, v in stored.items()}
    assert StoredRunParams.model_validate({"duration_s": 60, "replicas": 2}).replicas == 2
    with pytest.raises(ValueError, match="replicas"):
        StoredRunParams.model_validate({"replicas": "two"})


@pytest.fixture
def tiny_params_run(campaigns_dir):
    from conftest import tiny_campaign, write_campaign
    from llmd_bench.model.campaign_files import load_campaign
    from llmd_bench.model.params import resolve_params

    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign()))
    pipeline = {**resolve_params(campaign, {}).model_dump(), "warmup_requests": 8, "gpu_hour_cost": None}
    older = {"concurrency": [1, 50], "duration_s": 60, "prompt_tokens": 128, "noise_floor_pct": 5, "retired_param": "x"}
    imported = {"imported_from": ["/tmp/a.json"], "guidellm_spec": {"data": ["prompt_tokens=128"]}}
    return [pipeline, older, imported]
