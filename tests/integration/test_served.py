"""Every cell proves what it served: the servers' own start-up log and /metrics read back after deploy and compared
with what the configuration demands. A server that runs another block size, or drops the offload flag, fails the
deploy with a table; a correct one is recorded `proven`.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_served.py.
"""

from __future__ import annotations

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local
from llmd_bench.steps import deploy
from unit.test_served import MODEL


def _ctx(campaigns_dir, config="no-offload", fault=None, **conf):
    doc = tiny_campaign(configs=["no-offload", "native-offload", "llm-d-redis"])
    if fault is not None:
        doc["local_simulation"][config] = {**doc["local_simulation"][config], "server_fault": fault}
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    params = resolve_params(campaign, conf, catalog.known_versions())
    return StepContext(campaign, params, "served-run", "local", Cell(MODEL, config), step="deploy")


def _deploy(ctx):
    try:
        return deploy.run(ctx)
    finally:
        local.teardown(ctx)


@pytest.mark.parametrize("config", ["no-offload", "native-offload", "llm-d-redis"])
def test_a_server_that_serves_the_configuration_is_proven(campaigns_dir, results_dir, config, monkeypatch):
    monkeypatch.setattr(deploy, "already_stored", lambda ctx: False)
    ctx = _ctx(campaigns_dir, config)
    _deploy(ctx)
    record = ctx.record()
    assert record is not None and record.served is not None
    check = record.served.checks[-1]
    assert check.when == "deploy" and len(check.pods) == 1
    keys = {k.key: k for k in check.pods[0].keys}
    assert keys["block_size"].status == "proven" and keys["block_size"].served == "16"
    assert keys["block_size"].source == "/metrics vllm:cache_config_info"
    assert keys["enable_prefix_caching"].status == "proven"
    if config == "native-offload":
        assert keys["kv_connector"].served == "OffloadingConnector" and keys["kv_connector"].status == "proven"
        (size,) = [k for k in keys if k.startswith("kv_offload.")]
        assert keys[size].status == "proven"
    if config == "llm-d-redis":
        assert keys["prefix_caching_hash_algo"].served == "sha256_cbor"
        assert keys["kv_events.publisher"].status == "proven"
    assert record.served.status in ("proven", "not provable")
    assert not check.differences


@pytest.mark.parametrize("config, fault, key, wanted, got", [
    ("no-offload", {"block_size": 64}, "block_size", "16", "64"),
    ("native-offload", {"ignore_flags": ["--kv-transfer-config"]}, "kv_connector", "OffloadingConnector", "none"),
])
def test_a_server_that_serves_something_else_fails_the_deploy_with_a_table(campaigns_dir, results_dir, monkeypatch,
                                                                           config, fault, key, wanted, got, capsys):
    monkeypatch.setattr(deploy, "already_stored", lambda ctx: False)
    ctx = _ctx(campaigns_dir, config, fault=fault)
    with pytest.raises(RuntimeStepError, match="do not serve the cell's configuration") as err:
        _deploy(ctx)
    table = str(err.value).splitlines()
    assert table[1].split() == ["pod", "key", "wanted", "served", "read", "from"]
    row = next(line for line in table[2:] if line.split()[3] == key)
    assert row.split()[4:6] == [wanted, got]
    record = ctx.record()
    assert record is not None and record.served is not None and record.served.status == "differs"
