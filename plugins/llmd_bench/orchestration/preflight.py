"""`llmd-bench preflight`: check the live cluster in seconds, before any GPU time is spent.

Every check runs (none stops at the first problem) and reports one line per finding, `ok`, `missing` or
`warning`, saying what is missing and how to fix it. Only `missing` fails the preflight.

- namespace:   the namespace exists.
- crds:        the version catalog's `required_crds` are served (API discovery, which any authenticated
               identity may read; no cluster-wide read of CustomResourceDefinition objects).
- permissions: every verb x resource the kubernetes runtime calls (STEP_PERMISSIONS; with lanes: auto the Leases too),
               asked with SelfSubjectAccessReview in the namespace (creatable by any authenticated identity).
- secrets:     the results DB secret (required), the object-store and HF token secrets (optional: IRSA /
               workload identity, public models); existence and keys, never values.
- nodes:       the model servers of every selected cell fit on the nodes' allocatable GPUs, memory and CPU
               (needs the optional read-only ClusterRole in include/manifests/preflight/; else --skip nodes). With
               lanes: auto, first the lane plan ("lanes: 4 (2 nodes x 2 slots of 2 GPUs)", stack/lanes.py), missing
               when not even one cell fits a node, and the quota check counts that many cells at once.
- quota:       the largest cell plus one step pod fits every ResourceQuota of the namespace (hard - used).
- store:       the object store (LLMD_BENCH_RESULTS_URL, LLMD_BENCH_S3_ENDPOINT) is reachable and listable.
- existing:    serving.mode existing only: the installed objects serving.existing names exist, and no earlier run
               left a saved state unrestored (with the restore command). There `permissions` asks for
               EXISTING_PERMISSIONS in the stack's namespace (the Role llmd-bench-existing; read-only runs: its
               get/list verbs), and crds, model_cache, nodes and quota do not apply (nothing is deployed).
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from llmd_bench.integrations import storage
from llmd_bench.model import catalog, yaml_text
from llmd_bench.model.campaign import Campaign, Cell
from llmd_bench.model.errors import LlmdBenchError, RuntimeStepError
from llmd_bench.model.names import label_value
from llmd_bench.model.params import RunParams
from llmd_bench.model.settings import settings
from llmd_bench.orchestration.step_pods import LIGHT, STEP_RESOURCES
from llmd_bench.stack import lanes
from llmd_bench.stack.runtime.existing import SAVED_LABEL, locate
from llmd_bench.stack.runtime.kubernetes import api_client as make_client

CHECKS = ("namespace", "crds", "permissions", "secrets", "model_cache", "nodes", "quota", "store")
# serving.mode existing adds one
EXISTING_CHECKS = (*CHECKS, "existing")
STEP_ROLE = "llmd-bench-steps"
EXISTING_ROLE = "llmd-bench-existing"
NODE_READER = "llmd-bench-node-reader"
GPU = "nvidia.com/gpu"
API_TIMEOUT_S = 10.0
STORE_TIMEOUT_S = 20.0
NAMESPACE_SETUP = "`llmd-bench render ... --out manifests/` writes manifests/namespace/; an admin applies it"
_GIE = ("an admin installs the Gateway API Inference Extension CRDs (kubectl apply -f the manifests of a release "
        ">= v1.0: https://github.com/kubernetes-sigs/gateway-api-inference-extension/releases)")
GROUP_HINTS = {"inference.networking.k8s.io": _GIE, "inference.networking.x-k8s.io": _GIE}


class PreflightFailed(LlmdBenchError):
    """Something the run needs is missing; the lines printed before say what and how to fix it."""


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    name: str = ""

    def __str__(self) -> str:
        res = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {res}{'.' + self.group if self.group else ''}" + (f" {self.name!r}" if self.name else "")


def _perms(group: str, resources: tuple[str, ...], verbs: tuple[str, ...], sub: str = "") -> list[Permission]:
    return [Permission(v, r, group, sub) for r in resources for v in verbs]


_WRITE = ("create", "patch", "get", "list", "delete")
# What runtime/kubernetes.py calls (server-side apply is `patch`, and `create` when the object is new;
# teardown lists and deletes; deploy and the sweep read pods and their logs), in one place: preflight asks
# for exactly these, and tests/{unit,integration,e2e}/test_preflight.py proves the namespace Role grants every one of them.
STEP_PERMISSIONS: tuple[Permission, ...] = tuple(
    _perms("apps", ("deployments",), _WRITE)
    + _perms("", ("services", "configmaps", "persistentvolumeclaims"), _WRITE)
    + _perms("inference.networking.k8s.io", ("inferencepools",), _WRITE)
    + _perms("", ("pods",), ("get", "list"))
    + _perms("", ("pods",), ("get",), sub="log")
    + _perms("", ("events",), ("list",))
    + _perms("", ("persistentvolumeclaims",), ("get",))
)
# lanes: auto: deploy lists the lanes' Leases and creates, re-uses (update) or takes one over (update), teardown reads
# and deletes it (runtime/kubernetes.py LeaseApi); asked only of such campaigns, granted by the namespace Role
LEASE_PERMISSIONS: tuple[Permission, ...] = tuple(
    _perms("coordination.k8s.io", ("leases",), ("get", "list", "create", "update", "delete")))


def step_permissions(campaign: Campaign) -> tuple[Permission, ...]:
    """What the steps of this campaign call (STEP_PERMISSIONS, and the Leases with lanes: auto)."""
    return STEP_PERMISSIONS + (LEASE_PERMISSIONS if campaign.lanes == "auto" else ())


# What runtime/existing.py's revert_risks and restore call before and after patching: list HorizontalPodAutoscalers
# (Api.list_raw), list KEDA ScaledObjects, read and replace them to pause and resume them (Api.get / Api.replace on
# their raw path). Nothing patches, so no `patch`. A read-only run patches nothing and checks none of them.
EXISTING_REVERT_PERMISSIONS: tuple[Permission, ...] = tuple(
    _perms("autoscaling", ("horizontalpodautoscalers",), ("list",))
    + _perms("keda.sh", ("scaledobjects",), ("get", "list", "update"))
)
# What runtime/existing.py calls in the installed stack's namespace (serving.mode existing): read and replace the
# Deployments and the EPP ConfigMap, create/list/delete its saved-state ConfigMap, read the index Service, pods, their
# logs and events, and the autoscalers above. include/manifests/namespace/existing-rbac.yaml.j2 grants exactly these
# (tests/{unit,integration,e2e}/test_existing.py).
EXISTING_PERMISSIONS: tuple[Permission, ...] = tuple(
    _perms("apps", ("deployments",), ("get", "list", "update"))
    + _perms("", ("configmaps",), ("get", "list", "create", "update", "delete"))
    + _perms("", ("services",), ("get",))
    + _perms("", ("pods", "events"), ("get", "list"))
    + _perms("", ("pods",), ("get",), sub="log")
) + EXISTING_REVERT_PERMISSIONS
READ_ONLY_VERBS = ("get", "list")


def existing_permissions(campaign: Campaign) -> tuple[Permission, ...]:
    ex = campaign.serving.existing
    if ex is not None and ex.read_only:
        return tuple(p for p in EXISTING_PERMISSIONS if p.verb in READ_ONLY_VERBS and p not in EXISTING_REVERT_PERMISSIONS)
    return EXISTING_PERMISSIONS


@dataclass(frozen=True)
class SecretSpec:
    role: str
    name: str
    keys: tuple[str, ...]
    required: bool
    why: str
    # an absent secret only turns a feature off (MLflow logging): reported ok, saying so
    absent_means_off: bool = False


def secret_specs(campaign: Campaign) -> list[SecretSpec]:
    s = settings()
    return [
        SecretSpec("results database", s.db_secret, ("url",), True,
                   "load_results and compare store results with it"),
        SecretSpec("object store", s.s3_secret,
                   ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), False,
                   "fine if IRSA / workload identity gives the step pods S3 credentials"),
        SecretSpec("Hugging Face token", campaign.serving.hf_token_secret, ("HF_TOKEN",), False,
                   "needed for gated models and tokenizers only"),
        SecretSpec("MLflow tracking server", s.mlflow_secret, ("uri",),
                   False, "optional: without it compare does not log the run to MLflow", absent_means_off=True),
    ]


def preflight_permissions(campaign: Campaign) -> list[Permission]:
    """What preflight itself reads in the namespace, besides STEP_PERMISSIONS (Nodes are cluster-scoped: the
    optional ClusterRole)."""
    return [Permission("list", "resourcequotas")] + [Permission("get", "secrets", name=s.name) for s in secret_specs(campaign)]


@dataclass
class Result:
    check: str
    status: str  # ok | missing | warning | skipped
    detail: str


@dataclass
class Report:
    namespace: str
    results: list[Result] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str) -> None:
        self.results.append(Result(check, status, detail))

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("missing") == 0

    def lines(self) -> list[str]:
        return [f"{r.status:<8} {r.check:<12} {r.detail}" for r in self.results]

    def summary(self) -> str:
        parts = [f"{self.count('missing')} missing", f"{self.count('warning')} warning(s)", f"{self.count('ok')} ok"]
        if self.count("skipped"):
            parts.append(f"{self.count('skipped')} skipped")
        verdict = "ready to run" if self.ok else "fix the missing pieces before running"
        return f"preflight (namespace {self.namespace}): {', '.join(parts)}: {verdict}"

    def as_json(self) -> str:
        return json.dumps({"ok": self.ok, "namespace": self.namespace, "summary": self.summary(),
                           "results": [asdict(r) for r in self.results]}, indent=2)


# -- the API, as plain JSON ---------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f": {message}" if message else ""))
        self.status, self.reason, self.message = status, reason, message


class Unreachable(Exception):
    pass


class Api:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.host = getattr(client.configuration, "host", "?")

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        import urllib3  # deferred: loads urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.client.call_api(
                path, method, query_params=list((query or {}).items()), body=body,
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=API_TIMEOUT_S)
        except ApiException as exc:
            if not exc.status:  # TLS and other transport errors
                raise Unreachable(str(exc.reason).replace("\n", ": ")) from None
            message = ""
            try:
                message = json.loads(exc.body or "{}").get("message", "")
            except (ValueError, AttributeError):
                pass
            raise ApiError(exc.status, exc.reason or "", message) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, DNS, timeout: the API is not reachable
            raise Unreachable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        return json.loads(resp.data or b"{}")

    def get(self, path: str, **query: str) -> Any:
        return self.call("GET", path, query=query)


def _quantity(value: Any) -> Decimal:
    from kubernetes.utils import parse_quantity  # deferred: loads kubernetes

    return Decimal(0) if value in (None, "") else parse_quantity(str(value))


def _fmt(resource: str, value: Decimal) -> str:
    if resource.endswith("memory") or resource.endswith("storage"):
        gi = value / Decimal(2**30)
        return f"{gi:.0f}Gi" if gi == gi.to_integral_value() else f"{gi:.1f}Gi"
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m" if resource.endswith("cpu") else f"{value:.2f}"


# -- what the cells need ------------------------------------------------------------------------------------

@dataclass
class CellNeeds:
    cell: Cell
    replicas: int                 # model-server pods
    per_pod: dict[str, Decimal]   # requests of one model-server pod: nvidia.com/gpu, memory, cpu
    totals: dict[str, Decimal]    # all Deployments x replicas: requests.*, limits.memory, pods
    docs: list[dict[str, Any]]
    node_selector: dict[str, str] = field(default_factory=dict)   # of the model-server pods
    tolerations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[Any, ...]:
        return (self.replicas, *(self.per_pod.get(r, Decimal(0)) for r in (GPU, "memory", "cpu")),
                json.dumps(self.node_selector, sort_keys=True), json.dumps(self.tolerations, sort_keys=True))


def _pod_resources(pod_spec: dict[str, Any]) -> dict[str, Decimal]:
    """A pod's effective requests and limits, as the scheduler and quotas count them: the sum over its
    containers (and sidecar init containers), or the largest plain init container if that is more."""
    def of(container: dict[str, Any]) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        return {f"{kind}.{name}": _quantity(value) for kind in ("requests", "limits")
                for name, value in (res.get(kind) or {}).items()}

    inits = pod_spec.get("initContainers") or []
    running = list(pod_spec.get("containers") or []) + [c for c in inits if c.get("restartPolicy") == "Always"]
    out: dict[str, Decimal] = {}
    for c in running:
        for key, value in of(c).items():
            out[key] = out.get(key, Decimal(0)) + value
    for c in inits:
        if c.get("restartPolicy") != "Always":
            for key, value in of(c).items():
                out[key] = max(out.get(key, Decimal(0)), value)
    return out


def cell_needs(campaign: Campaign, params: RunParams, cell: Cell, run_id: str, namespace: str) -> CellNeeds:
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    docs = manifests.render_cell(campaign, params, cell, run_id, namespace)
    totals: dict[str, Decimal] = {"pods": Decimal(0)}
    replicas, per_pod, selector, tolerations = 0, {}, {}, []
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        n = int(doc["spec"].get("replicas", 1))
        template = doc["spec"]["template"]
        res = _pod_resources(template["spec"])
        for key, value in res.items():
            totals[key] = totals.get(key, Decimal(0)) + value * n
        totals["pods"] += n
        if (template["metadata"].get("labels") or {}).get("llmd-bench/component") == "model-server":
            replicas += n
            per_pod = {k.split(".", 1)[1]: v for k, v in res.items() if k.startswith("requests.")}
            selector = dict(template["spec"].get("nodeSelector") or {})
            tolerations = list(template["spec"].get("tolerations") or [])
    return CellNeeds(cell, replicas, per_pod, totals, docs, selector, tolerations)


def step_pod_totals() -> dict[str, Decimal]:
    """The biggest step pod (the sweep's load generator): it runs next to the cell."""

    best: dict[str, Decimal] = {"pods": Decimal(1)}
    for res in [LIGHT, *STEP_RESOURCES.values()]:
        for kind in ("requests", "limits"):
            for name, value in (res.get(kind) or {}).items():
                key = f"{kind}.{name}"
                best[key] = max(best.get(key, Decimal(0)), _quantity(value))
    return best


# -- checks -------------------------------------------------------------------------------------------------

def check_namespace(api: Api, report: Report) -> None:
    ns = report.namespace
    create_ns = f"an admin creates it (kubectl create namespace {ns}) and applies the namespace set-up ({NAMESPACE_SETUP})"
    try:
        obj = api.get(f"/api/v1/namespaces/{ns}")
    except ApiError as exc:
        if exc.status == 404:
            report.add("namespace", "missing", f"namespace {ns} does not exist: {create_ns}")
            return
        if exc.status != 403:
            report.add("namespace", "missing", f"cannot read namespace {ns}: {exc}")
            return
    else:
        phase = (obj.get("status") or {}).get("phase", "Active")
        if phase != "Active":
            report.add("namespace", "missing", f"namespace {ns} is {phase}: wait for it to go, then {create_ns}")
        else:
            report.add("namespace", "ok", f"namespace {ns} exists")
        return
    # A namespace-scoped identity may not read Namespace objects; a dry-run create tells whether it exists.
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "llmd-bench-preflight", "namespace": ns}}
    try:
        api.call("POST", f"/api/v1/namespaces/{ns}/configmaps", probe, query={"dryRun": "All"})
        report.add("namespace", "ok", f"namespace {ns} exists (a dry-run ConfigMap was accepted)")
    except ApiError as exc:
        if exc.status == 404:
            report.add("namespace", "missing", f"namespace {ns} does not exist: {create_ns}")
        else:
            report.add("namespace", "warning", f"cannot tell whether namespace {ns} exists: reading it and a dry-run "
                                               f"ConfigMap in it were refused ({exc})")


def check_crds(api: Api, report: Report, required: tuple[str, ...], docs: list[dict[str, Any]]) -> None:
    for crd in required:
        plural, _, group = crd.partition(".")
        hint = GROUP_HINTS.get(group, f"an admin installs the CustomResourceDefinition {crd}")
        try:
            versions = [v["version"] for v in (api.get(f"/apis/{group}").get("versions") or [])]
        except ApiError as exc:
            if exc.status == 404:
                report.add("crds", "missing", f"CRD {crd}: API group {group} is not served by the cluster: {hint}")
            else:
                report.add("crds", "missing", f"CRD {crd}: cannot read API discovery /apis/{group}: {exc}")
            continue
        served, kind = [], None
        for version in versions:
            try:
                resources = api.get(f"/apis/{group}/{version}").get("resources") or []
            except ApiError:
                continue
            for r in resources:
                if r.get("name") == plural:
                    served.append(version)
                    kind = r.get("kind")
        if not served:
            report.add("crds", "missing", f"CRD {crd}: group {group} is served ({', '.join(versions)}) but has no "
                                          f"resource {plural}: {hint}")
            continue
        used = sorted({d["apiVersion"].split("/", 1)[1] for d in docs
                       if d.get("kind") == kind and d.get("apiVersion", "").startswith(group + "/")})
        unserved = [v for v in used if v not in served]
        if unserved:
            report.add("crds", "missing", f"CRD {crd}: the manifests use {group}/{', '.join(unserved)} but the cluster "
                                          f"serves only {', '.join(served)}: {hint}")
        else:
            report.add("crds", "ok", f"CRD {crd} served ({', '.join(served)})")


def check_permissions(api: Api, report: Report, perms: tuple[Permission, ...] = STEP_PERMISSIONS,
                      namespace: str | None = None, role: str = STEP_ROLE, setup: str = NAMESPACE_SETUP) -> None:
    ns = namespace or report.namespace
    denied: list[tuple[Permission, str]] = []
    for p in perms:
        attrs = {"namespace": ns, "verb": p.verb, "group": p.group, "resource": p.resource}
        if p.subresource:
            attrs["subresource"] = p.subresource
        if p.name:
            attrs["name"] = p.name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}
        try:
            status = api.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body).get("status") or {}
        except ApiError as exc:
            report.add("permissions", "missing", f"cannot ask the API server what this identity may do "
                                                 f"(SelfSubjectAccessReview): {exc}")
            return
        if not status.get("allowed"):
            denied.append((p, status.get("reason") or ""))
    for p, _ in denied:
        report.add("permissions", "missing", f"{p} in namespace {ns} is denied: the Role {role} must grant it "
                                             f"(re-apply the namespace set-up: {setup})")
    if not denied:
        report.add("permissions", "ok", f"all {len(perms)} permissions the steps use are granted in namespace {ns}")


def check_secrets(api: Api, report: Report, specs: list[SecretSpec]) -> None:

    ns = report.namespace
    for s in specs:
        bad = "missing" if s.required else "warning"
        why = "" if s.required else f" ({s.why})"
        create = (f"kubectl -n {ns} create secret generic {s.name} "
                  + " ".join(f"--from-literal={k}=..." for k in s.keys))
        try:
            obj = api.get(f"/api/v1/namespaces/{ns}/secrets/{s.name}")
        except ApiError as exc:
            if exc.status == 404 and s.absent_means_off:
                report.add("secrets", "ok", f"{s.role} secret {s.name} does not exist: that feature is off{why}")
            elif exc.status == 404:
                report.add("secrets", bad, f"{s.role} secret {s.name} does not exist in namespace {ns}{why}: {create}")
            elif exc.status == 403:
                report.add("secrets", bad, f"cannot check the {s.role} secret {s.name}: reading it is forbidden; the "
                                           f"Role {STEP_ROLE} grants get on the default secret names (a renamed secret "
                                           "needs its name there), or run with --skip secrets")
            else:
                report.add("secrets", bad, f"cannot read the {s.role} secret {s.name}: {exc}")
            continue
        data = obj.get("data") or {}
        absent = [k for k in s.keys if k not in data and k not in (obj.get("stringData") or {})]
        empty = [k for k in s.keys if k in data and not base64.b64decode(data[k] or "")]
        if absent or empty:
            what = ", ".join([f"has no key {k}" for k in absent] + [f"key {k} is empty" for k in empty])
            keys = " ".join(f"--from-literal={k}=..." for k in s.keys)
            report.add("secrets", bad, f"{s.role} secret {s.name} {what}{why}: recreate it "
                                       f"(kubectl -n {ns} delete secret {s.name}; kubectl -n {ns} create secret "
                                       f"generic {s.name} {keys})")
        else:
            report.add("secrets", "ok", f"{s.role} secret {s.name} has {', '.join(s.keys)}")


def check_model_cache(api: Api, report: Report, campaign: Campaign, replicas: int) -> None:
    """The model-cache PVC exists, is bound, and can be mounted by every replica."""
    name, ns = campaign.serving.model_cache_pvc, report.namespace
    if not name:
        report.add("model_cache", "ok", "no model-cache PVC configured (serving.model_cache_pvc): each pod downloads the weights")
        return
    try:
        pvc = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")
    except ApiError as exc:
        if exc.status == 404:
            report.add("model_cache", "missing", f"serving.model_cache_pvc {name} does not exist in namespace {ns}: "
                                                 "create it (ReadWriteMany when replicas > 1) or remove the setting")
        else:
            report.add("model_cache", "missing", f"cannot read PersistentVolumeClaim {name}: {exc}")
        return
    modes = set((pvc.get("spec") or {}).get("accessModes") or [])
    phase = (pvc.get("status") or {}).get("phase")
    if replicas > 1 and not modes & {"ReadWriteMany", "ReadOnlyMany"}:
        report.add("model_cache", "missing", f"PersistentVolumeClaim {name} is {', '.join(sorted(modes)) or 'of no access mode'} "
                                             f"but {replicas} replicas must mount it: use a ReadWriteMany volume")
    elif phase not in (None, "Bound"):
        report.add("model_cache", "warning", f"PersistentVolumeClaim {name} is {phase}, not Bound yet")
    else:
        report.add("model_cache", "ok", f"PersistentVolumeClaim {name} ({', '.join(sorted(modes))}) for {replicas} replica(s)")


def _unusable(node: dict[str, Any], needs: CellNeeds) -> str:
    """Why the model-server pods cannot go to this node at all, or '' (as the lane plan judges nodes: lanes.py)."""
    return lanes.node_excluded(node, needs.node_selector, needs.tolerations, needs.per_pod)


def _fits_per_node(node: dict[str, Any], needs: CellNeeds) -> tuple[int, dict[str, Decimal]]:
    alloc = {r: _quantity((node.get("status") or {}).get("allocatable", {}).get(r)) for r in (GPU, "memory", "cpu")}
    if _unusable(node, needs):
        return 0, alloc
    fits = [math.floor(alloc[r] / need) for r, need in needs.per_pod.items() if r in alloc and need > 0]
    return (min(fits) if fits else 1_000_000), alloc


def _node_text(node: dict[str, Any], alloc: dict[str, Decimal], needs: CellNeeds) -> str:
    why = _unusable(node, needs)
    return (f"{node['metadata']['name']} {_fmt(GPU, alloc[GPU])} GPU {_fmt('memory', alloc['memory'])} "
            f"{_fmt('cpu', alloc['cpu'])} cpu" + (f" ({why})" if why else ""))


def check_lanes(report: Report, nodes: list[dict[str, Any]], needs: list[CellNeeds]) -> int | None:
    """lanes: auto: the lane plan each deploy makes (lanes.plan_lanes, for the largest selected cell), reported; missing
    when not even one cell fits a node. The lanes planned, or None."""
    gpus = {id(n): math.prod(lanes.model_server_gpus(n.docs)) for n in needs}
    largest = max(needs, key=lambda n: gpus[id(n)])
    try:
        plan = lanes.plan_lanes(nodes, gpus[id(largest)], largest.node_selector, largest.tolerations, str(largest.cell))
    except lanes.LanesError as exc:
        report.add("nodes", "missing", str(exc))
        return None
    report.add("nodes", "ok", f"{plan.describe()}: {len(needs)} selected cell(s), at most {min(plan.lanes, len(needs))} "
                              "at once, each on its own GPUs (allocatable, not free: other workloads may hold some)")
    return plan.lanes


def check_nodes(api: Api, report: Report, needs: list[CellNeeds], parallel: int, service_account: str,
                auto: bool = False) -> int | None:
    """Every selected cell's model servers fit the nodes, `parallel` cells at once; with lanes: auto (`auto`), the lane
    plan first, and as many cells at once as it has lanes. Returns the lanes planned (auto), else None."""
    try:
        nodes = api.get("/api/v1/nodes").get("items") or []
    except ApiError as exc:
        if exc.status == 403:
            skip = ("; lanes: auto needs it (each deploy plans the lanes from the nodes), or set lanes to a number" if auto
                    else ", or run with --skip nodes")
            report.add("nodes", "missing", f"cannot list nodes (forbidden) to check GPU capacity: an admin applies the "
                                           f"read-only ClusterRole {NODE_READER} and its binding to {service_account} "
                                           f"(llmd-bench preflight --node-reader-manifest --namespace {report.namespace} "
                                           f"| kubectl apply -f -){skip}")
        else:
            report.add("nodes", "missing", f"cannot list nodes: {exc}")
        return None
    planned = None
    if auto and needs:
        planned = check_lanes(report, nodes, needs)
        # memory and CPU as well: the lanes count GPUs only
        parallel = max(1, min(planned or 1, len(needs)))
    shapes: dict[tuple[Any, ...], list[CellNeeds]] = {}
    for n in needs:
        shapes.setdefault(n.shape, []).append(n)
    failing = []
    for cells in shapes.values():
        first = cells[0]
        want = first.replicas * parallel
        per_node = [(_fits_per_node(node, first), node) for node in nodes]
        fits = sum(f for (f, _), _ in per_node)
        listed = sorted(per_node, key=lambda x: (-x[0][1][GPU], -x[0][1]["memory"]))
        shown = ", ".join(_node_text(node, alloc, first) for (_, alloc), node in listed[:8])
        if len(listed) > 8:
            shown += f", ... {len(listed) - 8} more"
        req = ", ".join(f"{_fmt(r, first.per_pod.get(r, Decimal(0)))} {r}" for r in (GPU, "memory", "cpu")
                        if first.per_pod.get(r, Decimal(0)) > 0 or r == GPU)
        more = f" (and {len(cells) - 1} more cell(s) alike)" if len(cells) > 1 else ""
        at_once = f" x {parallel} cells at once (lanes)" if parallel > 1 else ""
        line = (f"{first.cell}{more} needs {first.replicas} replicas x ({req}){at_once}; nodes: "
                f"{shown or 'none'} -> fits {min(fits, 999)} of {want}")
        if fits < want:
            excluded = any(_unusable(node, first) not in ("", "cordoned") for node in nodes)
            failing.append(line + f": add nodes with >= {_fmt(GPU, first.per_pod.get(GPU, Decimal(0)))} allocatable "
                                  f"{GPU} and >= {_fmt('memory', first.per_pod.get('memory', Decimal(0)))} memory each"
                                  + (", let the pods onto the excluded nodes (nodeSelector / tolerations)" if excluded else "")
                                  + ", or lower replicas / tensor_parallel_size in --params")
    for line in failing:
        report.add("nodes", "missing", line)
    if not failing:
        largest = max(needs, key=lambda n: (n.per_pod.get(GPU, 0) * n.replicas, n.per_pod.get("memory", 0) * n.replicas))
        cells = shapes[largest.shape]
        first = cells[0]
        req = ", ".join(f"{_fmt(r, first.per_pod.get(r, Decimal(0)))} {r}" for r in (GPU, "memory", "cpu")
                        if first.per_pod.get(r, Decimal(0)) > 0 or r == GPU)
        fits = sum(_fits_per_node(node, first)[0] for node in nodes)
        report.add("nodes", "ok", f"{first.cell} needs {first.replicas} replicas x ({req}) -> fits {min(fits, 999)} "
                                  f"on {len(nodes)} node(s) (allocatable, not free: other workloads may hold some)")
    return planned


# quota key -> the key of a cell's totals it limits
QUOTA_KEYS = {"requests.cpu": "requests.cpu", "cpu": "requests.cpu", "requests.memory": "requests.memory",
              "memory": "requests.memory", f"requests.{GPU}": f"requests.{GPU}", "limits.memory": "limits.memory",
              "pods": "pods"}


def _leftover_usage(api: Api, ns: str, campaign: Campaign) -> tuple[dict[str, Decimal], int]:
    """Requests of this campaign's pods from earlier runs: counted in `used`, but deploy removes them first."""

    sel = f"app.kubernetes.io/managed-by=llmd-bench,llmd-bench/campaign={label_value(campaign.dag_id)}"
    try:
        pods = api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=sel).get("items") or []
    except (ApiError, Unreachable):
        return {}, 0
    pods = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    out: dict[str, Decimal] = {"pods": Decimal(len(pods))}
    for p in pods:
        for k, v in _pod_resources(p.get("spec") or {}).items():
            out[k] = out.get(k, Decimal(0)) + v
    return out, len(pods)


def _some_container_lacks_cpu_limit(needs: list[CellNeeds]) -> bool:
    return any("cpu" not in ((c.get("resources") or {}).get("limits") or {})
               for n in needs for d in n.docs if d["kind"] == "Deployment"
               for c in d["spec"]["template"]["spec"].get("containers") or [])


def check_quota(api: Api, report: Report, needs: list[CellNeeds], parallel: int, campaign: Campaign) -> None:
    ns = report.namespace
    try:
        quotas = api.get(f"/api/v1/namespaces/{ns}/resourcequotas").get("items") or []
    except ApiError as exc:
        if exc.status == 403:
            report.add("quota", "missing", f"cannot list ResourceQuotas in namespace {ns} (forbidden): the Role "
                                           f"{STEP_ROLE} must grant list resourcequotas (re-apply the namespace "
                                           f"set-up: {NAMESPACE_SETUP}), or run with --skip quota")
        else:
            report.add("quota", "missing", f"cannot list ResourceQuotas in namespace {ns}: {exc}")
        return
    if not quotas:
        report.add("quota", "ok", f"no ResourceQuota in namespace {ns}")
        return
    step = step_pod_totals()
    leftovers, n_left = _leftover_usage(api, ns, campaign)
    problems = 0
    for q in quotas:
        name = q["metadata"]["name"]
        hard = (q.get("status") or {}).get("hard") or (q.get("spec") or {}).get("hard") or {}
        used = (q.get("status") or {}).get("used") or {}
        if "limits.cpu" in hard and _some_container_lacks_cpu_limit(needs):
            report.add("quota", "warning", f"ResourceQuota {name} limits limits.cpu but the cell's containers set no "
                                           "cpu limit: pods are rejected unless a LimitRange in the namespace gives "
                                           "a default")
        for key, total_key in QUOTA_KEYS.items():
            if key not in hard:
                continue
            worst = max(needs, key=lambda n: n.totals.get(total_key, Decimal(0)))
            need = worst.totals.get(total_key, Decimal(0)) * parallel + step.get(total_key, Decimal(0))
            free = _quantity(hard[key]) - _quantity(used.get(key)) + leftovers.get(total_key, Decimal(0))
            if need > free:
                problems += 1
                credit = f" (crediting {n_left} pod(s) of earlier runs that deploy removes)" if n_left else ""
                at_once = f" x {parallel} cells at once" if parallel > 1 else ""
                report.add("quota", "missing",
                           f"ResourceQuota {name}: {key} needs {_fmt(key, need)} for {worst.cell}{at_once} plus a step "
                           f"pod, but hard {hard[key]} - used {used.get(key, '0')} leaves {_fmt(key, free)}{credit}: "
                           f"raise it (kubectl -n {ns} edit resourcequota {name}) or lower replicas in --params")
    if not problems:
        report.add("quota", "ok", f"the largest cell plus a step pod fits {', '.join(q['metadata']['name'] for q in quotas)}")


def _with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised as is in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def check_store(report: Report) -> None:

    url = settings().results_url or storage.DEFAULT_CLUSTER_URL
    if not url.startswith("s3://"):
        report.add("store", "missing", f"{storage.URL_ENV}={url!r}: the kubernetes runtime needs an S3-compatible "
                                       "store (s3://bucket[/prefix]) that every step pod can reach")
        return
    try:
        store = storage.ObjectStore(url)
    except storage.StorageError as exc:
        report.add("store", "missing", str(exc))
        return
    bucket = store.root.split("/", 1)[0]
    where = f" at {store.endpoint}" if store.endpoint else " (AWS S3: no LLMD_BENCH_S3_ENDPOINT)"
    try:
        _with_timeout(lambda: store.fs.ls(store.root, detail=False), STORE_TIMEOUT_S)
    except FileNotFoundError:
        # the prefix may not exist yet; the bucket must
        try:
            _with_timeout(lambda: store.fs.ls(bucket, detail=False), STORE_TIMEOUT_S)
        except FileNotFoundError:
            report.add("store", "missing", f"object storage {url}{where}: bucket {bucket} does not exist: create it "
                                           f"(e.g. aws s3 mb s3://{bucket} --endpoint-url ...)")
            return
        except Exception as exc:  # noqa: BLE001 - whatever the listing raised is the check's answer, named
            report.add("store", "missing", f"object storage {url}{where}: listing failed: {type(exc).__name__}: {exc}")
            return
    except Exception as exc:  # noqa: BLE001 - network, credentials, permissions: one message naming URL and endpoint
        first = str(exc).splitlines()[0] if str(exc) else ""
        report.add("store", "missing", f"object storage {url}{where}: listing failed: {type(exc).__name__}: {first}: "
                                       f"check that the store is up, {storage.URL_ENV} / LLMD_BENCH_S3_ENDPOINT, and "
                                       "the credentials (AWS_* or the object-store secret)")
        return
    report.add("store", "ok", f"object storage {url}{where} is reachable and listable")


class _StackReader:
    """The stack's namespace as runtime/existing.py's `locate` reads it (get one object, None when absent; list by
    label selector), through preflight's Api: preflight and deploy check the same things the same way."""

    PATHS = {"Deployment": "/apis/apps/v1/namespaces/{ns}/deployments", "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
             "Service": "/api/v1/namespaces/{ns}/services"}

    def __init__(self, api: Api, ns: str) -> None:
        self.api, self.ns = api, ns

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.get(self.PATHS[kind].format(ns=self.ns) + f"/{name}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise RuntimeStepError(f"reading {kind}/{name}: {exc}") from None

    def list(self, kind: str, selector: str = "") -> list[dict[str, Any]]:
        try:
            return list(self.api.get(self.PATHS[kind].format(ns=self.ns), labelSelector=selector).get("items") or [])
        except ApiError as exc:
            raise RuntimeStepError(f"listing {kind}s matching {selector!r}: {exc}") from None


def check_existing(api: Api, report: Report, campaign: Campaign) -> None:
    """The installed objects serving.existing names, read and cross-checked as deploy does (existing.locate: the
    EPP's config found from its --config-file / --config-text, the campaign's configmap / config_key checked against
    it, the index Service's port), and no saved state an earlier run left unrestored."""

    ex = campaign.serving.existing
    assert ex is not None
    ns = ex.namespace
    found, missing = [], []
    wanted = [("Deployment", f"/apis/apps/v1/namespaces/{ns}/deployments/{n}", n) for n in ex.model_servers.names]
    wanted += [("Deployment", f"/apis/apps/v1/namespaces/{ns}/deployments/{ex.epp.deployment}", ex.epp.deployment)]
    if ex.index_service:
        wanted.append(("Service", f"/api/v1/namespaces/{ns}/services/{ex.index_service}", ex.index_service))
    for kind, path, name in wanted:
        try:
            api.get(path)
        except ApiError as exc:
            missing.append(f"{kind}/{name} ({'not found' if exc.status == 404 else exc})")
            continue
        found.append(f"{kind}/{name}")
    if not missing:
        try:
            live = locate(_StackReader(api, ns), ex)  # type: ignore[arg-type]  # the two calls locate makes
        except RuntimeStepError as exc:
            missing.append(str(exc))
        else:
            found.append(f"the EPP's config in {live.source.describe(ex.epp.deployment)}")
    if ex.model_servers.selector:
        try:
            items = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments", labelSelector=ex.model_servers.selector)
            if not items.get("items"):
                missing.append(f"Deployments matching {ex.model_servers.selector!r} (none)")
            else:
                found.append(f"{len(items['items'])} model-server Deployment(s) matching {ex.model_servers.selector!r}")
        except ApiError as exc:
            missing.append(f"Deployments matching {ex.model_servers.selector!r} ({exc})")
    for m in missing:
        report.add("existing", "missing", f"namespace {ns}: {m}: fix serving.existing in the campaign file")
    if not missing:
        report.add("existing", "ok", f"namespace {ns} has {', '.join(found)}")
    try:
        states = api.get(f"/api/v1/namespaces/{ns}/configmaps", labelSelector=f"{SAVED_LABEL}=true").get("items") or []
    except ApiError as exc:
        report.add("existing", "missing", f"cannot list saved states in namespace {ns}: {exc}")
        return
    for cm in states:
        data = cm.get("data") or {}
        report.add("existing", "missing", f"run {data.get('run_id')!r} (campaign {data.get('campaign')}, cell "
                   f"{data.get('cell')}) "
                   f"left the installed stack patched (ConfigMap/{cm['metadata']['name']}, saved {data.get('saved_at')}): "
                   f"restore it with `llmd-bench restore --run-id {data.get('run_id')} --campaign {data.get('campaign')}`")


# -- the whole preflight --------------------------------------------------------------------------------------

def node_reader_manifests(namespace: str, service_account: str | None = None) -> list[dict[str, Any]]:
    """The optional read-only ClusterRole (+ binding to the step pods' service account) for the nodes check."""
    from llmd_bench.stack.manifests import _env  # deferred: loads jinja2

    sa = service_account or settings().service_account
    text = _env().get_template("preflight/node-reader.yaml.j2").render(
        namespace=namespace, service_account=sa, cluster_role=NODE_READER)
    return [d for d in yaml_text.load_all(text) if d]


def run(campaign: Campaign, params: RunParams, namespace: str, run_id: str = "preflight",
        skip: tuple[str, ...] = (), api_client: Any = None) -> Report:
    """Every check, in order; a check that cannot run says why in its own line."""

    report = Report(namespace)
    if campaign.serving.mode == "existing":
        return _run_existing(campaign, report, skip, api_client)
    selected = [c for c in campaign.cells() if params.selects(c)]
    needs = [cell_needs(campaign, params, c, run_id, namespace) for c in selected]
    docs = [d for n in needs for d in n.docs]
    # lanes: auto (None): the nodes check plans the lanes, and the quota check counts that many cells at once
    fixed = lanes.fixed_lanes(campaign.lanes, cluster=True, serving_mode=campaign.serving.mode)
    parallel = max(1, min(fixed, len(selected))) if fixed is not None else 1
    planned: dict[str, int] = {}
    sa = settings().service_account

    def nodes(api: Api) -> None:
        found = check_nodes(api, report, needs, parallel, f"system:serviceaccount:{namespace}:{sa}", auto=fixed is None)
        if found:
            planned["parallel"] = max(1, min(found, len(selected)))

    cluster_checks: list[tuple[str, Callable[[Api], None]]] = [
        ("namespace", lambda api: check_namespace(api, report)),
        ("crds", lambda api: check_crds(api, report, catalog.entry(params.llmd_version).required_crds, docs)),
        ("permissions", lambda api: check_permissions(api, report, step_permissions(campaign))),
        ("secrets", lambda api: check_secrets(api, report, secret_specs(campaign))),
        ("model_cache", lambda api: check_model_cache(api, report, campaign, params.replicas)),
        ("nodes", nodes),
        ("quota", lambda api: check_quota(api, report, needs, planned.get("parallel", parallel), campaign)),
    ]
    return _run_checks(report, cluster_checks, skip, api_client)


def _run_existing(campaign: Campaign, report: Report, skip: tuple[str, ...], api_client: Any) -> Report:
    """serving.mode existing: the installed stack's namespace, its objects and the Role there; nothing is deployed,
    so CRDs, the model cache, nodes and quota are not checked."""
    ex = campaign.serving.existing
    assert ex is not None
    setup = f"`llmd-bench render --campaign {campaign.name} ...` writes manifests/namespace/existing-rbac; an admin applies it"
    not_deployed = f"serving.mode existing: the installed stack in namespace {ex.namespace} is used, nothing is deployed"
    cluster_checks: list[tuple[str, Callable[[Api], None]]] = [
        ("namespace", lambda api: check_namespace(api, report)),
        ("crds", lambda api: report.add("crds", "skipped", not_deployed)),
        ("permissions", lambda api: check_permissions(api, report, existing_permissions(campaign), ex.namespace,
                                                      EXISTING_ROLE, setup)),
        ("secrets", lambda api: check_secrets(api, report, secret_specs(campaign))),
        ("model_cache", lambda api: report.add("model_cache", "skipped", not_deployed)),
        ("nodes", lambda api: report.add("nodes", "skipped", not_deployed)),
        ("quota", lambda api: report.add("quota", "skipped", not_deployed)),
        ("existing", lambda api: check_existing(api, report, campaign)),
    ]
    return _run_checks(report, cluster_checks, skip, api_client)


def _run_checks(report: Report, cluster_checks: list[tuple[str, Callable[[Api], None]]], skip: tuple[str, ...],
                api_client: Any) -> Report:
    api: Api | None = None
    unreachable = ""
    if any(name not in skip for name, _ in cluster_checks):
        try:
            if api_client is None:
                api_client = make_client()
            api = Api(api_client)
            api.get("/version")
        except Unreachable as exc:
            unreachable = f"cannot reach the Kubernetes API at {api.host if api else '?'}: {exc}"
        except ApiError:
            pass  # it answered; /version may be restricted
        except Exception as exc:  # noqa: BLE001 - no kubeconfig, no in-cluster service account
            unreachable = f"no Kubernetes API configured: {type(exc).__name__}: {exc} (LLMD_BENCH_KUBE_API, kubeconfig)"
    for name, check in cluster_checks:
        if name in skip:
            report.add(name, "skipped", f"--skip {name}")
        elif unreachable:
            report.add(name, "missing", unreachable)
        else:
            assert api is not None
            try:
                check(api)
            except Unreachable as exc:
                report.add(name, "missing", f"the Kubernetes API at {api.host} stopped answering: {exc}")
    if "store" in skip:
        report.add("store", "skipped", "--skip store")
    else:
        check_store(report)
    return report
