"""`llmd-bench preflight` against the fake Kubernetes API (tests/fake_kube.py) and a real S3 server on
127.0.0.1 (moto's): one missing piece at a time with its exact line, a complete cluster passing, and
several missing pieces listed in one run.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_preflight.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import BIN
from integration.test_preflight import (
    NS,
    ONE_CELL,
    closed_port,
    cluster,  # noqa: F401  (fixtures these tests request)
    run,
    served_groups,
)


def test_several_missing_pieces_are_all_listed_in_one_run(cluster, s3_server, tmp_path):
    """The real command: exit code 1, every problem on its own line, no traceback."""
    cluster.api_groups = served_groups(drop="inferencepools.inference.networking.k8s.io")
    cluster.denied = {("delete", "", "services")}
    del cluster.objects[("secrets", NS, "llmd-bench-results-db")]
    cluster.forbidden = {"nodes"}
    env = {**os.environ, "LLMD_BENCH_S3_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    out = subprocess.run([str(BIN / "llmd-bench"), "preflight", "--campaign", "kv_cache_eval", "--namespace", NS,
                          "--params", json.dumps(ONE_CELL)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    missing = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("missing")]
    assert missing == ["crds", "permissions", "secrets", "nodes", "store"], out.stdout
    assert "5 missing" in out.stdout.splitlines()[-1]
    assert out.stderr.strip() == f"[llmd-bench] error: {out.stdout.splitlines()[-1]}"


@pytest.mark.parametrize("modes, replicas, expected", [
    (None, 2, "missing model_cache serving.model_cache_pvc models does not exist in namespace bench"),
    (["ReadWriteOnce"], 2, "missing model_cache PersistentVolumeClaim models is ReadWriteOnce but 2 replicas must mount it"),
    (["ReadWriteOnce"], 1, "ok model_cache PersistentVolumeClaim models (ReadWriteOnce) for 1 replica(s)"),
    (["ReadWriteMany"], 2, "ok model_cache PersistentVolumeClaim models (ReadWriteMany) for 2 replica(s)"),
])
def test_the_model_cache_volume_must_exist_and_be_shareable_by_the_replicas(cluster, capsys, monkeypatch, modes, replicas,
                                                                             expected):
    import llmd_bench.model.campaign_files as campaign_module

    original = campaign_module.load_campaign

    def with_cache(path):
        c = original(path)
        return c.model_copy(update={"serving": c.serving.model_copy(update={"model_cache_pvc": "models"})})

    monkeypatch.setattr(campaign_module, "load_campaign", with_cache)
    if modes:
        cluster.add_pvc(NS, "models", modes)
    rc, lines, _ = run(capsys, conf={**ONE_CELL, "replicas": replicas})
    line = next(x for x in lines if x.split()[1:2] == ["model_cache"])
    assert " ".join(line.split()).startswith(expected), line
    assert (rc == 0) == expected.startswith("ok")
