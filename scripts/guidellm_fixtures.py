"""Regenerate tests/fixtures/guidellm/<version>/guidellm-results.json.zst: real reports of the old GuideLLM versions
that `llmd-bench import` reads (guidellm_layouts/v0_5.py, v0_6.py), from scratch.

    .venv/bin/python scripts/guidellm_fixtures.py [VERSION ...]      (default: 0.5.3 0.5.4 0.6.0)

Past studies (llm-d v0.4.0-v0.5.1) ran GuideLLM 0.5.3 and 0.5.4, later ones 0.6.0, and kept each report as
`guidellm-results.json.zst`. For each version this script:

1. makes a venv outside the repo ($GUIDELLM_FIXTURES_VENVS/guidellm-<version>, default /tmp/guidellm-fixtures) with
   `python3.11 -m venv` and installs `guidellm==<version>` with pip, pinned by scripts/guidellm_fixtures.constraints.txt
   (these versions depend on torch and transformers: torch is pinned to 2.13.0, the CPU build requirements-steps.txt
   uses; an unpinned torch pulls a ~3 GB CUDA build);
2. runs it against the project's own GuideLLM 0.8.1 mock server (one for all versions), offline, with the project's
   small tokenizer (`llmd-bench make-tokenizer`):

       .venv/bin/guidellm mock-server --host 127.0.0.1 --port PORT --model Qwen/Qwen3-0.6B --ttft-ms 20 --itl-ms 5
       guidellm benchmark run --target http://127.0.0.1:PORT --model Qwen/Qwen3-0.6B --rate-type concurrent \\
           --rate 1,2,4 --max-seconds 3 --random-seed 889 --processor TOKENIZER_DIR \\
           --data '{"prompt_tokens":32,"output_tokens":16,"prefix_tokens":64,"prefix_count":1}' \\
           --output-path WORK/guidellm-results.json --disable-progress

   (the flags of the past studies' command line, checked with `guidellm benchmark run --help` of each version; all
   three send /v1/chat/completions);
3. compresses the report with zstd (level 19, with a checksum as the zstd tool writes) into the fixture folder:
   about 60 KiB each.

tests/{unit,integration,e2e}/test_guidellm_layouts.py reads the committed files (it never installs these versions) and checks the numbers
against the mock server's settings above (TTFT near 20 ms, ITL near 5 ms, 3 s levels of 1, 2 and 4 streams).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

from llmd_bench.measure import processes
from llmd_bench.stack.tokenizer import make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "guidellm"
CONSTRAINTS = ROOT / "scripts" / "guidellm_fixtures.constraints.txt"
PROJECT_GUIDELLM = Path(sys.executable).parent / "guidellm"
VERSIONS = ("0.5.3", "0.5.4", "0.6.0")
MODEL = "Qwen/Qwen3-0.6B"
TTFT_MS, ITL_MS = 20, 5
RATES, MAX_SECONDS, SEED = "1,2,4", 3, 889
DATA = '{"prompt_tokens":32,"output_tokens":16,"prefix_tokens":64,"prefix_count":1}'
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def venv_for(version: str, base: Path) -> Path:
    venv = base / f"guidellm-{version}"
    guidellm = venv / "bin" / "guidellm"
    if guidellm.exists():
        have = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import importlib.metadata as m; print(m.version('guidellm'))"],
                              capture_output=True, text=True).stdout.strip()
        if have == version:
            return guidellm
        shutil.rmtree(venv)
    python = shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"guidellm=={version}", "-c", str(CONSTRAINTS)],
                   check=True)
    return guidellm


def run(guidellm: Path, version: str, port: int, tokenizer: Path, work: Path) -> Path:
    out = work / version / "guidellm-results.json"
    out.parent.mkdir(parents=True)
    cmd = [str(guidellm), "benchmark", "run", "--target", f"http://127.0.0.1:{port}", "--model", MODEL,
           "--rate-type", "concurrent", "--rate", RATES, "--max-seconds", str(MAX_SECONDS), "--random-seed", str(SEED),
           "--processor", str(tokenizer), "--data", DATA, "--output-path", str(out), "--disable-progress"]
    log = out.parent / "guidellm.log"
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=out.parent, env={**os.environ, **OFFLINE},
                              timeout=600)
    if done.returncode != 0 or not out.exists():
        sys.exit(f"GuideLLM {version} failed (exit {done.returncode}); last log lines:\n{processes.tail(log, 40)}")
    return out


def main(argv: list[str]) -> int:
    versions = argv or list(VERSIONS)
    base = Path(os.environ.get("GUIDELLM_FIXTURES_VENVS", "/tmp/guidellm-fixtures"))
    base.mkdir(parents=True, exist_ok=True)
    binaries = {v: venv_for(v, base) for v in versions}
    with tempfile.TemporaryDirectory(prefix="guidellm-fixtures-") as tmp:
        work = Path(tmp)
        tokenizer = make_tokenizer(work / "tokenizer")
        port = processes.free_port()
        mock = processes.start("mock", [str(PROJECT_GUIDELLM), "mock-server", "--host", "127.0.0.1", "--port", str(port),
                                        "--model", MODEL, "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS)],
                               port, work / "mock.log")
        try:
            processes.wait_http(mock, f"http://127.0.0.1:{port}/health", 60)
            for version, guidellm in binaries.items():
                report = run(guidellm, version, port, tokenizer, work)
                target = FIXTURES / version / "guidellm-results.json.zst"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zstandard.ZstdCompressor(level=19, write_checksum=True).compress(report.read_bytes()))
                print(f"{version}: {target.relative_to(ROOT)} ({target.stat().st_size // 1024} KiB)")
        finally:
            processes.stop(mock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
