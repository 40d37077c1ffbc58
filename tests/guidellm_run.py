"""The real GuideLLM 0.8.1 report the tests read (tests/fixtures/guidellm/0.8.1/report.json), and how it is made.

    .venv/bin/python tests/guidellm_run.py      (rewrites the committed report; run it on a quiet machine)

Two concurrency levels (1 and 4 streams) of 2 s each against GuideLLM's own mock server (TTFT 20 ms, ITL 4 ms).
The report is committed because several judgements read its within-level spread: made while the machine is busy,
the spread widens and a 30 % regression can read as "within noise". tests/test_guidellm_report.py checks that it
was made by the pinned GuideLLM and makes a fresh one to check today's GuideLLM still writes what we parse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmd_bench.stack.runtime import guidellm_mock_server

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "fixtures" / "guidellm" / "0.8.1" / "report.json"
BIN = Path(sys.executable).parent
# GuideLLM's mock server, started as the local runtime starts it (without PyTorch)
MOCK_SERVER = [sys.executable, str(guidellm_mock_server.SCRIPT), "mock-server"]


def make_report(out: Path) -> Path:
    """Run the real mock server and GuideLLM; the report lands at `out`."""
    from llmd_bench.measure import guidellm_watch, processes
    from llmd_bench.model import paths
    from llmd_bench.steps import sweep

    port = processes.free_port()
    log = out.parent / "mock.log"
    mock = processes.start("mock", [*MOCK_SERVER, "--host", "127.0.0.1", "--port", str(port),
                                    "--model", "Qwen/Qwen3-0.6B", "--ttft-ms", "20", "--itl-ms", "4"], port, log)
    try:
        processes.wait_http(mock, f"http://127.0.0.1:{port}/health", 60)
        cmd = [str(BIN / "guidellm"), "run", "--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model=Qwen/Qwen3-0.6B",
               "--profile", '{"kind":"concurrent","streams":[1,4]}', "--constraint", "kind=max_duration,seconds=2",
               "--seed", "kind=static,value=889",
               "--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=16,prefix_tokens=64,prefix_count=1,turns=1",
               "--tokenizer", f"kind=hf_auto,model={paths.tokenizer_dir()}", "--output", f"kind=json,path={out}",
               "--disable-progress"]
        # the sweep's own runner: its progress watch stops a stalled GuideLLM in seconds (0.8.1 can hang as a level
        # starts: docs/troubleshooting.md) and the run is made again, as the sweep does; the deadline is the last resort
        env = guidellm_watch.progress_logging_env({**os.environ, "HF_HUB_OFFLINE": "1"})
        plan = guidellm_watch.WatchPlan(levels=[1, 4], duration_s=2.0, grace_s=30.0)
        for attempt in range(1, 4):
            try:
                code = sweep.run_guidellm(cmd, out.parent / f"guidellm-{attempt}.log", env, 300.0, watch=plan)
            except sweep.GuidellmStalled as exc:
                print(f"attempt {attempt}: {exc}", file=sys.stderr)
                continue
            if code != 0:
                raise subprocess.CalledProcessError(code, cmd)
            break
        else:
            raise RuntimeError(f"guidellm stalled 3 times; logs in {out.parent}")
    finally:
        processes.stop(mock)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        made = make_report(Path(work) / "report.json")
        COMMITTED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, COMMITTED)
    print(f"wrote {COMMITTED} ({COMMITTED.stat().st_size} bytes)")
