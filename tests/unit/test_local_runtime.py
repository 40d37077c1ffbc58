"""The local runtime's platform layer: real mock servers, a real router, real Redis/Valkey, clean teardown.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/e2e/test_local_runtime.py.
"""

from __future__ import annotations

import socket

import pytest

from conftest import REFERENCE
from llmd_bench.measure import processes
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext


def test_leftovers_sees_a_port_that_is_still_bound():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ghost = processes.ManagedProcess("ghost", pid=2**22 + 12345, port=port, cmd=[], log="")
        assert processes.leftovers([ghost]) == [f"ghost's port {port} on 127.0.0.1 is still bound"]


def test_the_latest_write_of_a_record_key_wins_whichever_step_wrote_it(tmp_path, monkeypatch):
    """Each step keeps its own part of cell.json (steps in different pods may write at the same time);
    merging follows the order of the writes, not the order of the steps."""
    from llmd_bench.stack.context import merged_record

    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(tmp_path))
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {}, catalog.known_versions())

    def step(name):
        return StepContext(campaign, params, "run-1", "local", Cell("Qwen/Qwen3-8B", "no-offload"), step=name)

    def done(status):
        return {"status": status, "started": "t0", "ended": "t1", "elapsed_s": 1.0,
                **({"summary": {}} if status == "ok" else {"error": "boom"})}

    with step("teardown").update_record() as rec:
        rec["serving"] = {"replicas": 1, "endpoint": "old", "simulated": True}
        rec["steps"]["teardown"] = done("ok")
    with step("deploy").update_record() as rec:  # a re-run deploy, after teardown wrote
        rec["serving"]["endpoint"] = "new"
        rec["steps"]["deploy"] = done("ok")
    with step("load_results").update_record() as rec:
        rec["steps"]["load_results"] = done("failed")
    cell = step("deploy").cell_dir
    (cell / "cell.json").write_text("{}")  # a stale view pushed by another pod does not lose anything
    record = merged_record(cell)
    assert record["serving"] == {"replicas": 1, "endpoint": "new", "simulated": True}
    assert {k: v["status"] for k, v in record["steps"].items()} == {"teardown": "ok", "deploy": "ok",
                                                                   "load_results": "failed"}
    assert "_written_at" not in record


def test_the_router_refuses_a_backend_that_names_no_host():
    """'127.0.0.1:8000' parses as a scheme and a path: every proxied request used to die in HTTPConnection(None)."""
    from llmd_bench.stack.runtime.router import make_handler

    with pytest.raises(ValueError, match=r"backend '127.0.0.1:8000' names no host: give a URL such as http://"):
        make_handler(["http://127.0.0.1:8001", "127.0.0.1:8000"])
    assert make_handler(["http://127.0.0.1:8001"])  # a URL with a host is taken
