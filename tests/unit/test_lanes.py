"""`lanes: auto` (stack/lanes.py): the lane plan from the nodes, the Lease rules with an in-memory store, the model
servers' node selector, the DAG without chains on a cluster and one lane on the local runtime. Against the fake
Kubernetes API: tests/integration/test_lanes.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack import lanes

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def node(name, gpus=4, unschedulable=False, labels=None, taints=None, hostname=None):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {**({lanes.HOSTNAME_LABEL: hostname} if hostname else {}),
                                                  **(labels or {})}},
            "spec": {**({"unschedulable": True} if unschedulable else {}), **({"taints": taints} if taints else {})},
            "status": {"allocatable": {"cpu": "96", "memory": "1000Gi", **({lanes.GPU: str(gpus)} if gpus else {})}}}


# -- the plan ---------------------------------------------------------------------------------------------------

def test_two_nodes_of_4_gpus_hold_4_tp2_cells_or_2_tp4_cells():
    nodes = [node("gpu-b"), node("gpu-a")]
    plan = lanes.plan_lanes(nodes, 2)
    assert plan.lanes == 4
    assert [(s.node, s.slot, s.gpus) for s in plan.slots] == [("gpu-a", 0, 2), ("gpu-a", 1, 2), ("gpu-b", 0, 2),
                                                                ("gpu-b", 1, 2)]
    assert plan.describe() == "lanes: 4 (2 nodes x 2 slots of 2 GPUs)"
    tp4 = lanes.plan_lanes(nodes, 4)
    assert tp4.lanes == 2 and tp4.describe() == "lanes: 2 (2 nodes x 1 slot of 4 GPUs)"


def test_a_cell_larger_than_every_node_is_refused_naming_the_nodes_and_their_gpus():
    with pytest.raises(lanes.LanesError) as err:
        lanes.plan_lanes([node("gpu-a"), node("gpu-b"), node("cpu-c", gpus=0)], 8, largest="Qwen3-32B / no-offload")
    msg = str(err.value)
    assert "Qwen3-32B / no-offload" in msg and "needs 8 GPUs" in msg
    assert "gpu-a 4 GPUs" in msg and "gpu-b 4 GPUs" in msg and "cpu-c 0 GPUs" in msg
    assert "set lanes to a number" in msg


def test_model_servers_without_gpus_are_refused():
    with pytest.raises(lanes.LanesError, match="request no nvidia.com/gpu"):
        lanes.plan_lanes([node("gpu-a")], 0)


def test_cordoned_tainted_and_unselected_nodes_hold_no_lane():
    nodes = [node("a"), node("b", unschedulable=True),
             node("c", taints=[{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]),
             node("d", labels={"pool": "other"}),
             # the device plugin's own taint is tolerated by pods requesting GPUs (ExtendedResourceToleration)
             node("e", taints=[{"key": lanes.GPU, "value": "present", "effect": "NoSchedule"}]),
             # PreferNoSchedule does not keep pods away
             node("f", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])]
    plan = lanes.plan_lanes([n for n in nodes if n["metadata"]["name"] != "d"], 4)
    assert [s.node for s in plan.slots] == ["a", "e", "f"]
    assert "b (cordoned)" in plan.describe() and "c (taint dedicated:NoSchedule)" in plan.describe()
    selected = lanes.plan_lanes([*nodes[:1], node("d", labels={"pool": "gpu"})], 4, {"pool": "gpu"})
    assert [s.node for s in selected.slots] == ["d"] and "a (not pool=gpu)" in selected.describe()
    tolerated = lanes.plan_lanes([nodes[2]], 4, tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert [s.node for s in tolerated.slots] == ["c"]
    with pytest.raises(lanes.LanesError, match="b 4 GPUs \\(cordoned\\)"):
        lanes.plan_lanes([nodes[1]], 4)


def test_mixed_node_sizes():
    plan = lanes.plan_lanes([node("big", gpus=8), node("mid", gpus=6), node("small", gpus=2)], 4)
    assert [(s.node, s.slot) for s in plan.slots] == [("big", 0), ("big", 1), ("mid", 0)]
    assert plan.describe() == "lanes: 3 (1 node x 2 slots + 1 node x 1 slot of 4 GPUs); not used: small (2 GPUs, fewer than 4)"


def test_the_node_selector_value_is_the_hostname_label():
    plan = lanes.plan_lanes([node("ip-10-0-0-1.ec2.internal", hostname="ip-10-0-0-1")], 2)
    assert {s.hostname for s in plan.slots} == {"ip-10-0-0-1"}


def test_fixed_lanes_auto_is_one_lane_on_the_local_runtime_and_none_on_a_cluster():
    assert lanes.fixed_lanes(3, cluster=True) == 3 and lanes.fixed_lanes(2, cluster=False) == 2
    assert lanes.fixed_lanes("auto", cluster=False) == 1
    assert lanes.fixed_lanes("auto", cluster=True) is None
    assert lanes.fixed_lanes("auto", cluster=True, serving_mode="existing") == 1


# -- the cell's GPUs and its model servers' node ----------------------------------------------------------------

def _docs(lane_node=None, tp=2, replicas=1, scheduling=None):
    from llmd_bench.stack import manifests

    campaign = load_campaign(REFERENCE)
    if scheduling:
        campaign = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"scheduling": scheduling})})
    params = resolve_params(campaign, {"tensor_parallel_size": tp, "replicas": replicas}, catalog.known_versions())
    return manifests.render_cell(campaign, params, Cell("Qwen/Qwen3-8B", "llm-d-redis"), "run-1", "bench", lane_node)


def test_a_cells_gpus_are_replicas_times_its_model_servers_gpus():
    assert lanes.model_server_gpus(_docs(tp=2, replicas=1)) == (1, 2)
    assert lanes.model_server_gpus(_docs(tp=1, replicas=2)) == (2, 1)


def test_the_lane_pins_only_the_model_servers_and_keeps_the_campaigns_placement():
    from llmd_bench.model.campaign import Placement, Scheduling

    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}]}}}
    scheduling = Scheduling(model_server=Placement(node_selector={"pool": "gpu"}, affinity=affinity,
                                                   tolerations=[{"key": "gpu", "operator": "Exists"}]))
    docs = _docs(lane_node="gpu-a", scheduling=scheduling)
    specs = {d["spec"]["template"]["metadata"]["labels"]["llmd-bench/component"]: d["spec"]["template"]["spec"]
             for d in docs if d["kind"] == "Deployment"}
    assert specs["model-server"]["nodeSelector"] == {"pool": "gpu", lanes.HOSTNAME_LABEL: "gpu-a"}
    assert specs["model-server"]["affinity"] == affinity
    assert specs["model-server"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    others = [name for name, spec in specs.items() if name != "model-server"]
    assert others and all(lanes.HOSTNAME_LABEL not in (specs[n].get("nodeSelector") or {}) for n in others)
    # without a lane nothing changes
    plain = _docs(scheduling=scheduling)
    assert [d for d in plain if d["kind"] == "Deployment"][-1]["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


# -- the leases, with an in-memory store --------------------------------------------------------------------------

class Store:
    """lanes.LeaseStore in memory, with resourceVersions as the API server keeps them."""

    def __init__(self):
        self.objects, self.version = {}, 0

    def _stored(self, body):
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def list(self, selector):
        wanted = dict(term.split("=", 1) for term in selector.split(","))
        return [copy.deepcopy(o) for o in self.objects.values()
                if all(o["metadata"]["labels"].get(k) == v for k, v in wanted.items())]

    def get(self, name):
        return copy.deepcopy(self.objects.get(name))

    def create(self, body):
        return None if body["metadata"]["name"] in self.objects else self._stored(body)

    def replace(self, name, body):
        old = self.objects.get(name)
        if old is None or body["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
            return None
        return self._stored(body)

    def delete(self, name, resource_version):
        old = self.objects.get(name)
        if old is None or (resource_version and resource_version != old["metadata"]["resourceVersion"]):
            return False
        del self.objects[name]
        return True


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += timedelta(seconds=seconds)


def holder(cell, run="run-1"):
    return lanes.Holder(campaign="llmd_tiny", run_id=run, cell=cell)


def take(store, plan, who, clock, said=None, wait_s=3600.0, on_sleep=None):
    def sleep(seconds):
        clock.sleep(seconds)
        if on_sleep:
            on_sleep()

    return lanes.acquire(store, plan, who, duration_s=600, wait_s=wait_s, poll_s=5, labels={}, clock=clock,
                         sleep=sleep, say=(said.append if said is not None else lambda _: None))


PLAN = lanes.plan_lanes([node("gpu-a"), node("gpu-b")], 2)


def test_four_cells_take_the_four_lanes_and_the_fifth_waits_until_one_is_released():
    store, clock, said = Store(), Clock(), []
    got = [take(store, PLAN, holder(f"cell-{i}"), clock) for i in range(4)]
    assert sorted(g.slot.label for g in got) == ["gpu-a/0", "gpu-a/1", "gpu-b/0", "gpu-b/1"]
    assert {g.how for g in got} == {"free"} and {g.waited_s for g in got} == {0.0}
    lease = store.objects[got[1].lease]
    assert lease["apiVersion"] == "coordination.k8s.io/v1" and lease["kind"] == "Lease"
    assert lease["spec"]["holderIdentity"] == "run-1/cell-1" and lease["spec"]["leaseDurationSeconds"] == 600
    assert lease["spec"]["acquireTime"] == lease["spec"]["renewTime"] == "2026-11-22T12:00:00.000000Z"

    polls = []

    def teardown_of_cell_2_after_three_polls():
        polls.append(1)
        if len(polls) == 3:
            assert lanes.release(store, got[2].lease, holder("cell-2")) == "released"

    fifth = take(store, PLAN, holder("cell-4"), clock, said, on_sleep=teardown_of_cell_2_after_three_polls)
    assert fifth.slot == got[2].slot and fifth.waited_s == 15.0 and fifth.how == "free"
    assert len(said) == 1 and said[0].startswith("waiting for a lane: all 4 held: gpu-a/0 by cell-0 since ")
    assert "gpu-b/0 by cell-2" in said[0]


def test_a_retried_deploy_re_uses_its_lane_and_renews_it():
    store, clock = Store(), Clock()
    first = take(store, PLAN, holder("cell-0"), clock)
    take(store, PLAN, holder("cell-1"), clock)
    clock.sleep(100)
    again = take(store, PLAN, holder("cell-0"), clock)
    assert again.slot == first.slot and again.how == "re-used" and again.acquired == first.acquired
    assert store.objects[first.lease]["spec"]["renewTime"] == "2026-11-22T12:01:40.000000Z"


def test_expired_leases_and_leases_of_another_run_are_taken_over_but_held_ones_are_not():
    store, clock = Store(), Clock()
    one = lanes.plan_lanes([node("gpu-a", gpus=2)], 2)
    take(store, one, holder("old-cell", run="run-0"), clock)
    other_run = take(store, one, holder("cell-0"), clock)
    assert other_run.how.startswith("took over (other run: old-cell since ")
    assert store.objects[other_run.lease]["spec"]["leaseTransitions"] == 1
    # the same run's lease expires leaseDurationSeconds (600) after its renewTime
    clock.sleep(599)
    with pytest.raises(lanes.LanesError) as err:
        take(store, one, holder("cell-1"), clock, wait_s=0)
    assert "no lane came free within 0 s for cell-1 (run run-1): all 1 held: gpu-a/0 by cell-0 since" in str(err.value)
    clock.sleep(2)
    expired = take(store, one, holder("cell-1"), clock)
    assert expired.how.startswith("took over (expired: cell-0 since ")
    # cell-0's teardown now finds the lane someone else's: left alone
    assert lanes.release(store, other_run.lease, holder("cell-0")).startswith("held by cell-1 since ")
    assert other_run.lease in store.objects


def test_release_is_idempotent():
    store, clock = Store(), Clock()
    got = take(store, PLAN, holder("cell-0"), clock)
    assert lanes.release(store, got.lease, holder("cell-0")) == "released"
    assert lanes.release(store, got.lease, holder("cell-0")) == "gone already"
    assert store.objects == {}


def test_lease_names_are_dns_labels_unique_per_campaign_node_and_slot():
    slot = lanes.LaneSlot(node="ip-10-0-0-1.ec2.internal", slot=1, gpus=2, hostname="ip-10-0-0-1.ec2.internal")
    name = lanes.lease_name("llmd_kv_cache_eval", slot)
    assert name == "llmd-lane-llmd-kv-cache-eval-ip-10-0-0-1-ec2-internal-1"
    long = lanes.LaneSlot(node="n" * 80, slot=0, gpus=2, hostname="n")
    assert len(lanes.lease_name("c", long)) <= 63
    assert lanes.lease_name("c", long) != lanes.lease_name("c", long.model_copy(update={"node": "n" * 81}))


def test_the_lease_outlasts_every_load_and_level_of_the_cell():
    seconds = lanes.lease_seconds(ready_timeout_s=1080, trials=1, levels=8, duration_s=120, teardown_s=300)
    assert seconds == 8 * 1080 + 8 * 240 + 300 + 3600
    assert lanes.lease_seconds(ready_timeout_s=1e12, trials=9, levels=9, duration_s=1, teardown_s=1) == 2**31 - 1


# -- the DAG ------------------------------------------------------------------------------------------------------

def test_lanes_auto_builds_unchained_cells_on_a_cluster_and_one_lane_locally(campaigns_dir, monkeypatch):
    from llmd_bench.orchestration.airflow_dag import build_dag

    monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
    doc = tiny_campaign(configs=["no-offload", "native-offload", "llm-d-redis"], lanes="auto")
    campaign = load_campaign(write_campaign(campaigns_dir, doc))
    cells = [c.group_id for c in campaign.cells()]
    assert len(cells) == 3
    dag = build_dag(campaign, runtime="kubernetes")
    for g in cells:
        deploy = dag.get_task(f"{g}.deploy")
        # every deploy starts after the preflight, none after another cell: the Leases decide who runs
        assert deploy.upstream_task_ids == {"preflight", "select_cells"} and deploy.trigger_rule == "all_success"
    assert dag.get_task("preflight").downstream_task_ids == {f"{g}.deploy" for g in cells}
    local = build_dag(campaign, runtime="local")
    assert local.get_task(f"{cells[0]}.deploy").upstream_task_ids == {"select_cells"}
    for prev, nxt in zip(cells, cells[1:]):
        assert local.get_task(f"{nxt}.deploy").upstream_task_ids == {f"{prev}.teardown", f"{prev}.load_results",
                                                                     "select_cells"}


def test_preflight_asks_for_the_leases_only_with_lanes_auto_and_the_role_grants_them(campaigns_dir):
    from llmd_bench.orchestration import preflight
    from llmd_bench.stack import manifests

    auto = load_campaign(write_campaign(campaigns_dir, tiny_campaign(lanes="auto")))
    fixed = load_campaign(write_campaign(campaigns_dir, tiny_campaign(lanes=2), name="fixed"))
    leases = {(p.verb, p.group, p.resource) for p in preflight.step_permissions(auto)} - \
        {(p.verb, p.group, p.resource) for p in preflight.STEP_PERMISSIONS}
    assert leases == {(v, "coordination.k8s.io", "leases") for v in ("get", "list", "create", "update", "delete")}
    assert preflight.step_permissions(fixed) == preflight.STEP_PERMISSIONS
    (role,) = [d for d in manifests.render_namespace("bench")
               if d["kind"] == "Role" and d["metadata"]["name"] == "llmd-bench-steps"]
    granted = {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert leases <= granted


def test_a_deploy_that_fails_after_taking_a_lane_tears_the_cell_down_to_free_it(monkeypatch, results_dir):
    """Airflow runs no teardown after a failed setup task: the deploy step frees the lane itself."""
    from llmd_bench.model.errors import RuntimeStepError
    from llmd_bench.stack.context import StepContext
    from llmd_bench.steps import deploy

    calls = []

    class Stack:
        lane = "gpu-a/0"

        def leftovers(self):
            return []

        def deploy(self):
            calls.append("deploy")
            return {"replicas": [], "endpoint": "http://epp", **({"lane": self.lane} if self.lane else {})}

        def teardown(self):
            calls.append("teardown")
            return {}

    def refused(ctx, when):
        raise RuntimeStepError("the servers do not serve the cell's configuration")

    monkeypatch.setattr(deploy, "already_stored", lambda ctx: False)
    monkeypatch.setattr(deploy, "prove_served", refused)
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, "run-1", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"), "deploy")
    ctx.__dict__["stack"] = Stack()
    with pytest.raises(RuntimeStepError, match="do not serve"):
        deploy.run(ctx)
    assert calls == ["deploy", "teardown"]
    # without a lane (lanes: N) the step leaves the cell as before
    calls.clear()
    Stack.lane = None
    with pytest.raises(RuntimeStepError, match="do not serve"):
        deploy.run(ctx)
    assert calls == ["deploy"]
