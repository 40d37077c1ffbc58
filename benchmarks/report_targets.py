"""Report targets (prints numbers; not a test):
- the report of a 16-cell campaign (8 levels each) in <= 3 s
- the cross-version section over 1,000,000 stored level rows in <= 10 s (aggregated in SQL)
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from llmd_bench import report as rpt
from llmd_bench.measure.processes import free_port
from llmd_bench.report.data import from_csv_dir
from llmd_bench.store import db, read
from llmd_bench.store.server import server_at

MODELS = ["Qwen3-0.6B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B-AWQ"]
CONFIGS = ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"]
LEVELS = [1, 50, 100, 150, 300, 400, 500, 650]


def report_time(work: Path) -> None:
    src = work / "csv"
    src.mkdir()
    for i, model in enumerate(MODELS):
        for j, config in enumerate(CONFIGS):
            with open(src / f"{model}_{config}_metrics.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["model", "config", "concurrency", "output_tps_mean", "ttft_mean_ms", "tpot_mean_ms",
                            "requests_successful", "requests_errored", "request_latency_mean_s", "request_latency_std_s"])
                for c in LEVELS:
                    w.writerow([model, config, c, 1000 * (i + 1) * min(c, 400) / 400 * (1 - 0.01 * j), 50 + c, 20 + c / 10,
                                2000, 0, 2.0, 0.4])
    times = []
    for k in range(3):
        t = time.perf_counter()
        rpt.write(rpt.build(from_csv_dir(src)), work / f"out{k}")
        times.append(time.perf_counter() - t)
    print(f"report for a 16-cell campaign (128 levels, 4 plots, HTML + MD + CSVs): {min(times):.2f} s best, "
          f"{times[0]:.2f} s first (includes importing matplotlib)  target <= 3 s")


def cross_version_time(work: Path) -> None:
    server = server_at(work / "pg", free_port())
    url = server.start()
    engine = db.make_engine(url)
    db.migrate(engine)
    # 1,000,000 level rows (10 llm-d versions, 7,813 runs x 16 cells x 8 levels), built in SQL; each summary
    # is padded past 2 KiB so it is stored out of line, as real ones are.
    t = time.perf_counter()
    with engine.begin() as c:
        c.execute(text("""
            INSERT INTO runs (campaign, dag_run_id, runtime, llmd_version, images, params, status)
            SELECT 'big', 'run-' || g, 'kubernetes', 'v0.' || (g % 10), '{}', '{}', 'ok' FROM generate_series(1, 7813) g"""))
        c.execute(text("""
            INSERT INTO cells (run_id, model, short_model, config, trial, status, versions)
            SELECT r.id, 'Qwen/' || m, m, cfg, 1, 'ok', '{}'
            FROM runs r, unnest(ARRAY['Qwen3-0.6B','Qwen3-8B','Qwen3-14B','Qwen3-32B-AWQ']) m,
                 unnest(ARRAY['no-offload','native-offload','llm-d-redis','llm-d-valkey']) cfg
            WHERE r.campaign = 'big'"""))
        c.execute(text("""
            INSERT INTO level_results (cell_id, concurrency, valid, requests_successful, requests_errored,
                requests_incomplete, level_start, level_end, duration_s, summary, output_tps_mean, request_latency_s_mean)
            SELECT c.id, lv, true, 1000, 0, 0, now(), now(), 120,
                   jsonb_build_object('metrics', jsonb_build_object('request_latency', jsonb_build_object(
                       'successful', jsonb_build_object('mean', 2.0, 'std_dev', 0.4))), 'pad', repeat('x', 2200)),
                   1000 + random() * 100 + lv, 2.0
            FROM cells c, unnest(ARRAY[1,50,100,150,300,400,500,650]) lv"""))
        rows = c.execute(text("SELECT count(*) FROM level_results")).scalar_one()
        c.execute(text("ANALYZE"))
    print(f"(built {rows:,} level rows in {time.perf_counter() - t:.1f} s)")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = read.version_peaks(engine, "big")
        times.append(time.perf_counter() - t)
    print(f"cross-version aggregate over {rows:,} level rows -> {len(out)} version x cell rows: "
          f"{min(times):.2f} s best, {max(times):.2f} s worst of 3  target <= 10 s")
    engine.dispose()
    server.stop(mode="immediate")
    shutil.rmtree(server.base, ignore_errors=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="llmd-bench-report-"))
    try:
        report_time(work)
        cross_version_time(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
