"""level_isolation: reset — empty the prefix caches and the index between levels without reloading the model.

The revised method restarts the model servers before every level (level_isolation: restart), one model load
per level. A reset reaches the same state through vLLM's `POST /reset_prefix_cache?reset_external=true`
(the GPU prefix cache and, where the connector implements it, the offload tier), a flush of the Redis/Valkey
index and, where the router keeps its index in memory, a restart of the EPP (seconds, no GPU), then the
same warm-up a restarted server gets.

vLLM answers 200 even when it reset nothing (vllm/entrypoints/serve/cache/api_router.py @v0.19.1: "we
currently do not check if the prefix cache is successfully reset"), so a reset is allowed only where it is
shown equivalent to a fresh server, at run time, for every level:
- reference (start of the sweep, fresh servers): a probe prompt never sent before gets 0 prefix-cache and 0
  external-cache hit tokens, and its repeat gets hits (the counters can show what a cache holds);
- before every later level: a new probe prompt is sent (so every tier holds it), the caches are reset, and
  the probe sent again must get 0 and 0 hit tokens, as on the fresh server; then the caches are reset again
  and the index must hold no key.
Anything else stops the sweep with the numbers and `use level_isolation: restart`.

Configurations whose tiers a reset cannot empty at the pinned version are refused before anything runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmd_bench.measure import processes
from llmd_bench.measure.completions import send_request
from llmd_bench.measure.observe import prometheus
from llmd_bench.model.errors import RuntimeStepError

PROBE_TOKENS = 256  # whole blocks of any block size up to 128 (vLLM's default is 16)
IDLE_TIMEOUT_S = 120.0
SETTLE_S = 1.0
RESET_RETRY_S = 30.0  # the offload tier stores a request's blocks asynchronously after it finishes
GPU_HITS, GPU_QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
EXT_HITS = "vllm:external_prefix_cache_hits_total"
BUSY = ("vllm:num_requests_running", "vllm:num_requests_waiting")


class NotEquivalent(RuntimeStepError):
    """A reset did not bring the servers to a fresh server's state (or nothing can show that it did)."""


@dataclass
class ResetTargets:
    replicas: list[str]  # model-server base URLs
    model: str
    kv: tuple[str, int] | None = None  # the Redis/Valkey index
    restart_router: Callable[[], None] | None = None  # empties a router's in-memory index
    query_params: bool = True  # the version's endpoint takes reset_external / reset_running_requests


def probe_prompt(tag: str) -> str:
    """A prompt no workload or earlier probe shares a block with."""
    salt = uuid.uuid4().hex[:8]
    return " ".join(f"probe-{tag}-{salt}-{i}" for i in range(PROBE_TOKENS))


def counters(url: str) -> dict[str, float]:
    found = prometheus.scrape(f"{url}/metrics")
    if isinstance(found, str):
        raise NotEquivalent(f"level_isolation: reset cannot be shown equivalent: {url}'s metrics are {found}")
    if GPU_HITS not in found or GPU_QUERIES not in found:
        raise NotEquivalent(f"level_isolation: reset cannot be shown equivalent: {url}/metrics has no {GPU_HITS}")
    return found


def _hits(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    ext = after[EXT_HITS] - before.get(EXT_HITS, 0.0) if EXT_HITS in after else None
    return {"prefix_cache_hits": after[GPU_HITS] - before[GPU_HITS], "external_prefix_cache_hits": ext}


def _probe(url: str, model: str, prompt: str) -> dict[str, float | None]:
    before = counters(url)
    send_request(url, model, prompt, 1)
    return _hits(before, counters(url))


def wait_idle(replicas: list[str], timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """vLLM resets nothing while requests hold blocks; the level's aborted requests drain first."""
    deadline = time.monotonic() + timeout_s
    for url in replicas:
        while True:
            values = counters(url)
            busy = sum(values.get(name, 0.0) for name in BUSY)
            if not busy:
                break
            if time.monotonic() > deadline:
                raise RuntimeStepError(f"{url} still had {busy:g} requests running or waiting {timeout_s:g} s after "
                                       "the level ended; its caches cannot be reset")
            time.sleep(0.5)


def reset_servers(targets: ResetTargets, retry_s: float = RESET_RETRY_S) -> None:
    """POST /reset_prefix_cache to every replica. vLLM >= 0.26 answers {"success": false} while in-flight offload
    transfers hold blocks ("callers may retry", entrypoints/serve/dev/cache/api_router.py @v0.26.0); earlier
    versions answer an empty 200 either way, which is why the probe check follows."""
    query = "?reset_external=true&reset_running_requests=false" if targets.query_params else ""
    for url in targets.replicas:
        deadline = time.monotonic() + retry_s
        while True:
            request = urllib.request.Request(f"{url}/reset_prefix_cache{query}", data=b"", method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as exc:
                hint = " (the server must run with VLLM_SERVER_DEV_MODE=1)" if exc.code == 404 else ""
                raise RuntimeStepError(f"POST {url}/reset_prefix_cache answered HTTP {exc.code}{hint}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise RuntimeStepError(f"POST {url}/reset_prefix_cache failed: {exc}") from None
            if _reported_success(body) is not False:
                break
            if time.monotonic() > deadline:
                raise NotEquivalent(f"POST {url}/reset_prefix_cache kept answering success=false for {retry_s:g} s "
                                    "(blocks still held); use level_isolation: restart")
            time.sleep(1.0)


def _reported_success(body: bytes) -> bool | None:
    try:
        doc = json.loads(body) if body.strip() else None
    except ValueError:
        return None
    return bool(doc["success"]) if isinstance(doc, dict) and "success" in doc else None


def reset_index(targets: ResetTargets) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if targets.kv is not None:
        host, port = targets.kv
        reply = processes.resp_command(port, "FLUSHALL", host=host)
        if not reply.startswith("+"):
            raise NotEquivalent(f"FLUSHALL on the index at {host}:{port} answered {reply.strip()!r}")
        keys = int(processes.resp_command(port, "DBSIZE", host=host).strip().lstrip(":") or 0)
        if keys:
            raise NotEquivalent(f"the index at {host}:{port} still holds {keys} keys after FLUSHALL")
        out["index_keys_after"] = keys
    if targets.restart_router is not None:
        started = time.monotonic()
        targets.restart_router()
        out["router_restart_s"] = round(time.monotonic() - started, 3)
    return out


def fresh_reference(targets: ResetTargets) -> dict[str, Any]:
    """At the start of the sweep, on fresh servers: what a never-seen prompt and its repeat get."""
    wait_idle(targets.replicas)
    reference = {}
    for url in targets.replicas:
        prompt = probe_prompt("reference")
        first, repeat = _probe(url, targets.model, prompt), _probe(url, targets.model, prompt)
        if first["prefix_cache_hits"] or first["external_prefix_cache_hits"]:
            raise NotEquivalent(f"{url} served {first} hit tokens for a prompt it had never seen: the counters do not "
                                "follow this probe, so a reset cannot be shown equivalent; use level_isolation: restart")
        if not repeat["prefix_cache_hits"]:
            raise NotEquivalent(f"{url} served no prefix-cache hit for a repeated prompt (prefix caching off?), so a "
                                "reset cannot be shown to empty the cache; use level_isolation: restart")
        reference[url] = {"first": first, "repeat": repeat}
    return reference


def reset_between_levels(targets: ResetTargets, level: int) -> dict[str, Any]:
    """Empty every cache tier and the index, and show the servers are then as fresh as at the reference."""
    started = time.monotonic()
    wait_idle(targets.replicas)
    prompts = {url: probe_prompt(f"level{level}") for url in targets.replicas}
    for url, prompt in prompts.items():
        _probe(url, targets.model, prompt)  # every tier now holds it
    time.sleep(SETTLE_S)
    reset_servers(targets)
    after = {url: _probe(url, targets.model, prompt) for url, prompt in prompts.items()}
    stale = {url: hits for url, hits in after.items() if hits["prefix_cache_hits"] or hits["external_prefix_cache_hits"]}
    if stale:
        detail = "; ".join(f"{url}: {h['prefix_cache_hits']:g} prefix-cache and "
                           f"{h['external_prefix_cache_hits'] or 0:g} external-cache hit tokens" for url, h in stale.items())
        raise NotEquivalent(f"level_isolation: reset is not equivalent to a restart here: before level {level}, a prompt "
                            f"cached before the reset was still served from cache after it ({detail}; a fresh server: 0 "
                            "and 0); use level_isolation: restart")
    reset_servers(targets)  # the probes out again
    index = reset_index(targets)
    return {"isolation": "reset", "reset_s": round(time.monotonic() - started, 3),
            "check": {"probe_hits_after_reset": after, **index}}
