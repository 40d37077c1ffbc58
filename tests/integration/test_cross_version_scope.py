"""The cross-version comparison and the effect by version read only runs that measured what the reported run did:
a simulated run's peaks never average with a cluster's, nor a run of another workload's (store/read.version_peaks)."""

from __future__ import annotations

from llmd_bench.store import db
from llmd_bench.store.read import read_stored_run, version_peaks
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1}


def _store(db_url, real_report, run_id: str, version: str, runtime: str, tps: float, **params) -> None:
    run = RunInfo(campaign="weekly", dag_run_id=run_id, runtime=runtime, llmd_version=version, vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate({**PARAMS, **params, "llmd_version": version}))
    cell = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config="no-offload", trial=1, status="ok")
    db.in_transaction(lambda w: w.store_cell(run, cell, levels_at(real_report, {1: tps / 2, 2: tps})), "test", db_url)


def test_only_runs_of_the_same_runtime_kind_and_workload_are_compared_across_versions(db_url, real_report):
    _store(db_url, real_report, "sim-old", "v0.8.0", "local", 100.0)
    _store(db_url, real_report, "cluster-old", "v0.8.0", "kubernetes", 5000.0)
    _store(db_url, real_report, "sim-other-workload", "v0.8.0", "local", 900.0, prompt_tokens=128)
    _store(db_url, real_report, "sim-new", "v0.9.0", "local", 110.0)
    _store(db_url, real_report, "cluster-new", "v0.9.0", "kubernetes", 5200.0)
    engine = db.make_engine(db_url)
    try:
        sim = {p.llmd_version: (p.peak_output_tps, p.runs) for p in
               version_peaks(engine, read_stored_run("sim-new", url=db_url).run)}
        cluster = {p.llmd_version: (p.peak_output_tps, p.runs) for p in
                   version_peaks(engine, read_stored_run("cluster-new", url=db_url).run)}
    finally:
        engine.dispose()
    assert sim == {"v0.8.0": (100.0, 1), "v0.9.0": (110.0, 1)}
    assert cluster == {"v0.8.0": (5000.0, 1), "v0.9.0": (5200.0, 1)}
