"""serving.mode: existing against the fake Kubernetes API (tests/fake_kube.py): an installed llm-d stack (model
server, EPP and its ConfigMap, a Redis index Service) patched per cell, verified on the running pods, measured and
restored spec for spec; a failed sweep still restores; a killed teardown leaves a saved state the next run refuses
naming `llmd-bench restore`, which brings the objects back; read-only mode refuses a mismatched stack with the
differences and benchmarks a matching one without a single write.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_existing.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from conftest import write_campaign
from integration.test_existing import (
    NS,
    SERVER,
    V040,
    V040_NAMES,
    _mock_port_of,
    _remember_ports,  # noqa: F401  (autouse: the mock's port for ctx_of)
    existing_doc,
    guide_doc,
    guide_setup,
    installed,
    kube,  # noqa: F401  (fixtures these tests request)
    mock_port,  # noqa: F401  (kube's module-scoped servers)
    owned_all,
    redis_port,  # noqa: F401
    script_of,
)
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import CampaignError
from llmd_bench.stack.runtime import existing


def test_existing_mode_is_validated_with_the_field_and_allowed_values(campaigns_dir):
    doc = existing_doc()
    bad = copy.deepcopy(doc)
    bad["serving"]["mode"] = "installed"
    with pytest.raises(CampaignError, match=r"field `serving.mode`: Input should be 'deploy' or 'existing'"):
        load_campaign(write_campaign(campaigns_dir, bad))
    bad = copy.deepcopy(doc)
    del bad["serving"]["existing"]
    with pytest.raises(CampaignError, match="serving.mode is existing but serving.existing is missing"):
        load_campaign(write_campaign(campaigns_dir, bad))
    bad = copy.deepcopy(doc)
    bad["serving"]["existing"]["model_servers"] = {"names": [SERVER], "selector": "app=ms"}
    with pytest.raises(CampaignError, match=r"serving.existing.model_servers.*exactly one of `names`"):
        load_campaign(write_campaign(campaigns_dir, bad))
    bad = copy.deepcopy(doc)
    bad["serving"]["existing"]["epp"]["configmapp"] = "x"
    with pytest.raises(CampaignError, match=r"field `serving.existing.epp.configmapp`: Extra inputs are not permitted"):
        load_campaign(write_campaign(campaigns_dir, bad))
    bad = copy.deepcopy(doc)
    del bad["serving"]["existing"]["index_service"]
    with pytest.raises(CampaignError, match=r"llm-d-redis: it needs a redis server; give serving.existing.index_service"):
        load_campaign(write_campaign(campaigns_dir, bad))
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    with pytest.raises(CampaignError, match=r"needs the kubernetes runtime \(LLMD_BENCH_RUNTIME=kubernetes\)"):
        campaign.check_runtime("local")
    campaign.check_runtime("kubernetes")


def _dag_env(monkeypatch, fake, results_dir, db_url):
    """The DAG's steps run as local processes (LocalStepOperator) that see a Kubernetes deployment: the existing
    runtime against the fake API, results as files, the offline tokenizer (no hub here)."""
    from llmd_bench.model import paths

    monkeypatch.setenv("LLMD_BENCH_RUNTIME", "kubernetes")
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", f"file://{results_dir.parent}")
    monkeypatch.setenv("LLMD_BENCH_TOKENIZER", str(paths.tokenizer_dir()))
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)


def _run_dag(campaigns_dir, doc, conf):
    from llmd_bench.orchestration.airflow_dag import build_dag

    doc["serving"]["existing"]["url"] = f"http://127.0.0.1:{_mock_port_of()}"
    campaign = load_campaign(write_campaign(campaigns_dir, doc, name="existing"))
    # the local step operator: the steps run here, and still see LLMD_BENCH_RUNTIME=kubernetes
    dag = build_dag(campaign, runtime="local")
    dr = dag.test(run_conf=conf)
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def _rows(url, sql):
    from sqlalchemy import text

    from llmd_bench.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_an_existing_mode_campaign_runs_through_the_dag_patching_measuring_and_restoring_every_cell(
        kube, airflow_db, campaigns_dir, results_dir, db_url, monkeypatch, fake_guidellm):
    # llm-d v0.4.0's guide install: vLLM started from `sh -c`, the EPP's config at its --config-file's key, the index
    # on a Service port of its own, Helm releases, on a cluster whose GPUs are all taken by the installed pods
    server, container, epp, key = V040_NAMES
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)), gpu_capacity=2)
    before, script = owned_all(fake), script_of(fake.objects[("deployments", NS, server)], container)
    _dag_env(monkeypatch, fake, results_dir, db_url)
    doc = guide_doc(V040_NAMES, configs=("no-offload", "llm-d-redis"), replicas=2)
    # the DAG is built for the local runtime (local step operators) around a cluster's steps: design: auto would
    # resolve to the local runtime's aba; a cluster's run is single
    dr, states = _run_dag(campaigns_dir, doc, {"concurrency": [1, 2], "duration_s": 2, "design": "single"})
    assert dr.state == "success", states
    cells = ("Qwen3-0_6B__no-offload", "Qwen3-0_6B__llm-d-redis")
    for cell in cells:
        for step in ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"):
            assert states[f"{cell}.{step}"] == "success", (cell, step)
    # every cell patched the installed objects (saved state first), and each teardown restored them
    writes = fake.writes()
    assert sum(1 for w in writes if w[0] == "POST" and w[1].endswith("/configmaps")) == 2  # a saved state per cell
    assert sum(1 for w in writes if w[0] == "PUT" and w[1].endswith(f"/deployments/{server}")) >= 4  # patch + restore
    assert owned_all(fake) == before  # the script byte for byte, the strategy, the EPP's ConfigMap
    assert script_of(fake.objects[("deployments", NS, server)], container) == script
    assert existing.saved_states(existing.Api(NS)) == []
    run_dir = results_dir / dr.run_id
    for config in ("no-offload", "llm-d-redis"):
        record = json.loads((run_dir / "Qwen3-0.6B" / config / "cell.json").read_text())
        assert record["steps"]["teardown"]["status"] == "ok"
        assert record["existing"]["changed"], config  # what deploy patched, recorded with the cell
        assert record["stack"]["platform"] == "existing" and record["stack"]["installed"]["namespace"] == NS
        # what the running pods ran, as the API reported them: our flags inside the shell script, nothing after it
        (command, flag, served) = record["stack"]["model_servers"][0]["args"]
        assert (command, flag) == ("/bin/sh", "-c") and "--max-num-seqs 1024" in served, served
        assert ("--kv-events-config '" in served) == (config == "llm-d-redis")
        # the pods' own start-up lines (the fake kubelet runs the script as a shell does) and the EPP's loaded
        # configuration (from the key its --config-file names) proved every check of the cell
        proof = record["served"]
        assert proof["status"] == "proven", proof
        keys = {k["key"]: k for check in proof["checks"] for pod in check["pods"] for k in pod["keys"]}
        assert keys["block_size"]["served"] == "16" and keys["max_num_seqs"]["served"] == "1024"
        assert ("epp.block_size" in keys) == (config == "llm-d-redis")  # the precise scorer's, from the EPP's log
    assert sorted(_rows(db_url, "SELECT config, status, stack->>'platform' FROM cells")) == [
        ("llm-d-redis", "ok", "existing"), ("no-offload", "ok", "existing")]
    levels = _rows(db_url, "SELECT c.config, l.concurrency FROM level_results l JOIN cells c ON c.id = l.cell_id")
    assert sorted(levels) == [("llm-d-redis", 1), ("llm-d-redis", 2), ("no-offload", 1), ("no-offload", 2)]
    # the report's versions section shows what the installed stack ran, per cell
    md = (results_dir.parent / "reports" / dr.run_id / "report.md").read_text()
    stacks = md.split("### Stack per cell")[1].split("\n#")[0]
    rows = [line for line in stacks.splitlines() if line.startswith("| Qwen3-0.6B/")]
    assert rows and all("| existing |" in row and "ghcr.io/llm-d/llm-d-cuda:v0.4.0@sha256:" in row for row in rows), rows


def test_a_failed_sweep_in_existing_mode_still_restores_the_installed_stack_through_the_dag(
        kube, airflow_db, campaigns_dir, results_dir, db_url, monkeypatch):
    fake = kube()
    before = installed(fake)
    _dag_env(monkeypatch, fake, results_dir, db_url)
    monkeypatch.setenv("LLMD_BENCH_GUIDELLM", "/bin/false")
    dr, states = _run_dag(campaigns_dir, existing_doc(configs=("no-offload",)),
                          {"concurrency": [1], "duration_s": 2, "design": "single"})
    cell = "Qwen3-0_6B__no-offload"
    assert states[f"{cell}.deploy"] == "success" and states[f"{cell}.sweep"] == "failed", states
    assert states[f"{cell}.teardown"] == "success" and dr.state == "failed"
    assert any(w[0] == "PUT" and w[1].endswith(f"/deployments/{SERVER}") for w in fake.writes())  # it was patched
    assert installed(fake) == before
    assert existing.saved_states(existing.Api(NS)) == []
