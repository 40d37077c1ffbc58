"""The Redis / Valkey KV-block index: how many keys it held, its memory and keyspace hits."""

from __future__ import annotations

from typing import Any

from llmd_bench.measure.processes import resp_command


def _info(port: int, section: str, host: str) -> dict[str, str]:
    reply = resp_command(port, "INFO", section, host=host)
    return dict(line.split(":", 1) for line in reply.splitlines() if ":" in line and not line.startswith("#"))


def stats(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    keys = resp_command(port, "DBSIZE", host=host).strip()
    mem, st = _info(port, "memory", host), _info(port, "stats", host)
    return {
        "keys": int(keys.lstrip(":")) if keys.startswith(":") else None,
        "used_memory_bytes": int(mem["used_memory"]) if "used_memory" in mem else None,
        "keyspace_hits": int(st["keyspace_hits"]) if "keyspace_hits" in st else None,
        "keyspace_misses": int(st["keyspace_misses"]) if "keyspace_misses" in st else None,
        "total_commands_processed": int(st["total_commands_processed"]) if "total_commands_processed" in st else None,
    }


def key_count(port: int, host: str = "127.0.0.1") -> int | None:
    reply = resp_command(port, "DBSIZE", host=host).strip()
    return int(reply.lstrip(":")) if reply.startswith(":") else None
