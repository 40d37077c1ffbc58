"""A simulated vLLM prefix cache for the local runtime: the counters and the reset endpoint, no GPU.

It stands in front of one GuideLLM mock server (which has neither) so that what depends on them can run
on one machine: the serving metrics of a level and `level_isolation: reset`, whose equivalence check
reads these counters. It follows vLLM's automatic prefix caching in outline: a prompt is split into blocks
of `block_tokens` tokens (here: whitespace-separated words), each block is named by a hash chained over
the blocks before it, only whole blocks are cached, and the GPU tier keeps the `gpu_blocks` most recently
used. With `offload_blocks` an offload tier (vLLM's OffloadingConnector) stores every computed block and is
looked up for the blocks the GPU tier misses. Counters are in tokens, as vLLM's are.

Reset follows vLLM's `POST /reset_prefix_cache`: the GPU tier always; the offload tier only when asked to
(`reset_external=true`) and unless `offload_survives_reset` simulates a server whose connector keeps it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any


def prompt_text(body: bytes | None) -> str:
    """The prompt of an OpenAI completions or chat-completions request body ('' when there is none)."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    prompt = doc.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    parts = []
    for message in doc.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
    return " ".join(parts)


class SimulatedPrefixCache:
    def __init__(self, gpu_blocks: int, block_tokens: int = 16, offload_blocks: int = 0,
                 offload_survives_reset: bool = False) -> None:
        self.gpu_blocks, self.block_tokens, self.offload_blocks = gpu_blocks, block_tokens, offload_blocks
        self.offload_survives_reset = offload_survives_reset
        self._gpu: OrderedDict[str, None] = OrderedDict()
        self._offload: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.counters = {"prefix_cache_queries": 0, "prefix_cache_hits": 0,
                         "external_prefix_cache_queries": 0, "external_prefix_cache_hits": 0, "resets": 0}

    def _block_hashes(self, text: str) -> list[str]:
        tokens = text.split()
        hashes, parent = [], ""
        for start in range(0, len(tokens) - self.block_tokens + 1, self.block_tokens):
            parent = hashlib.sha256((parent + "\0" + " ".join(tokens[start:start + self.block_tokens])).encode()).hexdigest()
            hashes.append(parent)
        return hashes

    def request(self, text: str) -> None:
        """Count one prompt's lookups and hits, then cache its blocks (the longest cached prefix is a hit)."""
        tokens = len(text.split())
        hashes = self._block_hashes(text)
        with self._lock:
            gpu_hit = 0
            while gpu_hit < len(hashes) and hashes[gpu_hit] in self._gpu:
                gpu_hit += 1
            self.counters["prefix_cache_queries"] += tokens
            self.counters["prefix_cache_hits"] += gpu_hit * self.block_tokens
            if self.offload_blocks:
                ext_hit = gpu_hit
                while ext_hit < len(hashes) and hashes[ext_hit] in self._offload:
                    ext_hit += 1
                self.counters["external_prefix_cache_queries"] += tokens - gpu_hit * self.block_tokens
                self.counters["external_prefix_cache_hits"] += (ext_hit - gpu_hit) * self.block_tokens
            for h in hashes:
                _touch(self._gpu, h, self.gpu_blocks)
                if self.offload_blocks:
                    _touch(self._offload, h, self.offload_blocks)

    def reset(self, reset_external: bool) -> dict[str, Any]:
        with self._lock:
            self._gpu.clear()
            cleared_external = bool(self.offload_blocks) and reset_external and not self.offload_survives_reset
            if cleared_external:
                self._offload.clear()
            self.counters["resets"] += 1
            return {"gpu": True, "external": cleared_external}

    def metrics(self, model: str, running: int = 0) -> str:
        """Prometheus text with vLLM's metric names (vllm/v1/metrics/loggers.py @v0.19.1)."""
        name = model.replace('"', "")
        label = f'{{model_name="{name}",engine="0"}}'
        with self._lock:
            used = len(self._gpu) / self.gpu_blocks if self.gpu_blocks else 0.0
            lines = [f"vllm:prefix_cache_queries_total{label} {self.counters['prefix_cache_queries']}",
                     f"vllm:prefix_cache_hits_total{label} {self.counters['prefix_cache_hits']}",
                     f"vllm:kv_cache_usage_perc{label} 0.0",
                     f"vllm:num_requests_running{label} {running}",
                     f"vllm:num_requests_waiting{label} 0",
                     f"llmd_bench_sim_cached_blocks{label} {len(self._gpu)}",
                     f"llmd_bench_sim_cached_fraction{label} {used:.6f}",
                     f"llmd_bench_sim_resets_total{label} {self.counters['resets']}"]
            if self.offload_blocks:
                lines += [f"vllm:external_prefix_cache_queries_total{label} {self.counters['external_prefix_cache_queries']}",
                          f"vllm:external_prefix_cache_hits_total{label} {self.counters['external_prefix_cache_hits']}"]
        return "\n".join(lines) + "\n"


def _touch(tier: OrderedDict[str, None], key: str, capacity: int) -> None:
    tier[key] = None
    tier.move_to_end(key)
    while len(tier) > capacity:
        tier.popitem(last=False)
