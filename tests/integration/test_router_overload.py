"""The local router's over-committed server (`--capacity` with `--overload-ms`): requests beyond capacity queue, and
each admitted request loses time per request still waiting, so throughput falls past capacity instead of staying
flat (what the seeded-sweep benchmark needs to move a peak). A real router in front of a real HTTP backend."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmd_bench.stack.runtime.router import make_handler

SERVICE_S = 0.1


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(SERVICE_S)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(handler) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def _burst(port: int, n: int) -> float:
    """Seconds for n requests sent at once to all complete."""
    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/completions", body=b"{}", headers={"Content-Type": "application/json"})
        assert conn.getresponse().read()
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


@pytest.mark.parametrize("overload_ms", [0.0, 300.0])
def test_requests_past_capacity_queue_and_an_overloaded_server_loses_time_per_waiting_request(overload_ms):
    backend = _serve(_Backend)
    router = _serve(make_handler([f"http://127.0.0.1:{backend.server_port}"], capacity=1, overload_ms=overload_ms))
    try:
        took = _burst(router.server_port, 3)
    finally:
        router.shutdown()
        backend.shutdown()
    # one at a time: 3 services in a row; overloaded: the later requests arrive while the first is served, so at
    # least one is admitted with another still waiting and holds its slot 300 ms first
    assert took >= 3 * SERVICE_S + 0.9 * overload_ms / 1000
