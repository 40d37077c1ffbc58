"""existing: benchmark an llm-d stack someone else installed (campaign `serving.mode: existing`).

Per cell, deploy saves the live objects it will touch, patches the cell's configuration into them, waits for
the rollout and verifies the running pods carry it; teardown restores exactly what was saved.

- Saved state lives in the cluster, in a ConfigMap of the stack's namespace labelled `llmd-bench/saved-state`
  (the saved objects' JSON, written BEFORE the first patch), plus a copy in the cell folder. While one exists,
  every deploy refuses and names `llmd-bench restore --run-id ...`; teardown (and that command) put the saved
  spec/data, labels and annotations back with a replace, wait for the rollout, compare, then delete the state.
- What a cell patches is what manifests.py renders for it: the model-server container's vLLM flags (ours replace
  the live flags of the same name, other live flags stay; where it listens stays the installation's), its env
  (ours replace same-named variables; the installation's HF_TOKEN/HF_HOME stay), its image when the
  configuration names one, the replicas, and the EPP's EndpointPickerConfig in its ConfigMap. A config-hash
  annotation on every pod template rolls the pods (also for a ConfigMap-only change) and is verified on the pods.
- `read_only: true` writes nothing: the live objects are compared with the same rendering and the run is
  refused with every difference, or benchmarked as it is.
- A model server started from a shell (`sh -c` / `bash -c`, as llm-d's guides do) gets its `vllm serve` command
  patched inside the script (runtime/vllm_script.py); a script that cannot be read for certain is refused before
  any write. The EPP's config is where its `--config-file` (through its volume mounts, to a ConfigMap key) or
  `--config-text` points. Patched model servers roll out with `strategy: Recreate` (no surge pod: the old pods'
  GPUs are what the new pods get on a full cluster); the saved spec puts the installation's strategy back.
- What could revert a patch mid-run is checked before the first write: a HorizontalPodAutoscaler on a patched
  Deployment is refused (it cannot be paused), a KEDA ScaledObject is paused for the cell and restored, an Argo CD
  or Flux managed object is refused; a plain Helm release is allowed and noted in the cell's record.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import hashlib
import json
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from llmd_bench.measure.cell_folder import EXISTING_SAVED_FILE as SAVED_FILE
from llmd_bench.measure.observe.sampler import Targets
from llmd_bench.measure.processes import resp_command
from llmd_bench.measure.served import ServedSource
from llmd_bench.model import catalog, yaml_text
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.names import dns_label, label_value
from llmd_bench.model.settings import settings
from llmd_bench.stack.context import StepContext, write_json_atomic
from llmd_bench.stack.runtime import kubernetes as k8s
from llmd_bench.stack.runtime import stack_metadata as sm
from llmd_bench.stack.runtime import vllm_script
from llmd_bench.stack.runtime.base import Runtime
from llmd_bench.stack.runtime.kubernetes import Cluster, api_client

CONFIG_HASH = "llmd-bench/config-hash"
CELL_ANNOTATION = "llmd-bench/cell"
RESTARTED_AT = "llmd-bench/restarted-at"
SAVED_LABEL = "llmd-bench/saved-state"
SAVED_PREFIX = "llmd-bench-saved-"
# the installation's own credentials and model cache: never replaced by the campaign's
INSTALLATION_ENV = frozenset({"HF_TOKEN", "HF_HOME"})
# where vLLM listens is the installation's: its Service, InferencePool and probes point there
INSTALLATION_FLAGS = frozenset({"host", "port"})
# metadata the server or a controller owns: never restored, never compared
CONTROLLER_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision"})
DEFAULT_MODEL_PORT, DEFAULT_EPP_METRICS_PORT = 8000, 9090
# the port of a Redis/Valkey Service with several (bitnami's charts name theirs tcp-redis)
INDEX_PORT_NAMES = ("redis", "valkey", "tcp-redis", "tcp-valkey", "resp")
# keda apis/keda/v1alpha1/scaledobject_types.go @v2.20.2 (PausedAnnotation, first in v2.12.0): KEDA stops the scale
# loop and deletes its HPA (controllers/keda/scaledobject_controller.go handlePause); paused-replicas also pauses
KEDA_PAUSED, KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas"


def _poll_s() -> float:
    return settings().poll_s


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the API calls, as raw JSON (typed models would drop fields the client does not know: a restore must not) ----

class Api:
    """get / replace / list / create / delete of the few kinds existing mode touches, in one namespace."""

    PLURALS = {"Deployment": ("apps", "deployments"), "ConfigMap": ("", "configmaps"), "Service": ("", "services"),
               "Pod": ("", "pods")}

    def __init__(self, ns: str, client: Any = None) -> None:
        from kubernetes import client as kc  # deferred: loads kubernetes

        self.api = client or k8s.api_client()
        self.ns = ns
        self.core, self.apps = kc.CoreV1Api(self.api), kc.AppsV1Api(self.api)

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data or b"{}")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            if kind in self.RAW:
                return self._raw("GET", self._raw_path(kind, name))
            read = {"Deployment": self.apps.read_namespaced_deployment, "ConfigMap": self.core.read_namespaced_config_map,
                    "Service": self.core.read_namespaced_service, "Pod": self.core.read_namespaced_pod}[kind]
            return self._json(read(name, self.ns, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeStepError(f"reading {kind}/{name} in namespace {self.ns}: {exc.status} {exc.reason}") from None

    def list(self, kind: str, selector: str = "") -> list[dict[str, Any]]:
        fn = {"Deployment": self.apps.list_namespaced_deployment, "ConfigMap": self.core.list_namespaced_config_map,
              "Pod": self.core.list_namespaced_pod, "Service": self.core.list_namespaced_service}[kind]
        return self._json(fn(self.ns, label_selector=selector, _preload_content=False)).get("items") or []

    def replace(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            if kind in self.RAW:
                return self._raw("PUT", self._raw_path(kind, name), body, {"fieldManager": k8s.FIELD_MANAGER})
            fn = {"Deployment": self.apps.replace_namespaced_deployment,
                  "ConfigMap": self.core.replace_namespaced_config_map}[kind]
            return self._json(fn(name, self.ns, body, field_manager=k8s.FIELD_MANAGER, _preload_content=False))
        except ApiException as exc:
            raise RuntimeStepError(f"replacing {kind}/{name} in namespace {self.ns}: {exc.status} {exc.reason}: "
                                   f"{_message(exc)}") from None

    def create_config_map(self, body: dict[str, Any]) -> bool:
        """False when it already exists."""
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            self.core.create_namespaced_config_map(self.ns, body, field_manager=k8s.FIELD_MANAGER, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise RuntimeStepError(f"creating ConfigMap/{body['metadata']['name']} in namespace {self.ns}: "
                                   f"{exc.status} {exc.reason}: {_message(exc)}") from None
        return True

    def delete_config_map(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            self.core.delete_namespaced_config_map(name, self.ns, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeStepError(f"deleting ConfigMap/{name} in namespace {self.ns}: {exc.status} {exc.reason}") from None

    def pod_log(self, pod: str, container: str | None, lines: int | None = 30) -> str:
        return k8s.read_pod_log(self.core, self.ns, pod, container, lines)

    # -- the kinds without a typed client here: raw calls on their paths ------------------------------------------
    RAW = {"HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
           "ScaledObject": ("keda.sh", "v1alpha1", "scaledobjects")}

    def _raw(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> dict[str, Any]:
        resp = self.api.call_api(path, method, query_params=list((query or {}).items()), body=body,
                                 header_params={"Accept": "application/json", "Content-Type": "application/json"},
                                 auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
        return self._json(resp)

    def _raw_path(self, kind: str, name: str = "") -> str:
        group, version, plural = self.RAW[kind]
        return f"/apis/{group}/{version}/namespaces/{self.ns}/{plural}" + (f"/{name}" if name else "")

    def list_raw(self, kind: str) -> builtins.list[dict[str, Any]] | None:  # `list` here is the method above
        """None when the cluster does not serve the kind (KEDA not installed); refused when this identity may not
        list it (the Role of existing mode grants it)."""
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        group, _, plural = self.RAW[kind]
        try:
            items = self._raw("GET", self._raw_path(kind)).get("items") or []
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeStepError(f"listing {kind}s in namespace {self.ns}: {exc.status} {exc.reason}: "
                                   f"{_message(exc)}; existing mode checks them before patching (the Role needs "
                                   f"`list` on {plural}.{group})") from None
        for item in items:
            item.setdefault("kind", kind)
        return items

    def serves_group(self, group: str) -> bool:
        """Whether the API server serves an API group (discovery, open to every authenticated client)."""
        from kubernetes.client.exceptions import ApiException  # deferred: loads kubernetes

        try:
            self._raw("GET", f"/apis/{group}")
        except ApiException:
            return False
        return True


def _message(exc: Any) -> str:
    try:
        return json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        return ""


# -- vLLM flags and env: merge and compare ---------------------------------------------------------------------

def flag_name(token: str) -> str:
    """`--max_num_seqs=8`, `--max-num-seqs` and `--no-enable-prefix-caching` name the same setting as
    `--max-num-seqs` / `--enable-prefix-caching` (vLLM's parser turns `_` into `-`; `--no-X` negates `--X`)."""
    name = token[2:].split("=", 1)[0].replace("_", "-")
    return name[3:] if name.startswith("no-") else name


def parse_flags(args: list[str]) -> list[tuple[str | None, list[str]]]:
    """(flag, values) in order; positional arguments as (None, [token]). A flag takes the tokens up to the next
    `--`-token as values (`--flag=value` carries its one value)."""
    out: list[tuple[str | None, list[str]]] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            out.append((None, [token]))
            i += 1
            continue
        if "=" in token:
            out.append((token.split("=", 1)[0], [token.split("=", 1)[1]]))
            i += 1
            continue
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        out.append((token, args[i + 1:j]))
        i = j
    return out


def our_flags(rendered_args: list[str]) -> list[tuple[str, list[str]]]:
    """The flags the configuration sets, without the positional model and where vLLM listens."""
    return [(f, v) for f, v in parse_flags(rendered_args) if f is not None and flag_name(f) not in INSTALLATION_FLAGS]


def merge_args(live: list[str], ours: list[tuple[str, list[str]]]) -> list[str]:
    """The live args with every flag the configuration sets removed (with as many value tokens as ours takes, so
    a positional after a boolean flag stays), then the configuration's flags appended in its order."""
    want = {flag_name(f): len(v) for f, v in ours}
    out: list[str] = []
    i = 0
    while i < len(live):
        token = live[i]
        if token.startswith("--") and flag_name(token) in want:
            i += 1
            if "=" not in token:
                for _ in range(want[flag_name(token)]):
                    if i < len(live) and not live[i].startswith("--"):
                        i += 1
            continue
        out.append(token)
        i += 1
    for f, values in ours:
        out += [f, *values]
    return out


def live_flag_values(live: list[str], name: str) -> list[str] | None:
    """The values of the last occurrence of a flag in live args (None: absent; `--no-X` reads as ['false'])."""
    found = None
    for f, values in parse_flags(live):
        if f is not None and flag_name(f) == name:
            found = ["false"] if f[2:].replace("_", "-").startswith("no-") and name != f[2:] else values
    return found


def merge_env(live: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours replace same-named live variables in place; the rest of ours is appended in its order."""
    by_name = {e["name"]: e for e in ours}
    out = [by_name.get(e["name"], e) for e in live]
    names = {e["name"] for e in live}
    return out + [e for e in ours if e["name"] not in names]


def vllm_args(c: dict[str, Any]) -> list[str]:
    """The arguments vLLM gets: the container's args, or those of the `vllm serve` in its `sh -c` script
    (vllm_script.Refused when the script cannot be read for certain)."""
    where = vllm_script.locate(list(c.get("command") or []), list(c.get("args") or []))
    if where is None:
        return list(c.get("args") or [])
    return vllm_script.serve_args(c[where.field][where.index])


def set_vllm_flags(dep: dict[str, Any], c: dict[str, Any], flags: list[tuple[str, list[str]]]) -> None:
    """Merge the configuration's flags into the container: into its args (merge_args), or into the `vllm serve` of
    its shell script (never appended to a shell, which would take them as $0, $1...). Refused naming the Deployment,
    the container and the reason when the script cannot be patched for certain."""
    try:
        where = vllm_script.locate(list(c.get("command") or []), list(c.get("args") or []))
        if where is None:
            c["args"] = merge_args(list(c.get("args") or []), flags)
            return
        c[where.field][where.index] = vllm_script.patch(c[where.field][where.index], flags)
    except vllm_script.Refused as exc:
        raise RuntimeStepError(f"Deployment/{dep['metadata']['name']} container {c['name']} starts vLLM from a shell "
                               f"script that existing mode cannot patch for certain: {exc}. Nothing was changed; "
                               "start vLLM with `command: [vllm, serve]` and the flags in `args`, or simplify the "
                               "script to one `vllm serve` with its flags written out") from None


# -- what the cell sets -------------------------------------------------------------------------------------------

@dataclass
class Rendered:
    flags: list[tuple[str, list[str]]]
    env: list[dict[str, Any]]
    image: str | None  # only when the configuration names one
    replicas: int
    tensor_parallel_size: int
    epp_config: str
    config_hash: str


def existing_stack(ctx: StepContext) -> Any:
    ex = ctx.campaign.serving.existing
    if ctx.campaign.serving.mode != "existing" or ex is None:
        raise RuntimeStepError(f"campaign {ctx.campaign.dag_id} is not in serving.mode existing")
    return ex


def render(ctx: StepContext, index_port: int | None = None) -> Rendered:
    """The cell's model-server flags/env/image/replicas and EPP config, from manifests.py's rendering, with the
    installed stack's names (the EPP's Service for KV events, the index Service for the precise scorer) and the
    index Service's port (index_endpoint; the one FLUSHALL and the evidence use)."""
    from llmd_bench.stack import manifests  # deferred: loads jinja2

    assert ctx.cell is not None
    ex = existing_stack(ctx)
    campaign, config = ctx.campaign, ctx.configuration
    if config.model_server.block_size is not None:  # as manifests.render_cell does
        campaign = campaign.model_copy(update={"serving": campaign.serving.model_copy(
            update={"block_size": config.model_server.block_size})})
    entry = catalog.entry(ctx.params.llmd_version)
    # the flags, env and EPP config of a release whose contract could not be read are not written (deploy renders
    # before its first write): refused naming the unverified pieces, as manifests.context refuses a deployed cell
    refused = manifests.unverified_refusal(entry, config, campaign.serving.backend, ctx.params.llmd_version,
                                           f"cell {ctx.cell} on the installed stack in namespace {ex.namespace}")
    if refused:
        raise RuntimeStepError(refused + ". Nothing was changed")
    names = {**manifests.cell_names(ctx.cell), "epp": ex.epp.service or ex.epp.deployment}
    if ex.index_service:
        names["kv"] = ex.index_service
    # the installed index answers on its Service's port (index_endpoint), not on the port of the one a cell deploys
    port = index_port if ex.index_service and index_port is not None else manifests.INDEX_PORT
    server = manifests.model_server(ctx.cell, ctx.params, campaign, entry, names, ex.namespace, index_port=port)
    epp = manifests.epp_config(ctx.cell, campaign.serving, names, ex.namespace, entry, config, index_port=port)
    epp_text = yaml.safe_dump(epp, sort_keys=False)
    flags = our_flags(server["args"])
    env = [e for e in server["env"] if e["name"] not in INSTALLATION_ENV]
    image = server["image"] if config.model_server.image else None
    replicas, tp = ctx.params.replicas, ctx.params.tensor_parallel_size
    digest = hashlib.sha256(json.dumps({"flags": flags, "env": env, "image": image, "replicas": replicas,
                                        "epp": epp_text}, sort_keys=True).encode()).hexdigest()[:20]
    return Rendered(flags, env, image, replicas, tp, epp_text, digest)


# -- the installed objects ----------------------------------------------------------------------------------------

class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EppConfigSource(_Frozen):
    """Where the EPP reads its EndpointPickerConfig: the ConfigMap key mounted at its `--config-file` path, or its
    `--config-text` argument. GAIE cmd/epp/runner/runner.go @v1.2.0 (Go flag: -config-file / -config-text, text
    first), pkg/epp/server/options.go @v1.5.0 and ROUTER @v0.9.0/@v0.10.0 (pflag; both at once is an error). The
    charts pass `--config-file /config/<pluginsConfigFile>` and mount the release's ConfigMap at /config (GAIE
    config/charts/inferencepool/templates/epp-deployment.yaml @v1.2.0/@v1.3.0, epplib/templates/_deployment.yaml
    @v1.4.0/@v1.5.0; ROUTER config/charts/routerlib/templates/_deployment.yaml @v0.9.0/@v0.10.0)."""

    container: str
    flag: Literal["--config-file", "--config-text"]
    field: Literal["command", "args"]
    index: int              # the token holding the value
    inline: bool            # `--flag=value`: the value is after '=' in that token
    value: str
    configmap: str | None = None
    key: str | None = None

    def describe(self, deployment: str) -> str:
        if self.flag == "--config-text":
            return f"Deployment/{deployment} container {self.container} --config-text"
        return f"ConfigMap/{self.configmap} key {self.key} (Deployment/{deployment} --config-file {self.value})"


class IndexEndpoint(_Frozen):
    """Where the Redis/Valkey index answers: the EPP config, FLUSHALL and the evidence all use this."""

    service: str
    host: str               # the cluster IP (DNS name of a headless Service)
    dns: str                # <service>.<namespace>.svc.cluster.local
    port: int


@dataclass
class Live:
    model_servers: list[dict[str, Any]]
    epp: dict[str, Any]
    epp_config: dict[str, Any] | None  # the ConfigMap of the EPP's --config-file (None: --config-text)
    config_key: str | None
    index: dict[str, Any] | None
    source: EppConfigSource

    def epp_config_text(self) -> str | None:
        if self.source.flag == "--config-text":
            return self.source.value
        return ((self.epp_config or {}).get("data") or {}).get(self.config_key or "")

    def objects(self) -> list[dict[str, Any]]:
        """What a cell writes, as saved before the first write."""
        return [*([self.epp_config] if self.epp_config is not None else []), *self.model_servers, self.epp]


def epp_config_source(dep: dict[str, Any], wanted: str | None) -> EppConfigSource:
    """Where the EPP of this Deployment reads its config; refused (naming the Deployment) when it is nowhere existing
    mode can write: no config flag, a file from the image or a non-ConfigMap volume, a subPathExpr."""
    name = dep["metadata"]["name"]
    c = container(dep, wanted, "epp")
    tokens = [("command", i, t) for i, t in enumerate(c.get("command") or [])] + \
             [("args", i, t) for i, t in enumerate(c.get("args") or [])]
    found: dict[str, tuple[str, int, bool, str]] = {}
    for pos, (fld, i, token) in enumerate(tokens):
        flag, eq, value = token.lstrip("-").partition("=")
        if not token.startswith("-") or flag not in ("config-file", "config-text"):
            continue
        if eq:
            found[flag] = (fld, i, True, value)
        elif pos + 1 < len(tokens):
            found[flag] = (tokens[pos + 1][0], tokens[pos + 1][1], False, tokens[pos + 1][2])
        else:
            raise RuntimeStepError(f"Deployment/{name} container {c['name']} ends with {token} and no value")
    where = f"Deployment/{name} container {c['name']}"
    if len(found) == 2:
        raise RuntimeStepError(f"{where} sets both --config-file and --config-text (the EPP refuses to start from "
                               "GAIE v1.5 / router v0.9 on; before, the text wins): leave one")
    if not found:
        raise RuntimeStepError(f"{where} has neither --config-file nor --config-text: its EPP runs a built-in "
                               "configuration existing mode cannot set")
    (flag, (fld, index, inline, value)), = found.items()
    base = {"container": c["name"], "flag": f"--{flag}", "field": fld, "index": index, "inline": inline,
            "value": value}
    if flag == "config-text":
        return EppConfigSource(**base)
    if "$(" in value:
        raise RuntimeStepError(f"{where} --config-file {value}: a path with a $(VAR) reference is not provable here")
    path = posixpath.normpath(value if value.startswith("/") else posixpath.join(c.get("workingDir") or "/", value))
    for m in sorted(c.get("volumeMounts") or [], key=lambda m: len(m["mountPath"]), reverse=True):
        mount = posixpath.normpath(m["mountPath"])
        if path != mount and not path.startswith(mount.rstrip("/") + "/"):
            continue
        if m.get("subPathExpr"):
            raise RuntimeStepError(f"{where} reads --config-file {value} through a subPathExpr mount, which is not "
                                   "provable here")
        rel = path[len(mount):].lstrip("/")
        if m.get("subPath"):
            rel = posixpath.normpath(posixpath.join(m["subPath"], rel)) if rel else posixpath.normpath(m["subPath"])
        volumes = dep["spec"]["template"]["spec"].get("volumes") or []
        vol = next((v for v in volumes if v.get("name") == m["name"]), None)
        if vol is None:
            raise RuntimeStepError(f"{where} mounts volume {m['name']}, which its pod template does not define")
        if "configMap" in vol:
            sources = [vol["configMap"]]
        elif "projected" in vol:
            sources = [s["configMap"] for s in vol["projected"].get("sources") or [] if "configMap" in s]
        else:
            kind = next((k for k in vol if k != "name"), "?")
            raise RuntimeStepError(f"{where} reads --config-file {value} from a {kind} volume ({m['name']}), not a "
                                   "ConfigMap: existing mode cannot write it")
        for src in sources:
            items = src.get("items")
            if items:  # key -> path mapping (only the listed keys are files)
                key = next((it["key"] for it in items if posixpath.normpath(it["path"]) == rel), None)
            else:
                key = rel if rel and "/" not in rel else None
            if key:
                return EppConfigSource(**base, configmap=src["name"], key=key)
        raise RuntimeStepError(f"{where} reads --config-file {value}, but no ConfigMap key of volume {m['name']} is "
                               f"mounted at {rel or '.'}")
    raise RuntimeStepError(f"{where} reads --config-file {value} from no mounted volume (a file of the image): "
                           "existing mode cannot write it")


def index_endpoint(svc: dict[str, Any], ns: str) -> IndexEndpoint:
    """The index Service's address: its only port, or the one named like a Redis/Valkey port (INDEX_PORT_NAMES); a
    headless Service is reached at its pods' target port."""
    name = svc["metadata"]["name"]
    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    chosen = ports if len(ports) == 1 else [p for p in ports if p.get("name") in INDEX_PORT_NAMES]
    if len(chosen) != 1:
        shown = ", ".join(f"{p.get('name') or '(unnamed)'}:{p.get('port')}" for p in ports) or "none"
        raise RuntimeStepError(f"Service/{name} (serving.existing.index_service) has ports {shown}: existing mode takes "
                               f"the index's port from its only port or the one named {' / '.join(INDEX_PORT_NAMES)}")
    port, dns = chosen[0], f"{name}.{ns}.svc.cluster.local"
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        return IndexEndpoint(service=name, host=ip, dns=dns, port=int(port["port"]))
    target = port.get("targetPort", port["port"])
    if not isinstance(target, int):
        raise RuntimeStepError(f"Service/{name} is headless and its port {port.get('name')} targets the named port "
                               f"{target!r}: its number is the pods', not provable here")
    return IndexEndpoint(service=name, host=dns, dns=dns, port=target)


def locate(api: Api, ex: Any) -> Live:
    """The objects serving.existing names, read now; refused when one is missing, naming it, or when the campaign's
    EPP ConfigMap / key disagree with what the EPP reads."""
    missing = []
    servers: list[dict[str, Any]]
    if ex.model_servers.names:
        found = [api.get("Deployment", n) for n in ex.model_servers.names]
        missing += [f"Deployment/{n}" for n, d in zip(ex.model_servers.names, found, strict=True) if d is None]
        servers = [d for d in found if d is not None]
    else:
        servers = sorted(api.list("Deployment", ex.model_servers.selector), key=lambda d: d["metadata"]["name"])
        if not servers:
            missing.append(f"Deployments matching {ex.model_servers.selector!r}")
    epp = api.get("Deployment", ex.epp.deployment)
    index = api.get("Service", ex.index_service) if ex.index_service else None
    missing += [f"{k}/{n}" for k, n, o in (("Deployment", ex.epp.deployment, epp),
                                           ("Service", ex.index_service, index if ex.index_service else True))
                if o is None]
    if missing:
        raise RuntimeStepError(f"serving.existing names objects namespace {api.ns} does not have: {', '.join(missing)}")
    assert epp is not None
    source = epp_config_source(epp, ex.epp.container)
    if index is not None:
        index_endpoint(index, api.ns)
    if source.flag == "--config-text":
        if ex.epp.config_key is not None:
            raise RuntimeStepError(f"serving.existing.epp.config_key is {ex.epp.config_key!r}, but Deployment/"
                                   f"{ex.epp.deployment} takes its config inline (--config-text): remove config_key")
        return Live(servers, epp, None, None, index, source)
    if source.configmap != ex.epp.configmap:
        raise RuntimeStepError(f"serving.existing.epp.configmap is {ex.epp.configmap!r}, but Deployment/{ex.epp.deployment}"
                               f" reads its --config-file {source.value} from ConfigMap/{source.configmap}: set "
                               f"configmap: {source.configmap}")
    if ex.epp.config_key is not None and ex.epp.config_key != source.key:
        raise RuntimeStepError(f"serving.existing.epp.config_key is {ex.epp.config_key!r}, but Deployment/"
                               f"{ex.epp.deployment} reads --config-file {source.value}, which is key {source.key!r} of "
                               f"ConfigMap/{source.configmap}: set config_key: {source.key} (or leave it out)")
    cm = api.get("ConfigMap", ex.epp.configmap)
    if cm is None:
        raise RuntimeStepError(f"serving.existing names objects namespace {api.ns} does not have: "
                               f"ConfigMap/{ex.epp.configmap}")
    keys = sorted(cm.get("data") or {})
    if source.key not in keys:
        raise RuntimeStepError(f"ConfigMap/{ex.epp.configmap} has no text key {source.key!r}, which Deployment/"
                               f"{ex.epp.deployment} reads as --config-file {source.value}; its keys: {keys}")
    return Live(servers, epp, cm, source.key, index, source)


def container(dep: dict[str, Any], wanted: str | None, default: str) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"].get("containers") or []
    names = [c["name"] for c in containers]
    name = wanted or (default if default in names else (names[0] if len(names) == 1 else None))
    for c in containers:
        if c["name"] == name:
            return c
    raise RuntimeStepError(f"Deployment/{dep['metadata']['name']} has containers {names}: name the one to patch with "
                           f"serving.existing ({'model_servers' if default == 'vllm' else 'epp'}.container)")


def selector_of(dep: dict[str, Any]) -> str:
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _gpus(c: dict[str, Any]) -> str | None:
    res = c.get("resources") or {}
    return (res.get("limits") or {}).get("nvidia.com/gpu") or (res.get("requests") or {}).get("nvidia.com/gpu")


# Recreate, not RollingUpdate with maxSurge 0 / maxUnavailable 1: the old pods (and their GPUs) go before any new
# one is scheduled, so a rollout fits a node with no free GPU whatever the replica count, and no pod of the old
# configuration serves (or publishes KV events) beside the new ones; nothing is measured during a deploy, so the
# gap costs nothing. GAIE's and the router's charts roll the EPP the same way (epp-deployment.yaml @v1.2.0).
ROLLOUT_STRATEGY = {"type": "Recreate"}


def patched(ctx: StepContext, originals: Live, r: Rendered) -> list[dict[str, Any]]:
    """The objects to write: each original with the cell's configuration merged in (never from a patched copy, so a
    retried deploy gives the same objects). Refused, before anything is written, when a model server's shell script
    cannot be patched for certain."""
    ex = existing_stack(ctx)
    out = []
    for dep in originals.model_servers:
        new = copy.deepcopy(dep)
        c = container(new, ex.model_servers.container, "vllm")
        gpus = _gpus(c)
        if ctx.campaign.serving.backend == "vllm" and gpus is not None and str(gpus) != str(r.tensor_parallel_size):
            raise RuntimeStepError(f"Deployment/{dep['metadata']['name']} gives its pods {gpus} GPU(s) but the cell's "
                                   f"tensor_parallel_size is {r.tensor_parallel_size}: existing mode does not change "
                                   "the pods' resources; run the cell with tensor_parallel_size "
                                   f"{gpus} (a param or factor)")
        set_vllm_flags(dep, c, r.flags)
        c["env"] = merge_env(list(c.get("env") or []), r.env)
        if r.image:
            c["image"] = r.image
        if len(originals.model_servers) == 1:
            new["spec"]["replicas"] = r.replicas
        new["spec"]["strategy"] = copy.deepcopy(ROLLOUT_STRATEGY)
        _stamp(new, ctx, r)
        out.append(new)
    epp = copy.deepcopy(originals.epp)
    _stamp(epp, ctx, r)
    src = originals.source
    if src.flag == "--config-text":
        c = container(epp, src.container, "epp")
        token = c[src.field][src.index]
        c[src.field][src.index] = f"{token.split('=', 1)[0]}={r.epp_config}" if src.inline else r.epp_config
        return [*out, epp]
    assert originals.epp_config is not None and originals.config_key is not None
    cm = copy.deepcopy(originals.epp_config)
    cm.setdefault("data", {})[originals.config_key] = r.epp_config
    return [cm, *out, epp]


def _stamp(dep: dict[str, Any], ctx: StepContext, r: Rendered) -> None:
    annotations = dep["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
    annotations[CONFIG_HASH] = r.config_hash
    annotations[CELL_ANNOTATION] = str(ctx.cell)


# -- comparisons ---------------------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def compare_stack(ctx: StepContext, live: Live, r: Rendered) -> list[tuple[str, str, str, str]]:
    """(object, field, live value, expected value) for every setting of the configuration the live objects differ
    in (what read-only mode refuses on)."""
    ex = existing_stack(ctx)
    diffs: list[tuple[str, str, str, str]] = []
    for dep in live.model_servers:
        obj = f"Deployment/{dep['metadata']['name']}"
        c = container(dep, ex.model_servers.container, "vllm")
        diffs += _container_diffs(obj, c, r)
        if len(live.model_servers) == 1 and dep["spec"].get("replicas", 1) != r.replicas:
            diffs.append((obj, "spec.replicas", str(dep["spec"].get("replicas", 1)), str(r.replicas)))
    text = live.epp_config_text()
    try:
        have = yaml_text.load(text) if text is not None else None
    except yaml.YAMLError:
        have = text
    want = yaml_text.load(r.epp_config)
    if have != want:
        if live.epp_config is not None:
            where = (f"ConfigMap/{live.epp_config['metadata']['name']}", f"data.{live.config_key}")
        else:
            where = (f"Deployment/{live.epp['metadata']['name']}", f"container {live.source.container} --config-text")
        diffs.append((*where, _show(have), _show(want)))
    return diffs


def _container_diffs(obj: str, c: dict[str, Any], r: Rendered) -> list[tuple[str, str, str, str]]:
    diffs = []
    try:
        args = vllm_args(c)
    except vllm_script.Refused as exc:
        return [(obj, f"container {c['name']} shell script", f"not provable: {exc}", "the configuration's flags")]
    for f, values in r.flags:
        have = live_flag_values(args, flag_name(f))
        if have != values:
            diffs.append((obj, f"args {f}", "(absent)" if have is None else " ".join(have) or "(set)",
                          " ".join(values) or "(set)"))
    env = {e["name"]: e for e in c.get("env") or []}
    for e in r.env:
        if env.get(e["name"]) != e:
            have = env.get(e["name"])
            diffs.append((obj, f"env {e['name']}", _show(_env_value(have)), _show(_env_value(e))))
    if r.image and c.get("image") != r.image:
        diffs.append((obj, "image", _show(c.get("image")), r.image))
    return diffs


def _env_value(e: dict[str, Any] | None) -> Any:
    if e is None:
        return None
    return e.get("value") if "value" in e else e.get("valueFrom")


def format_diffs(diffs: list[tuple[str, str, str, str]]) -> str:
    return "\n".join(f"  {obj} {field}: live {live!s:.300} / expected {want!s:.300}" for obj, field, live, want in diffs)


# -- saved state ---------------------------------------------------------------------------------------------------

@dataclass
class SavedState:
    name: str
    run_id: str
    campaign: str
    cell: str
    saved_at: str
    objects: list[dict[str, Any]]

    @property
    def restore_command(self) -> str:
        return f"llmd-bench restore --run-id {self.run_id} --campaign {self.campaign}"

    def describe(self, ns: str) -> str:
        return (f"run {self.run_id!r} (campaign {self.campaign}, cell {self.cell}) patched the installed stack in "
                f"namespace {ns} and its saved state (ConfigMap/{self.name}, saved {self.saved_at}) was never restored")


def saved_states(api: Api, run_id: str | None = None) -> list[SavedState]:
    out = []
    for cm in api.list("ConfigMap", f"{SAVED_LABEL}=true"):
        data = cm.get("data") or {}
        state = SavedState(cm["metadata"]["name"], data.get("run_id", "?"), data.get("campaign", "?"),
                           data.get("cell", "?"), data.get("saved_at", "?"), json.loads(data.get("objects.json", "[]")))
        if run_id is None or state.run_id == run_id:
            out.append(state)
    return sorted(out, key=lambda s: s.saved_at)


def state_name(ctx: StepContext) -> str:

    return SAVED_PREFIX + dns_label(f"{ctx.campaign.dag_id}-{ctx.run_id}-{ctx.cell}", limit=63 - len(SAVED_PREFIX))


def save_state(api: Api, ctx: StepContext, objects: list[dict[str, Any]]) -> SavedState:
    """The ConfigMap holding the objects as they are now; written before any of them is changed."""

    state = SavedState(state_name(ctx), ctx.run_id, ctx.campaign.dag_id, str(ctx.cell), _now(), objects)
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": state.name, "namespace": api.ns, "labels": {
                "app.kubernetes.io/managed-by": "llmd-bench", SAVED_LABEL: "true",
                "llmd-bench/campaign": label_value(ctx.campaign.dag_id), "llmd-bench/run": label_value(ctx.run_id)}},
            "data": {"run_id": state.run_id, "campaign": state.campaign, "cell": state.cell, "saved_at": state.saved_at,
                     "objects.json": json.dumps(objects, sort_keys=True)}}
    if not api.create_config_map(body):
        raise RuntimeStepError(f"ConfigMap/{state.name} appeared while this deploy saved the stack: another run "
                               "is patching it at the same time")
    return state


def restorable(saved: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The saved object as a replace body: its spec/data, labels and annotations; live's resourceVersion and what
    the server and controllers own (uid, ownerReferences, finalizers, the rollout revision, status)."""
    body = {k: v for k, v in copy.deepcopy(saved).items() if k != "status"}
    meta = {k: v for k, v in live["metadata"].items()
            if k in ("name", "namespace", "uid", "resourceVersion", "ownerReferences", "finalizers")}
    annotations = {k: v for k, v in (saved["metadata"].get("annotations") or {}).items() if k not in CONTROLLER_ANNOTATIONS}
    annotations |= {k: v for k, v in (live["metadata"].get("annotations") or {}).items() if k in CONTROLLER_ANNOTATIONS}
    if saved["metadata"].get("labels") is not None:
        meta["labels"] = copy.deepcopy(saved["metadata"]["labels"])
    if annotations:
        meta["annotations"] = annotations
    body["metadata"] = meta
    return body


def owned(obj: dict[str, Any]) -> dict[str, Any]:
    """What a restore brings back exactly and is compared on: spec (or data), labels, annotations."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in CONTROLLER_ANNOTATIONS}
    fields: dict[str, Any] = {k: obj[k] for k in ("spec", "data", "binaryData") if k in obj}
    return {**fields, "labels": meta.get("labels") or {}, "annotations": annotations}


def differing_paths(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in differing_paths(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in differing_paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def restore_state(api: Api, state: SavedState, timeout_s: float) -> dict[str, Any]:
    """Put every saved object back (idempotent: an object already equal is not written), wait for the rollout,
    prove each equals what was saved, then delete the saved state. A Deployment rolls back under the strategy the
    cell gave it (Recreate: a full cluster has no GPU for a surge pod) and gets its own strategy back once its pods
    are the saved template's (a strategy-only change rolls nothing); paused ScaledObjects are resumed last, once
    the Deployments they scale are back."""
    written: list[str] = []
    first = [o for o in state.objects if o["kind"] != "ScaledObject"]
    last = [o for o in state.objects if o["kind"] == "ScaledObject"]
    missing = []
    for saved in first:
        kind, name = saved["kind"], saved["metadata"]["name"]
        live = api.get(kind, name)
        if live is None:
            missing.append(f"{kind}/{name}")
            continue
        if owned(live) != owned(saved):
            body = restorable(saved, live)
            rolls = kind == "Deployment" and any((saved.get("spec") or {}).get(k) != (live.get("spec") or {}).get(k)
                                                 for k in ("template", "replicas"))
            if rolls:
                body["spec"].pop("strategy", None)
                if (live.get("spec") or {}).get("strategy") is not None:
                    body["spec"]["strategy"] = copy.deepcopy(live["spec"]["strategy"])
            api.replace(kind, name, body)
            written.append(f"{kind}/{name}")
    if missing:
        raise RuntimeStepError(f"cannot restore {', '.join(missing)} in namespace {api.ns}: deleted since run "
                               f"{state.run_id} saved them; the saved objects are in ConfigMap/{state.name} "
                               f"(key objects.json)")
    deployments = [o["metadata"]["name"] for o in first if o["kind"] == "Deployment"]
    wait_rollout(api, deployments, None, timeout_s)
    again = False
    for saved in first:  # what the rollout pass kept (the strategy): the template is back, so nothing rolls
        live = api.get(saved["kind"], saved["metadata"]["name"]) or {}
        if live and owned(live) != owned(saved):
            api.replace(saved["kind"], saved["metadata"]["name"], restorable(saved, live))
            again = True
    if again:
        wait_rollout(api, deployments, None, timeout_s)
    _prove_restored(api, state, first)
    for saved in last:
        live = api.get(saved["kind"], saved["metadata"]["name"])
        if live is None:
            raise RuntimeStepError(f"cannot restore {saved['kind']}/{saved['metadata']['name']} in namespace {api.ns}: "
                                   f"deleted since run {state.run_id} paused it (saved in ConfigMap/{state.name})")
        if owned(live) != owned(saved):
            api.replace(saved["kind"], saved["metadata"]["name"], restorable(saved, live))
            written.append(f"{saved['kind']}/{saved['metadata']['name']}")
    _prove_restored(api, state, last)
    api.delete_config_map(state.name)
    return {"state": state.name, "run_id": state.run_id, "written": written,
            "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in state.objects]}


def _prove_restored(api: Api, state: SavedState, objects: list[dict[str, Any]]) -> None:
    differ = []
    for saved in objects:
        live = api.get(saved["kind"], saved["metadata"]["name"]) or {}
        paths = differing_paths(owned(live), owned(saved))
        if paths:
            differ.append(f"{saved['kind']}/{saved['metadata']['name']}: {', '.join(paths[:10])}")
    if differ:
        raise RuntimeStepError(f"after restoring run {state.run_id}'s saved state the objects still differ from it: "
                               + "; ".join(differ) + f" (the state stays in ConfigMap/{state.name})")


# -- what could revert a patch mid-run ---------------------------------------------------------------------------

ARGO_PREFIX = "argocd.argoproj.io/"  # argo-cd common/common.go: AnnotationKeyAppInstance argocd.argoproj.io/tracking-id
ARGO_INSTANCE_LABEL = "app.kubernetes.io/instance"  # ... LabelKeyAppInstance (label tracking, Argo CD's default < 3.0)
# fluxcd/helm-controller internal/postrender/origin_labels.go: <group>/name and <group>/namespace labels; the
# kustomize-controller labels its objects the same way and skips one annotated kustomize.toolkit.fluxcd.io/
# reconcile: disabled (kustomize-controller CHANGELOG 0.17.0)
FLUX_GROUPS = {"kustomize.toolkit.fluxcd.io": ("Kustomization", "kustomization"),
               "helm.toolkit.fluxcd.io": ("HelmRelease", "helmrelease")}
HELM_MANAGED = ("app.kubernetes.io/managed-by", "Helm")  # helm pkg/action/validate.go setMetadataVisitor
HELM_RELEASE, HELM_RELEASE_NS = "meta.helm.sh/release-name", "meta.helm.sh/release-namespace"


@dataclass
class Reverters:
    """What could undo a cell's patch while it runs: refused (named, with how to proceed), ScaledObjects to pause
    for the cell (as read now: saved before the pause), and notes for the cell's record."""

    refusals: list[str] = dc_field(default_factory=list)
    pause: list[dict[str, Any]] = dc_field(default_factory=list)
    notes: list[str] = dc_field(default_factory=list)


def _scale_target(obj: dict[str, Any], deployments: set[str]) -> str | None:
    """The patched Deployment an HPA / ScaledObject scales (KEDA: kind defaults to Deployment, apps/v1)."""
    ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
    kind, api_version = ref.get("kind") or "Deployment", ref.get("apiVersion") or "apps/v1"
    if kind == "Deployment" and api_version.startswith("apps/") and ref.get("name") in deployments:
        return str(ref["name"])
    return None


def revert_risks(api: Api, live: Live, expected: list[dict[str, Any]]) -> Reverters:
    """HorizontalPodAutoscalers and KEDA ScaledObjects scaling a Deployment the cell patches, and Argo CD / Flux /
    Helm owners of the objects it writes."""
    out = Reverters()
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in expected if d["kind"] == "Deployment"}
    deployments = set(replicas)
    for so in api.list_raw("ScaledObject") or []:
        target = _scale_target(so, deployments)
        if target is None:
            continue
        ann = so["metadata"].get("annotations") or {}
        if str(ann.get(KEDA_PAUSED, "")).lower() == "true" or KEDA_PAUSED_REPLICAS in ann:
            out.notes.append(f"ScaledObject/{so['metadata']['name']} (scales Deployment/{target}) is paused already")
        else:
            out.pause.append(so)
    for hpa in api.list_raw("HorizontalPodAutoscaler") or []:
        target = _scale_target(hpa, deployments)
        if target is None or any(o.get("kind") == "ScaledObject" for o in hpa["metadata"].get("ownerReferences") or []):
            continue  # none of ours, or KEDA's own (KEDA deletes it while its ScaledObject is paused)
        name, spec = hpa["metadata"]["name"], hpa.get("spec") or {}
        low, high, want = spec.get("minReplicas", 1), spec.get("maxReplicas"), replicas[target]
        if low == high == want:
            out.notes.append(f"HorizontalPodAutoscaler/{name} pins Deployment/{target} at {want} replica(s), as the cell "
                             "runs it")
            continue
        out.refusals.append(f"HorizontalPodAutoscaler/{name} scales Deployment/{target} between {low} and {high} "
                            "replicas: it would change them during the run, and an HPA cannot be paused. Save and "
                            f"delete it for the run (`kubectl -n {api.ns} get hpa {name} -o yaml > {name}.yaml && "
                            f"kubectl -n {api.ns} delete hpa {name}`, re-create it afterwards), or pin it "
                            f"(minReplicas = maxReplicas = {want})")
    argo: bool | None = None
    for obj in [*live.objects(), *out.pause]:
        meta = obj.get("metadata") or {}
        what = f"{obj.get('kind', '?')}/{meta.get('name')}"
        labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
        tracked = sorted(k for k in {**labels, **ann} if k.startswith(ARGO_PREFIX))
        if not tracked and ARGO_INSTANCE_LABEL in labels and HELM_RELEASE not in ann:
            argo = api.serves_group("argoproj.io") if argo is None else argo
            if argo:  # the instance label without Helm's own release annotations, on a cluster running Argo CD
                tracked = [ARGO_INSTANCE_LABEL]
        if tracked:
            key = tracked[0]
            out.refusals.append(f"{what} is tracked by Argo CD ({key}={({**labels, **ann})[key]}): a sync of its "
                                "Application (automated, self-heal) would put the installed spec back mid-run. "
                                "Disable the Application's automated sync for the run and benchmark a copy of the "
                                "stack Argo CD does not track")
            continue
        flux = sorted(k for k in labels if k.split("/", 1)[0] in FLUX_GROUPS)
        if flux:
            group = flux[0].split("/", 1)[0]
            owner_kind, cli = FLUX_GROUPS[group]
            owner = f"{labels.get(group + '/namespace', '?')}/{labels.get(group + '/name', '?')}"
            if owner_kind == "Kustomization" and ann.get("kustomize.toolkit.fluxcd.io/reconcile") == "disabled":
                out.notes.append(f"{what} belongs to Flux Kustomization {owner}, which skips it "
                                 "(kustomize.toolkit.fluxcd.io/reconcile: disabled)")
                continue
            out.refusals.append(f"{what} is managed by Flux (the {owner_kind} {owner}, label {flux[0]}): its "
                                "reconciliation would revert the patch mid-run. Suspend it for the run "
                                f"(`flux suspend {cli} {owner.split('/')[-1]} -n {owner.split('/')[0]}`)"
                                + (" and annotate the object kustomize.toolkit.fluxcd.io/reconcile=disabled"
                                   if owner_kind == "Kustomization" else
                                   "; existing mode cannot see a suspension: benchmark a copy Flux does not manage"))
            continue
        if labels.get(HELM_MANAGED[0]) == HELM_MANAGED[1]:
            out.notes.append(f"{what} belongs to Helm release {ann.get(HELM_RELEASE, '?')} (namespace "
                             f"{ann.get(HELM_RELEASE_NS, api.ns)}): a `helm upgrade` of it during the run would put "
                             "the installed spec back")
    return out


def pause_scaled_objects(api: Api, objects: list[dict[str, Any]], timeout_s: float) -> list[str]:
    """Annotate each ScaledObject paused and wait until KEDA reports it (its Paused condition: the scale loop stopped,
    its HPA deleted); the saved state holds them as they were."""
    names = []
    for so in objects:
        name = so["metadata"]["name"]
        live = api.get("ScaledObject", name)
        if live is None:
            raise RuntimeStepError(f"ScaledObject/{name} disappeared from namespace {api.ns}")
        live.setdefault("metadata", {}).setdefault("annotations", {})[KEDA_PAUSED] = "true"
        live.pop("status", None)
        api.replace("ScaledObject", name, live)
        print(f"paused ScaledObject/{name} ({KEDA_PAUSED}: \"true\")", flush=True)
        names.append(name)
    deadline = time.monotonic() + timeout_s
    while names:
        waiting = []
        for name in names:
            conditions = ((api.get("ScaledObject", name) or {}).get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Paused" and c.get("status") == "True" for c in conditions):
                waiting.append(name)
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise RuntimeStepError(f"KEDA did not report ScaledObject(s) {', '.join(waiting)} paused within "
                                   f"{timeout_s:.0f} s (condition Paused; the {KEDA_PAUSED} annotation needs KEDA >= "
                                   "2.12)")
        time.sleep(_poll_s())
    return [o["metadata"]["name"] for o in objects]


# -- rollout -------------------------------------------------------------------------------------------------------

def rollout_timeout_s(ctx: StepContext | None) -> float:
    return k8s.ready_timeout_s(ctx.model_spec.size_gb if ctx is not None and ctx.cell is not None else 30.0)


def wait_rollout(api: Api, deployments: list[str], config_hash: str | None, timeout_s: float,
                 restarted: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Until every Deployment's controller saw its spec (observedGeneration >= generation), all replicas are updated,
    ready and the only ones (updated == replicas == ready, status.replicas too), and each pod carries the template
    (config_hash None: no llmd-bench hash at all). Fails at once on a pod that cannot start, with its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting, pods_of = [], {}
        for name in deployments:
            dep = api.get("Deployment", name)
            if dep is None:
                raise RuntimeStepError(f"Deployment/{name} disappeared from namespace {api.ns} during the rollout")
            want = dep["spec"].get("replicas", 1)
            st = dep.get("status") or {}
            pods = [p for p in api.list("Pod", selector_of(dep)) if not p["metadata"].get("deletionTimestamp")]
            for pod in pods:
                reason = k8s.pod_failure(pod)
                if reason:
                    pname = pod["metadata"]["name"]
                    statuses: list[dict[str, Any]] = (pod.get("status") or {}).get("containerStatuses") or []
                    first = statuses[0].get("name") if statuses else None
                    raise RuntimeStepError(f"pod {pname} of Deployment/{name} cannot start: {reason}\nlast log lines of "
                                           f"{pname}:\n{api.pod_log(pname, first)}")
            stale = [p for p in pods
                     if (p["metadata"].get("annotations") or {}).get(CONFIG_HASH) != config_hash
                     or (restarted is not None and (p["metadata"].get("annotations") or {}).get(RESTARTED_AT) != restarted)]
            done = (st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
                    and (st.get("updatedReplicas") or 0) == want and (st.get("replicas") or 0) == want
                    and (st.get("readyReplicas") or 0) == want and not stale and len(pods) == want)
            if not done:
                waiting.append(f"{name}: {st.get('updatedReplicas', 0)} updated, {st.get('readyReplicas') or 0} ready "
                               f"of {want}, {len(stale)} old pod(s)")
            pods_of[name] = pods
        if not waiting:
            return pods_of
        if time.monotonic() > deadline:
            raise RuntimeStepError(f"rollout not done after {timeout_s:.0f} s in namespace {api.ns}: " + "; ".join(waiting))
        time.sleep(_poll_s())


def verify_pods(ctx: StepContext, api: Api, pods_of: dict[str, list[dict[str, Any]]], expected: list[dict[str, Any]],
                r: Rendered) -> None:
    """Every running pod of the patched Deployments carries the config hash, and each model-server pod's container
    has exactly the args, env and image its Deployment was given."""
    ex = existing_stack(ctx)
    diffs: list[tuple[str, str, str, str]] = []
    templates = {d["metadata"]["name"]: d for d in expected if d["kind"] == "Deployment"}
    for name, pods in pods_of.items():
        dep = templates[name]
        is_server = name != ex.epp.deployment
        for pod in pods:
            obj = f"Pod/{pod['metadata']['name']}"
            have = (pod["metadata"].get("annotations") or {}).get(CONFIG_HASH)
            if have != r.config_hash:
                diffs.append((obj, f"annotation {CONFIG_HASH}", _show(have), r.config_hash))
            if not is_server:
                continue
            want = container(dep, ex.model_servers.container, "vllm")
            got: dict[str, Any] = next((c for c in pod["spec"].get("containers") or [] if c["name"] == want["name"]), {})
            for field in ("args", "env", "image"):
                if (got.get(field) or None) != (want.get(field) or None):
                    diffs.append((obj, f"container {want['name']} {field}", _show(got.get(field)), _show(want.get(field))))
    if diffs:
        raise RuntimeStepError("the running pods do not carry the cell's configuration:\n" + format_diffs(diffs))


# -- the runtime ---------------------------------------------------------------------------------------------------

class ExistingRuntime(Runtime):
    """An llm-d stack installed by someone else: patched per cell and restored, or benchmarked read-only."""

    name = "existing"

    @property
    def stack(self) -> Any:
        return existing_stack(self.ctx)

    def _api(self) -> Api:
        return Api(self.stack.namespace)

    def _mine(self, state: SavedState) -> bool:
        return (state.run_id, state.campaign, state.cell) == (self.ctx.run_id, self.ctx.campaign.dag_id, str(self.ctx.cell))

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def deploy(self) -> dict[str, Any]:
        ex, api = self.stack, self._api()
        states = saved_states(api)
        others = [s for s in states if not self._mine(s)]
        if others:
            s = others[0]
            raise RuntimeStepError(f"refusing to touch the installed stack: {s.describe(api.ns)}. Restore it first: "
                                   f"`{s.restore_command}`")
        r = self._render(api)
        if ex.read_only:
            return self._deploy_read_only(api, r)
        mine = next(iter(states), None)
        # a retried deploy: the objects as they were before the first attempt patched them
        originals = self._live_from(mine.objects) if mine is not None else locate(api, ex)
        # whatever can refuse runs before the first write: the patch itself (a shell script), then what could revert it
        expected = patched(self.ctx, originals, r)
        risks = revert_risks(api, originals, expected)
        if risks.refusals:
            raise RuntimeStepError(f"refusing to patch the installed stack in namespace {api.ns}: it could be reverted "
                                   "while the cell runs:\n  " + "\n  ".join(risks.refusals)
                                   + ("" if mine is not None else "\nnothing was changed"))
        if mine is not None:
            print(f"deploy retried: using the state saved at {mine.saved_at} (ConfigMap/{mine.name})", flush=True)
            saved = {(o["kind"], o["metadata"]["name"]) for o in mine.objects}
            unsaved = [o["metadata"]["name"] for o in risks.pause if ("ScaledObject", o["metadata"]["name"]) not in saved]
            if unsaved:
                raise RuntimeStepError(f"ScaledObject(s) {', '.join(unsaved)} appeared since ConfigMap/{mine.name} was "
                                       "saved: restore first and run again")
            state = mine
        else:
            objects = [*originals.objects(), *risks.pause]
            state = save_state(api, self.ctx, objects)  # before the first write
            print(f"saved {len(objects)} object(s) in ConfigMap/{state.name}", flush=True)
        self._write_saved_copy(state)
        paused = pause_scaled_objects(api, risks.pause, min(rollout_timeout_s(self.ctx), 300.0))
        for obj in expected:
            kind, name = obj["kind"], obj["metadata"]["name"]
            live = api.get(kind, name)
            if live is None:
                raise RuntimeStepError(f"{kind}/{name} disappeared from namespace {api.ns}")
            body = copy.deepcopy(obj)
            body.pop("status", None)
            body["metadata"]["resourceVersion"] = live["metadata"].get("resourceVersion")
            api.replace(kind, name, body)
            print(f"patched {kind}/{name}", flush=True)
        deployments = [d["metadata"]["name"] for d in expected if d["kind"] == "Deployment"]
        pods_of = wait_rollout(api, deployments, r.config_hash, rollout_timeout_s(self.ctx))
        verify_pods(self.ctx, api, pods_of, expected, r)
        flushed = self._empty_index(api)
        changes = compare_stack(self.ctx, originals, r)
        changes += [(f"Deployment/{d['metadata']['name']}", "spec.strategy", _show(d["spec"].get("strategy")),
                     _show(ROLLOUT_STRATEGY)) for d in originals.model_servers
                    if d["spec"].get("strategy") != ROLLOUT_STRATEGY]
        with self.ctx.update_record() as record:
            record["existing"] = {"namespace": api.ns, "read_only": False, "saved_state": state.name,
                                  "config_hash": r.config_hash, "index_emptied": flushed,
                                  "epp_config": originals.source.describe(originals.epp["metadata"]["name"]),
                                  "paused": paused, "notes": risks.notes,
                                  "changed": [{"object": o, "field": f, "was": lv, "now": w} for o, f, lv, w in changes]}
        return self._state(api)

    def _deploy_read_only(self, api: Api, r: Rendered) -> dict[str, Any]:
        live = locate(api, self.stack)
        diffs = compare_stack(self.ctx, live, r)
        servers = [d["metadata"]["name"] for d in live.model_servers]
        pods_of = {n: api.list("Pod", selector_of(d)) for n, d in zip(servers, live.model_servers, strict=True)}
        for dep in live.model_servers:
            c = container(dep, self.stack.model_servers.container, "vllm")
            for pod in pods_of[dep["metadata"]["name"]]:
                got: dict[str, Any] = next((x for x in pod["spec"].get("containers") or [] if x["name"] == c["name"]), {})
                diffs += _container_diffs(f"Pod/{pod['metadata']['name']}", got, r)
        if diffs:
            raise RuntimeStepError(f"read-only: the installed stack in namespace {api.ns} does not match configuration "
                                   f"{self.ctx.cell.config if self.ctx.cell else '?'} ({len(diffs)} difference(s)); "
                                   f"nothing was changed:\n{format_diffs(diffs)}")
        with self.ctx.update_record() as record:
            record["existing"] = {"namespace": api.ns, "read_only": True, "config_hash": r.config_hash,
                                  "index_emptied": False, "changed": []}
        return self._state(api)

    def _live_from(self, objects: list[dict[str, Any]]) -> Live:
        ex = self.stack
        by = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        epp = by[("Deployment", ex.epp.deployment)]
        servers = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] != ex.epp.deployment]
        source = epp_config_source(epp, ex.epp.container)
        cm = by.get(("ConfigMap", source.configmap)) if source.configmap else None
        return Live(servers, epp, cm, source.key, None, source)

    def _render(self, api: Api) -> Rendered:
        endpoint = self._index_endpoint(api)
        return render(self.ctx, endpoint.port if endpoint else None)

    def _write_saved_copy(self, state: SavedState) -> None:
        write_json_atomic(self.ctx.cell_dir / SAVED_FILE, {"state": state.name, "namespace": self.stack.namespace,
                                                           "run_id": state.run_id, "campaign": state.campaign,
                                                           "cell": state.cell, "saved_at": state.saved_at,
                                                           "objects": state.objects})

    def _state(self, api: Api) -> dict[str, Any]:
        targets = self.observation_targets()
        return {"replicas": targets.replicas, "endpoint": self.endpoint(), "kv_backend": self._kv(api)}

    def redeploy(self) -> None:
        """A fresh stack: roll the model servers and the EPP (a new template annotation, as `kubectl rollout
        restart`), wait, empty the index."""
        if self.stack.read_only:
            raise RuntimeStepError("read-only mode restarts nothing: use trial_isolation: same-server and "
                                   "level_isolation: none (or reset) with serving.existing.read_only")
        api = self._api()
        r = self._render(api)
        names = self._deployment_names(api)
        stamp = _now()
        for name in names:
            dep = api.get("Deployment", name)
            assert dep is not None
            dep["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = stamp
            dep.pop("status", None)
            api.replace("Deployment", name, dep)
        wait_rollout(api, names, r.config_hash, rollout_timeout_s(self.ctx), restarted=stamp)
        self._empty_index(api)

    def teardown(self) -> dict[str, Any]:
        """Restore what this cell's deploy saved (nothing in read-only mode, or when deploy saved nothing)."""
        if self.stack.read_only:
            return {"restored": [], "read_only": True}
        api = self._api()
        mine = [s for s in saved_states(api) if self._mine(s)]
        if not mine:
            return {"restored": [], "note": f"no saved state of {self.ctx.cell} in namespace {api.ns}: nothing to restore"}
        results = [restore_state(api, s, rollout_timeout_s(self.ctx)) for s in mine]
        with self.ctx.update_record() as record:
            record.setdefault("existing", {})["restored"] = results
        return {"restored": [o for res in results for o in res["objects"]], "written": [o for res in results
                                                                                        for o in res["written"]]}

    def leftovers(self) -> list[str]:
        """Saved states of other runs never restored (deploy refuses while one exists)."""
        api = self._api()
        return [s.describe(api.ns) for s in saved_states(api) if not self._mine(s)]

    def stack_metadata(self) -> dict[str, Any]:
        """What ran (runtime/stack_metadata.py), read from the installed stack as deploy left it: its model-server and
        EPP pods, the EPP ConfigMap's key, and the model servers' nodes' GPU Feature Discovery labels."""

        ex, api = self.stack, self._api()
        live = locate(api, ex)
        served = self._server_pods(api)
        entry = catalog.entry(self.ctx.params.llmd_version)
        # the installation's own image: a version is declared only when it is exactly the catalog's
        declared = ({entry.images["vllm"]: entry.vllm_version}
                    if entry.vllm_version and "vllm" in entry.images else {})  # an unverified release declares none
        servers, u1 = sm.model_servers([pod for pod, _ in served], declared, served[0][1] if served else None)
        epp_entry, u2 = sm.epp(api.list("Pod", selector_of(live.epp)),
                               live.epp_config_text(), ex.epp.container or "epp")
        node_objs, error = Cluster(api_client(), ex.namespace).nodes()
        node_facts, u3 = sm.nodes(node_objs, [s["node"] for s in servers], error)
        return sm.build(self.name, False, len(servers), servers, epp_entry, node_facts, u1, u2, u3,
                        installed={"namespace": ex.namespace, "read_only": ex.read_only,
                                   "model_server_deployments": self._deployment_names(api, servers_only=True),
                                   "epp_deployment": ex.epp.deployment, "epp_configmap": ex.epp.configmap})

    def served_sources(self) -> list[ServedSource]:
        """The installed model-server pods' logs and /metrics and the EPP pods' logs, as deploy left them."""
        api = self._api()
        name = self.stack.model_servers.container
        servers = [(pod, name or _first_container(pod, "vllm"), port) for pod, port in self._server_pods(api)]
        epps = []
        epp_dep = api.get("Deployment", self.stack.epp.deployment)
        if epp_dep is not None:
            epps = [(p, self.stack.epp.container or "epp") for p in api.list("Pod", selector_of(epp_dep))
                    if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]
        return k8s.served_from_pods(servers, epps, api.pod_log)

    def epp_config_given(self) -> tuple[dict[str, Any] | None, str]:
        """The EndpointPickerConfig this cell put in the installed EPP's ConfigMap (or found there, read-only)."""
        loaded = yaml_text.load(self._render(self._api()).epp_config)
        return (loaded, "") if isinstance(loaded, dict) else (None, "the cell's EPP configuration is not a mapping")

    # -- what the sweep talks to and watches -------------------------------------------------------------------------
    def endpoint(self) -> str:
        return self.stack.url.rstrip("/")

    def observation_targets(self) -> Any:
        api = self._api()
        replicas = sorted(f"http://{pod['status']['podIP']}:{port}" for pod, port in self._server_pods(api))
        kv = self._index_address(api)
        epp = None
        if kv is not None:
            epp_dep = api.get("Deployment", self.stack.epp.deployment)
            if epp_dep is not None:
                port = _port(container(epp_dep, self.stack.epp.container, "epp"), ("metrics",), DEFAULT_EPP_METRICS_PORT)
                ips = sorted(p["status"]["podIP"] for p in api.list("Pod", selector_of(epp_dep))
                             if (p.get("status") or {}).get("podIP"))
                epp = f"http://{ips[0]}:{port}/metrics" if ips else None
        return Targets(replicas, kv, epp)

    def _server_pods(self, api: Api) -> list[tuple[dict[str, Any], int]]:
        out = []
        for name in self._deployment_names(api, servers_only=True):
            dep = api.get("Deployment", name)
            if dep is None:
                continue
            c = container(dep, self.stack.model_servers.container, "vllm")
            port = _port(c, ("http",), DEFAULT_MODEL_PORT)
            out += [(p, port) for p in api.list("Pod", selector_of(dep))
                    if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]
        return out

    def _deployment_names(self, api: Api, servers_only: bool = False) -> list[str]:
        ex = self.stack
        servers = list(ex.model_servers.names) or sorted(d["metadata"]["name"]
                                                         for d in api.list("Deployment", ex.model_servers.selector))
        return servers if servers_only else [*servers, ex.epp.deployment]

    def _index_endpoint(self, api: Api) -> IndexEndpoint | None:
        name = self.stack.index_service
        if not name:
            return None
        svc = api.get("Service", name)
        if svc is None:
            raise RuntimeStepError(f"Service/{name} (serving.existing.index_service) is not in namespace {api.ns}")
        return index_endpoint(svc, api.ns)

    def _index_address(self, api: Api) -> tuple[str, int] | None:
        """Where the index answers (index_endpoint: the port the EPP config names too)."""
        endpoint = self._index_endpoint(api)
        return (endpoint.host, endpoint.port) if endpoint else None

    def _kv(self, api: Api) -> dict[str, Any] | None:
        kind = self.ctx.configuration.store_kind
        address = self._index_address(api)
        if kind is None or address is None:
            return None
        version = None
        with contextlib.suppress(OSError, ValueError):
            info = resp_command(address[1], "INFO", "server", host=address[0])
            fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            version = (fields.get("valkey_version") or fields.get("redis_version") or "").strip() or None
        return {"kind": kind, "host": address[0], "port": address[1], "server_version": version or "unknown",
                "service": self.stack.index_service}

    def _empty_index(self, api: Api) -> bool:
        """FLUSHALL on the index, so the cell starts from an empty one (as the evaluation restarted Redis/Valkey)."""
        address = self._index_address(api)
        if address is None:
            return False

        try:
            reply = resp_command(address[1], "FLUSHALL", host=address[0], timeout_s=10.0)
        except OSError as exc:
            raise RuntimeStepError(f"cannot empty the index {self.stack.index_service} at {address[0]}:{address[1]}: "
                                   f"{exc}") from None
        if not reply.startswith("+OK"):
            raise RuntimeStepError(f"FLUSHALL on the index {self.stack.index_service} answered {reply.strip()!r}")
        return True

    def tokenizer_spec(self) -> str:
        """The model's own tokenizer; LLMD_BENCH_TOKENIZER=DIR points at a local copy (air-gapped clusters)."""
        directory = settings().tokenizer
        if directory:
            return f"kind=hf_auto,model={directory}"
        return super().tokenizer_spec()

    def restart_router(self) -> Callable[[], None] | None:
        if self.ctx.configuration.store_kind is not None or self.stack.read_only:
            return None

        def restart() -> None:
            api = self._api()
            r = self._render(api)
            dep = api.get("Deployment", self.stack.epp.deployment)
            assert dep is not None
            stamp = _now()
            dep["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = stamp
            dep.pop("status", None)
            api.replace("Deployment", self.stack.epp.deployment, dep)
            wait_rollout(api, [self.stack.epp.deployment], r.config_hash, 300.0, restarted=stamp)

        return restart

    def reset_refusals(self) -> list[str]:
        if self.stack.read_only and self.ctx.configuration.store_kind is None:
            return ["read-only mode does not restart the EPP, whose in-memory prefix index level_isolation: reset "
                    "would have to empty"]
        return []

    # -- host recording ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def host_recording(self) -> Iterator[dict[str, Any] | None]:
        from llmd_bench.stack.pcp_manifests import PMCD_PORT  # deferred: loads jinja2

        port = settings().pmcd_port or PMCD_PORT
        hosts = {p["spec"]["nodeName"]: f"{p['status']['hostIP']}:{port}" for p, _ in self._server_pods(self._api())
                 if (p.get("spec") or {}).get("nodeName") and (p.get("status") or {}).get("hostIP")}
        with k8s.recording_hosts(self.ctx, hosts) as state:
            yield state

    def host_archives(self) -> tuple[dict[str, Any], dict[str, Any]]:
        rec = k8s.sweep_pcp(self.ctx)
        return rec.get("nodes") or {}, rec

    def generator_archives(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return k8s.generator_archives(self.ctx)


def _first_container(pod: dict[str, Any], default: str) -> str:
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    return default if default in names or not names else names[0]


def _port(c: dict[str, Any], names: tuple[str, ...], default: int) -> int:
    """The container's port by name, else its `--port` flag, else its only port, else the default."""
    ports = c.get("ports") or []
    for p in ports:
        if p.get("name") in names:
            return int(p["containerPort"])
    if "http" in names:
        try:
            args = vllm_args(c)
        except vllm_script.Refused:
            args = list(c.get("args") or [])
        flag = live_flag_values(args, "port")
        if flag:
            return int(flag[0])
    if len(ports) == 1:
        return int(ports[0]["containerPort"])
    return default


# -- `llmd-bench restore` -------------------------------------------------------------------------------------------

def restore_run(run_id: str, namespace: str, timeout_s: float | None = None,
                note: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Restore every saved state of a run in the namespace (idempotent: nothing saved is nothing to do)."""
    api = Api(namespace)
    states = saved_states(api, run_id)
    if not states:
        note(f"no saved state of run {run_id!r} in namespace {namespace}: nothing to restore")
        return []
    out = []
    for state in states:
        note(f"restoring {', '.join(o['kind'] + '/' + o['metadata']['name'] for o in state.objects)} "
             f"from ConfigMap/{state.name} (cell {state.cell}, saved {state.saved_at})")
        out.append(restore_state(api, state, timeout_s if timeout_s is not None else k8s.ready_timeout_s(30.0)))
        note(f"restored; ConfigMap/{state.name} deleted")
    return out


def render_role(stack_namespace: str, steps_namespace: str, service_account: str) -> list[dict[str, Any]]:
    """The Role (and binding for the step pods' service account) existing mode needs in the stack's namespace."""
    from llmd_bench.stack.manifests import _env  # deferred: loads jinja2

    text = _env().get_template("namespace/existing-rbac.yaml.j2").render(
        namespace=stack_namespace, steps_namespace=steps_namespace, step_service_account=service_account)
    return [d for d in yaml_text.load_all(text) if d]
