"""Local stand-in for the llm-d router when a cell has more than one replica: round-robin over the
replicas, streaming responses through. It makes no cache-aware choice, and the report says so.

With `--capacity N` each replica serves at most N requests at once, for the whole streamed response; the rest
wait in the router, as requests queue in a saturated vLLM. (GuideLLM's mock-server `--max-concurrent-requests`
cannot do this: its semaphore is released when the handler returns the stream, before any token is sent,
guidellm/mock_server/server.py `_run_generation`, GuideLLM v0.8.1.)

Run as `python -m llmd_bench.runtime.router --port P [--capacity N] --backend URL --backend URL ...`.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import select
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


def make_handler(backends: list[str], capacity: int | None = None) -> type[BaseHTTPRequestHandler]:
    cycle = itertools.cycle([urllib.parse.urlsplit(b) for b in backends])
    lock = threading.Lock()
    counts = {b: 0 for b in backends}
    slots = {b: threading.BoundedSemaphore(capacity) if capacity else None for b in backends}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:  # keep the log small
            pass

        def _forward(self) -> None:
            if self.path == "/router/stats":
                body = json.dumps(counts).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            with lock:
                target = next(cycle)
                counts[target.geturl()] += 1
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            slot = slots[target.geturl()] if self.command == "POST" else None  # generation requests only
            if slot is not None and not self._wait_for(slot):
                return  # the client gave up while queued (GuideLLM ends a level): drop it, as vLLM aborts it
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := resp.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError as exc:
                if not self.wfile.closed:
                    try:
                        self.send_error(502, f"backend {target.geturl()} failed: {exc}")
                    except OSError:
                        pass
            finally:
                conn.close()
                if slot is not None:
                    slot.release()

        def _wait_for(self, slot: threading.BoundedSemaphore) -> bool:
            """A free slot, or False once the client has closed its connection."""
            while not slot.acquire(timeout=0.05):
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return False
                    except OSError:
                        return False
            return True

        do_GET = do_POST = _forward

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    parser.add_argument("--capacity", type=int, default=None, help="requests each backend serves at once")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.backend, args.capacity))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
