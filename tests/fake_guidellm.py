"""A light stand-in for `guidellm run` (GuideLLM 0.8.1) in the tests about orchestration, not measurement.

Real GuideLLM spends ~10 s of CPU per run before and between its levels (torch and transformers imported, a
scheduler process per level, a data-loader fork), whatever the level's length; the suite's DAG, fault, storage and
UI tests run it dozens of times. This script takes the argv the sweep builds (plan/method.py guidellm_argv), sends
real streaming chat requests to the target at each level's concurrency for the level's duration (so the servers,
routers and KV indexes see the traffic), logs GuideLLM's progress lines (the sweep's watch reads them:
measure/guidellm_watch.py), and writes a 0.8.1-layout report whose every level's request counts, latencies and
rates come from the requests it made (template: the committed real report, tests/fixtures/guidellm/0.8.1).
Any other subcommand is the real GuideLLM's; `mock-server` starts it as the local runtime does (without PyTorch:
plugins/llmd_bench/stack/runtime/guidellm_mock_server.py).

The tests that prove the real GuideLLM's wiring and numbers run the real one (tests/conftest.py `real_guidellm`
lists them); a test opts in to this one with the `fake_guidellm` fixture.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tests" / "fixtures" / "guidellm" / "0.8.1" / "report.json"
# stack/runtime/guidellm_mock_server.py SCRIPT, by path: this stand-in runs per sweep and imports no llmd_bench
MOCK_SERVER_SCRIPT = ROOT / "plugins" / "llmd_bench" / "stack" / "runtime" / "guidellm_mock_server.py"
PERCENTILES = {"p001": 0.1, "p01": 1, "p05": 5, "p10": 10, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "p95": 95,
               "p99": 99, "p999": 99.9}


def _kv(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(","))


def _options(argv: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        name = argv[i].removeprefix("--")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            opts.setdefault(name, []).append(argv[i + 1])
            i += 2
        else:
            opts.setdefault(name, []).append("")
            i += 1
    return opts


def log(line: str, where: str = "guidellm.benchmark.progress:_log_update:420") -> None:
    """A line as GuideLLM's logger writes it to stderr (guidellm/logger.py @v0.8.1); the level lines' text is
    GenerativeLoggingBenchmarkerProgress._log_update's (guidellm/benchmark/progress.py @v0.8.1)."""
    stamp = time.strftime("%y-%m-%d %H:%M:%S", time.gmtime())
    print(f"{stamp}|INFO     |{where} - {line}", file=sys.stderr, flush=True)


def dist(values: list[float]) -> dict[str, Any]:
    """A GuideLLM DistributionSummary (guidellm/schemas/statistics.py @v0.8.1): every percentile one of the values."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "mode": 0.0, "variance": 0.0, "std_dev": 0.0, "min": 0.0, "max": 0.0,
                "count": 0, "total_sum": 0.0, "percentiles": dict.fromkeys(PERCENTILES, 0.0), "pdf": None,
                "mean_ci": None, "percentile_cis": None}
    ordered = sorted(values)
    n = len(ordered)
    mean = sum(ordered) / n
    variance = sum((v - mean) ** 2 for v in ordered) / n

    def at(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    pct = {name: at(p) for name, p in PERCENTILES.items()}
    return {"mean": mean, "median": pct["p50"], "mode": ordered[0], "variance": variance, "std_dev": math.sqrt(variance),
            "min": ordered[0], "max": ordered[-1], "count": n, "total_sum": sum(ordered), "percentiles": pct,
            "pdf": None, "mean_ci": None, "percentile_cis": None}


def status_dist(by_outcome: dict[str, list[float]]) -> dict[str, Any]:
    total = [v for values in by_outcome.values() for v in values]
    return {outcome: dist(by_outcome.get(outcome, [])) for outcome in ("successful", "errored", "incomplete")} | {
        "total": dist(total)}


class Request:
    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.targeted = self.sent = self.first = self.end = 0.0
        self.token_times: list[float] = []
        self.output_tokens = 0
        self.outcome = "incomplete"


async def _stream(client: Any, url: str, model: str, prompt: str, req: Request, output_tokens: int) -> None:
    # the fields GuideLLM's mock server reads: guidellm/mock_server/handlers/chat_completions.py @v0.8.1
    # (max_completion_tokens caps the tokens streamed; stream_options.include_usage adds the usage chunk)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_completion_tokens": output_tokens, "stream_options": {"include_usage": True}}
    req.sent = time.time()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                req.outcome, req.end = "errored", time.time()
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    req.output_tokens = chunk["usage"].get("completion_tokens") or req.output_tokens
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        now = time.time()
                        req.first = req.first or now
                        req.token_times.append(now)
        req.end = time.time()
        req.output_tokens = req.output_tokens or len(req.token_times)
        req.outcome = "successful" if req.token_times else "errored"
    except asyncio.CancelledError:
        req.end = time.time()
        raise
    except Exception:  # noqa: BLE001 - a refused or reset connection is an errored request, as in GuideLLM
        req.outcome, req.end = "errored", time.time()


async def run_level(url: str, model: str, streams: int, seconds: float, max_requests: int | None,
                    data: dict[str, str], rng: random.Random) -> tuple[list[Request], float, float]:
    import httpx

    prompt_tokens = int(data.get("prompt_tokens", 32))
    output_tokens = int(data.get("output_tokens", 16))
    prefix = " ".join(f"p{rng.randrange(10**6)}" for _ in range(int(data.get("prefix_tokens", 0) or 0)))
    requests: list[Request] = []
    start = time.time()
    stop = start + seconds
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0),
                                 limits=httpx.Limits(max_connections=streams + 4)) as client:

        async def stream_loop() -> None:
            while time.time() < stop and (max_requests is None or len(requests) < max_requests):
                req = Request(prompt_tokens)
                req.targeted = time.time()
                requests.append(req)
                words = " ".join(f"w{rng.randrange(10**6)}" for _ in range(prompt_tokens))
                await _stream(client, url, model, f"{prefix} {words}".strip(), req, output_tokens)

        tasks = [asyncio.create_task(stream_loop()) for _ in range(streams)]
        await asyncio.wait(tasks, timeout=max(0.0, stop - time.time()))
        end = min(stop, time.time())  # a request cap may end the level early
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return requests, start, end


def _per_second(times: list[float], start: float, end: float, weights: list[float] | None = None) -> list[float]:
    buckets = [0.0] * max(1, math.ceil(end - start))
    for i, t in enumerate(times):
        if start <= t < end:
            buckets[min(len(buckets) - 1, int(t - start))] += weights[i] if weights else 1.0
    return buckets


def benchmark(template: dict[str, Any], index: int, streams: int, seconds: float, requests: list[Request],
              start: float, end: float) -> dict[str, Any]:
    bench = copy.deepcopy(template)
    bench["config"]["run_index"] = index
    bench["config"]["strategy"].update(worker_count=1, max_concurrency=streams, streams=streams)
    bench["config"]["constraints"]["max_duration"]["args"]["seconds"] = seconds
    by: dict[str, list[Request]] = {"successful": [], "errored": [], "incomplete": []}
    for req in requests:
        by[req.outcome].append(req)

    def metric(fn: Any) -> dict[str, Any]:
        return status_dist({outcome: [v for r in reqs if (v := fn(r)) is not None] for outcome, reqs in by.items()})

    def itl(r: Request) -> float | None:
        return (r.token_times[-1] - r.first) * 1000 / (len(r.token_times) - 1) if len(r.token_times) > 1 else None

    def tpot(r: Request) -> float | None:
        return (r.end - r.sent) * 1000 / r.output_tokens if r.output_tokens else None

    metrics = bench["metrics"]
    metrics["request_totals"] = {k: len(v) for k, v in by.items()} | {"total": len(requests)}
    ok = by["successful"]
    token_times = [t for r in ok for t in r.token_times]
    metrics.update(
        requests_per_second=status_dist({"successful": _per_second([r.end for r in ok], start, end)}),
        request_concurrency=status_dist({"successful": [
            float(sum(1 for r in requests if r.sent <= t < (r.end or end)))
            for t in (start + (i + 0.5) * 0.1 for i in range(int((end - start) / 0.1)))]}),
        request_latency=metric(lambda r: r.end - r.sent if r.end else None),
        request_streaming_iterations_count=metric(lambda r: float(len(r.token_times))),
        prompt_token_count=metric(lambda r: float(r.prompt_tokens)),
        output_token_count=metric(lambda r: float(r.output_tokens)),
        total_token_count=metric(lambda r: float(r.prompt_tokens + r.output_tokens)),
        time_to_first_token_ms=metric(lambda r: (r.first - r.sent) * 1000 if r.first else None),
        time_to_first_output_token_ms=metric(lambda r: (r.first - r.sent) * 1000 if r.first else None),
        time_per_output_token_ms=metric(tpot),
        inter_token_latency_ms=metric(itl),
        prompt_tokens_per_second=status_dist({"successful": _per_second(
            [r.sent for r in ok], start, end, [float(r.prompt_tokens) for r in ok])}),
        output_tokens_per_second=status_dist({"successful": _per_second(token_times, start, end)}),
        tokens_per_second=status_dist({"successful": _per_second(token_times, start, end)}),
        output_tokens_per_iteration=metric(lambda r: 1.0 if r.token_times else None),
        iter_tokens_per_iteration=metric(lambda r: 1.0 if r.token_times else None),
    )
    for name in ("root_dispatch_delay", "time_to_last_round_trip_ms", "avg_round_trip_time_ms", "text"):
        metrics[name] = None  # not measured by this stand-in
    delays = [r.sent - r.targeted for r in requests]
    sched = bench["scheduler_metrics"]
    sched.update(start_time=start, request_start_time=start, measure_start_time=start, measure_end_time=end,
                 request_end_time=end, end_time=time.time(), requests_made=metrics["request_totals"])
    for key in ("request_targeted_start_delay_avg", "resolve_targeted_start_delay_avg", "request_start_delay_avg",
                "resolve_start_delay_avg"):
        sched[key] = sum(delays) / len(delays) if delays else 0.0
    state = bench["scheduler_state"]
    state.update(num_processes=1, start_time=start, end_time=time.time(), start_requests_time=start,
                 end_requests_time=end, end_queuing_time=end, end_processing_time=end,
                 created_requests=len(requests), processed_requests=len(requests), successful_requests=len(ok),
                 errored_requests=len(by["errored"]), cancelled_requests=len(by["incomplete"]))
    bench.update(start_time=start, end_time=end, duration=end - start, warnings=[])
    return bench


def main(argv: list[str]) -> int:
    if argv and argv[0] == "mock-server":  # started as the local runtime starts GuideLLM's own (without PyTorch)
        os.execv(sys.executable, [sys.executable, str(MOCK_SERVER_SCRIPT), *argv])
    if not argv or argv[0] != "run":
        real = Path(sys.executable).with_name("guidellm")
        os.execv(str(real), [str(real), *argv])
    opts = _options(argv[1:])
    backend = _kv(opts["backend"][0])
    profile = json.loads(opts["profile"][0])
    constraints = [_kv(c) for c in opts.get("constraint", [])]
    seconds = next(float(c["seconds"]) for c in constraints if c["kind"] == "max_duration")
    max_requests = next((int(c["count"]) for c in constraints if c["kind"] == "max_requests"), None)
    data = _kv(opts["data"][0])
    out = Path(_kv(opts["output"][0])["path"])
    seed = int(_kv(opts.get("seed", ["kind=static,value=42"])[0]).get("value", 42))
    doc = json.loads(TEMPLATE.read_text())
    template = doc["benchmarks"][-1]
    rng = random.Random(seed)
    print("✔ Setup complete, starting benchmarks... (tests/fake_guidellm.py)", file=sys.stderr, flush=True)
    benchmarks = []
    for index, streams in enumerate(profile["streams"], start=1):
        name = f"Benchmark {index} (concurrent@{streams})"
        log(f"{name}: started | elapsed=0.0s | successful=0 errored=0 incomplete=0 | requests/s=0.00 "
            "output_tokens/s=0.00")
        requests, start, end = asyncio.run(run_level(backend["target"], backend["model"], streams, seconds,
                                                          max_requests, data, rng))
        done = sum(r.outcome == "successful" for r in requests)
        errored = sum(r.outcome == "errored" for r in requests)
        incomplete = len(requests) - done - errored
        for status in ("compile", "completed"):
            log(f"{name}: {status} | elapsed={time.time() - start:.1f}s | successful={done} errored={errored} "
                f"incomplete={incomplete} | requests/s={done / seconds:.2f} output_tokens/s=0.00")
        benchmarks.append(benchmark(template, index, streams, seconds, requests, start, end))
    log("All benchmarks finalized", "guidellm.benchmark.benchmarker:run:199")  # guidellm/benchmark/benchmarker.py @v0.8.1
    doc["config"]["spec"]["backend"].update(target=backend["target"], model=backend["model"])
    doc["config"]["spec"]["profile"]["streams"] = profile["streams"]
    doc["config"]["spec"]["constraints"] = [
        {"kind": c["kind"], "stopping_scope": "current", **{k: float(v) if k == "seconds" else int(v)
                                                             for k, v in c.items() if k in ("seconds", "count")}}
        for c in constraints if c["kind"] in ("max_duration", "max_requests")]
    doc["config"]["metadata"]["labels"] = dict(label.split("=", 1) for label in opts.get("label", []))
    doc["benchmarks"] = benchmarks
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    tmp.write_text(json.dumps(doc))
    tmp.replace(out)
    print(f"✔ Benchmarking complete, generated {len(benchmarks)} benchmark(s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
