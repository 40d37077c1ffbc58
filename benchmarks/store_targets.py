"""Results-store targets (prints numbers; not a test):
- local server start <= 5 s (first start including initdb, and a restart)
- ingest 10,000 level rows <= 5 s
- fetch the latest run's per-cell peaks <= 100 ms
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session

from llmd_bench.measure.guidellm_levels import LevelResult, compact_summary
from llmd_bench.measure.processes import free_port
from llmd_bench.store import db
from llmd_bench.store.read import latest_run_peaks
from llmd_bench.store.server import server_at


def synthetic_levels(n: int, summary: dict) -> list[LevelResult]:
    levels = []
    for i in range(n):
        m = {k: {"mean": 100.0 + i, "median": 99.0, "p90": 120.0, "p99": 130.0, "std_dev": 5.0}
             for k in ("output_tps", "requests_per_s", "ttft_ms", "tpot_ms", "itl_ms", "request_latency_s")}
        levels.append(LevelResult(i + 1, 1.7e9 + i, 1.7e9 + i + 120, 120.0, 500, 0, 3, m, summary))
    return levels


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="llmd-bench-store-"))
    server = server_at(base / "pg", free_port())
    t = time.perf_counter()
    url = server.start()
    first = time.perf_counter() - t
    server.stop()
    t = time.perf_counter()
    server.start()
    restart = time.perf_counter() - t
    print(f"local server start: {first:.2f} s first (initdb + start), {restart:.2f} s restart  target <= 5 s")

    sample = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    summary = {}
    if sample:
        doc = json.loads(sample.read_text())
        summary = compact_summary(doc["benchmarks"][0])
    print(f"level summary JSONB size: {len(json.dumps(summary)) / 1024:.1f} KiB per row"
          + ("" if sample else " (pass a GuideLLM report to use a real-size summary)"))
    engine = db.make_engine(url)
    db.migrate(engine)
    with engine.connect() as conn:
        durability = {k: conn.exec_driver_sql(f"SHOW {k}").scalar() for k in ("fsync", "synchronous_commit")}
    print("server durability: " + ", ".join(f"{k}={v}" for k, v in durability.items()))
    run = db.RunInfo(campaign="bench", dag_run_id="run-0", runtime="local", llmd_version="v0.4.0", vllm_version="0.11.2",
                     guidellm_version="0.8.1", llmd_bench_version="0.1.0", images={}, params={})
    # 10,000 rows as a campaign would produce them: 16 cells x 625 levels each, one transaction per cell
    per_cell = 625
    t = time.perf_counter()
    for c in range(16):
        with Session(engine) as s, s.begin():
            config = ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"][c % 4]
            cell = db.CellInfo(model=f"org/m{c // 4}", short_model=f"m{c // 4}", config=config, trial=1, status="ok")
            db.store_cell(s, run, cell, synthetic_levels(per_cell, summary))
    ingest = time.perf_counter() - t
    print(f"ingest 10,000 level rows (16 cells x 625): {ingest:.2f} s  target <= 5 s")
    timings = []
    for _ in range(20):
        t = time.perf_counter()
        peaks = latest_run_peaks(engine, "bench")
        timings.append(time.perf_counter() - t)
    print(f"latest run's per-cell peaks ({len(peaks)} cells): median {statistics.median(timings) * 1000:.1f} ms, "
          f"max {max(timings) * 1000:.1f} ms over 20 queries  target <= 100 ms")
    engine.dispose()
    server.stop(mode="immediate")
    import shutil
    shutil.rmtree(server.base, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
