"""The PCP node agent's configuration (docker/pcp-node.Dockerfile) against a REAL pmcd: the image cannot be
built here (no Docker engine), so its set-up script runs on copies of this machine's pcp 6.0.3 configuration
(the version the image pins) and pmcd starts with the result, on a private port and socket.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_pcp_node.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from integration.test_pcp_node import DOCKERFILE, NVIDIA, PMCD, entrypoint_pmcd_args

pytestmark = pytest.mark.skipif(
    not (PMCD.exists() and shutil.which("pminfo") and Path("/etc/pcp/pmcd/pmcd.conf").exists()
         and (NVIDIA / "pmda_nvidia.so").exists()),
    reason="pcp (pmcd, pminfo, the nvidia PMDA) is not installed: scripts/system-deps.sh installs it as root")



def test_entrypoint_runs_pmcd_in_the_foreground_logging_to_stderr():
    args = entrypoint_pmcd_args()
    assert "-f" in args and "-A" in args
    assert args[args.index("-l") + 1] == "-"  # not /dev/stderr: libpcp unlinks a log path before writing it
    ins = DOCKERFILE.read_text()
    assert "COPY docker/pcp-node-setup.sh" in ins and re.search(r"^RUN /usr/local/sbin/pcp-node-setup$", ins, re.M)
    assert ">> /etc/pcp/pmcd/pmcd.conf" not in ins
