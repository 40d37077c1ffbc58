"""The images cannot be built here (no Docker engine): parse the Dockerfiles and check what matters."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT


def instructions(path):
    text = (ROOT / path).read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", ["docker/steps.Dockerfile", "docker/airflow.Dockerfile", "docker/pcp-node.Dockerfile"])
def test_dockerfiles_are_pinned_and_well_formed(path):
    ins = instructions(path)
    known = {"FROM", "RUN", "COPY", "WORKDIR", "ENV", "USER", "ENTRYPOINT", "CMD", "ARG", "LABEL", "EXPOSE"}
    assert all(op in known for op, _ in ins), ins
    assert ins[0][0] == "FROM"
    base = ins[0][1]
    assert ":" in base and not base.endswith(":latest"), base
    for op, arg in ins:
        if op == "COPY":
            for src in arg.split()[:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), src
        if op == "RUN" and "pip install" in arg:
            for req in re.findall(r"-r (\S+)", arg):
                assert req.endswith(".txt")
            assert "-c " in arg or "--no-deps" in arg or "torch==" in arg, arg


def test_step_image_runs_llmd_bench_as_non_root():
    ins = dict(instructions("docker/steps.Dockerfile")[::-1])
    assert ins["ENTRYPOINT"] == '["llmd-bench"]'
    assert ins["USER"].split(":")[0] != "0"
    assert "torch==2.13.0" in " ".join(a for op, a in instructions("docker/steps.Dockerfile") if op == "RUN")


def test_requirements_are_pinned_exactly():
    for name in ("requirements.txt", "requirements-steps.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[0-9][\w.+]*$", line), (name, line)


def _env(path):
    env = {}
    for op, arg in instructions(path):
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in arg.split()))
    return env


def test_step_image_has_a_writable_home_and_hugging_face_cache_under_work():
    """The step user (65532) needs a writable HOME for the tokenizer download: /work, the pods' emptyDir, and
    /work in the image itself, owned by that user, for runs without the mount."""
    ins = instructions("docker/steps.Dockerfile")
    env = _env("docker/steps.Dockerfile")
    user = dict(ins[::-1])["USER"]
    assert env["HOME"] == "/work" and env["HF_HOME"].startswith("/work/")
    runs = [a for op, a in ins if op == "RUN"]
    assert any(re.search(r"mkdir -p /work\b", a) and f"chown {user} /work" in a for a in runs), runs
    # the pods mount their scratch emptyDir at the same place
    from llmd_bench.model.campaign_files import load_campaign
    from llmd_bench.orchestration.step_pods import step_pod_settings

    pod = step_pod_settings("sweep", load_campaign(ROOT / "include" / "campaigns" / "kv_cache_eval.yaml"))
    (mount,) = pod["volume_mounts"]
    assert mount.mount_path == "/work" and mount.name == pod["volumes"][0].name and pod["volumes"][0].empty_dir


@pytest.mark.parametrize("path", ["docker/steps.Dockerfile", "docker/airflow.Dockerfile"])
def test_python_images_check_their_dependencies(path):
    """`pip check` after the last install: a broken resolution fails the build, not a task at run time."""
    ins = instructions(path)
    pip = [i for i, (op, a) in enumerate(ins) if op == "RUN" and "pip install" in a]
    checks = [i for i, (op, a) in enumerate(ins) if op == "RUN" and re.search(r"(^|&& )pip check\b", a)]
    assert checks and pip, (pip, checks)
    last_install = max(pip)
    assert any(i > last_install or (i == last_install and ins[i][1].rindex("pip check") > ins[i][1].rindex("pip install"))
               for i in checks)
