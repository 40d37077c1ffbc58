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


def test_pcp_images_pin_the_tested_pcp_and_the_node_agent_serves_the_nvidia_pmda():
    import subprocess

    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pcp"], capture_output=True, text=True).stdout
    for path in ("docker/steps.Dockerfile", "docker/pcp-node.Dockerfile"):
        runs = " ".join(a for op, a in instructions(path) if op == "RUN")
        pin = re.search(r"pcp=(\S+)", runs).group(1)
        if installed:
            assert pin == installed, (path, pin, installed)  # the PCP the tests ran with
    node = " ".join(a for _, a in instructions("docker/pcp-node.Dockerfile"))
    assert "pmda_nvidia.so" in node and "pmcd -f -A" in node
