"""The local runtime's platform layer: real mock servers, a real router, real Redis/Valkey, clean teardown."""

from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure import completions, processes
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local
from llmd_bench.steps import warmup


def _ctx(campaigns_dir, config="no-offload", model="Qwen/Qwen3-0.6B", **conf):
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload", "llm-d-redis", "llm-d-valkey"])))
    params = resolve_params(campaign, conf, catalog.known_versions())
    return StepContext(campaign, params, "test-run", "local", Cell(model, config))


def _chat(url, model="Qwen/Qwen3-0.6B"):
    return completions.send_request(url, model, "hello", 4)


def test_replicas_behind_a_router_share_the_load_and_teardown_frees_everything(campaigns_dir, results_dir):
    ctx = _ctx(campaigns_dir, replicas=2)
    state = local.deploy(ctx)
    try:
        assert len(state["replicas"]) == 2 and state["endpoint"] not in state["replicas"]
        for _ in range(6):
            _chat(state["endpoint"])
        with urllib.request.urlopen(f"{state['endpoint']}/router/stats") as resp:
            counts = json.loads(resp.read())
        # /health probes went through too; each replica got chat requests
        assert all(n >= 3 for n in counts.values()), counts
    finally:
        summary = local.teardown(ctx)
    assert {"mock-server-0", "mock-server-1", "router"} <= set(summary["stopped"])
    for port in summary["ports_freed"]:
        assert processes.port_is_free(port)


@pytest.mark.parametrize("config, kind, version_prefix", [("llm-d-redis", "redis", "6."), ("llm-d-valkey", "valkey", "9.")])
def test_routing_configs_get_a_real_kv_server(campaigns_dir, results_dir, config, kind, version_prefix):
    ctx = _ctx(campaigns_dir, config=config)
    state = local.deploy(ctx)
    try:
        backend = state["kv_backend"]
        assert backend["kind"] == kind and backend["server_version"].startswith(version_prefix)
        assert processes.resp_command(backend["port"], "SET", "k", "v").startswith("+OK")
        assert processes.resp_command(backend["port"], "DBSIZE").startswith(":1")
    finally:
        local.teardown(ctx)
    assert processes.port_is_free(backend["port"])


def test_teardown_fails_loudly_when_something_survives(campaigns_dir, results_dir, monkeypatch):
    ctx = _ctx(campaigns_dir)
    local.deploy(ctx)
    real_stop = processes.stop
    monkeypatch.setattr(processes, "stop", lambda proc, grace_s=10.0: None)
    with pytest.raises(RuntimeStepError, match=r"teardown left things behind: mock-server-0 \(pid \d+\) is still running"):
        local.teardown(ctx)
    state = json.loads(local.state_path(ctx).read_text())
    assert state["processes"], "the survivors must stay recorded so a retry can stop them"
    monkeypatch.setattr(processes, "stop", real_stop)
    local.teardown(ctx)
    assert json.loads(local.state_path(ctx).read_text())["leftovers"] == []


def test_warmup_fails_fast_when_the_model_is_not_served(campaigns_dir, results_dir):
    ctx = _ctx(campaigns_dir)
    local.deploy(ctx)
    try:
        wrong = _ctx(campaigns_dir, model="Qwen/Qwen3-0.6B")
        wrong.cell = Cell("Qwen/Qwen3-8B", "no-offload")
        (wrong.cell_dir).mkdir(parents=True, exist_ok=True)
        local.state_path(wrong).write_text(local.state_path(ctx).read_text())
        not_served = r"model 'Qwen/Qwen3-8B' is not served at http://127.0.0.1:\d+; served: \['Qwen/Qwen3-0.6B'\]"
        with pytest.raises(RuntimeStepError, match=not_served):
            warmup.run(wrong)
        assert warmup.run(ctx)["requests"] == 2
    finally:
        local.teardown(ctx)


def test_deploy_after_an_interrupted_attempt_stops_the_old_processes_first(campaigns_dir, results_dir):
    ctx = _ctx(campaigns_dir)
    assert ctx.stack.leftovers() == []
    first = local.deploy(ctx)
    old = [p["pid"] for p in first["processes"]]
    # the Runtime lists what the attempt left, touching nothing; deploy then stops it
    found = ctx.stack.leftovers()
    assert len(found) == len(old) and all(processes.pid_alive(pid) for pid in old)
    assert any(f.startswith("mock-server-0 (pid ") for f in found)
    second = local.deploy(ctx)
    try:
        assert not any(processes.pid_alive(pid) for pid in old)
        assert [p["pid"] for p in second["processes"]] != old
    finally:
        local.teardown(ctx)


def test_cleanup_stops_what_a_cell_left_when_its_teardown_never_ran(campaigns_dir, results_dir):
    from llmd_bench.stack.runtime.local import cleanup_leftovers

    ctx = _ctx(campaigns_dir, config="llm-d-valkey")
    state = local.deploy(ctx)  # ... and the worker dies here: no teardown
    pids = [p["pid"] for p in state["processes"]]
    ports = [p["port"] for p in state["processes"] if p["port"]]
    assert all(processes.pid_alive(pid) for pid in pids)
    stopped = cleanup_leftovers(results_dir)
    assert len(stopped) == len(pids) and any("valkey-server" in s for s in stopped)
    assert not any(processes.pid_alive(pid) for pid in pids)
    assert all(processes.port_is_free(port) for port in ports)
    assert json.loads(local.state_path(ctx).read_text())["processes"] == []
    assert cleanup_leftovers(results_dir) == []  # nothing twice, and no recycled pid is touched


