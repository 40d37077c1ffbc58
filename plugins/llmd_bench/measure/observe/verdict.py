"""Did the configuration under test take effect? `confirmed`, `not taking effect` (with the evidence) or
`not measured`. The published evaluation could not tell that its Redis/Valkey index was never used."""

from __future__ import annotations

from typing import Any

CONFIRMED, NOT_EFFECTIVE, NOT_MEASURED, NOT_APPLICABLE = "confirmed", "not taking effect", "not measured", "n/a (baseline)"


def judge(evidence: str, replicas: int | None, serving: dict[str, Any], kv: dict[str, Any] | None) -> dict[str, str]:
    """evidence: the configuration's kind of proof (configurations.Evidence).
    serving: {"available": bool, "reason": str, "external_prefix_cache_queries": float | None}
    kv: {"max_keys": int | None, "final": {...}, "server": "redis 6.2.14"} for the index configs."""
    if evidence == "none":
        return {"verdict": NOT_APPLICABLE, "evidence": "the baseline has no configuration to prove"}
    if evidence == "offload-counters":
        if not serving.get("available"):
            return {"verdict": NOT_MEASURED, "evidence": f"offload counters {serving.get('reason', 'not available')}"}
        queries = serving.get("external_prefix_cache_queries")
        if queries is None:
            return {"verdict": NOT_MEASURED, "evidence": "the server exports no vllm:external_prefix_cache_queries_total"}
        if queries > 0:
            hits = serving.get("external_prefix_cache_hits")
            return {"verdict": CONFIRMED, "evidence": f"offload looked up {queries:.0f} blocks"
                    + (f", {hits:.0f} hits" if hits is not None else "") + " during the sweep"}
        return {"verdict": NOT_EFFECTIVE, "evidence": "vllm:external_prefix_cache_queries_total did not move during "
                                                      "the sweep: the offload path never ran"}
    if evidence != "index-keys":
        raise ValueError(f"evidence {evidence!r}: expected none, offload-counters or index-keys")
    # the index must hold keys, and the router must have a choice.
    problems, good = [], []
    if kv is None or kv.get("max_keys") is None:
        return {"verdict": NOT_MEASURED, "evidence": "the KV-block index could not be read"}
    epp = kv.get("epp_index") or {}
    if kv["max_keys"] > 0:
        good.append(f"the {kv.get('server', 'index')} index held up to {kv['max_keys']} keys")
        if epp.get("index_lookups") is not None:
            good.append(f"the EPP looked it up {epp['index_lookups']:.0f} times ({(epp.get('index_lookup_hits') or 0):.0f} hits)")
    else:
        final = kv.get("final") or {}
        if epp.get("index_admissions"):
            problems.append(f"the {kv.get('server', 'index')} index stayed empty while the EPP admitted "
                            f"{epp['index_admissions']:.0f} blocks: they went to another index (the in-memory default?)")
        else:
            problems.append(f"the {kv.get('server', 'index')} index stayed empty (0 keys during and after the sweep; "
                            f"{final.get('total_commands_processed', '?')} commands processed): "
                            "nothing published KV events to it")
    if replicas is None:
        problems.append("replica count unknown")
    elif replicas < 2:
        problems.append(f"{replicas} replica: a router with one endpoint has no choice to make")
    else:
        good.append(f"{replicas} replicas to route between")
    if problems:
        return {"verdict": NOT_EFFECTIVE, "evidence": "; ".join(problems + good)}
    return {"verdict": CONFIRMED, "evidence": "; ".join(good)}
