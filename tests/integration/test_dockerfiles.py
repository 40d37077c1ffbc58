"""The images cannot be built here (no Docker engine): parse the Dockerfiles and check what matters.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_dockerfiles.py.
"""

from __future__ import annotations

import re

from conftest import ROOT
from unit.test_dockerfiles import instructions


def test_pcp_images_pin_the_tested_pcp_and_the_node_agent_serves_the_nvidia_pmda():
    import subprocess

    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pcp"], capture_output=True, text=True).stdout
    for path in ("docker/steps.Dockerfile", "docker/pcp-node.Dockerfile"):
        runs = " ".join(a for op, a in instructions(path) if op == "RUN")
        pin = re.search(r"pcp=(\S+)", runs).group(1)
        if installed:
            assert pin == installed, (path, pin, installed)  # the PCP the tests ran with
    node = " ".join(a for _, a in instructions("docker/pcp-node.Dockerfile"))
    assert "pmcd -f -A -l -'" in node  # foreground, log on stderr (tests/integration/test_pcp_node.py runs it)
    setup = (ROOT / "docker" / "pcp-node-setup.sh").read_text()
    assert "pmda_nvidia.so" in setup and "pmnsadd" in setup  # the PMDA in pmcd.conf and its names in the PMNS
    assert ("COPY", "docker/pcp-node-setup.sh /usr/local/sbin/pcp-node-setup") in instructions("docker/pcp-node.Dockerfile")
