"""`lanes: auto`: cells side by side, each on its own GPUs (kubernetes runtime).

The plan: a cell's model servers all go to one node (a node selector per lane), so a cell needs
replicas x GPUs per pod on one node. Every selected cell gets a slot of the same size, the largest cell's (slots
of different sizes on one node would overlap), and a node holds floor(allocatable GPUs / slot size) slots: the
lanes are the slots of every node the model servers may use (not cordoned, their node selector, their
tolerations). A cell larger than every usable node is refused, naming the nodes and their GPUs.

The leases: one coordination.k8s.io/v1 Lease per slot. A cell's deploy takes a free slot's Lease (create; 409 means
taken), re-uses the one it already holds (a retried deploy), takes over one that expired or that another run of the
campaign left (the DAG runs one run at a time: that run is over, and deploy removes its objects), and otherwise waits;
teardown deletes it. The slot's GPUs are never shared: the Lease reserves them among the campaign's cells and the
model servers request them (nvidia.com/gpu) on the slot's node.

No I/O here: the nodes come as the API serves them, and the Lease calls, the clock and the sleep are given
(runtime/kubernetes.py gives the cluster's; the tests give fakes).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.names import dns_label, label_value

GPU = "nvidia.com/gpu"
# k8s.io/api core/v1/well_known_labels.go @v0.36.3: LabelHostname = "kubernetes.io/hostname" (the kubelet sets it)
HOSTNAME_LABEL = "kubernetes.io/hostname"
LEASE_API = "coordination.k8s.io/v1"
LANE_LABEL = "llmd-bench/lane"
RUN_ANNOTATION, CELL_ANNOTATION = "llmd-bench/run-id", "llmd-bench/cell"
# k8s.io/api coordination/v1/types.go @v0.36.3: LeaseSpec.leaseDurationSeconds is an *int32
INT32_MAX = 2**31 - 1


class LanesError(LlmdBenchError):
    """No lane can hold the cell, or none came free in time."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NodeGpus(_Frozen):
    """One node as the plan sees it."""

    name: str
    hostname: str      # its kubernetes.io/hostname label (the node selector's value), else its name
    gpus: int          # allocatable nvidia.com/gpu
    excluded: str = ""  # why the cell's model servers cannot go there at all (cordoned, selector, taint), or ""
    slots: int = 0


class LaneSlot(_Frozen):
    """One lane: `gpus` GPUs of `node` reserved for one cell at a time."""

    node: str
    slot: int
    gpus: int
    hostname: str

    @property
    def label(self) -> str:
        return f"{self.node}/{self.slot}"


class LanePlan(_Frozen):
    gpus_per_cell: int
    nodes: tuple[NodeGpus, ...]
    slots: tuple[LaneSlot, ...]

    @property
    def lanes(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        """`lanes: 4 (2 nodes x 2 slots of 2 GPUs)`, and the nodes left out with why."""
        by_count: dict[int, int] = {}
        for n in self.nodes:
            if n.slots:
                by_count[n.slots] = by_count.get(n.slots, 0) + 1
        shapes = " + ".join(f"{count} node{'s' if count != 1 else ''} x {slots} slot{'s' if slots != 1 else ''}"
                            for slots, count in sorted(by_count.items(), key=lambda kv: (-kv[0], kv[1])))
        gpus = f"{self.gpus_per_cell} GPU{'s' if self.gpus_per_cell != 1 else ''}"
        text = f"lanes: {self.lanes} ({shapes or 'no node'} of {gpus})"
        unused = [f"{n.name} ({n.excluded or f'{n.gpus} GPUs, fewer than {self.gpus_per_cell}'})"
                  for n in self.nodes if not n.slots]
        return text + (f"; not used: {', '.join(unused)}" if unused else "")


# -- which nodes the model servers may use (preflight's nodes check judges them the same way) -------------------

def tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]], requested: Mapping[str, Any]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    if taint.get("key") in requested and requested[taint["key"]] > 0:
        return True  # ExtendedResourceToleration: pods requesting nvidia.com/gpu tolerate the nvidia.com/gpu taint
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and str(t.get("value", "")) == str(taint.get("value", "")):
            return True
    return False


def node_excluded(node: Mapping[str, Any], node_selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]],
                  requested: Mapping[str, Any]) -> str:
    """Why pods with this node selector, tolerations and requests cannot go to the node at all, or ''."""
    spec, labels = node.get("spec") or {}, (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    wrong = [f"{k}={v}" for k, v in node_selector.items() if labels.get(k) != v]
    if wrong:
        return f"not {','.join(wrong)}"
    untolerated = [f"{t.get('key')}:{t.get('effect')}" for t in spec.get("taints") or []
                   if not tolerated(t, tolerations, requested)]
    return f"taint {','.join(untolerated)}" if untolerated else ""


def node_gpus(node: Mapping[str, Any]) -> int:
    """Allocatable nvidia.com/gpu (an extended resource: a whole number), 0 when absent or unreadable."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU)
    try:
        return max(0, int(Decimal(str(value)))) if value not in (None, "") else 0
    except (InvalidOperation, ValueError):
        return 0


def model_server_gpus(docs: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(replicas, GPUs per pod) of a cell's model servers, as its rendered Deployment requests them."""
    replicas = per_pod = 0
    for doc in docs:
        template = (doc.get("spec") or {}).get("template") or {}
        if doc.get("kind") != "Deployment" or \
                ((template.get("metadata") or {}).get("labels") or {}).get("llmd-bench/component") != "model-server":
            continue
        replicas += int((doc.get("spec") or {}).get("replicas", 1))
        pod = 0
        for c in (template.get("spec") or {}).get("containers") or []:
            res = c.get("resources") or {}
            # extended resources: requests equal limits, and either alone sets both
            pod += int(Decimal(str((res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU) or 0)))
        per_pod = max(per_pod, pod)
    return replicas, per_pod


def plan_lanes(nodes: Sequence[Mapping[str, Any]], gpus_per_cell: int, node_selector: Mapping[str, str] | None = None,
               tolerations: Sequence[Mapping[str, Any]] = (), largest: str = "") -> LanePlan:
    """The lane slots of these nodes for cells needing `gpus_per_cell` GPUs on one node (`largest` names the cell
    that needs them, for the refusal). Refused when a cell needs no GPU or no usable node holds one cell."""
    who = f" ({largest})" if largest else ""
    if gpus_per_cell < 1:
        raise LanesError(f"lanes: auto places cells by their GPUs, but the model servers{who} request no {GPU} "
                         "(serving.backend inference-sim?): set lanes to a number")
    requested = {GPU: gpus_per_cell}
    seen: list[NodeGpus] = []
    slots: list[LaneSlot] = []
    for node in sorted(nodes, key=lambda n: (n.get("metadata") or {}).get("name", "")):
        meta = node.get("metadata") or {}
        name = meta.get("name", "?")
        hostname = (meta.get("labels") or {}).get(HOSTNAME_LABEL) or name
        gpus = node_gpus(node)
        excluded = node_excluded(node, node_selector or {}, tolerations, requested)
        count = 0 if excluded else gpus // gpus_per_cell
        seen.append(NodeGpus(name=name, hostname=hostname, gpus=gpus, excluded=excluded, slots=count))
        slots += [LaneSlot(node=name, slot=i, gpus=gpus_per_cell, hostname=hostname) for i in range(count)]
    if not slots:
        shown = ", ".join(f"{n.name} {n.gpus} GPU{'s' if n.gpus != 1 else ''}" + (f" ({n.excluded})" if n.excluded else "")
                          for n in seen) or "none"
        raise LanesError(f"lanes: auto places all of a cell's model servers on one node, and the largest cell{who} needs "
                         f"{gpus_per_cell} GPUs there, but no node the model servers may use has that many (nodes: "
                         f"{shown}): lower tensor_parallel_size or replicas, let the pods onto more nodes (nodeSelector / "
                         "tolerations), or set lanes to a number")
    return LanePlan(gpus_per_cell=gpus_per_cell, nodes=tuple(seen), slots=tuple(slots))


def fixed_lanes(lanes: int | str, cluster: bool, serving_mode: str = "deploy") -> int | None:
    """The lanes the DAG chains cells into, or None when the leases decide (`auto` on a cluster that deploys cells).
    `auto` on the local runtime is 1: its simulated servers share this machine's CPU, so side by side they would
    measure one another; with serving.mode existing there is one installed stack, so 1 as well."""
    if lanes != "auto":
        return int(lanes)
    return None if cluster and serving_mode == "deploy" else 1


# -- the leases -------------------------------------------------------------------------------------------------

class Holder(_Frozen):
    """Who holds a lane: one cell of one run of one campaign."""

    campaign: str  # the campaign's dag_id
    run_id: str
    cell: str      # the cell's group id

    @property
    def identity(self) -> str:
        return f"{self.run_id}/{self.cell}"


def lease_name(campaign: str, slot: LaneSlot) -> str:
    # Lease names are DNS subdomains; a label (<= 63) is one, and dns_label keeps a hash when it shortens
    return dns_label(f"llmd-lane-{campaign}-{slot.node}-{slot.slot}")


def micro_time(t: datetime) -> str:
    # apimachinery pkg/apis/meta/v1/micro_time.go @v0.36.3: RFC3339Micro = "2006-01-02T15:04:05.000000Z07:00"
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


LeaseState = Literal["free", "mine", "expired", "other run", "held"]


def lease_state(lease: Mapping[str, Any] | None, holder: Holder, now: datetime) -> LeaseState:
    """free: no Lease or no holder; mine: this run's cell holds it (a retried deploy re-uses it); other run: another
    run of this campaign left it; expired: renewTime (else acquireTime) + leaseDurationSeconds is past; else held."""
    if lease is None:
        return "free"
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return "free"
    if spec["holderIdentity"] == holder.identity:
        return "mine"
    run = ((lease.get("metadata") or {}).get("annotations") or {}).get(RUN_ANNOTATION)
    if run is not None and run != holder.run_id:
        return "other run"
    # k8s.io/api coordination/v1/types.go @v0.36.3: leaseDurationSeconds is "measured against the time of last
    # observed renewTime"
    since = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if since is not None and duration is not None and since + timedelta(seconds=int(duration)) < now:
        return "expired"
    return "held"


def lease_seconds(*, ready_timeout_s: float, trials: int, levels: int, duration_s: float, teardown_s: float) -> int:
    """How long a cell may hold its lane before another cell may take it over: nothing renews a lane while the cell
    runs (its steps are separate pods), so this bounds the whole cell generously: a model load taking its whole
    readiness timeout before every level of every trial (the most level_isolation restart loads), each level's
    measurement plus 2 minutes (warm-up, GuideLLM's start, a reset), teardown, and an hour to spare."""
    runs = max(1, trials) * max(1, levels)
    seconds = runs * ready_timeout_s + runs * (duration_s + 120) + teardown_s + 3600
    return min(INT32_MAX, math.ceil(seconds))


def lease_body(name: str, slot: LaneSlot, holder: Holder, now: datetime, duration_s: int,
               labels: Mapping[str, str], old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Lease `holder` holds on `slot` (a takeover or a renewal of `old` keeps its resourceVersion, so the write
    fails with a conflict when someone else wrote it first)."""
    old_spec = (old or {}).get("spec") or {}
    mine = old_spec.get("holderIdentity") == holder.identity
    # k8s.io/api coordination/v1/types.go @v0.36.3: holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
    # leaseTransitions
    spec: dict[str, Any] = {
        "holderIdentity": holder.identity,
        "leaseDurationSeconds": int(duration_s),
        "acquireTime": old_spec.get("acquireTime") if mine and old_spec.get("acquireTime") else micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": int(old_spec.get("leaseTransitions") or 0) + (1 if old is not None and not mine else 0),
    }
    metadata: dict[str, Any] = {
        "name": name,
        # lane_selector finds them: managed-by and campaign as on the cell's objects (manifests.cell_labels)
        "labels": {**labels, "app.kubernetes.io/managed-by": "llmd-bench",
                   "llmd-bench/campaign": label_value(holder.campaign), LANE_LABEL: label_value(slot.label),
                   "llmd-bench/run": label_value(holder.run_id)},
        "annotations": {RUN_ANNOTATION: holder.run_id, CELL_ANNOTATION: holder.cell, "llmd-bench/node": slot.node,
                        "llmd-bench/slot": str(slot.slot), "llmd-bench/gpus": str(slot.gpus)},
    }
    if old is not None:
        metadata["resourceVersion"] = (old.get("metadata") or {}).get("resourceVersion")
    return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": metadata, "spec": spec}


def describe_holder(lease: Mapping[str, Any]) -> str:
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    who = annotations.get(CELL_ANNOTATION) or spec.get("holderIdentity") or "?"
    return f"{who} since {spec.get('acquireTime') or '?'}"


class LeaseStore(Protocol):
    """The Lease calls acquire and release make, in the namespace of the cells."""

    def list(self, selector: str) -> builtins.list[dict[str, Any]]:  # `list` here is this method
        ...

    def get(self, name: str) -> dict[str, Any] | None:
        ...

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when a Lease of that name exists (409)."""
        ...

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when someone else changed or deleted it first (409, 404)."""
        ...

    def delete(self, name: str, resource_version: str | None) -> bool:
        """False when it is gone already (404) or was changed since `resource_version` (409)."""
        ...


class Acquired(_Frozen):
    slot: LaneSlot
    lease: str
    acquired: str            # micro_time
    waited_s: float
    how: str                 # "free", "re-used", "took over (expired: ...)", "took over (other run: ...)"


def lane_selector(campaign: str) -> str:
    return f"app.kubernetes.io/managed-by=llmd-bench,llmd-bench/campaign={label_value(campaign)}"


def acquire(store: LeaseStore, plan: LanePlan, holder: Holder, *, duration_s: int, wait_s: float, poll_s: float,
            labels: Mapping[str, str], clock: Callable[[], datetime] = lambda: datetime.now(UTC),
            sleep: Callable[[float], None], say: Callable[[str], None] = print,
            repeat_s: float = 600.0) -> Acquired:
    """A lane for `holder`: the one it holds already, else a free one, else one expired or left by another run; while
    none is, wait (saying who holds them when that changes, and every `repeat_s`) for at most `wait_s` seconds."""
    started = clock()
    names = {lease_name(holder.campaign, s): s for s in plan.slots}
    shown, shown_at = "", started
    while True:
        now = clock()
        found = {lease["metadata"]["name"]: lease for lease in store.list(lane_selector(holder.campaign))
                 if lease.get("metadata", {}).get("name") in names}
        states = {name: lease_state(found.get(name), holder, now) for name in names}
        outrun = False
        for wanted in ("mine", "free", "expired", "other run"):
            for name, state in states.items():
                if state != wanted:
                    continue
                old = found.get(name)
                # stamped after the list: a lane freed by a teardown is acquired after its release
                body = lease_body(name, names[name], holder, clock(), duration_s, labels, old)
                got = store.create(body) if old is None else store.replace(name, body)
                if got is None:
                    outrun = True  # another cell wrote it first (409): try the next lane
                    continue
                how = {"mine": "re-used", "free": "free"}.get(state) or \
                    f"took over ({state}: {describe_holder(old or {})})"
                return Acquired(slot=names[name], lease=name, acquired=body["spec"]["acquireTime"],
                                waited_s=round((now - started).total_seconds(), 3), how=how)
        if outrun:
            continue  # what this poll saw has changed: look again at once (every conflict is another cell's progress)
        if (now - started).total_seconds() >= wait_s:
            raise LanesError(f"no lane came free within {wait_s:.0f} s for {holder.cell} (run {holder.run_id}): "
                             + _holders(found, names) + "; a cell that never tore down holds its lane until its "
                             "lease expires (leaseDurationSeconds after its renewTime)")
        text = _holders(found, names)
        if text != shown or (now - shown_at).total_seconds() >= repeat_s:
            say(f"waiting for a lane: {text}")
            shown, shown_at = text, now
        sleep(poll_s)


def _holders(found: Mapping[str, Mapping[str, Any]], names: Mapping[str, LaneSlot]) -> str:
    held = [f"{names[n].label} by {describe_holder(found[n])}" for n in sorted(names, key=lambda n: names[n].label)
            if n in found]
    return f"all {len(names)} held: " + "; ".join(held)


def release(store: LeaseStore, name: str, holder: Holder) -> str:
    """Delete the lane's Lease if `holder` still holds it; what happened, in words. Never fails for a Lease that is
    gone (a teardown run twice, or a lease taken over after it expired is someone else's now: left alone)."""
    for _ in range(3):
        lease = store.get(name)
        if lease is None:
            return "gone already"
        holder_now = (lease.get("spec") or {}).get("holderIdentity")
        if holder_now != holder.identity:
            return f"held by {describe_holder(lease)} now: left alone"
        if store.delete(name, (lease.get("metadata") or {}).get("resourceVersion")):
            return "released"
    return "changed while releasing it: left alone"
