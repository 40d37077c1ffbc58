"""serving.mode: existing against the fake Kubernetes API (tests/fake_kube.py): an installed llm-d stack (model
server, EPP and its ConfigMap, a Redis index Service) patched per cell, verified on the running pods, measured and
restored spec for spec; a failed sweep still restores; a killed teardown leaves a saved state the next run refuses
naming `llmd-bench restore`, which brings the objects back; read-only mode refuses a mismatched stack with the
differences and benchmarks a matching one without a single write.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_existing.py.
"""

from __future__ import annotations

import pytest

from conftest import write_campaign
from integration.test_existing import GUIDES, NS, STEPS_NS, V040, V040_SCRIPT, existing_doc, guide_objects, script_of
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.model.params import resolve_params
from llmd_bench.orchestration import preflight
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import existing, vllm_script


def test_the_role_grants_exactly_what_preflight_asks_for():
    docs = existing.render_role(NS, STEPS_NS, "llmd-bench-steps")
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    asked = {(p.verb, p.group, p.resource + (f"/{p.subresource}" if p.subresource else ""))
             for p in preflight.EXISTING_PERMISSIONS}
    assert granted == asked
    assert role["metadata"]["namespace"] == NS
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llmd-bench-steps", "namespace": STEPS_NS}]


def test_vllm_flags_are_patched_into_the_guides_sh_c_script_and_everything_else_stays_byte_for_byte():
    ours = [("--block-size", ["16"]), ("--kv-events-config", ['{"topic":"kv@$(POD_IP)@m","endpoint":"tcp://e:5557"}']),
            ("--max-num-seqs", ["1024"]), ("--enable-prefix-caching", [])]
    assert vllm_script.locate(["/bin/sh", "-c"], [V040_SCRIPT]).model_dump() == {"field": "args", "index": 0,
                                                                                 "shell": "/bin/sh"}
    out = vllm_script.patch(V040_SCRIPT, ours)
    assert out == (
        "vllm serve Qwen/Qwen3-0.6B \\\n--host 0.0.0.0 \\\n--port 8200 \\\n--block-size 16 \\\n"
        "--prefix-caching-hash-algo sha256_cbor \\\n"
        """--kv-events-config '{"topic":"kv@$(POD_IP)@m","endpoint":"tcp://e:5557"}' \\\n"""
        "--max-num-seqs 1024 \\\n--enable-prefix-caching\n")
    args = vllm_script.serve_args(out)
    assert args[args.index("--kv-events-config") + 1] == ours[1][1][0]  # single-quoted: the shell passes it as is
    # bash -ec, `set -e; ...; exec vllm serve` over continued lines, --flag=value kept in that form, duplicates
    script = ("set -e\necho \"start ${HOSTNAME}\"  # a comment with vllm\nexec vllm serve \\\n  Qwen/Qwen3-32B \\\n"
              "  --tensor-parallel-size=2 \\\n  --max_num_seqs=8 \\\n  --block-size 64 \\\n  --block-size=32 \\\n"
              "  --kv-transfer-config '{\"kv_connector\":\"OffloadingConnector\"}' 2>&1\n")
    assert vllm_script.locate(["/bin/bash", "-ec", script], []).model_dump() == {"field": "command", "index": 2,
                                                                                 "shell": "/bin/bash"}
    out = vllm_script.patch(script, [("--block-size", ["16"]), ("--max-num-seqs", ["4"]),
                                     ("--kv-offloading-size", ["8"])])
    assert out == ("set -e\necho \"start ${HOSTNAME}\"  # a comment with vllm\nexec vllm serve \\\n  Qwen/Qwen3-32B \\\n"
                   "  --tensor-parallel-size=2 \\\n  --max-num-seqs=4 \\\n  --block-size 16 \\\n"
                   "  --kv-transfer-config '{\"kv_connector\":\"OffloadingConnector\"}' \\\n  --kv-offloading-size 8 2>&1\n")
    # the flags of a `vllm serve` in args, or of a non-shell command, are not a script's
    assert vllm_script.locate(["vllm", "serve"], ["M"]) is None and vllm_script.locate([], ["M"]) is None


@pytest.mark.parametrize("script, reason", [
    ("vllm serve M $VLLM_ARGS", r"`\$VLLM_ARGS` may expand to vLLM flags"),
    ('vllm serve M --port 8000 "${EXTRA[@]}"', r"passes any number of arguments"),
    ('exec vllm serve M "$@"', r"passes any number of arguments"),
    ("vllm serve M --x 1\nvllm serve N", r"2 `vllm serve` commands"),
    ("cat > /tmp/c.yaml <<EOF\na: 1\nEOF\nvllm serve M", r"heredoc"),
    ('eval "vllm serve M $ARGS"', r"eval"),
    ("bash -c 'exec vllm serve M --x 1'", r"inside the word"),
    ('echo "$(vllm serve M)"\nvllm serve N', r"inside the word"),
    ("python3 -m vllm.entrypoints.openai.api_server --model M", r"no `vllm serve`"),
    ("vllm serve M --$FLAG=1", r"flag name .* is an expansion"),
])
def test_a_script_that_cannot_be_read_for_certain_is_refused_with_the_reason(script, reason):
    with pytest.raises(vllm_script.Refused, match=reason):
        vllm_script.patch(script, [("--block-size", ["16"])])
    with pytest.raises(vllm_script.Refused, match="runs a script file"):
        vllm_script.locate(["/bin/sh", "/entrypoint.sh"], [])
    # a value from a variable right after its flag, a quoted model variable, a message naming vllm serve are fine
    assert vllm_script.serve_args('vllm serve "$MODEL" --port $PORT') == ["$MODEL", "--port", "$PORT"]
    assert vllm_script.serve_args('echo "starting vllm serve"\nexec vllm serve M') == ["M"]


def test_the_epp_config_is_found_from_its_config_file_mount_or_its_config_text():
    def epp(args, mounts=(), volumes=()):
        return {"metadata": {"name": "e"}, "spec": {"template": {"spec": {
            "containers": [{"name": "epp", "args": list(args), "volumeMounts": list(mounts)}], "volumes": list(volumes)}}}}

    cm = {"name": "pv", "configMap": {"name": "e-cm"}}
    src = existing.epp_config_source(epp(["--config-file", "/config/p.yaml"], [{"name": "pv", "mountPath": "/config"}],
                                         [cm]), None)
    assert (src.configmap, src.key, src.field, src.index) == ("e-cm", "p.yaml", "args", 1)
    # items: key -> path; subPath; --flag=value (Go flag's single dash too); a projected volume
    items = {"name": "pv", "configMap": {"name": "e-cm", "items": [{"key": "k1", "path": "conf/plugins.yaml"}]}}
    src = existing.epp_config_source(epp(["-config-file=/etc/epp/conf/plugins.yaml"],
                                         [{"name": "pv", "mountPath": "/etc/epp"}], [items]), None)
    assert (src.key, src.inline) == ("k1", True)
    src = existing.epp_config_source(epp(["--config-file", "/plugins.yaml"],
                                         [{"name": "pv", "mountPath": "/plugins.yaml", "subPath": "mine.yaml"}], [cm]), None)
    assert src.key == "mine.yaml"
    projected = {"name": "pv", "projected": {"sources": [{"configMap": {"name": "other", "items": [
        {"key": "x", "path": "x.yaml"}]}}, {"configMap": {"name": "e-cm"}}]}}
    assert existing.epp_config_source(epp(["--config-file", "/c/p.yaml"], [{"name": "pv", "mountPath": "/c"}],
                                          [projected]), None).configmap == "e-cm"
    src = existing.epp_config_source(epp(["--config-text", "plugins: []"]), None)
    assert (src.flag, src.value, src.configmap) == ("--config-text", "plugins: []", None)
    for args, mounts, volumes, why in [
            (["--config-file", "/etc/p.yaml"], [], [], "from no mounted volume"),
            (["--config-file", "/c/p.yaml"], [{"name": "pv", "mountPath": "/c"}], [{"name": "pv", "emptyDir": {}}],
             "from a emptyDir volume"),
            (["--config-file", "/c/q.yaml"], [{"name": "pv", "mountPath": "/c"}], [items], "no ConfigMap key"),
            (["--v", "4"], [], [], "neither --config-file nor --config-text"),
            (["--config-file", "/c/p.yaml", "--config-text", "x"], [], [], "both")]:
        with pytest.raises(RuntimeStepError, match=why):
            existing.epp_config_source(epp(args, mounts, volumes), None)


def test_the_index_port_comes_from_the_service():
    def svc(*ports, ip="10.0.0.9"):
        return {"metadata": {"name": "valkey"}, "spec": {"clusterIP": ip, "ports": list(ports)}}

    assert existing.index_endpoint(svc({"port": 6380}), NS).port == 6380
    ep = existing.index_endpoint(svc({"name": "metrics", "port": 9121}, {"name": "valkey", "port": 6390}), NS)
    assert (ep.host, ep.port, ep.dns) == ("10.0.0.9", 6390, f"valkey.{NS}.svc.cluster.local")
    headless = existing.index_endpoint(svc({"name": "tcp-redis", "port": 6379, "targetPort": 7000}, ip="None"), NS)
    assert (headless.host, headless.port) == (f"valkey.{NS}.svc.cluster.local", 7000)
    with pytest.raises(RuntimeStepError, match=r"has ports a:1, b:2: existing mode takes the index's port from its only"):
        existing.index_endpoint(svc({"name": "a", "port": 1}, {"name": "b", "port": 2}), NS)


class _Stub:
    """The API calls revert_risks makes, answered from lists."""

    def __init__(self, hpas=(), scaled=None, argo=False):
        self.ns, self.hpas, self.scaled, self.argo = NS, list(hpas), scaled, argo

    def list_raw(self, kind):
        return self.hpas if kind == "HorizontalPodAutoscaler" else self.scaled

    def serves_group(self, group):
        return self.argo and group == "argoproj.io"


def _live(labels=None, annotations=None, cm_labels=None, cm_annotations=None):
    dep = {"kind": "Deployment", "metadata": {"name": "ms", "labels": labels or {}, "annotations": annotations or {}},
           "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "vllm"}]}}}}
    epp = {"kind": "Deployment", "metadata": {"name": "epp"}, "spec": {"replicas": 1}}
    cm = {"kind": "ConfigMap", "metadata": {"name": "epp", "labels": cm_labels or {}, "annotations": cm_annotations or {}}}
    src = existing.EppConfigSource(container="epp", flag="--config-file", field="args", index=1, inline=False,
                                   value="/config/p.yaml", configmap="epp", key="p.yaml")
    return existing.Live([dep], epp, cm, "p.yaml", None, src), [cm, dep, epp]


def test_gitops_owners_are_refused_naming_the_controller_and_helm_is_noted():
    live, expected = _live(annotations={"argocd.argoproj.io/tracking-id": "bench:apps/Deployment:llm-d/ms"})
    (refusal,) = existing.revert_risks(_Stub(), live, expected).refusals
    assert refusal.startswith("Deployment/ms is tracked by Argo CD (argocd.argoproj.io/tracking-id=bench:apps/")
    # Argo CD's label tracking: the instance label without Helm's release annotations, on a cluster serving argoproj.io
    live, expected = _live(labels={"app.kubernetes.io/instance": "bench"})
    assert existing.revert_risks(_Stub(argo=True), live, expected).refusals[0].startswith(
        "Deployment/ms is tracked by Argo CD (app.kubernetes.io/instance=bench)")
    assert existing.revert_risks(_Stub(argo=False), live, expected).refusals == []
    flux = {"kustomize.toolkit.fluxcd.io/name": "llm-d", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
    live, expected = _live(cm_labels=flux)
    (refusal,) = existing.revert_risks(_Stub(), live, expected).refusals
    assert refusal.startswith("ConfigMap/epp is managed by Flux (the Kustomization flux-system/llm-d, label "
                              "kustomize.toolkit.fluxcd.io/name)") and "flux suspend kustomization llm-d" in refusal
    live, expected = _live(cm_labels=flux, cm_annotations={"kustomize.toolkit.fluxcd.io/reconcile": "disabled"})
    risks = existing.revert_risks(_Stub(), live, expected)
    assert risks.refusals == [] and "skips it" in risks.notes[0]
    live, expected = _live(labels={"helm.toolkit.fluxcd.io/name": "ms", "helm.toolkit.fluxcd.io/namespace": "llm-d",
                                   "app.kubernetes.io/managed-by": "Helm"})
    assert "the HelmRelease llm-d/ms" in existing.revert_risks(_Stub(), live, expected).refusals[0]
    live, expected = _live(labels={"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "ms"},
                           annotations={"meta.helm.sh/release-name": "ms"})
    risks = existing.revert_risks(_Stub(argo=True), live, expected)
    assert risks.refusals == [] and risks.notes == [
        "Deployment/ms belongs to Helm release ms (namespace llm-d): a `helm upgrade` of it during the run would put "
        "the installed spec back"]
    # an HPA pinned at the cell's replicas changes nothing; one owned by a ScaledObject goes with its pause
    hpa = {"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "ms"},
                                               "minReplicas": 1, "maxReplicas": 1}}
    keda = {"metadata": {"name": "keda-hpa-s", "ownerReferences": [{"kind": "ScaledObject", "name": "s"}]},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "ms"}, "maxReplicas": 5}}
    live, expected = _live()
    risks = existing.revert_risks(_Stub(hpas=[hpa, keda]), live, expected)
    assert risks.refusals == [] and "pins Deployment/ms at 1 replica(s)" in risks.notes[0]


def test_read_only_refuses_a_method_that_restarts_before_anything_runs(campaigns_dir):
    from llmd_bench.model.campaign import ParamsError

    campaign = load_campaign(write_campaign(campaigns_dir, existing_doc(read_only=True), name="existing"))
    with pytest.raises(ParamsError, match=r"trial_isolation: redeploy: serving.existing.read_only restarts nothing"):
        resolve_params(campaign, {"trials": 2, "trial_isolation": "redeploy"}, catalog.known_versions())
    with pytest.raises(ParamsError, match=r"level_isolation: restart: serving.existing.read_only restarts nothing"):
        resolve_params(campaign, {"runs": "per-level", "level_isolation": "restart"}, catalog.known_versions())
    assert resolve_params(campaign, {"trials": 2, "trial_isolation": "same-server"}, catalog.known_versions()).trials == 2


def test_the_existing_example_campaign_fits_the_v040_guide_install_it_names(results_dir):
    """include/campaigns/kv_cache_eval_existing.yaml names the v0.4.0 precise-prefix-cache-aware guide's objects: its
    model is the one the guide's script serves, and every configuration patches the guide's pods (1 GPU each: a
    tensor_parallel_size of 2 is refused naming both)."""
    campaign = load_campaign(GUIDES.parents[2] / "include" / "campaigns" / "kv_cache_eval_existing.yaml")
    params = resolve_params(campaign, {}, catalog.known_versions())
    ex = campaign.serving.existing
    by = {(o["kind"], o["metadata"]["name"]): o for o in guide_objects(V040)}
    servers = [by[("Deployment", n)] for n in ex.model_servers.names]
    epp = by[("Deployment", ex.epp.deployment)]
    source = existing.epp_config_source(epp, ex.epp.container)
    index = by[("Service", ex.index_service)]
    live = existing.Live(servers, epp, by[("ConfigMap", source.configmap)], source.key, index, source)
    port = existing.index_endpoint(index, ex.namespace).port
    (model,) = [m.name for m in campaign.models]
    for config in campaign.configs:
        ctx = StepContext(campaign, params, "run-1", "kubernetes", Cell(model, config))
        written = existing.patched(ctx, live, existing.render(ctx, port))
        server = next(o for o in written if o["metadata"]["name"] == ex.model_servers.names[0])
        assert vllm_script.serve_args(script_of(server, ex.model_servers.container))[0] == model, config
