"""A local HTTP fake of the Kubernetes API on 127.0.0.1: stores what is applied, serves real-shaped
objects (Deployments with status, Pods with container statuses, logs), and records every call.

Scenarios decide how model-server pods behave: ready, crashloop, imagepull, unschedulable, oom; and
`stuck_kinds` makes deletes of those kinds not take effect (a finalizer that never clears).

For preflight: API discovery (`/apis/<group>`, `/apis/<group>/<version>`) from `api_groups`, namespaces,
nodes with allocatable resources (`add_node`; `add_gfd_node` with GPU Feature Discovery labels), secrets
(`add_secret`), resource quotas (`add_quota`),
SelfSubjectAccessReviews answered from `denied` ((verb, group, resource[/subresource]) tuples), dry-run
creates, and `forbidden` resource plurals that answer 403 to this identity.

For existing mode (an installed stack): `add_object` stores any object as the cluster holds it, GET of one
object, PUT (replace, with optimistic concurrency on resourceVersion), POST creates (409 when it exists), and
Deployments that roll out like the real controller: a changed pod template or replica count makes new pods
(carrying the template's containers and annotations) after `rollout_lag` reads of the Deployment, during which
its status shows the old generation and the old pods stay; `pod_ip` gives every pod that IP (a local server).
`writes()` lists every call that could change something.

A cluster with `gpu_capacity` GPUs (nvidia.com/gpu, all nodes together) schedules pods like the real one: a pod that
does not fit beside the running ones stays Pending (Unschedulable, "Insufficient nvidia.com/gpu"); a RollingUpdate
with a surge starts its first new pod beside the old ones, a Recreate one (or maxSurge 0) only after they are gone.
A pod whose nodeSelector names one of the added GPU nodes by `kubernetes.io/hostname` (its label, else its name) is
scheduled there against that node's own allocatable nvidia.com/gpu (Pending Unschedulable when the pods running there
leave too few), gets that nodeName, and `gpu_peak` keeps the most GPUs each node's running pods requested at once.
Leases (coordination.k8s.io/v1) are stored like any object: POST creates (409 when it exists), GET, PUT (409 on a stale
resourceVersion), DELETE (409 when DeleteOptions.preconditions.resourceVersion is not the object's), list by label.
HorizontalPodAutoscalers and KEDA ScaledObjects are stored like any object (the scaledobjects path answers 404 unless
`api_groups` serves keda.sh); replacing a ScaledObject annotated `autoscaling.keda.sh/paused: "true"` does what KEDA
does (its Paused condition True, its HPA deleted).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PATHS = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log|status))?$")
KIND_OF = {"deployments": "Deployment", "services": "Service", "configmaps": "ConfigMap",
           "horizontalpodautoscalers": "HorizontalPodAutoscaler", "scaledobjects": "ScaledObject",
           "inferencepools": "InferencePool", "pods": "Pod", "secrets": "Secret", "resourcequotas": "ResourceQuota",
           "persistentvolumeclaims": "PersistentVolumeClaim", "leases": "Lease"}
DISCOVERY = re.compile(r"^/apis/(?P<group>[^/]+)(?:/(?P<version>[^/]+))?/?$")
# group -> version -> [(plural, kind)]: what a cluster with the Gateway API Inference Extension serves
DEFAULT_API_GROUPS = {
    "apps": {"v1": [("deployments", "Deployment")]},
    "inference.networking.k8s.io": {"v1": [("inferencepools", "InferencePool")]},
    "inference.networking.x-k8s.io": {"v1alpha2": [("inferenceobjectives", "InferenceObjective")]},
    "authorization.k8s.io": {"v1": [("selfsubjectaccessreviews", "SelfSubjectAccessReview")]},
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        else:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
    return True


def kubelet_vllm_argv(command: list[str], args: list[str]) -> list[str] | None:
    """The argv `vllm serve` gets when a kubelet runs this container, as a POSIX shell runs `sh -c SCRIPT ARG0 ARG1..`:
    the script's own words, where "$@" is ARG1...; args after the script are never vLLM's flags otherwise. None when
    the container runs no `vllm serve`."""
    import shlex

    full = [*command, *args]
    if full[:2] == ["vllm", "serve"]:
        return full[2:]
    if len(full) < 3 or full[0].rsplit("/", 1)[-1] not in ("sh", "bash") or not re.fullmatch(r"-\w*c\w*", full[1]):
        return None
    script, positional = full[2], full[3:]
    lexer = shlex.shlex(script.replace("\\\n", " ").replace("\n", " ; "), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    words = list(lexer)
    for i in range(len(words) - 1):
        if words[i].rsplit("/", 1)[-1] == "vllm" and words[i + 1] == "serve":
            out: list[str] = []
            for w in words[i + 2:]:
                if w and set(w) <= set(";&|"):
                    break
                out += positional[1:] if w == "$@" else [w]
            return out
    return None


class FakeKube:
    def __init__(self, scenario: str = "ready", stuck_kinds: tuple[str, ...] = (),
                 host_ips: tuple[str, ...] = ("192.168.10.11", "192.168.10.12"),
                 api_groups: dict | None = None, namespaces: tuple[str, ...] = ("bench",),
                 denied: set | tuple = (), forbidden: set | tuple = (), pod_ip: str | None = None,
                 rollout_lag: int = 0, gpu_capacity: int | None = None) -> None:
        self.scenario, self.stuck_kinds, self.host_ips = scenario, set(stuck_kinds), host_ips
        self.objects: dict[tuple[str, str, str], dict] = {}   # (plural, ns, name) -> object
        self.api_groups = DEFAULT_API_GROUPS if api_groups is None else api_groups
        self.namespaces = set(namespaces)
        self.denied = set(denied)          # {(verb, group, "resource" or "resource/subresource")}
        self.forbidden = set(forbidden)    # plurals this identity may not read: "nodes", "secrets", ...
        self.nodes: list[dict] = []
        self.pod_ip, self.rollout_lag = pod_ip, rollout_lag
        self.gpu_capacity = gpu_capacity  # None: GPUs are not counted
        self.gpu_peak: dict[str, int] = {}  # node -> the most GPUs its running pods requested at once (pinned pods)
        self.version = 1                   # the last resourceVersion handed out
        self.pod_owner: dict[tuple[str, str], str] = {}  # (ns, pod) -> Deployment
        self.pending: dict[tuple[str, str], int] = {}    # (ns, Deployment) -> reads left before its rollout
        self.reviews: list[dict] = []      # the SelfSubjectAccessReviews asked
        self.calls: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.vllm_version = "0.11.2"  # whose start-up lines the fake vLLM containers print
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, body: object, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                url = urlsplit(self.path)
                m = PATHS.match(url.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with fake.lock:
                    fake.calls.append((self.command, url.path, url.query))
                return m, query

            def do_PATCH(self):
                m, query = self._route()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.headers["Content-Type"] == "application/apply-patch+yaml", self.headers["Content-Type"]
                assert query.get("fieldManager") == "llmd-bench" and query.get("force", "").lower() == "true", query
                self._send(200, fake.apply(m["plural"], m["ns"], m["name"], body))

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                  "message": message, "code": code})

            def do_GET(self):
                m, query = self._route()
                path = urlsplit(self.path).path
                if not m:
                    code, body = fake.get_cluster_path(path)
                    self._send(code, body)
                    return
                if m["plural"] in fake.forbidden:
                    self._status(403, "Forbidden", f'{m["plural"]} is forbidden: User "system:serviceaccount:'
                                 f'{m["ns"]}:llmd-bench-steps" cannot get resource "{m["plural"]}" in API group '
                                 f'"{m["group"] or ""}" in the namespace "{m["ns"]}"')
                    return
                if m["group"] == "keda.sh" and "keda.sh" not in fake.api_groups:
                    self._status(404, "NotFound", "the server could not find the requested resource")
                    return  # a CRD this cluster does not have (KEDA's)
                if m["name"] and not m["sub"]:
                    if m["plural"] == "deployments":
                        fake.tick(m["ns"], m["name"])
                    obj = fake.objects.get((m["plural"], m["ns"], m["name"]))
                    if obj is None:
                        self._status(404, "NotFound", f'{m["plural"]} "{m["name"]}" not found')
                    else:
                        self._send(200, obj)
                    return
                if m["sub"] == "log":
                    text = fake.log(m["name"], m["ns"], query.get("container"))
                    if query.get("tailLines"):
                        text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]):])
                    self._send(200, text, "text/plain")
                    return
                items = fake.list(m["plural"], m["ns"], query.get("labelSelector", ""))
                kind = KIND_OF[m["plural"]]
                api = "v1" if not m["group"] else f"{m['group']}/{m['version']}"
                self._send(200, {"kind": f"{kind}List", "apiVersion": api, "metadata": {"resourceVersion": "1"}, "items": items})

            def do_POST(self):
                m, query = self._route()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = urlsplit(self.path).path
                if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
                    self._send(201, fake.review(body))
                    return
                if m and query.get("dryRun") == "All":
                    if m["plural"] in fake.forbidden:
                        self._status(403, "Forbidden", f'cannot create resource "{m["plural"]}"')
                    elif m["ns"] not in fake.namespaces:
                        self._status(404, "NotFound", f'namespaces "{m["ns"]}" not found')
                    else:
                        self._send(201, body)
                    return
                if m and not m["name"]:
                    code, obj = fake.create(m["plural"], m["ns"], body)
                    if code == 409:
                        self._status(409, "AlreadyExists", f'{m["plural"]} "{body["metadata"]["name"]}" already exists')
                    else:
                        self._send(code, obj)
                    return
                self._status(405, "MethodNotAllowed", "the fake API does not answer this")

            def do_PUT(self):
                m, _ = self._route()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, obj = fake.replace(m["plural"], m["ns"], m["name"], body)
                if code == 404:
                    self._status(404, "NotFound", f'{m["plural"]} "{m["name"]}" not found')
                elif code == 409:
                    self._status(409, "Conflict", f'Operation cannot be fulfilled on {m["plural"]} "{m["name"]}": the '
                                 "object has been modified; please apply your changes to the latest version and try again")
                else:
                    self._send(code, obj)

            def do_DELETE(self):
                m, _ = self._route()
                length = int(self.headers.get("Content-Length") or 0)
                options = json.loads(self.rfile.read(length) or b"{}") if length else {}
                # DeleteOptions.preconditions.resourceVersion: 409 Conflict when the object changed since
                wanted = (options.get("preconditions") or {}).get("resourceVersion")
                found = fake.delete(m["plural"], m["ns"], m["name"], wanted)
                if found is None:
                    self._status(409, "Conflict", f'Operation cannot be fulfilled on {m["plural"]} "{m["name"]}": '
                                 f"the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion "
                                 "in record. The object might have been modified")
                elif not found:
                    self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                     "code": 404})
                else:
                    self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 0.5 s per test at its default
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- cluster-scoped reads, discovery and access reviews (preflight) ---------------------------------
    def get_cluster_path(self, path: str) -> tuple[int, dict]:
        def status(code: int, reason: str, message: str) -> tuple[int, dict]:
            return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                          "message": message, "code": code}

        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.1-fake"}
        if path == "/api/v1/nodes":
            if "nodes" in self.forbidden:
                return status(403, "Forbidden", 'nodes is forbidden: User "system:serviceaccount:bench:llmd-bench-steps" '
                                                'cannot list resource "nodes" in API group "" at the cluster scope')
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": self.nodes}
        ns = re.match(r"^/api/v1/namespaces/([^/]+)$", path)
        if ns:
            if "namespaces" in self.forbidden:
                return status(403, "Forbidden", f'cannot get resource "namespaces" "{ns[1]}" at the cluster scope')
            if ns[1] not in self.namespaces:
                return status(404, "NotFound", f'namespaces "{ns[1]}" not found')
            return 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns[1]},
                         "status": {"phase": "Active"}}
        d = DISCOVERY.match(path)
        if d and d["group"] in self.api_groups:
            versions = self.api_groups[d["group"]]
            if d["version"] is None:
                vs = [{"groupVersion": f"{d['group']}/{v}", "version": v} for v in versions]
                return 200, {"kind": "APIGroup", "apiVersion": "v1", "name": d["group"], "versions": vs,
                             "preferredVersion": vs[0]}
            if d["version"] in versions:
                return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{d['group']}/{d['version']}",
                             "resources": [{"name": plural, "singularName": "", "namespaced": True, "kind": kind,
                                            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                                           for plural, kind in versions[d["version"]]]}
        return status(404, "NotFound", "the server could not find the requested resource")

    def review(self, body: dict) -> dict:
        attrs = body["spec"]["resourceAttributes"]
        resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
        allowed = (attrs["verb"], attrs.get("group", ""), resource) not in self.denied
        with self.lock:
            self.reviews.append(attrs)
        return {**body, "status": {"allowed": allowed, **({} if allowed else {"reason": ""})}}

    def add_node(self, name: str, gpus: int = 8, memory: str = "1000Gi", cpu: str = "96",
                 unschedulable: bool = False, labels: dict | None = None, taints: list | None = None) -> None:
        alloc = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        spec = {**({"unschedulable": True} if unschedulable else {}), **({"taints": taints} if taints else {})}
        self.nodes.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
                           "spec": spec, "status": {"allocatable": alloc, "capacity": alloc}})

    def add_gfd_node(self, name: str, product: str = "NVIDIA-H100-80GB-HBM3", gpus: int = 8,
                     driver: str = "570.124.06", cuda: str = "12.8", memory_mb: int = 81559) -> None:
        """A GPU node labelled by NVIDIA GPU Feature Discovery (label names: NVIDIA/k8s-device-plugin
        internal/lm/resource.go, nvml.go @v0.20.0, the current and the deprecated driver/CUDA labels)."""
        major, minor, rev = (driver.split(".") + ["", ""])[:3]
        cmajor, cminor = cuda.split(".")
        self.add_node(name, gpus=gpus, labels={
            "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus), "nvidia.com/gpu.memory": str(memory_mb),
            "nvidia.com/cuda.driver-version.full": driver, "nvidia.com/cuda.runtime-version.full": cuda,
            "nvidia.com/cuda.driver.major": major, "nvidia.com/cuda.driver.minor": minor, "nvidia.com/cuda.driver.rev": rev,
            "nvidia.com/cuda.runtime.major": cmajor, "nvidia.com/cuda.runtime.minor": cminor})

    def add_secret(self, ns: str, name: str, data: dict[str, str]) -> None:
        self.objects[("secrets", ns, name)] = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": ns},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    def add_pvc(self, ns: str, name: str, access_modes: list[str], phase: str = "Bound") -> None:
        self.objects[("persistentvolumeclaims", ns, name)] = {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"accessModes": access_modes}, "status": {"phase": phase}}

    def add_quota(self, ns: str, name: str, hard: dict[str, str], used: dict[str, str] | None = None) -> None:
        self.objects[("resourcequotas", ns, name)] = {
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": ns},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used or {k: "0" for k in hard}}}

    # -- state -------------------------------------------------------------------------------------
    def apply(self, plural: str, ns: str, name: str, body: dict) -> dict:
        with self.lock:
            old = self.objects.get((plural, ns, name))
            meta = {**body["metadata"], "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
                    "creationTimestamp": old["metadata"]["creationTimestamp"] if old else now(),
                    "generation": (old["metadata"]["generation"] + 1) if old else 1, "resourceVersion": self._next_version()}
            obj = {**body, "metadata": meta}
            if plural == "deployments":
                obj["status"] = {"replicas": body["spec"]["replicas"], "observedGeneration": meta["generation"]}
                self._make_pods(obj)
            self.objects[(plural, ns, name)] = obj
            return obj

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def add_object(self, plural: str, obj: dict) -> dict:
        """An object as an installation made it (Deployments get their pods and a settled status)."""
        with self.lock:
            obj = json.loads(json.dumps(obj))
            meta = obj["metadata"]
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=self._next_version())
            if plural == "deployments":
                meta["generation"] = 1
                meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
                obj["status"] = {"observedGeneration": 1}
                self._make_pods(obj)
            self.objects[(plural, meta["namespace"], meta["name"])] = obj
            return obj

    def create(self, plural: str, ns: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            name = body["metadata"]["name"]
            if (plural, ns, name) in self.objects:
                return 409, {}
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(),
                                   resourceVersion=self._next_version())
            self.objects[(plural, ns, name)] = obj
            return 201, obj

    def replace(self, plural: str, ns: str, name: str, body: dict) -> tuple[int, dict]:
        """PUT: the whole object; a Deployment whose spec changed gets a new generation, and a new pod template or
        replica count rolls its pods out (after `rollout_lag` reads)."""
        with self.lock:
            old = self.objects.get((plural, ns, name))
            if old is None:
                return 404, {}
            given = body["metadata"].get("resourceVersion")
            if given and given != old["metadata"]["resourceVersion"]:
                return 409, {}
            obj = json.loads(json.dumps(body))
            obj.pop("status", None)
            meta = obj["metadata"]
            meta.update(uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"],
                        resourceVersion=self._next_version())
            if plural == "deployments":
                meta["generation"] = old["metadata"]["generation"] + (obj["spec"] != old["spec"])
                obj["status"] = old.get("status") or {}
                rolls = (obj["spec"]["template"] != old["spec"]["template"]
                         or obj["spec"].get("replicas") != old["spec"].get("replicas"))
                if rolls and obj["spec"]["template"] != old["spec"]["template"]:
                    revision = int((old["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "1")) + 1
                    meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(revision)
                self.objects[(plural, ns, name)] = obj
                if rolls and self.rollout_lag:
                    self.pending[(ns, name)] = self.rollout_lag
                elif rolls:
                    self._make_pods(obj)
                else:
                    obj["status"]["observedGeneration"] = meta["generation"]
                return 200, obj
            if plural == "scaledobjects":  # KEDA: the status is its own; a pause stops the loop and deletes its HPA
                paused = (meta.get("annotations") or {}).get("autoscaling.keda.sh/paused", "").lower() == "true"
                obj["status"] = {**(old.get("status") or {}),
                                 "conditions": [{"type": "Paused", "status": "True" if paused else "False"}]}
                if paused:
                    for key in [k for k, o in self.objects.items() if k[0] == "horizontalpodautoscalers" and k[1] == ns
                                and any(r.get("kind") == "ScaledObject" and r.get("name") == name
                                        for r in o["metadata"].get("ownerReferences") or [])]:
                        del self.objects[key]
            self.objects[(plural, ns, name)] = obj
            return 200, obj

    def tick(self, ns: str, name: str) -> None:
        """One read of a Deployment: a pending rollout moves on, and completes when its reads are used up."""
        with self.lock:
            left = self.pending.get((ns, name))
            if left is None:
                return
            if left > 1:
                self.pending[(ns, name)] = left - 1
                return
            del self.pending[(ns, name)]
            self._make_pods(self.objects[("deployments", ns, name)])

    def writes(self) -> list[tuple[str, str, str]]:
        """Every call that could change the cluster (access reviews and dry runs excluded)."""
        return [c for c in self.calls if c[0] in ("PUT", "PATCH", "DELETE")
                or (c[0] == "POST" and "selfsubjectaccessreviews" not in c[1] and "dryRun=All" not in c[2])]

    def _make_pods(self, dep: dict) -> None:
        import hashlib

        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = dep["spec"]["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:5]
        old_pods = [k for k in self.objects if k[0] == "pods" and k[1] == ns
                    and (self.pod_owner.get((ns, k[2])) == name
                         or ((ns, k[2]) not in self.pod_owner and k[2].startswith(name + "-")))]
        if self.gpu_capacity is not None and self._surge_blocked(dep, old_pods, template_hash):
            return
        for key in old_pods:
            del self.objects[key]
            self.pod_owner.pop((ns, key[2]), None)
        is_model = template["metadata"]["labels"].get("llmd-bench/component") == "model-server"
        scenario = self.scenario if is_model else "ready"
        ready = 0
        for i in range(dep["spec"]["replicas"]):
            pod_name = f"{name}-{template_hash}-{i:05d}"
            statuses = []
            for c in template["spec"]["containers"]:
                st = {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                      "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}
                if scenario in ("ready", "oom"):
                    st.update(ready=scenario == "ready", started=True, state={"running": {"startedAt": now()}},
                              imageID=f"{c['image'].split(':')[0]}@sha256:{'ab' * 32}")
                    if scenario == "oom":
                        st["restartCount"] = 2
                        st["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
                elif scenario == "crashloop":
                    st.update(restartCount=5, state={"waiting": {"reason": "CrashLoopBackOff",
                              "message": f"back-off 5m0s restarting failed container={c['name']} pod={pod_name}"}},
                              lastState={"terminated": {"reason": "Error", "exitCode": 1}})
                elif scenario == "imagepull":
                    st.update(state={"waiting": {"reason": "ImagePullBackOff",
                                                 "message": f'Back-off pulling image "{c["image"]}"'}})
                statuses.append(st)
            conditions = [{"type": "PodScheduled", "status": "True"}]
            phase = "Running"
            node_name, host_ip = f"gpu-node-{i % len(self.host_ips)}", self.host_ips[i % len(self.host_ips)]
            pinned = self._pinned_node(template["spec"])
            if pinned is not None:
                # a node selector for one GPU node: that node's own GPUs, as the scheduler counts them
                index, node = pinned
                node_name, host_ip = node["metadata"]["name"], self.host_ips[index % len(self.host_ips)]
                need = self._gpus(template["spec"])
                if scenario == "unschedulable" or self._node_gpus_running(node_name) + need > self._node_gpus(node):
                    others = len(self.nodes) - 1
                    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": f"0/{len(self.nodes)} nodes are available: 1 Insufficient nvidia.com/gpu"
                                              + (f", {others} node(s) didn't match Pod's node affinity/selector." if others
                                                 else ".")}]
                    statuses, phase = [], "Pending"
            elif scenario == "unschedulable" or (self.gpu_capacity is not None and self._gpus_running()
                                                 + self._gpus(template["spec"]) > self.gpu_capacity):
                conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
                statuses, phase = [], "Pending"
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod_name, "namespace": ns, "uid": str(uuid.uuid4()),
                                "labels": template["metadata"]["labels"], "creationTimestamp": now(),
                                "annotations": dict(template["metadata"].get("annotations") or {})},
                   # the template's containers as they are (command, args, env, ports, resources)
                   "spec": {"containers": json.loads(json.dumps(template["spec"]["containers"])),
                            "volumes": json.loads(json.dumps(template["spec"].get("volumes") or [])),
                            **({"nodeSelector": dict(template["spec"]["nodeSelector"])}
                               if template["spec"].get("nodeSelector") else {}),
                            **({"nodeName": node_name} if phase == "Running" else {})},
                   "status": {"phase": phase, "conditions": conditions, "containerStatuses": statuses,
                              **({"hostIP": host_ip} if phase == "Running" else {}),
                              "podIP": (self.pod_ip or f"10.1.{len(self.objects) % 250}.{i + 10}")
                              if phase == "Running" else None}}
            self.objects[("pods", ns, pod_name)] = pod
            self.pod_owner[(ns, pod_name)] = name
            if phase == "Running" and pinned is not None:
                self.gpu_peak[node_name] = max(self.gpu_peak.get(node_name, 0), self._node_gpus_running(node_name))
            ready += all(s["ready"] for s in statuses) and bool(statuses)
        dep["status"]["readyReplicas"] = ready
        dep["status"]["availableReplicas"] = ready
        dep["status"]["replicas"] = dep["status"]["updatedReplicas"] = dep["spec"]["replicas"]
        dep["status"]["observedGeneration"] = dep["metadata"].get("generation", 1)

    @staticmethod
    def _gpus(pod_spec: dict) -> int:
        return sum(int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
                   for c in pod_spec.get("containers") or [])

    def _gpus_running(self) -> int:
        return sum(self._gpus(o["spec"]) for (p, _, _), o in self.objects.items()
                   if p == "pods" and (o.get("status") or {}).get("phase") == "Running")

    def _pinned_node(self, pod_spec: dict) -> tuple[int, dict] | None:
        """(index, node) of the GPU node a pod's nodeSelector names by kubernetes.io/hostname (its label, else its
        name), when such nodes were added; None otherwise (the pod is placed as before)."""
        wanted = (pod_spec.get("nodeSelector") or {}).get("kubernetes.io/hostname")
        if wanted is None:
            return None
        for index, node in enumerate(self.nodes):
            name = node["metadata"]["name"]
            if (node["metadata"].get("labels") or {}).get("kubernetes.io/hostname", name) == wanted and self._node_gpus(node):
                return index, node
        return None

    @staticmethod
    def _node_gpus(node: dict) -> int:
        return int((node.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", 0))

    def _node_gpus_running(self, node_name: str) -> int:
        """GPUs requested by the pods running on one node."""
        return sum(self._gpus(o["spec"]) for (p, _, _), o in self.objects.items()
                   if p == "pods" and (o.get("status") or {}).get("phase") == "Running"
                   and (o.get("spec") or {}).get("nodeName") == node_name)

    def gpus_in_use(self) -> dict[str, int]:
        """node -> GPUs requested by the pods running there now (nodes added with add_node)."""
        with self.lock:
            return {n["metadata"]["name"]: self._node_gpus_running(n["metadata"]["name"]) for n in self.nodes}

    def _surge_blocked(self, dep: dict, old_pods: list, template_hash: str) -> bool:
        """A RollingUpdate with a surge starts one new pod beside the old ones (the Deployment controller's
        surge); when its GPUs are not free it stays Pending Unschedulable and the rollout stops there."""
        import math

        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        if not old_pods or all(f"-{template_hash}-" in k[2] for k in old_pods):
            return False  # a first rollout or a scale: nothing surges
        strategy = dep["spec"].get("strategy") or {"type": "RollingUpdate"}
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
        replicas = dep["spec"]["replicas"]
        surge_n = math.ceil(replicas * int(surge[:-1]) / 100) if str(surge).endswith("%") else int(surge)
        need = self._gpus(dep["spec"]["template"]["spec"])
        if strategy.get("type") == "Recreate" or surge_n == 0 or self._gpus_running() + need <= self.gpu_capacity:
            return False
        pod_name = f"{name}-{template_hash}-surge"
        self.objects[("pods", ns, pod_name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                         "labels": dep["spec"]["template"]["metadata"]["labels"],
                         "annotations": dict(dep["spec"]["template"]["metadata"].get("annotations") or {})},
            "spec": {"containers": json.loads(json.dumps(dep["spec"]["template"]["spec"]["containers"]))},
            "status": {"phase": "Pending", "containerStatuses": [], "podIP": None, "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": f"0/{max(1, len(self.nodes))} nodes are available: Insufficient nvidia.com/gpu."}]}}
        self.pod_owner[(ns, pod_name)] = name
        dep["status"].update(updatedReplicas=1, replicas=len(old_pods) + 1)
        return True

    def list(self, plural: str, ns: str, selector: str) -> list[dict]:
        with self.lock:
            return [o for (p, n, _), o in self.objects.items()
                    if p == plural and n == ns and matches(o["metadata"].get("labels") or {}, selector)]

    def delete(self, plural: str, ns: str, name: str, resource_version: str | None = None) -> bool | None:
        """True: deleted; False: not found; None: `resource_version` (a precondition) is not the object's."""
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                return False
            if resource_version and obj["metadata"].get("resourceVersion") != resource_version:
                return None
            if KIND_OF[plural] in self.stuck_kinds:
                obj["metadata"]["deletionTimestamp"] = now()
                return True
            del self.objects[(plural, ns, name)]
            if plural == "deployments":
                for key in [k for k in self.objects if k[0] == "pods" and k[2].startswith(name + "-")]:
                    del self.objects[key]
            return True

    def log(self, pod: str, ns: str | None = None, container: str | None = None) -> str:
        """What the pod's container printed. Like a kubelet and the program it starts: a vLLM container (`vllm
        serve ...`, or a shell script running it) prints vLLM's start-up lines for the argv vLLM really gets
        (kubelet_vllm_argv: a shell takes args after its script as $0, $1, ...); an EPP prints the configuration it
        loaded from its --config-file (through its ConfigMap volume) or --config-text, as llm-d-router's runner does."""
        if self.scenario == "crashloop":
            return ("INFO 11-26 20:00:01 [api_server.py:1] vLLM API server version 0.11.2\n"
                    "ERROR 11-26 20:00:09 [core.py:700] torch.OutOfMemoryError: CUDA out of memory. "
                    "Tried to allocate 2.00 GiB\n")
        with self.lock:
            obj = next((o for (p, n, name), o in self.objects.items() if p == "pods" and name == pod
                        and (ns is None or n == ns)), None)
        if obj is None:
            return "INFO ready\n"
        containers = (obj.get("spec") or {}).get("containers") or []
        c = next((c for c in containers if c.get("name") == container), containers[0] if containers else {})
        argv = kubelet_vllm_argv(c.get("command") or [], c.get("args") or [])
        if argv is not None:
            from llmd_bench.measure import vllm_formats

            return "\n".join(vllm_formats.startup_log(vllm_formats.parse_vllm_argv(argv), self.vllm_version)) + "\n"
        config = self._epp_config_loaded(obj, c, obj["metadata"].get("namespace") or ns or "")
        if config is not None:
            return (json.dumps({"level": "info", "ts": 1765080000.1, "msg": "Raw config after phase one",
                                "config": config}) + "\nINFO ready\n")
        return "INFO ready\n"

    def _epp_config_loaded(self, pod: dict, c: dict, ns: str) -> dict | None:
        """The EndpointPickerConfig an EPP container reads: --config-text, or the file --config-file names, found
        through the pod's volumeMounts and ConfigMap volumes (items and subPath honoured)."""
        import yaml

        args = [*(c.get("command") or []), *(c.get("args") or [])]
        text = None
        for i, a in enumerate(args):
            name, _, inline = a.partition("=")
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            if name == "--config-text":
                text = value
            elif name == "--config-file" and text is None:
                text = self._file_in_pod(pod, c, value, ns)
        if text is None:
            return None
        loaded = yaml.safe_load(text)
        return loaded if isinstance(loaded, dict) else None

    def _file_in_pod(self, pod: dict, c: dict, path: str, ns: str) -> str | None:
        volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
        for mount in c.get("volumeMounts") or []:
            mount_path = mount["mountPath"].rstrip("/")
            vol = volumes.get(mount["name"]) or {}
            cm = (vol.get("configMap") or {}).get("name")
            if cm is None:
                continue
            data = ((self.objects.get(("configmaps", ns, cm)) or {}).get("data")) or {}
            files = {item["path"]: item["key"] for item in vol["configMap"].get("items") or []} or {k: k for k in data}
            if mount.get("subPath"):
                if path == mount_path and mount["subPath"] in files:
                    return data.get(files[mount["subPath"]])
                continue
            if path.startswith(mount_path + "/") and path[len(mount_path) + 1:] in files:
                return data.get(files[path[len(mount_path) + 1:]])
        return None

    def kinds_left(self) -> list[str]:
        with self.lock:
            return sorted(f"{KIND_OF[p]}/{n}" for (p, _, n) in self.objects)
