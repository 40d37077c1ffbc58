"""`lanes: auto` against the fake Kubernetes API (tests/fake_kube.py): 2 nodes x 4 GPUs, six TP 2 cells whose deploys
run at once through the kubernetes runtime (a Lease per lane, the model servers pinned to the lane's node), four at a
time, never sharing a GPU; a teardown frees its lane for a waiting cell. The pure rules: tests/unit/test_lanes.py."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import tiny_campaign, write_campaign
from fake_kube import FakeKube
from llmd_bench.model import catalog
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.stack import lanes
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import kubernetes as k8s

NS = "bench"
MODELS = [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}, {"name": "Qwen/Qwen3-8B", "size_gb": 16.4},
          {"name": "Qwen/Qwen3-14B", "size_gb": 29.5}]


@pytest.fixture
def kube(monkeypatch, results_dir):
    fakes = []

    def make(scenario="ready"):
        fake = FakeKube(scenario)
        for name in ("gpu-a", "gpu-b"):
            fake.add_node(name, gpus=4, labels={"kubernetes.io/hostname": name})
        fakes.append(fake)
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", NS)
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.05")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "5")
        monkeypatch.setenv("LLMD_BENCH_TEARDOWN_TIMEOUT_S", "2")
        return fake

    yield make
    for f in fakes:
        f.close()


@pytest.fixture
def campaign(campaigns_dir):
    # 3 models x 2 configurations = 6 cells, TP 2 and 1 replica each (the reference campaign's serving)
    doc = tiny_campaign(models=MODELS, configs=["no-offload", "native-offload"], lanes="auto")
    return load_campaign(write_campaign(campaigns_dir, doc))


def step(campaign, cell, name, run_id="run-lanes"):
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, run_id, "kubernetes", cell)
    ctx.step = name
    return ctx


def model_server_pods(fake, cell):
    return [p for p in fake.list("pods", NS, f"llmd-bench/config={cell.config},llmd-bench/component=model-server")
            if p["metadata"]["name"].startswith(k8s_names(cell)["model_server"] + "-")]


def k8s_names(cell):
    from llmd_bench.stack.manifests import cell_names

    return cell_names(cell)


def test_six_tp2_cells_run_four_at_a_time_on_two_4_gpu_nodes_never_sharing_a_gpu(kube, campaign, capsys, monkeypatch):
    fake = kube()
    cells = campaign.cells()
    assert len(cells) == 6
    # which cells had to wait for a lane: the runtime's own acquire, its "waiting for a lane" lines noted per cell
    waiting: set[str] = set()
    acquire = lanes.acquire

    def noting(*args, say, **kwargs):
        def said(line):
            waiting.add(threading.current_thread().name)
            say(line)

        return acquire(*args, say=said, **kwargs)

    monkeypatch.setattr(lanes, "acquire", noting)
    seen: dict = {"leases": 0, "gpus": {}}
    stop = threading.Event()

    def watch():  # what the cluster holds, sampled while the cells run
        while not stop.is_set():
            seen["leases"] = max(seen["leases"], len(fake.list("leases", NS, "")))
            for node, used in fake.gpus_in_use().items():
                seen["gpus"][node] = max(seen["gpus"].get(node, 0), used)
            time.sleep(0.005)

    deployed: set[str] = set()
    results, errors = {}, []

    def run(cell):
        try:
            deploy = step(campaign, cell, "deploy")
            state = deploy.stack.deploy()
            deployed.add(cell.group_id)
            placement = deploy.read_record()["placement"]
            pods = model_server_pods(fake, cell)
            # the cell's warm-up and sweep: it holds its lane until four cells run and the other two wait for a lane
            deadline = time.monotonic() + 60
            while (len(deployed) < 4 or len(waiting) < 2) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            teardown = step(campaign, cell, "teardown")
            teardown.stack.teardown()
            results[cell.group_id] = (state, placement, pods, teardown.read_record()["placement"])
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{cell}: {type(exc).__name__}: {exc}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=run, args=(c,), name=c.group_id, daemon=True) for c in cells]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join(5)
    assert not any(t.is_alive() for t in threads), "a cell never got a lane"
    assert errors == []
    # all six ran, four at a time: every lane held at once, never more; two cells waited
    assert len(results) == 6 and len(waiting) == 2
    assert seen["leases"] == 4
    # never sharing a GPU: no node's running pods requested more than its 4 GPUs, and both were full at once
    assert fake.gpu_peak == {"gpu-a": 4, "gpu-b": 4} and seen["gpus"] == {"gpu-a": 4, "gpu-b": 4}
    holders: dict[str, list] = {}
    for group, (state, placement, pods, released) in results.items():
        assert state["lane"] == placement["slot"] and placement["kind"] == "lane" and placement["gpus"] == 2
        assert placement["plan"] == "lanes: 4 (2 nodes x 2 slots of 2 GPUs)"
        assert placement["holder"] == f"run-lanes/{group}"
        # each cell's model servers ran on its lane's node, pinned there by the node selector
        assert pods and all(p["spec"]["nodeName"] == placement["node"] for p in pods), group
        assert all(p["spec"]["nodeSelector"] == {"kubernetes.io/hostname": placement["node"]} for p in pods), group
        assert released["released"] and released["release"] == "released"
        holders.setdefault(placement["slot"], []).append((placement["acquired"], released["released"], group))
    # a lane's holders never overlap: a waiting cell got the lane of a cell whose teardown had released it
    for slot, held in holders.items():
        held.sort()
        for (_, released, _), (acquired, _, group) in zip(held, held[1:]):
            assert released <= acquired, (slot, held)
            assert group in waiting and results[group][1]["waited_s"] > 0
    assert len(holders) == 4 and sum(len(h) for h in holders.values()) == 6
    out = capsys.readouterr().out
    assert "waiting for a lane: all 4 held: gpu-a/0 by " in out
    # nothing left: the objects and the Leases are gone
    assert fake.kinds_left() == []


def test_a_third_tp2_cell_pinned_to_a_full_node_does_not_start(kube, campaign):
    """The fake refuses what the leases prevent: three TP 2 cells on one 4-GPU node."""
    fake = kube()
    cells = campaign.cells()[:3]
    for cell in cells:
        ctx = step(campaign, cell, "deploy")
        with ctx.update_record() as record:
            record["placement"] = {"kind": "lane", "hostname": "gpu-a"}
    k8s.deploy(step(campaign, cells[0], "deploy"))
    k8s.deploy(step(campaign, cells[1], "deploy"))
    with pytest.raises(RuntimeStepError, match="Unschedulable: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu"):
        k8s.deploy(step(campaign, cells[2], "deploy"))
    assert fake.gpus_in_use() == {"gpu-a": 4, "gpu-b": 0}


def test_a_failed_deploy_frees_its_lane_and_teardown_does_not_fail_when_the_lease_is_gone(kube, campaign):
    fake = kube("crashloop")
    cell = campaign.cells()[0]
    ctx = step(campaign, cell, "deploy")
    with pytest.raises(RuntimeStepError, match="CrashLoopBackOff"):
        ctx.stack.deploy()
    placement = ctx.read_record()["placement"]
    assert placement["release"] == "released" and placement["released"]
    assert fake.kinds_left() == []  # its objects went first, then its Lease

    fake.scenario = "ready"
    ctx = step(campaign, cell, "deploy", run_id="run-2")
    ctx.stack.deploy()
    lease = ctx.read_record()["placement"]["lease"]
    assert fake.delete("leases", NS, lease)  # someone removed it by hand
    teardown = step(campaign, cell, "teardown", run_id="run-2")
    assert teardown.stack.teardown()["lane"].endswith(": gone already")
    assert fake.kinds_left() == []


def test_a_lane_left_by_an_earlier_run_is_taken_over(kube, campaign):
    fake = kube()
    one_node = [n for n in fake.nodes if n["metadata"]["name"] == "gpu-a"]
    fake.nodes[:] = one_node
    fake.nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] = "2"
    first, second = campaign.cells()[:2]
    step(campaign, first, "deploy", run_id="run-old").stack.deploy()  # its teardown never ran
    ctx = step(campaign, second, "deploy", run_id="run-new")
    ctx.stack.deploy()
    placement = ctx.read_record()["placement"]
    assert placement["slot"] == "gpu-a/0" and placement["how"].startswith("took over (other run: ")
    # deploy removed the earlier run's objects: only this cell's model server holds the node's GPUs
    assert fake.gpus_in_use() == {"gpu-a": 2}
    (lease,) = fake.list("leases", NS, "")
    assert lease["spec"]["holderIdentity"] == f"run-new/{second.group_id}" and lease["spec"]["leaseTransitions"] == 1
    assert lease["metadata"]["labels"][lanes.LANE_LABEL] == "gpu-a-0"
