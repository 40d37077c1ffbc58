"""serving.mode: existing against the fake Kubernetes API (tests/fake_kube.py): an installed llm-d stack (model
server, EPP and its ConfigMap, a Redis index Service) patched per cell, verified on the running pods, measured and
restored spec for spec; a failed sweep still restores; a killed teardown leaves a saved state the next run refuses
naming `llmd-bench restore`, which brings the objects back; read-only mode refuses a mismatched stack with the
differences and benchmarks a matching one without a single write."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import MOCK_SERVER, tiny_campaign, write_campaign
from fake_kube import DEFAULT_API_GROUPS, FakeKube
from llmd_bench import cli
from llmd_bench.measure import processes
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.orchestration import preflight
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import existing, vllm_script
from llmd_bench.stack.runtime.local import kv_server_bin

NS, STEPS_NS, MODEL = "llm-d", "bench", "Qwen/Qwen3-0.6B"
SERVER, EPP, EPP_CM, INDEX = "ms-decode", "gaie-epp", "gaie-epp", "kv-index"
INSTALLED_EPP_CONFIG = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins: []\n"
GUIDES = Path(__file__).parents[1] / "fixtures" / "guides"
V040, V090 = "v0.4.0-precise-prefix-cache-aware.yaml", "v0.9.0-tiered-prefix-cache.yaml"
# (model-server Deployment, its vLLM container, EPP Deployment = its ConfigMap, the key its --config-file is)
V040_NAMES = ("ms-kv-events-llm-d-modelservice-decode", "vllm", "gaie-kv-events-epp", "precise-prefix-cache-config.yaml")
V090_NAMES = ("tiered-prefix-cache-nvidia-gpu-vllm-decode", "modelserver", "tiered-prefix-cache-scheduler-epp",
              "tiered-prefix-cache-plugins.yaml")
PLURAL = {"Deployment": "deployments", "ConfigMap": "configmaps", "Service": "services",
          "HorizontalPodAutoscaler": "horizontalpodautoscalers", "ScaledObject": "scaledobjects"}


def existing_doc(read_only=False, configs=("no-offload", "llm-d-redis"), **over):
    doc = tiny_campaign(configs=list(configs), dag_id="llmd_existing_test")
    doc["serving"] = {**doc["serving"], "mode": "existing", "existing": {
        "namespace": NS, "url": "http://127.0.0.1:1", "model_servers": {"names": [SERVER]},
        "epp": {"deployment": EPP, "configmap": EPP_CM}, "index_service": INDEX, "read_only": read_only, **over}}
    return doc


@pytest.fixture(scope="module")
def mock_port(tmp_path_factory):
    """The installed stack's model server and gateway: GuideLLM's mock server on 127.0.0.1."""
    port = processes.free_port()
    mock = processes.start("mock", [*MOCK_SERVER, "--host", "127.0.0.1", "--port", str(port),
                                    "--model", MODEL, "--ttft-ms", "5", "--itl-ms", "1"], port,
                           tmp_path_factory.mktemp("mock") / "mock.log")
    processes.wait_http(mock, f"http://127.0.0.1:{port}/health", 60)
    yield port
    processes.stop(mock)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    """The installed index: a real Redis server the fake Service points at."""
    port = processes.free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = processes.start("redis", [kv_server_bin("redis"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--dir", str(d)], port, d / "redis.log")
    _wait_redis(port)
    yield port
    processes.stop(proc)


def _wait_redis(port):
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if processes.resp_command(port, "PING").startswith("+PONG"):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("redis did not start")


def install(fake: FakeKube, port: int, redis: int) -> None:
    """The stack as a platform team's helm install left it."""
    fake.add_object("deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": SERVER, "namespace": NS, "labels": {"app": "ms", "helm.sh/chart": "llm-d-modelservice"},
                     "annotations": {"meta.helm.sh/release-name": "ms"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "ms"}}, "template": {
            "metadata": {"labels": {"app": "ms"}},
            "spec": {"containers": [{
                "name": "vllm", "image": "ghcr.io/llm-d/llm-d-cuda:v0.4.0", "command": ["vllm", "serve"],
                "args": [MODEL, "--port", str(port), "--max-num-seqs", "256", "--served-model-name", MODEL,
                         "--enable-prefix-caching", "--disable-log-requests"],
                "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "platform-hf", "key": "token"}}},
                        {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}],
                "ports": [{"name": "http", "containerPort": port}],
                "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}})
    fake.add_object("deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": EPP, "namespace": NS, "labels": {"app": "epp"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "epp"}}, "template": {
            "metadata": {"labels": {"app": "epp"}},
            "spec": {"containers": [{"name": "epp", "image": "ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0",
                                     "args": ["--config-file", "/config/default-plugins.yaml"],
                                     "ports": [{"name": "grpc", "containerPort": 9002},
                                               {"name": "metrics", "containerPort": 9090}],
                                     # the chart's mount (GAIE config/charts/inferencepool epp-deployment.yaml @v1.2.0)
                                     "volumeMounts": [{"name": "plugins-config-volume", "mountPath": "/config"}]}],
                     "volumes": [{"name": "plugins-config-volume", "configMap": {"name": EPP_CM}}]}}}})
    fake.add_object("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": EPP_CM, "namespace": NS, "labels": {"app": "epp"}},
                                   "data": {"default-plugins.yaml": INSTALLED_EPP_CONFIG}})
    fake.add_object("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": INDEX, "namespace": NS},
                                 "spec": {"clusterIP": "127.0.0.1", "ports": [{"name": "redis", "port": redis}]}})


def installed(fake: FakeKube) -> dict:
    """What restore must bring back: spec/data, labels and annotations of every installed object."""
    return {key: existing.owned(fake.objects[key]) for key in
            (("deployments", NS, SERVER), ("deployments", NS, EPP), ("configmaps", NS, EPP_CM))}


@pytest.fixture
def kube(monkeypatch, results_dir, mock_port, redis_port):
    fakes = []

    def make(setup=install, **kw):
        fake = FakeKube(namespaces=(STEPS_NS, NS), pod_ip="127.0.0.1", host_ips=("127.0.0.1",), **kw)
        setup(fake, mock_port, redis_port)
        fakes.append(fake)
        monkeypatch.setenv("LLMD_BENCH_KUBE_API", fake.url)
        monkeypatch.setenv("LLMD_BENCH_NAMESPACE", STEPS_NS)
        monkeypatch.setenv("LLMD_BENCH_POLL_S", "0.02")
        monkeypatch.setenv("LLMD_BENCH_READY_TIMEOUT_S", "5")
        monkeypatch.setenv("LLMD_BENCH_PMCD_PORT", "1")  # no pmcd: PCP is `not measured`
        return fake

    yield make
    for f in fakes:
        f.close()


def ctx_of(campaigns_dir, run_id="run-1", config="llm-d-redis", **doc_kw):
    doc = existing_doc(**doc_kw)
    doc["serving"]["existing"]["url"] = f"http://127.0.0.1:{_mock_port_of()}"
    campaign = load_campaign(write_campaign(campaigns_dir, doc, name="existing"))
    params = resolve_params(campaign, {}, catalog.known_versions())
    return StepContext(campaign, params, run_id, "kubernetes", Cell(MODEL, config))


_PORTS: dict = {}


def _mock_port_of():
    return _PORTS.get("mock", 1)


@pytest.fixture(autouse=True)
def _remember_ports(mock_port):
    _PORTS["mock"] = mock_port


# -- the campaign model ------------------------------------------------------------------------------------------


def test_flags_the_configuration_sets_replace_the_live_ones_and_the_rest_stay():
    live = ["M", "--port", "8200", "--max_num_seqs=64", "--no-enable-prefix-caching", "--foo", "x", "--bar"]
    ours = existing.our_flags(["M", "--host", "0.0.0.0", "--port", "8000", "--max-num-seqs", "1024",
                               "--enable-prefix-caching"])
    assert ours == [("--max-num-seqs", ["1024"]), ("--enable-prefix-caching", [])]
    merged = existing.merge_args(live, ours)
    assert merged == ["M", "--port", "8200", "--foo", "x", "--bar", "--max-num-seqs", "1024", "--enable-prefix-caching"]
    # a positional after a boolean flag is not taken as its value
    assert existing.merge_args(["--enable-prefix-caching", "M"], ours) == ["M", "--max-num-seqs", "1024",
                                                                           "--enable-prefix-caching"]
    env = existing.merge_env([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]


# -- deploy, verify, restore -----------------------------------------------------------------------------------

def test_deploy_saves_before_patching_verifies_the_pods_and_teardown_restores_spec_for_spec(kube, campaigns_dir,
                                                                                           redis_port):
    fake = kube(rollout_lag=3)
    before = installed(fake)
    processes.resp_command(redis_port, "SET", "stale-key", "1")
    c = ctx_of(campaigns_dir)
    state = c.stack.deploy()
    writes = fake.writes()
    # the saved state is created before the first object is replaced
    assert writes[0][0] == "POST" and writes[0][1] == f"/api/v1/namespaces/{NS}/configmaps"
    assert [w[0] for w in writes[1:]] == ["PUT", "PUT", "PUT"]
    (saved,) = existing.saved_states(existing.Api(NS))
    assert saved.run_id == "run-1" and {o["metadata"]["name"] for o in saved.objects} == {SERVER, EPP, EPP_CM}
    assert json.loads((c.cell_dir / existing.SAVED_FILE).read_text())["objects"] == saved.objects
    dep = fake.objects[("deployments", NS, SERVER)]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == [MODEL, "--port", str(_mock_port_of())]  # where it listens stays the installation's
    assert "--disable-log-requests" in args and args[args.index("--max-num-seqs") + 1] == "1024"
    assert "256" not in args and "--kv-events-config" in args
    events = json.loads(args[args.index("--kv-events-config") + 1])
    assert events["endpoint"] == f"tcp://{EPP}.{NS}.svc.cluster.local:5557"  # the installed EPP's Service
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "platform-hf"  # the installation's token stays
    assert env["PYTHONHASHSEED"]["value"] == "42" and env["VLLM_LOGGING_LEVEL"]["value"] == "INFO"
    epp_config = yaml.safe_load(fake.objects[("configmaps", NS, EPP_CM)]["data"]["default-plugins.yaml"])
    scorer = next(p for p in epp_config["plugins"] if p["type"] == "precise-prefix-cache-scorer")
    # the index Service's own port, the one FLUSHALL uses (not the 6379 of the Service deploy mode creates)
    assert f"{INDEX}.{NS}.svc.cluster.local:{redis_port}" in json.dumps(scorer) and ":6379" not in json.dumps(scorer)
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # no surge pod: fits a cluster without a free GPU
    # every running pod carries the configuration (the fake rolled them out only after a few reads)
    pods = [o for (p, n, _), o in fake.objects.items() if p == "pods" and n == NS]
    hashes = {p["metadata"]["annotations"].get(existing.CONFIG_HASH) for p in pods}
    assert len(pods) == 2 and len(hashes) == 1 and None not in hashes
    assert state["replicas"] == [f"http://127.0.0.1:{_mock_port_of()}"] and state["endpoint"].endswith(str(_mock_port_of()))
    assert state["kv_backend"]["kind"] == "redis" and state["kv_backend"]["server_version"] != "unknown"
    assert processes.resp_command(redis_port, "EXISTS", "stale-key").startswith(":0")  # the index was emptied
    record = c.read_record()["existing"]
    assert {(ch["object"], ch["field"]) for ch in record["changed"]} >= {(f"Deployment/{SERVER}", "args --max-num-seqs"),
                                                                         (f"ConfigMap/{EPP_CM}", "data.default-plugins.yaml")}
    targets = c.stack.observation_targets()
    assert targets.kv == ("127.0.0.1", redis_port) and targets.epp_metrics == "http://127.0.0.1:9090/metrics"
    # a retried deploy keeps the state saved first (the objects as installed), not the patched ones
    c2 = ctx_of(campaigns_dir)
    c2.stack.deploy()
    (again,) = existing.saved_states(existing.Api(NS))
    assert again.objects == saved.objects
    result = c.stack.teardown()
    assert sorted(result["restored"]) == sorted([f"ConfigMap/{EPP_CM}", f"Deployment/{SERVER}", f"Deployment/{EPP}"])
    assert installed(fake) == before
    assert existing.saved_states(existing.Api(NS)) == []
    pods = [o for (p, n, _), o in fake.objects.items() if p == "pods" and n == NS]
    assert all(existing.CONFIG_HASH not in (p["metadata"].get("annotations") or {}) for p in pods)
    assert c.stack.teardown()["restored"] == []  # idempotent


def test_a_pod_that_does_not_carry_the_configuration_fails_deploy_with_the_differences(kube, campaigns_dir, monkeypatch):
    fake = kube()
    c = ctx_of(campaigns_dir, config="no-offload")
    original = FakeKube._make_pods

    def stale_args(self, dep):  # a mutating webhook that rewrites the args on the pods
        original(self, dep)
        for (plural, ns, _), pod in list(self.objects.items()):
            if plural == "pods" and ns == NS and pod["metadata"]["labels"].get("app") == "ms":
                pod["spec"]["containers"][0]["args"] = [MODEL]

    monkeypatch.setattr(FakeKube, "_make_pods", stale_args)
    with pytest.raises(RuntimeStepError, match=r"the running pods do not carry the cell's configuration:\n  Pod/ms-decode-"
                                               r".* container vllm args: live \[\"Qwen/Qwen3-0.6B\"\]"):
        c.stack.deploy()
    monkeypatch.setattr(FakeKube, "_make_pods", original)
    before_restore = existing.saved_states(existing.Api(NS))
    assert len(before_restore) == 1
    c.stack.teardown()
    assert existing.saved_states(existing.Api(NS)) == [] and fake.objects[("deployments", NS, SERVER)]["spec"]["template"][
        "spec"]["containers"][0]["args"][-1] == "--disable-log-requests"


def test_a_killed_teardown_leaves_a_state_the_next_run_refuses_and_restore_brings_it_back(kube, campaigns_dir, capsys,
                                                                                          monkeypatch):
    fake = kube()
    before = installed(fake)
    c = ctx_of(campaigns_dir, run_id="run-A")
    c.stack.deploy()
    real_replace = existing.Api.replace
    done = []

    def killed(self, kind, name, body):  # Airflow kills the task after the first object is put back
        if done:
            raise SystemExit("killed")
        done.append(name)
        return real_replace(self, kind, name, body)

    monkeypatch.setattr(existing.Api, "replace", killed)
    with pytest.raises(SystemExit):
        c.stack.teardown()
    monkeypatch.setattr(existing.Api, "replace", real_replace)
    assert installed(fake) != before and len(done) == 1
    nxt = ctx_of(campaigns_dir, run_id="run-B", config="no-offload")
    puts = len(fake.writes())
    (left,) = nxt.stack.leftovers()  # listed by the Runtime interface, touching nothing
    assert "run 'run-A'" in left and len(fake.writes()) == puts
    with pytest.raises(RuntimeStepError) as err:
        nxt.stack.deploy()
    msg = str(err.value)
    assert "run 'run-A' (campaign llmd_existing_test, cell Qwen3-0.6B/llm-d-redis)" in msg
    assert "`llmd-bench restore --run-id run-A --campaign llmd_existing_test`" in msg
    assert len(fake.writes()) == puts  # refused before touching anything
    # preflight says the same
    report = preflight.run(nxt.campaign, nxt.params, STEPS_NS, skip=("store", "secrets"))
    assert any(r.check == "existing" and r.status == "missing" and "llmd-bench restore --run-id run-A" in r.detail
               for r in report.results), report.lines()
    assert cli.main(["restore", "--run-id", "run-A", "--campaign", nxt.campaign.source]) == 0
    assert installed(fake) == before
    assert existing.saved_states(existing.Api(NS)) == []
    assert cli.main(["restore", "--run-id", "run-A", "--namespace", NS]) == 0  # nothing left: a no-op
    assert "nothing to restore" in capsys.readouterr().out
    nxt.stack.deploy()
    nxt.stack.teardown()
    assert installed(fake) == before


# -- read-only -------------------------------------------------------------------------------------------------------

def test_read_only_refuses_a_mismatched_stack_listing_the_differences_without_a_write(kube, campaigns_dir):
    fake = kube()
    c = ctx_of(campaigns_dir, read_only=True)
    with pytest.raises(RuntimeStepError) as err:
        c.stack.deploy()
    msg = str(err.value)
    assert "read-only: the installed stack in namespace llm-d does not match configuration llm-d-redis" in msg
    assert f"Deployment/{SERVER} args --max-num-seqs: live 256 / expected 1024" in msg
    assert f"Deployment/{SERVER} args --kv-events-config: live (absent) / expected" in msg
    assert f"Deployment/{SERVER} env PYTHONHASHSEED: live (absent) / expected 42" in msg
    assert f"ConfigMap/{EPP_CM} data.default-plugins.yaml: live" in msg and "Pod/ms-decode-" in msg
    assert c.stack.teardown() == {"restored": [], "read_only": True}
    assert fake.writes() == []


def test_read_only_benchmarks_a_matching_stack_touching_nothing(kube, campaigns_dir):
    fake = kube()
    writer = ctx_of(campaigns_dir, run_id="setup", config="no-offload")
    writer.stack.deploy()  # the platform team's stack now runs exactly this configuration ...
    for state in existing.saved_states(existing.Api(NS)):  # ... and is theirs: no saved state of ours
        fake.objects.pop(("configmaps", NS, state.name))
    matching = installed(fake)
    fake.calls.clear()
    c = ctx_of(campaigns_dir, run_id="ro", config="no-offload", read_only=True)
    state = c.stack.deploy()
    assert state["replicas"] == [f"http://127.0.0.1:{_mock_port_of()}"] and c.stack.observation_targets().replicas
    assert c.read_record()["existing"]["read_only"] is True
    assert c.stack.teardown()["restored"] == []
    assert fake.writes() == [] and installed(fake) == matching
    with pytest.raises(RuntimeStepError, match="read-only mode restarts nothing"):
        c.stack.redeploy()


# -- the guides' installs: shell-started vLLM, the EPP's --config-file, autoscalers, GitOps, a full cluster ---------

def guide_objects(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((GUIDES / name).read_text()) if d]


def guide_setup(name: str, drop: tuple[str, ...] = (), edit=None):
    """A kube(setup=...) installing a guide fixture: the model server listens on the mock's port (the --port in its
    script), the index Service points at the test's Redis; `drop` leaves kinds out, `edit(doc)` changes a doc."""
    def setup(fake: FakeKube, port: int, redis: int) -> None:
        for doc in guide_objects(name):
            if doc["kind"] in drop:
                continue
            if doc["kind"] == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c.get("command", [""])[0].endswith("sh"):
                        c["args"][0] = re.sub(r"--port([= ])\d+", lambda m: f"--port{m[1]}{port}", c["args"][0])
            if doc["kind"] == "Service":
                doc["spec"]["clusterIP"] = "127.0.0.1"
                for p in doc["spec"]["ports"]:
                    if p["name"] in ("valkey", "tcp-redis"):  # the index's port
                        p["port"] = redis
            if edit:
                edit(doc)
            fake.add_object(PLURAL[doc["kind"]], doc)
    return setup


def guide_doc(names, configs=("llm-d-redis",), tp=1, replicas=1, **existing_over):
    server, container, epp, _ = names
    doc = existing_doc(configs=configs, model_servers={"names": [server], "container": container},
                       epp={"deployment": epp, "configmap": epp}, index_service="valkey", **existing_over)
    doc["serving"].update(tensor_parallel_size=tp, replicas=replicas)
    return doc


def ctx_from(campaigns_dir, doc, config="llm-d-redis", run_id="run-1"):
    doc = copy.deepcopy(doc)
    doc["serving"]["existing"]["url"] = f"http://127.0.0.1:{_mock_port_of()}"
    campaign = load_campaign(write_campaign(campaigns_dir, doc, name="existing"))
    return StepContext(campaign, resolve_params(campaign, {}, catalog.known_versions()), run_id, "kubernetes",
                       Cell(MODEL, config))


def owned_all(fake: FakeKube, kinds=("deployments", "configmaps", "scaledobjects")) -> dict:
    return {k: existing.owned(o) for k, o in fake.objects.items() if k[0] in kinds and k[1] == NS
            and not k[2].startswith(existing.SAVED_PREFIX)}


def script_of(obj: dict, container: str) -> str:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    c = next(c for c in spec["containers"] if c["name"] == container)
    assert c["command"][0].endswith("sh") and len(c["args"]) == 1, c  # nothing appended to the shell
    return c["args"][0]


V040_SCRIPT = next(d for d in guide_objects(V040) if d["kind"] == "Deployment")["spec"]["template"]["spec"][
    "containers"][0]["args"][0]


def test_a_guide_install_starting_vllm_from_sh_c_gets_our_flags_in_its_script_and_its_script_back_byte_for_byte(
        kube, campaigns_dir, redis_port):
    server, container, epp, key = V040_NAMES
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)))
    before, script = owned_all(fake), script_of(fake.objects[("deployments", NS, server)], container)
    c = ctx_from(campaigns_dir, guide_doc(V040_NAMES))
    c.stack.deploy()
    patched = script_of(fake.objects[("deployments", NS, server)], container)
    args = vllm_script.serve_args(patched)
    assert args[args.index("--block-size") + 1] == "16" and "64" not in args  # the guide's block size replaced
    events = json.loads(args[args.index("--kv-events-config") + 1])
    assert events["endpoint"] == f"tcp://{epp}.{NS}.svc.cluster.local:5557"
    assert args[args.index("--max-num-seqs") + 1] == "1024" and "sha256_cbor" in args  # added; the guide's others stay
    assert args[args.index("--port") + 1] == str(_mock_port_of())  # where it listens stays the installation's
    assert patched.startswith(script.split("--block-size")[0])  # untouched up to the first replaced flag
    pods = [o for (p, n, name), o in fake.objects.items() if p == "pods" and n == NS and name.startswith(server)]
    assert pods and all(script_of(p, container) == patched for p in pods)  # the pods as the API reports them
    cm = fake.objects[("configmaps", NS, epp)]["data"]
    scorer = json.dumps(yaml.safe_load(cm[key]))  # the key the EPP's --config-file names, not default-plugins.yaml
    assert f"valkey.{NS}.svc.cluster.local:{redis_port}" in scorer
    assert cm["default-plugins.yaml"] == before[("configmaps", NS, epp)]["data"]["default-plugins.yaml"]
    record = c.read_record()["existing"]
    assert record["epp_config"] == f"ConfigMap/{epp} key {key} (Deployment/{epp} --config-file /config/{key})"
    assert any("Helm release ms-kv-events (namespace llm-d): a `helm upgrade`" in n for n in record["notes"])
    c.stack.teardown()
    assert script_of(fake.objects[("deployments", NS, server)], container) == script  # byte for byte
    assert owned_all(fake) == before


def test_an_unpatchable_script_or_an_hpa_is_refused_before_any_write_naming_it(kube, campaigns_dir):
    server, container, epp, key = V040_NAMES

    def unsafe(doc):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == server:
            c = doc["spec"]["template"]["spec"]["containers"][0]
            c["args"][0] = c["args"][0].rstrip("\n") + " \\\n$VLLM_EXTRA_ARGS\n"

    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",), edit=unsafe))
    c = ctx_from(campaigns_dir, guide_doc(V040_NAMES))
    with pytest.raises(RuntimeStepError, match=rf"Deployment/{server} container {container} starts vLLM from a shell "
                                               r"script that existing mode cannot patch for certain: `\$VLLM_EXTRA_ARGS` "
                                               r"may expand to vLLM flags. Nothing was changed"):
        c.stack.deploy()
    assert fake.writes() == []
    fake = kube(setup=guide_setup(V040))  # the guide's install with the workload-variant-autoscaler's HPA
    c = ctx_from(campaigns_dir, guide_doc(V040_NAMES))
    with pytest.raises(RuntimeStepError) as err:
        c.stack.deploy()
    assert (f"HorizontalPodAutoscaler/wva-vllm-deployment-hpa scales Deployment/{server} between 1 and 10 replicas: "
            "it would change them during the run, and an HPA cannot be paused") in str(err.value)
    assert "nothing was changed" in str(err.value) and fake.writes() == []


def test_the_campaigns_epp_configmap_or_key_is_refused_when_the_epp_reads_another(kube, campaigns_dir):
    server, container, epp, key = V040_NAMES
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)))
    doc = guide_doc(V040_NAMES)
    doc["serving"]["existing"]["epp"]["config_key"] = "default-plugins.yaml"  # the old example's key
    with pytest.raises(RuntimeStepError, match=rf"config_key is 'default-plugins.yaml', but Deployment/{epp} reads "
                                               rf"--config-file /config/{key}, which is key '{key}' of ConfigMap/{epp}"):
        ctx_from(campaigns_dir, doc).stack.deploy()
    doc["serving"]["existing"]["epp"] = {"deployment": epp, "configmap": "gaie-other"}
    with pytest.raises(RuntimeStepError, match=rf"configmap is 'gaie-other', but Deployment/{epp} reads its "
                                               rf"--config-file /config/{key} from ConfigMap/{epp}"):
        ctx_from(campaigns_dir, doc).stack.deploy()
    assert fake.writes() == []


def test_the_newest_guides_bash_script_is_patched_its_scaledobject_paused_for_the_cell_and_both_restored(
        kube, campaigns_dir, redis_port):
    server, container, epp, key = V090_NAMES
    fake = kube(setup=guide_setup(V090), api_groups={**DEFAULT_API_GROUPS,
                                                     "keda.sh": {"v1alpha1": [("scaledobjects", "ScaledObject")]}})
    before, script = owned_all(fake), script_of(fake.objects[("deployments", NS, server)], container)
    c = ctx_from(campaigns_dir, guide_doc(V090_NAMES, tp=2))
    c.stack.deploy()
    patched = script_of(fake.objects[("deployments", NS, server)], container)
    assert patched.startswith('set -e\necho "starting vLLM for ${HOSTNAME}"\nexec vllm serve \\\n  Qwen/Qwen3-32B \\\n')
    assert "  --block-size=16 \\\n" in patched and "--block-size=64" not in patched  # --flag=value kept in its form
    assert "--max-num-seqs 1024" in patched and "TieringOffloadingSpec" in patched
    so = fake.objects[("scaledobjects", NS, "decode-scaler")]
    assert so["metadata"]["annotations"][existing.KEDA_PAUSED] == "true"
    assert ("horizontalpodautoscalers", NS, "keda-hpa-decode-scaler") not in fake.objects  # KEDA's HPA gone
    assert c.read_record()["existing"]["paused"] == ["decode-scaler"]
    assert f"valkey.{NS}.svc.cluster.local:{redis_port}" in fake.objects[("configmaps", NS, epp)]["data"][key]
    c.stack.teardown()
    assert script_of(fake.objects[("deployments", NS, server)], container) == script
    assert owned_all(fake) == before  # the ScaledObject resumed (no pause annotation), every spec back


def test_a_rollout_fits_a_cluster_without_a_free_gpu_and_the_strategy_is_put_back(kube, campaigns_dir):
    server, container, _, _ = V040_NAMES
    # two pods of one GPU each on a two-GPU cluster: a surge pod could never be scheduled
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)), gpu_capacity=2)
    before = owned_all(fake)
    c = ctx_from(campaigns_dir, guide_doc(V040_NAMES, replicas=2))
    c.stack.deploy()
    dep = fake.objects[("deployments", NS, server)]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pods = [o for (p, n, name), o in fake.objects.items() if p == "pods" and n == NS and name.startswith(server)]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    assert {"object": f"Deployment/{server}", "field": "spec.strategy",
            "was": '{"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"}',
            "now": '{"type": "Recreate"}'} in c.read_record()["existing"]["changed"]
    c.stack.teardown()  # rolls back under Recreate too, then gets its RollingUpdate back without a rollout
    assert owned_all(fake) == before
    assert fake.objects[("deployments", NS, server)]["spec"]["strategy"]["type"] == "RollingUpdate"


# -- through the DAG -----------------------------------------------------------------------------------------------


# -- the Role of existing mode against the calls a guide install's cells make ------------------------------------

_VERB = {"PUT": "update", "POST": "create", "DELETE": "delete", "PATCH": "patch"}


def _calls_in_stack_namespace(fake: FakeKube) -> set:
    """(verb, group, resource[/sub]) of every call made on an object of the stack's namespace (discovery such as
    GET /apis/argoproj.io is a non-resource URL, open to every authenticated identity: not a Role's business)."""
    from fake_kube import PATHS as OBJECT_PATHS

    used = set()
    for method, path, _ in fake.calls:
        m = OBJECT_PATHS.match(path)
        if m and m["ns"] == NS:
            verb = _VERB.get(method) or ("get" if m["name"] else "list")
            used.add((verb, m["group"] or "", m["plural"] + (f"/{m['sub']}" if m["sub"] else "")))
    return used


def _granted(permissions) -> set:
    return {(p.verb, p.group, p.resource + (f"/{p.subresource}" if p.subresource else "")) for p in permissions}


def test_the_role_grants_every_call_a_guide_install_s_cells_make_and_validates_strictly(kube, campaigns_dir):
    """Deploy and restore on the newest guide (a KEDA ScaledObject paused and resumed, KEDA's HPA listed), a refused
    deploy on the v0.4.0 guide (its autoscaler's HPA), a read-only deploy: each call is one the Role grants (read-only:
    its get/list verbs, no autoscaler rule); the rendered Role and binding pass strict schema validation."""
    import kubernetes_validate

    docs = existing.render_role(NS, STEPS_NS, "llmd-bench-steps")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    fake = kube(setup=guide_setup(V090), api_groups={**DEFAULT_API_GROUPS,
                                                     "keda.sh": {"v1alpha1": [("scaledobjects", "ScaledObject")]}})
    c = ctx_from(campaigns_dir, guide_doc(V090_NAMES, tp=2))
    c.stack.deploy()
    c.stack.teardown()
    used = _calls_in_stack_namespace(fake)
    fake = kube(setup=guide_setup(V040))
    with pytest.raises(RuntimeStepError, match="HorizontalPodAutoscaler/wva-vllm-deployment-hpa scales"):
        ctx_from(campaigns_dir, guide_doc(V040_NAMES)).stack.deploy()
    used |= _calls_in_stack_namespace(fake)
    assert {("list", "autoscaling", "horizontalpodautoscalers"), ("list", "keda.sh", "scaledobjects"),
            ("get", "keda.sh", "scaledobjects"), ("update", "keda.sh", "scaledobjects")} <= used
    assert sorted(used - granted) == []
    assert granted == _granted(preflight.EXISTING_PERMISSIONS)
    # read-only: the verbs preflight asks for such a campaign cover every call, and none is an autoscaler's
    fake = kube(setup=guide_setup(V040))
    doc = guide_doc(V040_NAMES, read_only=True)
    with pytest.raises(RuntimeStepError, match="read-only: the installed stack"):
        ctx_from(campaigns_dir, doc).stack.deploy()
    read_only = _granted(preflight.existing_permissions(ctx_from(campaigns_dir, doc).campaign))
    assert sorted(_calls_in_stack_namespace(fake) - read_only) == []
    assert not {r for _, g, r in read_only if g in ("autoscaling", "keda.sh")}


def test_flags_appended_after_a_shell_script_fail_the_served_proof_naming_what_the_server_ran(
        kube, campaigns_dir, monkeypatch):
    """The proof is the final word that a patch took effect: had existing mode appended our flags after the guide's
    `sh -c` script (the old behaviour), vLLM would run the script's block size 64, and the deploy fails with the table."""
    from llmd_bench.steps import deploy

    def appended(dep, c, flags):  # the old behaviour: our flags after the script, where the shell takes them as $0...
        c["args"] = [*(c.get("args") or []), *[t for flag, values in flags for t in (flag, *values)]]

    monkeypatch.setattr(existing, "set_vllm_flags", appended)
    monkeypatch.setattr(deploy, "already_stored", lambda ctx: False)
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)))
    before = owned_all(fake)
    c = ctx_from(campaigns_dir, guide_doc(V040_NAMES))
    c.step = "deploy"
    try:
        with pytest.raises(RuntimeStepError, match="do not serve the cell's configuration") as err:
            deploy.run(c)
    finally:
        c.stack.teardown()
    rows = {line.split()[1]: line.split()[2:4] for line in str(err.value).splitlines()[2:]}
    assert rows["block_size"] == ["16", "64"], rows  # wanted 16; the guide's script ran 64
    assert owned_all(fake) == before


def test_a_release_with_unverified_pieces_is_refused_naming_them_before_any_write(kube, campaigns_dir):
    """llm-d v1.0.0's contract could not be read (include/versions.yaml contract.unverified): existing mode refuses
    its cells naming the pieces and why, as a deployed cell is refused, instead of failing on a missing image; on
    v0.10.0 only precise routing (its precise_scorer) is refused."""
    fake = kube(setup=guide_setup(V040, drop=("HorizontalPodAutoscaler",)))
    doc = guide_doc(V040_NAMES, configs=("no-offload", "llm-d-redis"))
    doc["serving"]["llmd_version"] = "v1.0.0"
    with pytest.raises(RuntimeStepError) as err:
        ctx_from(campaigns_dir, doc, config="no-offload").stack.deploy()
    text = str(err.value)
    assert text.startswith(f"cell {Cell(MODEL, 'no-offload')} on the installed stack in namespace {NS}: refused for llm-d "
                           "v1.0.0: it depends on what could not be read at the release's tag"), text
    assert "router: the router release llm-d v1.0 ships" in text and "model_server: the vLLM version and image" in text
    assert text.endswith("Nothing was changed")
    doc["serving"]["llmd_version"] = "v0.10.0"
    with pytest.raises(RuntimeStepError, match=r"llm-d-redis on the installed stack .* refused for llm-d v0\.10\.0: .*"
                                               r"precise_scorer: the router llm-d v0\.10\.0 ships cannot be read"):
        ctx_from(campaigns_dir, doc, config="llm-d-redis").stack.deploy()
    assert fake.writes() == []


