"""Sample the serving layer while a sweep runs: each replica's /metrics, the KV index's key count and,
in a cluster, the EPP's KV-index metrics."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_bench.measure.observe import kv_index, prometheus

INTERVAL_S = 2.0
EPP_ATTEMPTS = 3


@dataclass
class Targets:
    replicas: list[str]
    kv: tuple[str, int] | None = None  # (host, port) of the Redis/Valkey index
    epp_metrics: str | None = None  # the EPP's Prometheus URL (Kubernetes only)


class Sampler:
    """A background thread writing one JSON line per sample to `out` until stopped."""

    def __init__(self, out: Path, replicas: list[str], kv: tuple[str, int] | int | None, interval_s: float = INTERVAL_S,
                 epp_metrics: str | None = None) -> None:
        self.out, self.replicas, self.interval_s, self.epp_metrics = out, replicas, interval_s, epp_metrics
        self.kv = ("127.0.0.1", kv) if isinstance(kv, int) else kv
        self._epp_failures, self._epp_answered = 0, False
        self.unavailable: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmd-bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample_once()  # the final state after the last level

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample_once()
            self._stop.wait(self.interval_s)

    def _sample_once(self) -> None:
        now = time.time()
        lines: list[dict[str, Any]] = []
        for url in self.replicas:
            if url in self.unavailable:
                continue
            result = prometheus.scrape(f"{url}/metrics")
            if isinstance(result, str):
                self.unavailable[url] = result  # no endpoint: stop asking, remember why
                continue
            lines.append({"time": now, "source": "vllm", "replica": url, "values": result})
        if self.epp_metrics and self.epp_metrics not in self.unavailable:
            result = prometheus.scrape(self.epp_metrics, known=prometheus.EPP_METRICS)
            if isinstance(result, str):
                # A busy or restarting EPP may miss a scrape; give up only on one that never answered.
                self._epp_failures += 1
                if self._epp_failures >= EPP_ATTEMPTS and not self._epp_answered:
                    self.unavailable[self.epp_metrics] = result
            else:
                self._epp_answered = True
                lines.append({"time": now, "source": "epp", "replica": self.epp_metrics, "values": result})
        if self.kv:
            try:
                lines.append({"time": now, "source": "kv_index", "keys": kv_index.key_count(self.kv[1], host=self.kv[0])})
            except OSError as exc:
                lines.append({"time": now, "source": "kv_index", "error": str(exc)})
        with open(self.out, "a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
