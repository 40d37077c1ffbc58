"""Policy over the whole DagBag, as the Astro project template checks its DAGs: every shipped campaign
becomes a DAG (never an `invalid_campaign__*` one), under both runtimes, with the tags, run limits, retries
and callbacks a scheduled benchmark campaign needs.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_dag_policy.py.
"""

from __future__ import annotations

from conftest import ROOT
from llmd_bench.model.campaign_files import campaign_files, load_campaign
from unit.test_dag_policy import dagbag  # noqa: F401  (fixtures these tests request)


def test_every_shipped_campaign_is_a_dag_and_none_is_invalid(dagbag):
    runtime, bag = dagbag
    assert bag.import_errors == {}
    shipped = {load_campaign(f).dag_id for f in campaign_files(ROOT / "include" / "campaigns")}
    assert shipped and set(bag.dag_ids) == shipped
    assert not [d for d in bag.dag_ids if d.startswith("invalid_campaign__")]
