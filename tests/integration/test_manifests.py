"""Every cell's Kubernetes manifests: valid against the official schemas (strict), the InferencePool
against its CRD, and the configuration differences where they must be and nowhere else.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_manifests.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from conftest import BIN
from unit.test_manifests import K8S_VERSION


def test_render_command_writes_files_that_pass_kubernetes_validate(tmp_path):
    out = subprocess.run([str(BIN / "llmd-bench"), "render", "--model", "Qwen/Qwen3-32B-AWQ", "--config", "native-offload",
                          "--replicas", "3", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    files = sorted(p for p in tmp_path.rglob("*.yaml") if "inferencepool" not in p.name)
    check = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, *map(str, files)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (tmp_path / "namespace").is_dir()
    roles = [yaml.safe_load(p.read_text()) for p in (tmp_path / "namespace").glob("*-role-*.yaml")]
    readable = {n for r in roles for rule in r["rules"] if "secrets" in rule["resources"] for n in rule["resourceNames"]}
    assert readable == {"llmd-bench-results-db", "llmd-bench-object-store", "llmd-bench-hf-token",
                        "llmd-bench-mlflow"}  # preflight's, no more
    (reader,) = [yaml.safe_load(p.read_text()) for p in (tmp_path / "preflight").glob("*-clusterrole-*.yaml")]
    assert {v for rule in reader["rules"] for v in rule["verbs"]} <= {"get", "list", "watch"}
    assert sorted(p.name for p in (tmp_path / "pcp").glob("*.yaml")) == [
        "00-namespace-llmd-bench-pcp.yaml", "01-daemonset-llmd-bench-pcp.yaml"]  # its own privileged namespace
    bad = subprocess.run([str(BIN / "llmd-bench"), "render", "--model", "Qwen/Qwen3-8B", "--config", "gpu-magic",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 1 and "allowed: ['no-offload'" in bad.stderr


def test_render_and_plan_work_for_the_newest_releases_and_refuse_what_cannot_be_read(tmp_path):
    out = tmp_path / "v0.10.0"
    ok = subprocess.run([str(BIN / "llmd-bench"), "render", "--model", "Qwen/Qwen3-8B", "--config", "native-offload",
                         "--llmd-version", "v0.10.0", "--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    files = sorted(p for p in out.glob("*.yaml") if "inferencepool" not in p.name)
    check = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", K8S_VERSION, *map(str, files)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "docker.io/vllm/vllm-openai:v0.30.0" in "".join(p.read_text() for p in files)
    refused = subprocess.run([str(BIN / "llmd-bench"), "render", "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                              "--llmd-version", "v1.0.0", "--out", str(tmp_path / "v1")], capture_output=True, text=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "refused for llm-d v1.0.0" in refused.stderr and "router: " in refused.stderr
    assert not (tmp_path / "v1").exists()  # nothing half-written
    plan = subprocess.run([str(BIN / "llmd-bench"), "plan", "--campaign", "kv_cache_eval", "--no-history", "--json",
                           "--params", json.dumps({"llmd_version": "v0.10.0", "models": ["Qwen/Qwen3-8B"]})],
                          capture_output=True, text=True, env={**os.environ, "LLMD_BENCH_RUNTIME": "kubernetes"})
    assert plan.returncode == 0, plan.stderr
    cells = {c["config"]: c for c in json.loads(plan.stdout)["cells"]}
    assert "refused" not in cells["no-offload"] and "refused" not in cells["native-offload"]
    assert "precise_scorer" in cells["llm-d-redis"]["refused"]
