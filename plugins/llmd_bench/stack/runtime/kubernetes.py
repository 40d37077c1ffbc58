"""Kubernetes runtime: step pods (KubernetesPodOperator settings) and the cell's stack in a cluster.

Pod settings come from the deployment's environment, never from a trigger:
LLMD_BENCH_STEP_IMAGE, LLMD_BENCH_NAMESPACE, LLMD_BENCH_SERVICE_ACCOUNT, LLMD_BENCH_RESULTS_URL (the
S3-compatible store step pods and Airflow exchange results through, default s3://llmd-bench),
LLMD_BENCH_S3_ENDPOINT (LLMD_BENCH_STEP_S3_ENDPOINT when pods reach it elsewhere), LLMD_BENCH_S3_SECRET (Secret with
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY),
LLMD_BENCH_DB_SECRET (Secret with the results database URL), LLMD_BENCH_KUBE_CONN (Airflow connection id).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from llmd_bench.measure.observe import pcp
from llmd_bench.measure.observe.prometheus import fetch_text
from llmd_bench.measure.observe.sampler import Targets
from llmd_bench.measure.served import ServedSource
from llmd_bench.model import catalog
from llmd_bench.model.errors import LlmdBenchError, RuntimeStepError
from llmd_bench.model.names import label_value
from llmd_bench.model.settings import settings
from llmd_bench.stack import lanes
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import stack_metadata as sm
from llmd_bench.stack.runtime.base import Runtime

# The kinds of object this tool creates, in apply order (deleted in reverse).
KINDS = ("PersistentVolumeClaim", "ConfigMap", "Service", "Deployment", "InferencePool")
FIELD_MANAGER = "llmd-bench"
WAITING_FAILURES = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                    "CreateContainerConfigError", "CreateContainerError"}


def namespace() -> str:
    return settings().namespace


def api_client() -> Any:
    """In a pod: the service account. Elsewhere: the kubeconfig. LLMD_BENCH_KUBE_API=URL talks to an API
    server without authentication (kubectl proxy, or the tests' fake)."""
    from kubernetes import client, config  # deferred: loads kubernetes

    url = settings().kube_api
    if url:
        cfg = client.Configuration()
        cfg.host = url
        return client.ApiClient(cfg)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def read_pod_log(core: Any, ns: str, pod: str, container: str | None, lines: int | None = 30) -> str:
    """The last `lines` lines of a container's log (None: all of it since the container started), or "(no log: ...)"."""
    from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

    try:
        # the text as the kubelet sent it: the client's own decoding returns str(bytes), "b'...'", for text/plain
        resp = core.read_namespaced_pod_log(pod, ns, container=container, tail_lines=lines, _preload_content=False)
        return bytes(resp.data).decode(errors="replace")
    except ApiException as exc:
        return f"(no log: {exc.status} {exc.reason})"


class Cluster:
    """The few API calls the steps need, namespaced, as plain dicts."""

    def __init__(self, api: Any, ns: str) -> None:
        from kubernetes import client  # deferred: loads kubernetes

        self.api, self.ns = api, ns
        self.core, self.apps, self.custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    def _plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def apply(self, doc: dict[str, Any]) -> None:
        """Server-side apply, taking ownership of the fields this tool sets."""
        kind, name = doc["kind"], doc["metadata"]["name"]
        kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
        if kind == "Deployment":
            self.apps.patch_namespaced_deployment(name, self.ns, doc, **kw)
        elif kind == "Service":
            self.core.patch_namespaced_service(name, self.ns, doc, **kw)
        elif kind == "ConfigMap":
            self.core.patch_namespaced_config_map(name, self.ns, doc, **kw)
        elif kind == "PersistentVolumeClaim":
            self.core.patch_namespaced_persistent_volume_claim(name, self.ns, doc, **kw)
        elif kind == "InferencePool":
            self.custom.patch_namespaced_custom_object("inference.networking.k8s.io", "v1", self.ns, "inferencepools",
                                                       name, doc, **kw)
        else:
            raise RuntimeStepError(f"cannot apply kind {kind}")

    def list(self, kind: str, selector: str) -> list[dict[str, Any]]:
        if kind == "Deployment":
            items = self.apps.list_namespaced_deployment(self.ns, label_selector=selector).items
        elif kind == "Service":
            items = self.core.list_namespaced_service(self.ns, label_selector=selector).items
        elif kind == "ConfigMap":
            items = self.core.list_namespaced_config_map(self.ns, label_selector=selector).items
        elif kind == "PersistentVolumeClaim":
            items = self.core.list_namespaced_persistent_volume_claim(self.ns, label_selector=selector).items
        elif kind == "Pod":
            items = self.core.list_namespaced_pod(self.ns, label_selector=selector).items
        elif kind == "InferencePool":
            return self.custom.list_namespaced_custom_object("inference.networking.k8s.io", "v1", self.ns,
                                                             "inferencepools", label_selector=selector).get("items", [])
        else:
            raise RuntimeStepError(f"cannot list kind {kind}")
        return [self._plain(i) for i in items]

    def delete(self, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            if kind == "Deployment":
                self.apps.delete_namespaced_deployment(name, self.ns, propagation_policy="Background")
            elif kind == "Service":
                self.core.delete_namespaced_service(name, self.ns)
            elif kind == "ConfigMap":
                self.core.delete_namespaced_config_map(name, self.ns)
            elif kind == "PersistentVolumeClaim":
                self.core.delete_namespaced_persistent_volume_claim(name, self.ns)
            elif kind == "InferencePool":
                self.custom.delete_namespaced_custom_object("inference.networking.k8s.io", "v1", self.ns,
                                                            "inferencepools", name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def pod_log(self, pod: str, container: str | None, lines: int | None = 30) -> str:
        return read_pod_log(self.core, self.ns, pod, container, lines)

    def nodes(self) -> tuple[builtins.list[dict[str, Any]] | None, str | None]:  # `list` here is the method above
        """All nodes, or (None, why not): nodes are cluster-scoped and the step Role is namespaced; the optional
        ClusterRole llmd-bench-node-reader (include/manifests/preflight/node-reader.yaml.j2) grants get and list."""
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            return [self._plain(n) for n in self.core.list_node().items], None
        except ApiException as exc:
            if exc.status == 403:
                return None, ("reading nodes is forbidden (403) to this service account: nodes are cluster-scoped; "
                              "the optional ClusterRole llmd-bench-node-reader grants it")
            return None, f"reading nodes failed: {exc.status} {exc.reason}"


def selector_string(labels: dict[str, str], extra: str = "") -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) + (f",{extra}" if extra else "")


def _cell_objects(ctx: StepContext, lane_node: str | None = None) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    assert ctx.cell is not None
    docs = manifests.render_cell(ctx.campaign, ctx.params, ctx.cell, ctx.run_id, namespace(), lane_node)
    labels, selector = manifests.cell_labels(ctx.campaign, ctx.cell, ctx.run_id)
    return docs, labels, selector


def ready_timeout_s(size_gb: float) -> float:
    """Pulling the image and loading the weights: 10 min plus 1 min per 2 GB, unless the deployment says."""
    timeout = settings().ready_timeout_s
    return 600 + 30 * size_gb if timeout is None else timeout


def crashloop_restarts() -> int:
    """Restarts after which a crash-looping container is taken as failed rather than still starting."""
    return settings().crashloop_restarts


def pod_failure(pod: dict[str, Any]) -> str | None:
    """Why a pod will not become ready by waiting longer, or None."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return f"Unschedulable: {cond.get('message', '')}"
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        for term in (state.get("terminated") or {}, last.get("terminated") or {}):
            if term.get("reason") == "OOMKilled":
                return f"OOMKilled: container {cs.get('name')} ran out of memory (exit code {term.get('exitCode')})"
        if waiting.get("reason") == "CrashLoopBackOff" and cs.get("restartCount", 0) < crashloop_restarts():
            continue  # e.g. the EPP before its index answered: recovers within the readiness timeout
        if waiting.get("reason") in WAITING_FAILURES:
            return f"{waiting['reason']}: container {cs.get('name')}: {waiting.get('message', '')}"
    return None


def sweep_leftovers(cluster: Cluster, ctx: StepContext, remove: bool = True) -> list[str]:
    """Objects this tool labelled for the campaign in earlier runs: removed before this run deploys (listed only
    with remove=False)."""

    run = label_value(ctx.run_id)
    sel = (f"app.kubernetes.io/managed-by=llmd-bench,llmd-bench/campaign={label_value(ctx.campaign.dag_id)},"
           f"llmd-bench/run!={run}")
    found = []
    for kind in reversed(list(KINDS)):
        for obj in cluster.list(kind, sel):
            if remove:
                cluster.delete(kind, obj["metadata"]["name"])
            found.append(f"{kind}/{obj['metadata']['name']} (run {obj['metadata'].get('labels', {}).get('llmd-bench/run')})")
    return found


def deploy(ctx: StepContext) -> dict[str, Any]:
    assert ctx.cell is not None
    cluster = Cluster(api_client(), namespace())
    removed = sweep_leftovers(cluster, ctx)
    for r in removed:
        print(f"removed a leftover of an earlier run: {r}", flush=True)
    docs, labels, selector = _cell_objects(ctx, lane_node(ctx))
    from llmd_bench.stack.manifests import cell_names  # deferred: loads jinja2

    # The EPP connects to the Redis/Valkey index while it starts: the index comes up first.
    index_name = cell_names(ctx.cell)["kv"]
    index_docs = [d for d in docs if d["metadata"]["name"] == index_name]
    for batch in (index_docs, [d for d in docs if d not in index_docs]):
        if not batch:
            continue
        for doc in batch:
            cluster.apply(doc)
            print(f"applied {doc['kind']}/{doc['metadata']['name']}", flush=True)
        wait_ready(cluster, batch, selector, ready_timeout_s(ctx.model_spec.size_gb))
    pods = cluster.list("Pod", selector_string(selector))
    digests = sorted({f"{cs.get('image')}@{cs.get('imageID', '').rsplit('@', 1)[-1]}"
                      for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or [] if cs.get("imageID")})
    memory = _memory_plan(ctx)
    with ctx.update_record() as record:
        record["versions"]["image_digests"] = digests
        if memory:
            record["memory_plan"] = memory
    return {"replicas": _replica_urls(pods), "endpoint": endpoint(ctx), "kv_backend": _kv(ctx), "image_digests": digests,
            "removed_leftovers": removed}


def _memory_plan(ctx: StepContext) -> dict[str, Any] | None:
    """The model server's memory plan, as render_cell sized its pod."""
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    assert ctx.cell is not None
    if ctx.campaign.serving.backend != "vllm":
        return None
    plan = manifests.memory_plan(manifests.cell_campaign(ctx.campaign, ctx.cell), ctx.cell,
                                 ctx.params.tensor_parallel_size, catalog.entry(ctx.params.llmd_version),
                                 ctx.configuration)
    return plan.as_dict() | {"summary": plan.describe()}


def wait_ready(cluster: Cluster, docs: list[dict[str, Any]], selector: dict[str, str], timeout_s: float) -> list[dict[str, Any]]:
    poll = settings().poll_s
    deployments = {d["metadata"]["name"]: d["spec"]["replicas"] for d in docs if d["kind"] == "Deployment"}
    sel = selector_string(selector)
    deadline = time.monotonic() + timeout_s
    while True:
        pods = cluster.list("Pod", sel)
        for pod in pods:
            reason = pod_failure(pod)
            if reason:
                name = pod["metadata"]["name"]
                statuses: list[dict[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
                container = statuses[0].get("name") if statuses else None
                raise RuntimeStepError(f"pod {name} cannot start: {reason}\nlast log lines of {name}:\n"
                                       f"{cluster.pod_log(name, container)}")
        ready = {d["metadata"]["name"]: (d.get("status") or {}).get("readyReplicas") or 0
                 for d in cluster.list("Deployment", sel)}
        waiting = {n: f"{ready.get(n, 0)}/{want}" for n, want in deployments.items() if ready.get(n, 0) < want}
        if not waiting:
            return pods
        if time.monotonic() > deadline:
            raise RuntimeStepError(f"not ready after {timeout_s:.0f} s: "
                                   + ", ".join(f"{n} {r} ready" for n, r in waiting.items()))
        time.sleep(poll)


def _replica_urls(pods: list[dict[str, Any]]) -> list[str]:
    from llmd_bench.stack.manifests import MODEL_PORT  # deferred: loads jinja2

    return sorted(f"http://{p['status']['podIP']}:{MODEL_PORT}" for p in _model_server_pods(pods)
                  if (p.get("status") or {}).get("podIP"))


def _model_server_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("llmd-bench/component") == "model-server"]


def _kv(ctx: StepContext) -> dict[str, Any] | None:
    from llmd_bench.stack.manifests import cell_names  # deferred: loads jinja2

    assert ctx.cell is not None
    kind = ctx.configuration.store_kind
    if kind is None:
        return None

    image = catalog.entry(ctx.params.llmd_version).images[kind]
    return {"kind": kind, "host": f"{cell_names(ctx.cell)['kv']}.{namespace()}.svc.cluster.local", "port": 6379,
            "server_version": image.rsplit(":", 1)[-1], "image": image}


def endpoint(ctx: StepContext) -> str:
    """The EPP's Envoy: every request is routed by the llm-d scheduler (names are deterministic)."""
    from llmd_bench.stack.manifests import ENVOY_PORT, cell_names  # deferred: loads jinja2

    assert ctx.cell is not None
    return f"http://{cell_names(ctx.cell)['epp']}.{namespace()}.svc.cluster.local:{ENVOY_PORT}"


def observation_targets(ctx: StepContext) -> Any:
    """Replica pod IPs, the KV index and the EPP's metrics through their Services (step pods run in the
    cell's namespace, so they can reach all three)."""
    from llmd_bench.stack.manifests import EPP_METRICS_PORT, cell_names  # deferred: loads jinja2

    assert ctx.cell is not None
    _, _, selector = _cell_objects(ctx)
    pods = Cluster(api_client(), namespace()).list("Pod", selector_string(selector))
    kv = _kv(ctx)
    epp = f"http://{cell_names(ctx.cell)['epp']}.{namespace()}.svc.cluster.local:{EPP_METRICS_PORT}/metrics"
    return Targets(_replica_urls(pods), (kv["host"], kv["port"]) if kv else None, epp if kv else None)


RESTARTED_AT = "llmd-bench/restarted-at"


def restart_epp(ctx: StepContext, timeout_s: float = 300.0) -> None:
    """Empty the EPP's in-memory state (the approximate prefix index, or the precise scorer's in-memory KV-block
    index, which no released llm-d-kv-cache clears on AllBlocksCleared: pkg/kvevents/pool.go @v0.7.1, @v0.8.1):
    roll its Deployment with a new template annotation, as `kubectl rollout restart` does (the step Role may
    patch deployments, not delete pods), and wait until every EPP pod carries it and is ready."""
    docs, _, selector = _cell_objects(ctx)
    (epp,) = [d for d in docs if d["kind"] == "Deployment"
              and d["spec"]["template"]["metadata"]["labels"].get("llmd-bench/component") == "epp"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    epp["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = stamp
    cluster = Cluster(api_client(), namespace())
    cluster.apply(epp)
    sel = selector_string({**selector, "llmd-bench/component": "epp"})
    poll = settings().poll_s
    deadline = time.monotonic() + timeout_s
    while True:
        pods = cluster.list("Pod", sel)
        fresh = [p for p in pods if (p["metadata"].get("annotations") or {}).get(RESTARTED_AT) == stamp
                 and all(cs.get("ready") for cs in (p.get("status") or {}).get("containerStatuses") or [{}])]
        if len(fresh) == len(pods) == epp["spec"]["replicas"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeStepError(f"the EPP of {ctx.cell} was not restarted within {timeout_s:.0f} s "
                                   f"({len(fresh)} of {epp['spec']['replicas']} new pods ready)")
        time.sleep(poll)


def pcp_hosts(ctx: StepContext) -> dict[str, str]:
    """node name -> `hostIP:44321` for each node running a model server of the cell: where the PCP
    DaemonSet's pmcd listens (host network)."""
    _, _, selector = _cell_objects(ctx)
    pods = Cluster(api_client(), namespace()).list("Pod", selector_string(selector))
    from llmd_bench.stack.pcp_manifests import PMCD_PORT  # deferred: loads jinja2

    port = settings().pmcd_port or PMCD_PORT
    return {p["spec"]["nodeName"]: f"{p['status']['hostIP']}:{port}" for p in _model_server_pods(pods)
            if (p.get("spec") or {}).get("nodeName") and (p.get("status") or {}).get("hostIP")}


def generator_pcp_host() -> dict[str, str]:
    """node name -> `hostIP:44321` of the node this step pod runs on (the downward API's env), or {}."""
    from llmd_bench.stack.pcp_manifests import PMCD_PORT  # deferred: loads jinja2

    node, ip = settings().node_name, settings().node_ip
    port = settings().pmcd_port or PMCD_PORT
    return {node: f"{ip}:{port}"} if node and ip else {}


def teardown(ctx: StepContext) -> dict[str, Any]:
    """Delete everything labelled for the cell (any run), wait, and prove nothing is left."""
    cluster = Cluster(api_client(), namespace())
    _, _, selector = _cell_objects(ctx)
    sel = selector_string(selector)
    deleted = []
    for kind in reversed(list(KINDS)):
        for obj in cluster.list(kind, sel):
            cluster.delete(kind, obj["metadata"]["name"])
            deleted.append(f"{kind}/{obj['metadata']['name']}")
    deadline = time.monotonic() + settings().teardown_timeout_s
    poll = settings().poll_s
    while True:
        left = [f"{k}/{o['metadata']['name']}" for k in [*KINDS, "Pod"] for o in cluster.list(k, sel)]
        if not left:
            return {"deleted": deleted}
        if time.monotonic() > deadline:
            raise RuntimeStepError(f"teardown left things behind in namespace {cluster.ns}: {', '.join(left)}")
        time.sleep(poll)


# -- lanes: auto (stack/lanes.py): a Lease per lane, the model servers on the lane's node --------------------------

class LeaseApi:
    """The Lease calls of lanes.LeaseStore, as raw JSON on their path (coordination.k8s.io/v1, namespaced), as
    runtime/existing.py calls the kinds it has no typed client for."""

    def __init__(self, api: Any, ns: str) -> None:
        self.api, self.ns = api, ns
        self.path = f"/apis/{lanes.LEASE_API}/namespaces/{ns}/leases"

    def _call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> dict[str, Any]:
        resp = self.api.call_api(path, method, query_params=list((query or {}).items()), body=body,
                                 header_params={"Accept": "application/json", "Content-Type": "application/json"},
                                 auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
        return dict(json.loads(resp.data or b"{}"))

    def _failed(self, what: str, exc: Any) -> RuntimeStepError:
        hint = (f": the step Role must grant get, list, create, update and delete on leases.coordination.k8s.io in "
                f"namespace {self.ns} (re-apply the namespace set-up)" if exc.status == 403 else "")
        return RuntimeStepError(f"{what} in namespace {self.ns}: {exc.status} {exc.reason}{hint}")

    def list(self, selector: str) -> builtins.list[dict[str, Any]]:  # `list` here is this method
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            return list(self._call("GET", self.path, query={"labelSelector": selector}).get("items") or [])
        except ApiException as exc:
            raise self._failed("listing the lanes' Leases", exc) from None

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            return self._call("GET", f"{self.path}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._failed(f"reading Lease/{name}", exc) from None

    def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            return self._call("POST", self.path, body, {"fieldManager": FIELD_MANAGER})
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: another cell took the lane first
                return None
            raise self._failed(f"creating Lease/{body['metadata']['name']}", exc) from None

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            return self._call("PUT", f"{self.path}/{name}", body, {"fieldManager": FIELD_MANAGER})
        except ApiException as exc:
            if exc.status in (404, 409):  # deleted, or written since we read it (resourceVersion)
                return None
            raise self._failed(f"replacing Lease/{name}", exc) from None

    def delete(self, name: str, resource_version: str | None) -> bool:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        # apimachinery pkg/apis/meta/v1/types.go @v0.36.3: DeleteOptions.preconditions.resourceVersion (409 when it
        # changed): a lane another cell took over meanwhile is not deleted
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                **({"preconditions": {"resourceVersion": resource_version}} if resource_version else {})}
        try:
            self._call("DELETE", f"{self.path}/{name}", body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise self._failed(f"deleting Lease/{name}", exc) from None
        return True


def lanes_auto(ctx: StepContext) -> bool:
    return ctx.campaign.lanes == "auto"


def lane_holder(ctx: StepContext) -> lanes.Holder:
    assert ctx.cell is not None
    return lanes.Holder(campaign=ctx.campaign.dag_id, run_id=ctx.run_id, cell=ctx.cell.group_id)


def lane_node(ctx: StepContext) -> str | None:
    """The node (its kubernetes.io/hostname) of the cell's lane, from its record (deploy acquired it; a redeploy in the
    sweep reads it there), or None without lanes: auto. A cell of lanes: auto without a lane is refused: its model
    servers would land on GPUs another lane holds."""
    if not lanes_auto(ctx):
        return None
    placement = ctx.read_record().get("placement") or {}
    if not placement.get("hostname"):
        raise RuntimeStepError(f"lanes: auto: cell {ctx.cell} has no lane in its record (cell.json placement): its deploy "
                               "acquires one before it deploys")
    return str(placement["hostname"])


def lane_plan(ctx: StepContext, cluster: Cluster) -> tuple[lanes.LanePlan, int]:
    """The campaign's lane plan on the cluster's nodes now, for every cell this run selects (the same slots whichever
    cell asks), and how many cells the run selects."""
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    nodes, why = cluster.nodes()
    if nodes is None:
        raise RuntimeStepError(f"lanes: auto plans the lanes from the nodes' allocatable GPUs, but {why} (an admin applies "
                               f"it: llmd-bench preflight --node-reader-manifest --namespace {cluster.ns} | kubectl apply "
                               "-f -), or set lanes to a number")
    needs: list[tuple[int, str, list[dict[str, Any]]]] = []
    for cell in ctx.campaign.cells():
        if not ctx.params.selects(cell):
            continue
        try:
            docs = manifests.render_cell(ctx.campaign, ctx.params, cell, ctx.run_id, cluster.ns)
        except LlmdBenchError:
            continue  # that cell's own deploy is refused with the reason; it never takes a lane
        replicas, per_pod = lanes.model_server_gpus(docs)
        needs.append((replicas * per_pod, str(cell), docs))
    if not needs:
        raise RuntimeStepError(f"lanes: auto: no cell of this run can be rendered to plan the lanes (cell {ctx.cell})")
    gpus, largest, docs = max(needs, key=lambda n: n[0])
    (server,) = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"
                 and d["spec"]["template"]["metadata"]["labels"].get("llmd-bench/component") == "model-server"]
    plan = lanes.plan_lanes(nodes, gpus, server.get("nodeSelector") or {}, server.get("tolerations") or [], largest)
    return plan, len(needs)


def acquire_lane(ctx: StepContext) -> dict[str, Any]:
    """Take a lane for the cell (waiting while every lane is held) and record it in cell.json `placement`."""
    assert ctx.cell is not None
    cluster = Cluster(api_client(), namespace())
    plan, cells = lane_plan(ctx, cluster)
    print(f"{plan.describe()}; {cells} cell(s) selected, at most {min(plan.lanes, cells)} at once", flush=True)
    s = settings()
    duration = lanes.lease_seconds(ready_timeout_s=ready_timeout_s(ctx.model_spec.size_gb), trials=ctx.params.trials,
                                   levels=len(ctx.levels), duration_s=ctx.params.duration_s,
                                   teardown_s=s.teardown_timeout_s)
    # every cell ahead of this one may hold a lane for its whole lease, one wave of lanes after another
    wait = duration * math.ceil(cells / plan.lanes)
    got = lanes.acquire(LeaseApi(cluster.api, cluster.ns), plan, lane_holder(ctx), duration_s=duration, wait_s=wait,
                        poll_s=s.poll_s, labels={"app.kubernetes.io/part-of": "llmd-bench"}, sleep=time.sleep,
                        say=lambda line: print(line, flush=True))
    print(f"lane {got.slot.label} ({got.slot.gpus} GPUs on node {got.slot.node}, {got.how}) after {got.waited_s:.1f} s",
          flush=True)
    placement = {"kind": "lane", "plan": plan.describe(), "lanes": plan.lanes, "slot": got.slot.label,
                 "node": got.slot.node, "hostname": got.slot.hostname, "gpus": got.slot.gpus, "lease": got.lease,
                 "holder": lane_holder(ctx).identity, "how": got.how, "acquired": got.acquired, "released": None,
                 "waited_s": got.waited_s, "lease_duration_s": duration}
    with ctx.update_record() as record:
        record["placement"] = placement
    return placement


def release_lane(ctx: StepContext) -> str | None:
    """Delete the cell's Lease (after its objects are gone) and record when; None when the cell took no lane."""
    placement = ctx.read_record().get("placement") or {}
    if not lanes_auto(ctx) or not placement.get("lease"):
        return None
    leases = LeaseApi(api_client(), namespace())
    released = lanes.micro_time(datetime.now(UTC))  # before the delete: no cell takes the lane earlier
    outcome = lanes.release(leases, placement["lease"], lane_holder(ctx))
    print(f"lane {placement.get('slot')}: {outcome}", flush=True)
    if not placement.get("released"):  # a teardown run again keeps the first release's time
        with ctx.update_record() as record:
            record["placement"] = {**(record.get("placement") or {}), "released": released, "release": outcome}
    return f"{placement.get('slot')}: {outcome}"


class KubernetesRuntime(Runtime):
    """The cell's own llm-d stack in the cluster, rendered from our manifests and deleted at teardown."""

    name = "kubernetes"

    def deploy(self) -> dict[str, Any]:
        if not lanes_auto(self.ctx):
            return deploy(self.ctx)
        placement = acquire_lane(self.ctx)
        try:
            state = deploy(self.ctx)
        except Exception:
            # Airflow runs no teardown after a failed setup task: free the lane here, once the cell's objects (and
            # the GPUs their pods request) are gone; when they do not go, the lane stays held until its lease expires
            try:
                teardown(self.ctx)
            except Exception as exc:  # noqa: BLE001 - the deploy's own error is the one to report
                print(f"the failed deploy's objects did not go ({exc}); lane {placement['slot']} stays held until its "
                      "lease expires", flush=True)
            else:
                release_lane(self.ctx)
            raise
        return {**state, "lane": placement["slot"]}

    def leftovers(self) -> list[str]:
        return sweep_leftovers(Cluster(api_client(), namespace()), self.ctx, remove=False)

    def redeploy(self) -> None:
        teardown(self.ctx)
        deploy(self.ctx)

    def teardown(self) -> dict[str, Any]:
        result = teardown(self.ctx)  # raises when objects stay: then the lane stays held (their pods may hold GPUs)
        released = release_lane(self.ctx)
        return {**result, "lane": released} if released else result

    def endpoint(self) -> str:
        return endpoint(self.ctx)

    def observation_targets(self) -> Any:
        return observation_targets(self.ctx)

    def restart_router(self) -> Callable[[], None] | None:
        if self.ctx.configuration.store_kind is not None:
            return None  # the index lives in Redis/Valkey, which the reset flushes

        def restart() -> None:
            restart_epp(self.ctx)

        return restart

    @contextlib.contextmanager
    def host_recording(self) -> Iterator[dict[str, Any] | None]:
        """Record, from the sweep pod, each model-server node's PCP for the sweep, and the pod's own node (the
        load generator's) under `generator`."""
        with recording_hosts(self.ctx, pcp_hosts(self.ctx)) as state:
            yield state

    def host_archives(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The per-node archives the sweep pod recorded (they arrive with the cell's files)."""
        rec = sweep_pcp(self.ctx)
        return rec.get("nodes") or {}, rec

    def generator_archives(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return generator_archives(self.ctx)

    def served_sources(self) -> list[ServedSource]:
        """Each model-server pod's whole log since start and its /metrics (pod IP: step pods run in the cell's
        namespace), and each EPP pod's log."""
        from llmd_bench.stack.manifests import MODEL_PORT  # deferred: loads jinja2

        assert self.ctx.cell is not None
        cluster = Cluster(api_client(), namespace())
        _, _, selector = _cell_objects(self.ctx)
        pods = cluster.list("Pod", selector_string(selector))
        servers = [(p, _container_of(p, MODEL_SERVER_CONTAINERS), MODEL_PORT) for p in _running(pods, "model-server")]
        return served_from_pods(servers, [(p, "epp") for p in _running(pods, "epp")], cluster.pod_log)

    def epp_config_given(self) -> tuple[dict[str, Any] | None, str]:
        from llmd_bench.stack.manifests import cell_campaign, cell_names, epp_config  # deferred: loads jinja2

        assert self.ctx.cell is not None
        campaign = cell_campaign(self.ctx.campaign, self.ctx.cell)
        return epp_config(self.ctx.cell, campaign.serving, cell_names(self.ctx.cell), namespace(),
                          catalog.entry(self.ctx.params.llmd_version), campaign.cell_configuration(self.ctx.cell)), ""

    def stack_metadata(self) -> dict[str, Any]:
        """What ran (runtime/stack_metadata.py): the cell's model-server and EPP pods, the EPP ConfigMap, and the
        model servers' nodes' GPU Feature Discovery labels. vLLM's version is its GET /version when the pod answers
        within 2 s, else the version catalog's `vllm_version` for the catalog's image (labelled declared)."""
        from llmd_bench.stack.manifests import MODEL_PORT, cell_names, mirrored  # deferred: loads jinja2

        assert self.ctx.cell is not None
        cluster = Cluster(api_client(), namespace())
        _, _, selector = _cell_objects(self.ctx)
        sel = selector_string(selector)
        pods = cluster.list("Pod", sel)
        epp_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("llmd-bench/component") == "epp"]
        config_map = cell_names(self.ctx.cell)["epp_config"]
        text = next(((c.get("data") or {}).get("epp-config.yaml") for c in cluster.list("ConfigMap", sel)
                     if c["metadata"]["name"] == config_map), None)
        nodes, error = cluster.nodes()
        entry = catalog.entry(self.ctx.params.llmd_version)
        declared = {mirrored(entry.images["vllm"], self.ctx.campaign.serving.registry_mirrors): entry.vllm_version}
        kv_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("llmd-bench/component") == "kv-index"]
        return sm.from_objects(self.name, _model_server_pods(pods), epp_pods, text, nodes, error, declared, MODEL_PORT,
                               kv_index_pods=kv_pods)


MODEL_SERVER_CONTAINERS = ("vllm", "inference-sim")


def served_from_pods(model_servers: list[tuple[dict[str, Any], str | None, int]], epps: list[tuple[dict[str, Any], str | None]],
                     pod_log: Callable[[str, str | None, int | None], str]) -> list[ServedSource]:
    """What each running model-server pod (pod, container, port) and EPP pod (pod, container) says (served.py): the
    container's whole log since it started and, for model servers, GET http://<pod IP>:<port>/metrics (the step runs
    where pod IPs are reachable)."""
    sources = []
    for pod, container, port in model_servers:
        meta, status = pod["metadata"], pod.get("status") or {}
        unavailable: dict[str, str] = {}
        metrics = None
        if status.get("podIP"):
            metrics, why = fetch_text(f"http://{status['podIP']}:{port}/metrics")
            if why:
                unavailable["metrics"] = why
        else:
            unavailable["metrics"] = "the pod has no IP yet"
        text = pod_log(meta["name"], container, None)
        if text.startswith("(no log:"):
            unavailable["log"] = text.strip("()")
        sources.append(ServedSource(pod=meta["name"], log=None if "log" in unavailable else text, metrics=metrics,
                                    unavailable=unavailable))
    for pod, container in epps:
        text = pod_log(pod["metadata"]["name"], container, None)
        missing = {"log": text.strip("()")} if text.startswith("(no log:") else {}
        sources.append(ServedSource(pod=pod["metadata"]["name"], role="epp", log=None if missing else text,
                                    unavailable=missing))
    return sources


def _running(pods: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("llmd-bench/component") == component
            and (p.get("status") or {}).get("phase") in (None, "Running") and not p["metadata"].get("deletionTimestamp")]


def _container_of(pod: dict[str, Any], names: tuple[str, ...]) -> str | None:
    found = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    return next((c for c in found if c in names), found[0] if found else None)


@contextlib.contextmanager
def recording_hosts(ctx: StepContext, servers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """PCP of the serving nodes `servers` for the sweep, and of this pod's own node under `generator`."""

    own = generator_pcp_host()
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(pcp.recording(servers, ctx.cell_dir / "pcp", ctx.cell_dir))
        shared = sorted(set(own) & set(servers))
        if shared:
            state["generator"] = {"same_node": shared[0]}
        elif own:
            state["generator"] = stack.enter_context(pcp.recording(own, ctx.cell_dir / "pcp-generator", ctx.cell_dir,
                                                                   role="the sweep pod's node"))
        else:
            state["generator"] = {"unavailable": "the sweep pod does not know its node (LLMD_BENCH_NODE_NAME and "
                                                 "LLMD_BENCH_NODE_IP come from the step pod's downward API)"}
        yield state


def sweep_pcp(ctx: StepContext) -> dict[str, Any]:
    """What the sweep pod's PCP recording left in the record (cell.json sweep.pcp, recording_hosts' state: `nodes`,
    `generator`, or why there is none); {} before the sweep recorded it."""
    record = ctx.record()
    sweep = record.sweep if record is not None else None
    return (sweep.pcp if sweep is not None else None) or {}


def generator_archives(ctx: StepContext) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The sweep pod's node archives, or (None, status) when it ran on a model-server node or recorded nothing."""
    rec = sweep_pcp(ctx).get("generator") or {}
    if rec.get("same_node"):
        return None, {"status": "same host", "node": rec["same_node"],
                      "reason": f"the sweep pod ran on model-server node {rec['same_node']}: see host_levels"}
    archives = rec.get("nodes") or {}
    if not archives:
        return None, {"status": "not measured", "reason": rec.get("unavailable", "the sweep did not record its node")}
    return archives, rec
