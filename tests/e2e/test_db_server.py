"""The project's own PostgreSQL server: starts without a system install, also as root from a private folder.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/integration/test_db_server.py.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import llmd_bench.store.server as srv
from integration.test_db_server import _checkout
from llmd_bench.measure.processes import free_port


def test_two_checkouts_get_their_own_ports_and_stop_only_their_own_server(tmp_path, monkeypatch):
    preferred = free_port()
    monkeypatch.setattr(srv, "DEFAULT_PORT", preferred)  # never the developer's own 54329
    a = _checkout(monkeypatch, tmp_path / "clone-a" / ".state" / "pg")
    assert a.port == preferred
    try:
        a.start()
        b = _checkout(monkeypatch, tmp_path / "clone-b" / ".state" / "pg")
        assert b.port != preferred  # the preferred port is taken by clone a: b records another one
        try:
            b.start()
            b.stop()
            assert a.running() and not b.running()  # b's `db stop` stopped b's server only
            assert _checkout(monkeypatch, tmp_path / "clone-b" / ".state" / "pg").port == b.port  # kept
        finally:
            b.stop(mode="immediate")
            shutil.rmtree(b.base, ignore_errors=True)
        assert _checkout(monkeypatch, tmp_path / "clone-a" / ".state" / "pg").port == preferred
    finally:
        a.stop(mode="immediate")
        shutil.rmtree(a.base, ignore_errors=True)


def test_a_port_held_by_another_server_says_whose_data_it_serves_and_how_to_stop_it(tmp_path, monkeypatch):
    import socket

    port = free_port()
    a = srv.server_at(tmp_path / "a" / "pg", port)
    b = srv.server_at(tmp_path / "b" / "pg", port)
    try:
        a.start()
        with pytest.raises(srv.DatabaseServerError) as err:
            b.start()
        msg = str(err.value)
        assert f"port {port} on 127.0.0.1" in msg and str(b.data) in msg
        assert "by another llmd-bench results server (pid " in msg and f"serving {a.data}" in msg
        assert "`llmd-bench db stop` in the checkout it belongs to" in msg and "LLMD_BENCH_PG_PORT" in msg
        assert not (b.data / "postmaster.pid").exists()  # nothing half-started
    finally:
        a.stop(mode="immediate")
    with socket.socket() as s:  # some other program
        # the port may still hold the stopped server's connections in TIME_WAIT: a program can bind it all the same
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        # the holder named as /proc shows it (under pytest-xdist the title is "[pytest-xdist running] ...")
        title = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().decode().split("\0")[0]
        with pytest.raises(srv.DatabaseServerError, match=rf"taken by pid {os.getpid()} \({re.escape(title[:40])}"):
            b.start()
    shutil.rmtree(a.base, ignore_errors=True)
    shutil.rmtree(b.base, ignore_errors=True)
    monkeypatch.setenv("LLMD_BENCH_PG_PORT", "fifty")
    with pytest.raises(srv.DatabaseServerError, match="LLMD_BENCH_PG_PORT='fifty': expected a TCP port number"):
        srv.default_server()
