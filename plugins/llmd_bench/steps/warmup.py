"""warmup: prove the model is served and warm it with requests of the campaign's shape."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmd_bench.measure.completions import prompt_text, send_request, served_models
from llmd_bench.model.errors import RuntimeStepError
from llmd_bench.stack.context import StepContext
from llmd_bench.steps import endpoint_for


def run(ctx: StepContext) -> dict[str, Any]:
    assert ctx.cell is not None
    model = ctx.cell.model
    target = endpoint_for(ctx)
    models = served_models(target)
    if model not in models:
        raise RuntimeStepError(f"model {model!r} is not served at {target}; served: {models}")
    p = ctx.params
    n = ctx.campaign.workload.warmup_requests
    words = p.prefix_tokens + p.prompt_tokens
    with ThreadPoolExecutor(max_workers=max(1, min(n, 4))) as pool:
        latencies = list(pool.map(lambda i: send_request(target, model, prompt_text(words, i), p.output_tokens),
                                  range(n)))
    summary = {"requests": n, "target": target,
               "latency_s_first": round(latencies[0], 3) if latencies else None,
               "latency_s_last": round(latencies[-1], 3) if latencies else None}
    return summary
