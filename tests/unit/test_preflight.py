"""`llmd-bench preflight` against the fake Kubernetes API (tests/fake_kube.py) and a real S3 server on
127.0.0.1 (moto's): one missing piece at a time with its exact line, a complete cluster passing, and
several missing pieces listed in one run.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_preflight.py.
"""

from __future__ import annotations

import pytest

from conftest import REFERENCE
from integration.test_preflight import NS
from llmd_bench import cli
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.orchestration import preflight
from llmd_bench.stack import manifests


def test_the_role_grants_every_permission_preflight_checks():
    """The namespace Role (manifests.render_namespace) and preflight's list cannot drift apart."""
    (role,) = [d for d in manifests.render_namespace(NS) if d["kind"] == "Role" and d["metadata"]["name"] == "llmd-bench-steps"]

    def granted(p: preflight.Permission) -> bool:
        resource = p.resource + (f"/{p.subresource}" if p.subresource else "")
        return any(p.group in r["apiGroups"] and resource in r["resources"] and p.verb in r["verbs"]
                   and (not r.get("resourceNames") or p.name in r["resourceNames"]) for r in role["rules"])

    wanted = list(preflight.STEP_PERMISSIONS) + preflight.preflight_permissions(load_campaign(REFERENCE))
    assert [str(p) for p in wanted if not granted(p)] == []
    # ... and the check can fail: what the Role must not grant
    assert not granted(preflight.Permission("get", "secrets", name="someone-elses-secret"))
    assert not granted(preflight.Permission("list", "secrets"))
    assert not granted(preflight.Permission("create", "pods"))
    # every kind the runtime applies and deletes is in the list, with the verbs it uses
    from llmd_bench.stack.runtime import kubernetes as k8s

    plural = {"ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments", "InferencePool": "inferencepools",
              "PersistentVolumeClaim": "persistentvolumeclaims"}
    checked = {(p.verb, p.resource) for p in preflight.STEP_PERMISSIONS}
    for kind in k8s.KINDS:
        assert {(v, plural[kind]) for v in ("create", "patch", "list", "delete")} <= checked, kind


def test_node_reader_manifest_is_read_only_and_bound_to_the_step_service_account(capsys):
    import yaml

    assert cli.main(["preflight", "--node-reader-manifest", "--namespace", NS]) == 0
    role, binding = yaml.safe_load_all(capsys.readouterr().out)
    assert role["kind"] == "ClusterRole" and role["metadata"]["name"] == "llmd-bench-node-reader"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
    assert binding["kind"] == "ClusterRoleBinding" and binding["roleRef"]["name"] == "llmd-bench-node-reader"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llmd-bench-steps", "namespace": NS}]


def test_bad_input_is_an_error_message_not_a_traceback(capsys):
    assert cli.main(["preflight", "--campaign", "kv_cache_eval", "--params", "{not json"]) == 1
    assert cli.main(["preflight"]) == 1
    err = capsys.readouterr().err
    assert "--params is not valid JSON" in err and "preflight needs --campaign" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.main(["preflight", "--campaign", "kv_cache_eval", "--skip", "gpus"])
    assert "invalid choice: 'gpus'" in capsys.readouterr().err


def test_the_skip_choices_are_the_checks():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["preflight"]
    assert tuple(next(a for a in sub._actions if a.dest == "skip").choices) == preflight.CHECKS
