"""Object-storage targets (prints numbers; not a test), against a real S3 API server on 127.0.0.1:
- a step's pull and push of a typical cell (3 trials, 27 files, 9 MB) <= 2 s each
- a push after a step that changed one file <= 0.5 s (unchanged files are not sent again)
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from moto.server import ThreadedMotoServer


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      LLMD_BENCH_S3_ENDPOINT=endpoint, LLMD_BENCH_RESULTS_URL="s3://bench/campaigns")
    import boto3

    from llmd_bench.integrations import storage

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    try:
        pod_a = Path(tempfile.mkdtemp()) / "results"
        cell = pod_a / "run" / "Qwen3-8B" / "llm-d-redis"
        snap = storage.pull(cell, pod_a, "results")
        for t in (1, 2, 3):
            (cell / f"trial-{t}").mkdir(parents=True)
            (cell / f"trial-{t}" / "guidellm_report.json").write_bytes(os.urandom(3_000_000))
            for i in range(8):
                (cell / f"trial-{t}" / f"part-{i}.json").write_text("{}" * 100)
        t0 = time.perf_counter()
        sent = storage.push(snap)
        push_s = time.perf_counter() - t0
        pod_b = Path(tempfile.mkdtemp()) / "results"
        t0 = time.perf_counter()
        snap_b = storage.pull(pod_b / "run" / "Qwen3-8B" / "llm-d-redis", pod_b, "results")
        pull_s = time.perf_counter() - t0
        (pod_b / "run" / "Qwen3-8B" / "llm-d-redis" / "observations.json").write_text("{}")
        t0 = time.perf_counter()
        storage.push(snap_b)
        incremental_s = time.perf_counter() - t0
    finally:
        server.stop()
    print(f"push of a cell ({sent} files, 9.0 MB): {push_s:.2f} s (target <= 2 s)")
    print(f"pull of the same cell into another pod: {pull_s:.2f} s (target <= 2 s)")
    print(f"push after changing one file: {incremental_s:.3f} s (target <= 0.5 s)")


if __name__ == "__main__":
    main()
