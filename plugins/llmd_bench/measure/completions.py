"""Requests to a served model's OpenAI-compatible API: the models it lists and one chat completion, timed (the
warm-up's requests and level_reset's probes)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from llmd_bench.model.errors import RuntimeStepError

REQUEST_TIMEOUT_S = 120.0


def served_models(target: str) -> list[str | None]:
    """The ids /v1/models lists (None for an entry without one)."""
    try:
        with urllib.request.urlopen(f"{target}/v1/models", timeout=10) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeStepError(f"{target}/v1/models did not answer: {exc}") from None
    return [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]


def prompt_text(words: int, variant: int) -> str:
    # Same prefix for every request (the shared-prefix workload), a distinct tail per request.
    return " ".join(f"w{i % 97}" for i in range(words)) + f" request {variant}"


def send_request(target: str, model: str, prompt: str, max_tokens: int) -> float:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "stream": False}).encode()
    req = urllib.request.Request(f"{target}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeStepError(f"warmup request failed: HTTP {exc.code} {exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeStepError(f"warmup request failed: {exc}") from None
    if not payload.get("choices"):
        raise RuntimeStepError(f"warmup response has no choices: {str(payload)[:300]}")
    return time.monotonic() - started
