"""`llmd-bench preflight` against the fake Kubernetes API (tests/fake_kube.py) and a real S3 server on
127.0.0.1 (moto's): one missing piece at a time with its exact line, a complete cluster passing, and
several missing pieces listed in one run."""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal

import pytest

from conftest import REFERENCE
from fake_kube import FakeKube
from llmd_bench import cli
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.orchestration import preflight
from llmd_bench.stack import manifests

NS = "bench"
ONE_CELL = {"models": ["Qwen/Qwen3-8B"], "configs": ["no-offload"], "replicas": 2, "tensor_parallel_size": 2}
DB_URL = "postgresql://llmd:very-s3cret-password@db.bench:5432/results"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_groups(drop: str = "") -> dict:
    """API discovery of a cluster serving every CRD the catalog requires (and the built-in groups)."""
    groups: dict = {"apps": {"v1": [("deployments", "Deployment")]}}
    versions = {"inference.networking.k8s.io": "v1", "inference.networking.x-k8s.io": "v1alpha2"}
    kinds = {"inferencepools": "InferencePool", "inferenceobjectives": "InferenceObjective"}
    for crd in catalog.entry(params().llmd_version).required_crds:
        if crd == drop:
            continue
        plural, _, group = crd.partition(".")
        groups.setdefault(group, {}).setdefault(versions.get(group, "v1"), []).append(
            (plural, kinds.get(plural, plural.title())))
    return groups


def params(conf=None):
    return resolve_params(load_campaign(REFERENCE), conf if conf is not None else ONE_CELL, catalog.known_versions())


@pytest.fixture
def cluster(monkeypatch, s3_server, request):
    """A complete cluster: namespace, CRDs, every permission, two big GPU nodes, the three secrets, no quota,
    and a reachable bucket."""
    import boto3

    fake = FakeKube(api_groups=served_groups(), namespaces=(NS,))
    fake.add_node("gpu-a", gpus=8, memory="1000Gi", cpu="96")
    fake.add_node("gpu-b", gpus=8, memory="1000Gi", cpu="96")
    fake.add_secret(NS, "llmd-bench-results-db", {"url": DB_URL})
    fake.add_secret(NS, "llmd-bench-object-store", {"AWS_ACCESS_KEY_ID": "llmd-test", "AWS_SECRET_ACCESS_KEY": "k3y"})
    fake.add_secret(NS, "llmd-bench-hf-token", {"HF_TOKEN": "hf_secret_token_value"})
    bucket = f"preflight-{abs(hash(request.node.name)) % 10**8}"
    for k, v in {"AWS_ACCESS_KEY_ID": "llmd-test", "AWS_SECRET_ACCESS_KEY": "llmd-test-secret",
                 "AWS_DEFAULT_REGION": "us-east-1", "LLMD_BENCH_S3_ENDPOINT": s3_server,
                 "LLMD_BENCH_RESULTS_URL": f"s3://{bucket}/campaigns", "LLMD_BENCH_KUBE_API": fake.url,
                 "LLMD_BENCH_NAMESPACE": NS}.items():
        monkeypatch.setenv(k, v)
    for k in ("LLMD_BENCH_DB_SECRET", "LLMD_BENCH_S3_SECRET", "LLMD_BENCH_SERVICE_ACCOUNT"):
        monkeypatch.delenv(k, raising=False)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    fake.bucket = bucket
    yield fake
    fake.close()


def run(capsys, *extra, conf=ONE_CELL):
    rc = cli.main(["preflight", "--campaign", "kv_cache_eval", "--namespace", NS, "--params", json.dumps(conf), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out.splitlines(), err


def problems(lines):
    return [line for line in lines if line.startswith(("missing", "warning"))]


EIGHT_B_BASELINE = Cell("Qwen/Qwen3-8B", "no-offload")


def model_server(conf=ONE_CELL, cell=EIGHT_B_BASELINE):
    """The model-server Deployment as deploy would apply it: its replicas and per-pod requests."""
    docs = manifests.render_cell(load_campaign(REFERENCE), params(conf), cell, "preflight", NS)
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ms")]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep["spec"]["replicas"], container["resources"]["requests"]


def gib(quantity: str) -> Decimal:
    from kubernetes.utils import parse_quantity

    return parse_quantity(quantity) / Decimal(2**30)


# -- the whole cluster ------------------------------------------------------------------------------------

def test_a_complete_cluster_passes_every_check(cluster, capsys):
    rc, lines, err = run(capsys)
    assert rc == 0, lines
    checks = [line.split()[1] for line in lines[:-1]]
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * len(checks), lines
    assert set(checks) == set(preflight.CHECKS)
    assert lines[-1].startswith("preflight (namespace bench): 0 missing, 0 warning(s), ") and lines[-1].endswith("ready to run")
    # every permission was asked in the namespace, as the identity that runs the steps
    asked = {(a["verb"], a["group"], a["resource"] + (f"/{a['subresource']}" if a.get("subresource") else ""))
             for a in cluster.reviews}
    assert asked == {(p.verb, p.group, p.resource + (f"/{p.subresource}" if p.subresource else ""))
                     for p in preflight.STEP_PERMISSIONS}
    assert {a["namespace"] for a in cluster.reviews} == {NS}
    # secret values are never shown
    assert DB_URL not in "\n".join(lines) and "hf_secret_token_value" not in "\n".join(lines) and err == ""


def test_json_output_lists_every_result(cluster, capsys):
    cluster.denied = {("list", "", "events")}
    rc, lines, _ = run(capsys, "--json")
    doc = json.loads("\n".join(lines))
    assert rc == 1 and doc["ok"] is False and doc["namespace"] == NS
    (bad,) = [r for r in doc["results"] if r["status"] == "missing"]
    assert bad["check"] == "permissions" and bad["detail"].startswith("list events in namespace bench is denied")


def test_an_unreachable_api_is_one_clear_line_per_check(cluster, capsys, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("LLMD_BENCH_KUBE_API", url)
    started = time.monotonic()
    rc, lines, _ = run(capsys, "--skip", "store")
    assert rc == 1 and time.monotonic() - started < 30
    cluster_lines = [line for line in lines if line.startswith("missing")]
    assert len(cluster_lines) == len(preflight.CHECKS) - 1  # every check but the object store's
    assert all(f"cannot reach the Kubernetes API at {url}: " in line for line in cluster_lines)


# -- one missing piece at a time ------------------------------------------------------------------------------

def test_missing_namespace(cluster, capsys):
    cluster.namespaces = set()
    rc, lines, _ = run(capsys, "--skip", "secrets", "--skip", "quota")
    assert rc == 1
    assert problems(lines) == [
        "missing  namespace    namespace bench does not exist: an admin creates it (kubectl create namespace bench) and "
        "applies the namespace set-up (`llmd-bench render ... --out manifests/` writes manifests/namespace/; an admin "
        "applies it)"]


def test_namespace_checked_with_a_dry_run_when_namespaces_cannot_be_read(cluster, capsys):
    cluster.forbidden = {"namespaces"}
    rc, lines, _ = run(capsys)
    assert rc == 0
    assert "ok       namespace    namespace bench exists (a dry-run ConfigMap was accepted)" in lines
    assert not any(k[0] == "configmaps" for k in cluster.objects)  # nothing was created
    cluster.namespaces = set()
    rc, lines, _ = run(capsys, "--skip", "secrets", "--skip", "quota")
    assert rc == 1 and lines[0].startswith("missing  namespace    namespace bench does not exist")


@pytest.mark.parametrize("crd", catalog.entry(load_campaign(REFERENCE).serving.llmd_version).required_crds)
def test_each_missing_crd(cluster, capsys, crd):
    cluster.api_groups = served_groups(drop=crd)
    rc, lines, _ = run(capsys)
    plural, _, group = crd.partition(".")
    assert rc == 1
    (line,) = problems(lines)
    assert line.startswith(f"missing  crds         CRD {crd}: ")
    if any(c.endswith("." + group) for c in catalog.entry(params().llmd_version).required_crds if c != crd):
        assert f"group {group} is served" in line and f"has no resource {plural}" in line
    else:
        assert f"API group {group} is not served by the cluster" in line
    assert "gateway-api-inference-extension/releases" in line


def test_a_crd_served_in_another_version_than_the_manifests_use(cluster, capsys):
    cluster.api_groups["inference.networking.k8s.io"] = {"v1alpha2": [("inferencepools", "InferencePool")]}
    rc, lines, _ = run(capsys)
    assert rc == 1
    (line,) = problems(lines)
    assert line.startswith("missing  crds         CRD inferencepools.inference.networking.k8s.io: the manifests use "
                           "inference.networking.k8s.io/v1 but the cluster serves only v1alpha2: an admin installs")


@pytest.mark.parametrize("denied, text", [
    (("patch", "apps", "deployments"), "patch deployments.apps"),
    (("create", "inference.networking.k8s.io", "inferencepools"), "create inferencepools.inference.networking.k8s.io"),
    (("get", "", "pods/log"), "get pods/log"),
])
def test_a_denied_permission(cluster, capsys, denied, text):
    cluster.denied = {denied}
    rc, lines, _ = run(capsys)
    assert rc == 1
    assert problems(lines) == [
        f"missing  permissions  {text} in namespace bench is denied: the Role llmd-bench-steps must grant it "
        "(re-apply the namespace set-up: `llmd-bench render ... --out manifests/` writes manifests/namespace/; an "
        "admin applies it)"]


def test_missing_results_db_secret_fails_and_says_how_to_create_it(cluster, capsys):
    del cluster.objects[("secrets", NS, "llmd-bench-results-db")]
    rc, lines, _ = run(capsys)
    assert rc == 1
    assert problems(lines) == [
        "missing  secrets      results database secret llmd-bench-results-db does not exist in namespace bench: "
        "kubectl -n bench create secret generic llmd-bench-results-db --from-literal=url=..."]


def test_results_db_secret_without_its_key(cluster, capsys, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_SECRET", "results")
    cluster.add_secret(NS, "results", {"URL": DB_URL})
    rc, lines, _ = run(capsys)
    assert rc == 1
    (line,) = problems(lines)
    assert line.startswith("missing  secrets      results database secret results has no key url: recreate it ")
    assert DB_URL not in "\n".join(lines)


def test_optional_secrets_missing_are_warnings(cluster, capsys):
    del cluster.objects[("secrets", NS, "llmd-bench-object-store")]
    cluster.add_secret(NS, "llmd-bench-hf-token", {"HF_TOKEN": ""})
    rc, lines, _ = run(capsys)
    assert rc == 0
    assert problems(lines) == [
        "warning  secrets      object store secret llmd-bench-object-store does not exist in namespace bench (fine if "
        "IRSA / workload identity gives the step pods S3 credentials): kubectl -n bench create secret generic "
        "llmd-bench-object-store --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...",
        "warning  secrets      Hugging Face token secret llmd-bench-hf-token key HF_TOKEN is empty (needed for gated "
        "models and tokenizers only): recreate it (kubectl -n bench delete secret llmd-bench-hf-token; kubectl -n bench "
        "create secret generic llmd-bench-hf-token --from-literal=HF_TOKEN=...)"]
    assert lines[-1].startswith("preflight (namespace bench): 0 missing, 2 warning(s), ") and lines[-1].endswith("ready to run")


def test_secrets_that_cannot_be_read_are_reported_not_guessed(cluster, capsys):
    cluster.forbidden = {"secrets"}
    rc, lines, _ = run(capsys)
    assert rc == 1
    assert problems(lines)[0] == (
        "missing  secrets      cannot check the results database secret llmd-bench-results-db: reading it is "
        "forbidden; the Role llmd-bench-steps grants get on the default secret names (a renamed secret needs its name "
        "there), or run with --skip secrets")
    # the optional secrets (object store, HF token, MLflow) cannot be checked either: warnings
    assert [line.split()[0] for line in problems(lines)] == ["missing", "warning", "warning", "warning"]
    rc, lines, _ = run(capsys, "--skip", "secrets")
    assert rc == 0 and "skipped  secrets      --skip secrets" in lines


def test_too_few_gpus(cluster, capsys):
    cluster.nodes = []
    cluster.add_node("gpu-a", gpus=1, memory="1000Gi", cpu="96")
    cluster.add_node("gpu-b", gpus=3, memory="1000Gi", cpu="96")
    replicas, req = model_server()
    assert replicas == 2 and req["nvidia.com/gpu"] == "2"
    rc, lines, _ = run(capsys)
    assert rc == 1
    mem = f"{gib(req['memory']):.0f}Gi"
    assert problems(lines) == [
        f"missing  nodes        Qwen3-8B/no-offload needs 2 replicas x (2 nvidia.com/gpu, {mem} memory, {req['cpu']} cpu); "
        "nodes: gpu-b 3 GPU 1000Gi 96 cpu, gpu-a 1 GPU 1000Gi 96 cpu -> fits 1 of 2: add nodes with >= 2 allocatable "
        f"nvidia.com/gpu and >= {mem} memory each, or lower replicas / tensor_parallel_size in --params"]


def test_too_little_node_memory(cluster, capsys):
    _, req = model_server()
    small = gib(req["memory"]) - 1
    cluster.nodes = []
    cluster.add_node("gpu-a", gpus=8, memory=f"{small}Gi", cpu="96")
    rc, lines, _ = run(capsys)
    assert rc == 1
    (line,) = problems(lines)
    assert f"nodes: gpu-a 8 GPU {small:.0f}Gi 96 cpu -> fits 0 of 2" in line
    # a node with room for one replica is not enough for two
    cluster.add_node("gpu-b", gpus=2, memory=f"{gib(req['memory']) + 1}Gi", cpu="96")
    rc, lines, _ = run(capsys)
    assert rc == 1 and "-> fits 1 of 2" in problems(lines)[0]
    cluster.add_node("gpu-c", gpus=2, memory=f"{gib(req['memory'])}Gi", cpu="96")
    rc, lines, _ = run(capsys)
    assert rc == 0


def test_cordoned_and_tainted_nodes_do_not_count(cluster, capsys):
    cluster.nodes = []
    cluster.add_node("gpu-a", gpus=8, unschedulable=True)
    cluster.add_node("gpu-b", gpus=8, taints=[{"key": "dedicated", "value": "training", "effect": "NoSchedule"}])
    # the device plugin's own taint is tolerated by pods that request GPUs (ExtendedResourceToleration)
    cluster.add_node("gpu-c", gpus=2, taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    rc, lines, _ = run(capsys)
    (line,) = problems(lines)
    assert "gpu-a 8 GPU 1000Gi 96 cpu (cordoned), gpu-b 8 GPU 1000Gi 96 cpu (taint dedicated:NoSchedule), " \
           "gpu-c 2 GPU 1000Gi 96 cpu -> fits 1 of 2" in line
    assert "let the pods onto the excluded nodes" in line


def test_the_largest_selected_cell_is_the_one_checked(cluster, capsys):
    conf = {"replicas": 2}  # every model and configuration
    _, req = model_server(conf, Cell("Qwen/Qwen3-32B-AWQ", "native-offload"))
    biggest = gib(req["memory"])
    assert biggest > gib(model_server(conf)[1]["memory"])  # offload buffer on top: the biggest pods
    cluster.nodes = []
    cluster.add_node("gpu-a", gpus=8, memory=f"{biggest * 2 - 1:.0f}Gi")
    rc, lines, _ = run(capsys, conf=conf)
    assert rc == 1
    (line,) = problems(lines)
    assert line.startswith("missing  nodes        Qwen3-32B-AWQ/native-offload needs 2 replicas x (2 nvidia.com/gpu, ")
    assert line.endswith("-> fits 1 of 2: add nodes with >= 2 allocatable nvidia.com/gpu and >= "
                         f"{preflight._fmt('memory', gib(req['memory']) * 2**30)} memory each, or lower replicas / "
                         "tensor_parallel_size in --params")


def test_forbidden_nodes_name_the_cluster_role_and_the_way_around(cluster, capsys):
    cluster.forbidden = {"nodes"}
    rc, lines, _ = run(capsys)
    assert rc == 1
    assert problems(lines) == [
        "missing  nodes        cannot list nodes (forbidden) to check GPU capacity: an admin applies the read-only "
        "ClusterRole llmd-bench-node-reader and its binding to system:serviceaccount:bench:llmd-bench-steps "
        "(llmd-bench preflight --node-reader-manifest --namespace bench | kubectl apply -f -), or run with --skip nodes"]
    rc, lines, _ = run(capsys, "--skip", "nodes")
    assert rc == 0 and "skipped  nodes        --skip nodes" in lines


def test_a_tight_quota(cluster, capsys):
    cluster.add_quota(NS, "compute", hard={"requests.nvidia.com/gpu": "8", "requests.memory": "200Gi", "pods": "10"},
                      used={"requests.nvidia.com/gpu": "6", "requests.memory": "10Gi", "pods": "1"})
    rc, lines, _ = run(capsys)
    assert rc == 1
    assert problems(lines) == [
        "missing  quota        ResourceQuota compute: requests.nvidia.com/gpu needs 4 for Qwen3-8B/no-offload plus a "
        "step pod, but hard 8 - used 6 leaves 2: raise it (kubectl -n bench edit resourcequota compute) or lower "
        "replicas in --params"]


def test_quota_counts_every_container_and_the_step_pod(cluster, capsys):
    """EPP + Envoy + model servers x replicas + the sweep pod: pods = 1 EPP + 2 replicas + 1 step = 4."""
    cluster.add_quota(NS, "objects", hard={"pods": "3"})
    rc, lines, _ = run(capsys)
    assert rc == 1 and problems(lines) == [
        "missing  quota        ResourceQuota objects: pods needs 4 for Qwen3-8B/no-offload plus a step pod, but hard 3 "
        "- used 0 leaves 3: raise it (kubectl -n bench edit resourcequota objects) or lower replicas in --params"]
    cluster.add_quota(NS, "objects", hard={"pods": "4", "requests.cpu": "100", "limits.memory": "1000Gi"})
    rc, lines, _ = run(capsys)
    assert rc == 0 and "ok       quota        the largest cell plus a step pod fits objects" in lines
    # a quota on limits.cpu rejects containers without a cpu limit, unless a LimitRange supplies one
    cluster.add_quota(NS, "objects", hard={"pods": "4", "limits.cpu": "100"})
    rc, lines, _ = run(capsys)
    assert rc == 0 and problems(lines) == [
        "warning  quota        ResourceQuota objects limits limits.cpu but the cell's containers set no cpu limit: "
        "pods are rejected unless a LimitRange in the namespace gives a default"]


def test_pods_of_earlier_runs_do_not_count_against_the_quota(cluster, capsys):
    """deploy removes what earlier runs of the campaign left behind, so their usage is credited back."""
    from llmd_bench.stack.context import StepContext
    from llmd_bench.stack.runtime import kubernetes as k8s

    campaign = load_campaign(REFERENCE)
    ctx = StepContext(campaign, params(), "old-run", "kubernetes", Cell("Qwen/Qwen3-8B", "no-offload"))
    for doc in k8s._cell_objects(ctx)[0]:
        cluster.apply(doc["kind"].lower() + "s", NS, doc["metadata"]["name"], doc)
    pods = [o for (p, _, _), o in cluster.objects.items() if p == "pods"]
    assert len(pods) == 3  # EPP + 2 model servers
    for pod in pods:  # the fake's pods carry no resources: give them the Deployment's
        dep = next(o for (p, _, n), o in cluster.objects.items() if p == "deployments" and pod["metadata"]["name"].startswith(n))
        pod["spec"] = dep["spec"]["template"]["spec"]
    cluster.add_quota(NS, "objects", hard={"pods": "4"}, used={"pods": "3"})
    rc, lines, _ = run(capsys)
    assert rc == 0, problems(lines)


def test_an_unreachable_object_store_fails_in_seconds_naming_url_and_endpoint(cluster, capsys, monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("LLMD_BENCH_S3_ENDPOINT", endpoint)
    started = time.monotonic()
    rc, lines, _ = run(capsys)
    assert time.monotonic() - started < 20
    assert rc == 1
    (line,) = problems(lines)
    assert line.startswith(f"missing  store        object storage s3://{cluster.bucket}/campaigns at {endpoint}: "
                           "listing failed: EndpointConnectionError: ")
    assert line.endswith("check that the store is up, LLMD_BENCH_RESULTS_URL / LLMD_BENCH_S3_ENDPOINT, and the "
                         "credentials (AWS_* or the object-store secret)")


def test_a_missing_bucket_and_a_file_url(cluster, capsys, monkeypatch, s3_server):
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "s3://no-such-bucket/x")
    rc, lines, _ = run(capsys)
    assert rc == 1 and problems(lines) == [
        f"missing  store        object storage s3://no-such-bucket/x at {s3_server}: bucket no-such-bucket does not "
        "exist: create it (e.g. aws s3 mb s3://no-such-bucket --endpoint-url ...)"]
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "file:///srv/results")
    rc, lines, _ = run(capsys)
    assert rc == 1 and problems(lines) == [
        "missing  store        LLMD_BENCH_RESULTS_URL='file:///srv/results': the kubernetes runtime needs an "
        "S3-compatible store (s3://bucket[/prefix]) that every step pod can reach"]


# -- serving.mode existing ----------------------------------------------------------------------------------

GUIDE_V040 = REFERENCE.parents[2] / "tests" / "fixtures" / "guides" / "v0.4.0-precise-prefix-cache-aware.yaml"


def guide_cluster(cluster, edit=None):
    """The cluster fixture plus llm-d's v0.4.0 precise-prefix-cache-aware guide installed in namespace llm-d."""
    import yaml

    cluster.namespaces = (*cluster.namespaces, "llm-d")
    plural = {"Deployment": "deployments", "ConfigMap": "configmaps", "Service": "services",
              "HorizontalPodAutoscaler": "horizontalpodautoscalers"}
    for doc in yaml.safe_load_all(GUIDE_V040.read_text()):
        if doc:
            if edit:
                edit(doc)
            cluster.add_object(plural[doc["kind"]], doc)
    return cluster


def run_existing(capsys, *extra):
    rc = cli.main(["preflight", "--campaign", "kv_cache_eval_existing", "--namespace", NS, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out.splitlines()


def test_the_existing_example_passes_preflight_on_the_guides_install_its_config_key_read_from_the_epp(cluster, capsys):
    """The guide's EPP ConfigMap has two keys (the chart's default-plugins.yaml and the guide's pluginsConfigFile);
    the EPP's --config-file names which one, as deploy reads it (existing.epp_config_source): no config_key needed."""
    guide_cluster(cluster)
    rc, lines = run_existing(capsys)
    assert rc == 0, "\n".join(lines)
    line = next(x for x in lines if x.split()[1:2] == ["existing"])
    assert line.split()[0] == "ok" and "ConfigMap/gaie-kv-events-epp" in line, line
    assert "key precise-prefix-cache-config.yaml" in line, line


def test_existing_preflight_refuses_an_epp_config_it_cannot_write_or_a_disagreeing_key(cluster, capsys, monkeypatch):
    def other_mount(doc):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gaie-kv-events-epp":
            doc["spec"]["template"]["spec"]["volumes"] = [
                {"name": "plugins-config-volume", "emptyDir": {}} if v["name"] == "plugins-config-volume" else v
                for v in doc["spec"]["template"]["spec"]["volumes"]]

    guide_cluster(cluster, edit=other_mount)
    rc, lines = run_existing(capsys)
    assert rc == 1
    (line,) = [x for x in problems(lines) if x.split()[1] == "existing"]
    assert ("Deployment/gaie-kv-events-epp container epp reads --config-file /config/precise-prefix-cache-config.yaml "
            "from a emptyDir volume (plugins-config-volume), not a ConfigMap") in " ".join(line.split()), line

    import llmd_bench.model.campaign_files as campaign_module

    original = campaign_module.load_campaign

    def with_key(path):
        c = original(path)
        ex = c.serving.existing
        epp = ex.epp.model_copy(update={"config_key": "default-plugins.yaml"})
        return c.model_copy(update={"serving": c.serving.model_copy(update={"existing": ex.model_copy(
            update={"epp": epp})})})

    monkeypatch.setattr(campaign_module, "load_campaign", with_key)
    cluster.objects.clear()
    guide_cluster(cluster)
    rc, lines = run_existing(capsys)
    assert rc == 1
    (line,) = [x for x in problems(lines) if x.split()[1] == "existing"]
    assert ("config_key is 'default-plugins.yaml', but Deployment/gaie-kv-events-epp reads --config-file "
            "/config/precise-prefix-cache-config.yaml, which is key 'precise-prefix-cache-config.yaml'") in line, line
