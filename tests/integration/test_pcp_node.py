"""The PCP node agent's configuration (docker/pcp-node.Dockerfile) against a REAL pmcd: the image cannot be
built here (no Docker engine), so its set-up script runs on copies of this machine's pcp 6.0.3 configuration
(the version the image pins) and pmcd starts with the result, on a private port and socket."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT

PCP_BIN = Path("/usr/lib/pcp/bin")
PMCD = PCP_BIN / "pmcd"
SETUP = ROOT / "docker" / "pcp-node-setup.sh"
DOCKERFILE = ROOT / "docker" / "pcp-node.Dockerfile"
NVIDIA = Path("/var/lib/pcp/pmdas/nvidia")

pytestmark = pytest.mark.skipif(
    not (PMCD.exists() and shutil.which("pminfo") and Path("/etc/pcp/pmcd/pmcd.conf").exists()
         and (NVIDIA / "pmda_nvidia.so").exists()),
    reason="pcp (pmcd, pminfo, the nvidia PMDA) is not installed: scripts/system-deps.sh installs it as root")

# Clients the set-up script runs (Rebuild's pminfo / pmsignal) must never reach a pmcd of this machine.
ISOLATED = {"PMCD_HOST": "127.0.0.1", "PMCD_PORT": "1", "PMCD_SOCKET": "/nonexistent/pmcd.socket"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entrypoint_pmcd_args() -> list[str]:
    """The pmcd options of the image's entrypoint, read from the Dockerfile."""
    m = re.search(r"'exec (/usr/lib/pcp/bin/pmcd[^']*)'", DOCKERFILE.read_text())
    assert m, "the entrypoint does not exec pmcd"
    args = shlex.split(m.group(1))
    assert args[0] == str(PMCD)
    return args[1:]


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="llmd-pcp-node-"))
    d.chmod(0o755)
    shutil.copytree("/etc/pcp/pmcd", d / "pmcd", symlinks=True)
    shutil.copytree("/var/lib/pcp/pmns", d / "pmns", symlinks=True)
    shutil.copytree(NVIDIA, d / "pmdas" / "nvidia", symlinks=True)
    (d / "run").mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_setup(work: Path, fresh_pmns: bool) -> subprocess.CompletedProcess:
    if fresh_pmns:  # as in the image: pcp just installed, no root namespace built yet
        for f in (work / "pmns").glob("root"):
            f.unlink()
        for f in (work / "pmns").glob("root.*"):
            f.unlink()
    env = dict(os.environ, PCP_NVIDIA_PMDA_DIR=str(work / "pmdas" / "nvidia"), **ISOLATED)
    return subprocess.run(["sh", str(SETUP), str(work / "pmcd" / "pmcd.conf"), str(work / "pmns")],
                          capture_output=True, text=True, env=env, timeout=120)


def stop(proc: subprocess.Popen) -> None:
    """Stop a pmcd this test started, and the PMDAs it started: its own process group (new session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a PMDA that outlived pmcd
    except ProcessLookupError:
        pass


@contextmanager
def pmcd(work: Path, conf: Path, pmns: Path):
    """A real pmcd with the entrypoint's options plus a private port, socket and config; always stopped."""
    port = _free_port()
    options = entrypoint_pmcd_args()
    if "-l" in options and options[options.index("-l") + 1] != "-":
        # never let pmcd unlink a path of this machine (e.g. /dev/stderr); the stderr checks then fail
        options[options.index("-l") + 1] = str(work / "pmcd.log")
    args = [str(PMCD), *options, "-p", str(port), "-c", str(conf), "-n", str(pmns),
            "-i", "127.0.0.1", "-s", str(work / "run" / "pmcd.socket")]
    log = open(work / "pmcd.stderr", "w+")
    proc = subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                            env=dict(os.environ, PCP_RUN_DIR=str(work / "run")))
    try:
        yield proc, port, lambda: (work / "pmcd.stderr").read_text(errors="replace")
    finally:
        stop(proc)
        log.close()


def pminfo(port: int, pmns: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pminfo", "-h", f"127.0.0.1:{port}", *args, "-n", str(pmns)],
                          capture_output=True, text=True, timeout=30)


def wait_answering(proc, port: int, pmns: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        if pminfo(port, pmns, "-f", "pmcd.version").returncode == 0:
            return
        time.sleep(0.2)


def test_setup_script_gives_a_pmcd_that_serves_the_nvidia_names_and_stays_up(work):
    run = run_setup(work, fresh_pmns=True)
    assert run.returncode == 0, run.stdout + run.stderr
    conf = (work / "pmcd" / "pmcd.conf").read_text()
    agents, access = conf.split("[access]")
    assert re.search(r"^nvidia\t120\tdso\tnvidia_init\t\S+/pmda_nvidia\.so$", agents, re.M)  # domain from domain.h
    assert "nvidia" not in access
    assert (work / "pmdas" / "nvidia" / "help.dir").exists()
    again = run_setup(work, fresh_pmns=False)  # idempotent: a second run changes nothing
    assert again.returncode == 0, again.stderr
    assert (work / "pmcd" / "pmcd.conf").read_text() == conf

    pmns = work / "pmns" / "root"
    with pmcd(work, work / "pmcd" / "pmcd.conf", pmns) as (proc, port, log):
        wait_answering(proc, port, pmns)
        assert proc.poll() is None, log()
        names = pminfo(port, pmns, "nvidia")
        assert names.returncode == 0, names.stderr
        found = set(names.stdout.split())
        # what collect_pcp summarises (FIELD-NOTES: there is no nvidia.gpuutil)
        assert {"nvidia.numcards", "nvidia.gpuactive", "nvidia.memactive", "nvidia.memused", "nvidia.power",
                "nvidia.temperature"} <= found
        assert pminfo(port, pmns, "-f", "kernel.all.load").returncode == 0  # the linux PMDA answers too
        time.sleep(2)
        assert proc.poll() is None, log()  # still up
        text = log()
        # logging reached stderr (`-l -`), and says why the PMDA has no GPU data instead of pmcd exiting
        assert "Log for pmcd" in text and "nvidia" in text
        no_nvml = "NVIDIA NVML library currently unavailable" in text
        if no_nvml:  # no GPU / libnvidia-ml here: the PMDA loaded, and reports zero cards
            numcards = pminfo(port, pmns, "-f", "nvidia.numcards")
            assert numcards.returncode == 0 and re.search(r"value 0\b", numcards.stdout), numcards.stdout
    assert proc.poll() is not None  # stopped


def test_the_old_dockerfile_configuration_made_pmcd_exit_and_left_nvidia_unknown(work):
    """The previous image appended the PMDA line after [access] and never touched the PMNS."""
    conf = work / "pmcd" / "pmcd.conf"
    text = conf.read_text()
    conf.write_text(text + "nvidia\t120\tdso\tnvidia_init\t/var/lib/pcp/pmdas/nvidia/pmda_nvidia.so\n")
    pmns = work / "pmns" / "root"
    with pmcd(work, conf, pmns) as (proc, port, log):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("pmcd accepted an agent line after [access]")
        assert proc.returncode != 0
        assert "allow or disallow statement expected" in log()
    unknown = subprocess.run(["pminfo", "-n", str(pmns), "nvidia"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "nvidia" not in unknown.stdout


def test_a_log_path_is_unlinked_and_replaced_by_a_file_so_dev_stderr_would_be_lost(work):
    """Why `-l -`: pcp 6.0.3 removes the log path and creates a regular file there. Shown on a symlink to
    /proc/self/fd/2 in the temp folder (never on this machine's /dev/stderr)."""
    run = run_setup(work, fresh_pmns=False)
    assert run.returncode == 0, run.stderr
    link = work / "stderr-link"
    link.symlink_to("/proc/self/fd/2")
    port = _free_port()
    err = open(work / "stderr.txt", "w+")
    proc = subprocess.Popen([str(PMCD), "-f", "-A", "-l", str(link), "-p", str(port), "-c", str(work / "pmcd" / "pmcd.conf"),
                             "-n", str(work / "pmns" / "root"), "-i", "127.0.0.1", "-s", str(work / "run" / "pmcd.socket")],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                            env=dict(os.environ, PCP_RUN_DIR=str(work / "run")))
    try:
        wait_answering(proc, port, work / "pmns" / "root")
        assert not link.is_symlink() and link.is_file() and "Log for pmcd" in link.read_text()
        assert "Log for pmcd" not in (work / "stderr.txt").read_text()
    finally:
        stop(proc)
        err.close()
