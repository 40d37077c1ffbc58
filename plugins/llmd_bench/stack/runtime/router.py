"""Local stand-in for the llm-d router when a cell has more than one replica: round-robin over the
replicas, streaming responses through. It makes no cache-aware choice, and the report says so.

With `--capacity N` each replica serves at most N requests at once, for the whole streamed response; the rest
wait in the router, as requests queue in a saturated vLLM. With `--overload-ms M` as well, an admitted request holds
its slot M ms per request still waiting before it is served, so throughput falls past capacity (an over-committed
server preempting and recomputing) instead of staying flat. (GuideLLM's mock-server `--max-concurrent-requests`
cannot do this: its semaphore is released when the handler returns the stream, before any token is sent,
guidellm/mock_server/server.py `_run_generation`, GuideLLM v0.8.1.)

With `--prefix-cache-blocks N` it also simulates one vLLM replica's prefix cache in front of its single backend
(runtime/prefix_cache_sim.py): `/metrics` with vLLM's prefix-cache counters and `POST /reset_prefix_cache`.

With `--vllm-args JSON` it stands for one vLLM replica started with that command line: it prints the start-up lines
vLLM prints about its configuration (the non-default args, the KV connector) and serves `vllm:cache_config_info`
(vllm_formats.py), so the served-configuration proof (served.py) runs on the local runtime too. `--drop-flag` and
`--serve-block-size` rehearse a server that does not serve what it was asked.

Run as `python -m llmd_bench.stack.runtime.router --port P [--capacity N] [--prefix-cache-blocks N ...] --backend URL ...`.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmd_bench.measure import vllm_formats
from llmd_bench.stack.runtime.prefix_cache_sim import SimulatedPrefixCache, prompt_text

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


def make_handler(backends: list[str], capacity: int | None = None, cache: SimulatedPrefixCache | None = None,
                 model: str = "", config_info: str | None = None, overload_ms: float = 0.0) -> type[BaseHTTPRequestHandler]:
    if (cache is not None or config_info is not None) and len(backends) != 1:
        raise ValueError("a simulated prefix cache or vLLM replica stands for one replica: give exactly one --backend")
    replica = cache is not None or config_info is not None
    urls = [urllib.parse.urlsplit(b) for b in backends]
    for b, url in zip(backends, urls):
        if not url.hostname:
            raise ValueError(f"backend {b!r} names no host: give a URL such as http://127.0.0.1:8000")
    in_flight = [0]
    cycle = itertools.cycle(urls)
    lock = threading.Lock()
    counts = {b: 0 for b in backends}
    slots = {b: threading.BoundedSemaphore(capacity) if capacity else None for b in backends}
    queued = {b: 0 for b in backends}  # requests waiting for a slot, per backend

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
            if replica and self._simulated_endpoint():
                return
            with lock:
                target = next(cycle)
                counts[target.geturl()] += 1
            length = int(self.headers.get("Content-Length") or 0)
            request_body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            slot = slots[target.geturl()] if self.command == "POST" else None  # generation requests only
            if slot is not None:
                with lock:
                    queued[target.geturl()] += 1
                admitted = self._wait_for(slot)
                with lock:
                    queued[target.geturl()] -= 1
                    waiting = queued[target.geturl()]
                if not admitted:
                    return  # the client gave up while queued (GuideLLM ends a level): drop it, as vLLM aborts it
                if overload_ms and waiting:
                    # holding its slot: the time an over-committed server loses per waiting request (preemption)
                    time.sleep(overload_ms * waiting / 1000)
            counted = cache is not None and self.command == "POST"
            if counted:
                assert cache is not None
                cache.request(prompt_text(request_body))
                with lock:
                    in_flight[0] += 1
            assert target.hostname  # make_handler refused backends without one
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
            try:
                conn.request(self.command, self.path, body=request_body, headers=headers)
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
                if counted:
                    with lock:
                        in_flight[0] -= 1

        def _simulated_endpoint(self) -> bool:
            """Serve /metrics (and /reset_prefix_cache with a simulated cache); False for anything else."""
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/metrics" and self.command == "GET":
                with lock:
                    running = in_flight[0]
                text = (cache.metrics(model, running) if cache is not None else "") + (config_info or "")
                self._reply(200, text, "text/plain; version=0.0.4")
                return True
            if cache is not None and url.path == "/reset_prefix_cache" and self.command == "POST":
                query = urllib.parse.parse_qs(url.query)
                external = (query.get("reset_external") or ["false"])[-1].lower() == "true"
                running = (query.get("reset_running_requests") or ["false"])[-1].lower() == "true"
                with lock:
                    busy = in_flight[0]
                if busy and not running:
                    # vLLM resets nothing while requests hold blocks and still answers 200 (block_pool.py @v0.19.1;
                    # {"success": false} from 0.26, entrypoints/serve/dev/cache/api_router.py)
                    self._reply(200, json.dumps({"success": False}))
                    return True
                self._reply(200, json.dumps({"success": True, "cleared": cache.reset(external)}))
                return True
            return False

        def _reply(self, code: int, text: str, ctype: str = "application/json") -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
    parser.add_argument("--overload-ms", type=float, default=0.0,
                        help="with --capacity: ms an admitted request loses per request still waiting")
    parser.add_argument("--prefix-cache-blocks", type=int, default=None, help="simulate a prefix cache of N GPU blocks")
    parser.add_argument("--block-tokens", type=int, default=16)
    parser.add_argument("--offload-blocks", type=int, default=0, help="and an offload tier of N blocks")
    parser.add_argument("--offload-survives-reset", action="store_true",
                        help="simulate a server whose reset leaves the offload tier as it was")
    parser.add_argument("--model", default="", help="the model name in the simulated metrics' labels")
    parser.add_argument("--vllm-args", default=None, help="JSON list: the vLLM command line this replica stands for")
    parser.add_argument("--drop-flag", action="append", default=[], help="a vLLM flag the simulated server never gets")
    parser.add_argument("--serve-block-size", type=int, default=None, help="serve this block size whatever was asked")
    parser.add_argument("--vllm-version", default="0.19.1", help="the vLLM release whose log format is simulated")
    args = parser.parse_args(argv)
    cache = (SimulatedPrefixCache(args.prefix_cache_blocks, args.block_tokens, args.offload_blocks,
                                  args.offload_survives_reset) if args.prefix_cache_blocks else None)
    config_info = None
    if args.vllm_args is not None:
        config_info = simulate_vllm_start(json.loads(args.vllm_args), args.drop_flag, args.serve_block_size, args.model,
                                          args.prefix_cache_blocks or 0, args.vllm_version)
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 make_handler(args.backend, args.capacity, cache, args.model, config_info,
                                              args.overload_ms))
    server.daemon_threads = True
    server.serve_forever()


def simulate_vllm_start(argv: list[str], drop_flags: list[str], block_size: int | None, model: str,
                        gpu_blocks: int, version: str) -> str:
    """Print the start-up lines vLLM prints for this command line (less the dropped flags, with the faulty block
    size) and return the vllm:cache_config_info text the replica serves."""
    kept: list[str] = []
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in drop_flags:
            skip = "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        kept.append(token)
    engine = vllm_formats.parse_vllm_argv(kept)
    if block_size is not None:
        engine["block_size"] = block_size
    for line in vllm_formats.startup_log(engine, version):
        print(line, flush=True)
    return vllm_formats.cache_config_metric(engine, model, gpu_blocks, version)


if __name__ == "__main__":
    main()
