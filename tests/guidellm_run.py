"""The real GuideLLM 0.8.1 report the tests read (tests/fixtures/guidellm/0.8.1/report.json), and how it is made.

    .venv/bin/python tests/guidellm_run.py      (rewrites the committed report; run it on a quiet machine)

Two concurrency levels (1 and 4 streams) of 2 s each against GuideLLM's own mock server (TTFT 20 ms, ITL 4 ms).
The report is committed because several judgements read its within-level spread: made while the machine is busy,
the spread widens and a 30 % regression can read as "within noise". tests/test_guidellm_report.py checks that it
was made by the pinned GuideLLM and makes a fresh one to check today's GuideLLM still writes what we parse.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "fixtures" / "guidellm" / "0.8.1" / "report.json"
BIN = Path(sys.executable).parent


def make_report(out: Path) -> Path:
    """Run the real mock server and GuideLLM; the report lands at `out`."""
    from llmd_bench.measure import processes
    from llmd_bench.model import paths

    port = processes.free_port()
    log = out.parent / "mock.log"
    mock = processes.start("mock", [str(BIN / "guidellm"), "mock-server", "--host", "127.0.0.1", "--port", str(port),
                                    "--model", "Qwen/Qwen3-0.6B", "--ttft-ms", "20", "--itl-ms", "4"], port, log)
    try:
        processes.wait_http(mock, f"http://127.0.0.1:{port}/health", 60)
        cmd = [str(BIN / "guidellm"), "run", "--backend", f"kind=openai_http,target=http://127.0.0.1:{port},model=Qwen/Qwen3-0.6B",
               "--profile", '{"kind":"concurrent","streams":[1,4]}', "--constraint", "kind=max_duration,seconds=2",
               "--seed", "kind=static,value=889",
               "--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=16,prefix_tokens=64,prefix_count=1,turns=1",
               "--tokenizer", f"kind=hf_auto,model={paths.tokenizer_dir()}", "--output", f"kind=json,path={out}",
               "--disable-progress"]
        subprocess.run(cmd, check=True, capture_output=True)
    finally:
        processes.stop(mock)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        made = make_report(Path(work) / "report.json")
        COMMITTED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, COMMITTED)
    print(f"wrote {COMMITTED} ({COMMITTED.stat().st_size} bytes)")
