"""The history a seeded sweep reads from PostgreSQL (store/history.py): which stored runs count as a cell's own, which
as its previous llm-d version and its configuration's other cells, the peak level found in SQL, how each run was
swept and the stack it served; and a store that cannot be read. The decisions on these are tests/unit/test_seeded.py."""

from __future__ import annotations

import pytest

from llmd_bench.measure.seeded import StackFingerprint, decide_seed
from llmd_bench.model import catalog
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.store import db
from llmd_bench.store.history import SeedQuery, seed_sources
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2, 4, 8], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1, "runs": "per-cell", "prefix_count": 1,
          "max_requests": None, "level_isolation": "none"}
MODEL = "Qwen/Qwen3-0.6B"


def _store(db_url, real_report, run_id: str, *, version: str = "v0.9.0", runtime: str = "local", sweep: str = "seeded",
           decisions: dict | None = None, stack: dict | None = None, stack_factors: str = "", replicas: int = 1,
           tps: dict[int, float | None] | None = None, params: dict | None = None) -> None:
    run = RunInfo(campaign="weekly", dag_run_id=run_id, runtime=runtime, llmd_version=version, vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate({**PARAMS, **(params or {}), "sweep": sweep,
                                                         "llmd_version": version}))
    cell = CellInfo(model=MODEL, short_model="Qwen3-0.6B", config="no-offload", trial=1, status="ok",
                    stack_factors=stack_factors, sweep=decisions or {}, stack=stack or {}, replicas=replicas,
                    tensor_parallel_size=1)
    levels = levels_at(real_report, tps or {1: 100.0, 2: 190.0, 4: 260.0, 8: 240.0})
    db.in_transaction(lambda w: w.store_cell(run, cell, levels), "test", db_url)


def _query(**overrides) -> SeedQuery:
    fields = {"campaign": "weekly", "model": MODEL, "config": "no-offload", "stack_factors": "", "config_factors": "",
              "llmd_version": "v0.9.0", "simulated": True, "params": {**PARAMS, "sweep": "seeded"},
              "exclude_run": "this-run", "versions": tuple(catalog.known_versions())}
    return SeedQuery(**(fields | overrides))


def test_a_cells_own_runs_come_newest_first_with_their_peak_mode_and_stack(db_url, real_report):
    stack = {"model_servers": [{"image": "img", "image_digest": "sha256:1", "vllm_version": "0.11.2"}]}
    _store(db_url, real_report, "week-1", sweep="adaptive", decisions={"grid": [1, 2, 4, 8], "stopped_after": 8})
    _store(db_url, real_report, "week-2", decisions={"policy": "seeded", "mode": "bracket"}, stack=stack,
           tps={2: 190.0, 4: 250.0, 8: 270.0})
    _store(db_url, real_report, "this-run")  # the run asking is never its own history
    sources = seed_sources(_query(), url=db_url)
    assert [p.dag_run_id for p in sources.same_cell] == ["week-2", "week-1"]
    newest, oldest = sources.same_cell
    assert (newest.mode, newest.peak, newest.peak_output_tps, oldest.mode, oldest.peak) == ("bracket", 8, 270.0,
                                                                                             "adaptive", 4)
    assert newest.stack == StackFingerprint(images=("sha256:1",), vllm_versions=("0.11.2",))
    assert sources.previous_version is None and sources.other_cells == ()
    decision = decide_seed(sources, newest.stack, 4)
    assert (decision.mode, decision.source.peak, decision.bracket_runs_before) == ("bracket", 8, 1)


def test_runs_that_measured_something_else_do_not_count(db_url, real_report):
    _store(db_url, real_report, "other-workload", params={"prompt_tokens": 128})
    _store(db_url, real_report, "other-method", params={"runs": "per-level"})
    _store(db_url, real_report, "on-a-cluster", runtime="kubernetes")
    _store(db_url, real_report, "more-replicas", replicas=2)
    _store(db_url, real_report, "grid", sweep="grid", tps={1: 50.0, 2: 150.0, 4: 140.0, 8: None})
    sources = seed_sources(_query(), url=db_url)
    assert [(p.dag_run_id, p.mode, p.peak) for p in sources.same_cell] == [("grid", "grid", 2)]  # invalid 8 left out


def test_a_backfill_seeds_from_the_newest_earlier_version_and_other_cells_from_this_one(db_url, real_report):
    versions = catalog.known_versions()
    here, earlier, earliest = versions[-1], versions[-2], versions[-3]
    _store(db_url, real_report, "old", version=earliest, tps={1: 10.0, 2: 20.0, 4: 30.0, 8: 40.0})
    _store(db_url, real_report, "previous", version=earlier, tps={1: 10.0, 2: 50.0, 4: 30.0, 8: 20.0})
    _store(db_url, real_report, "replicas-2", version=here, stack_factors="replicas=2", replicas=2)
    sources = seed_sources(_query(llmd_version=here), url=db_url)
    assert sources.same_cell == ()
    assert (sources.previous_version.dag_run_id, sources.previous_version.peak) == ("previous", 2)
    assert [(o.cell, o.peak) for o in sources.other_cells] == [("Qwen3-0.6B [replicas=2] / no-offload", 4)]
    # the earliest version's cell asks: nothing is earlier, the later versions are not its seed
    assert seed_sources(_query(llmd_version=earliest), url=db_url).previous_version is None


def test_an_empty_store_has_no_history_and_an_unreachable_one_says_why(db_url):
    assert seed_sources(_query(), url=db_url).same_cell == ()  # no table yet: no run was ever loaded
    with pytest.raises(LlmdBenchError, match="reading the history of Qwen/Qwen3-0.6B / no-offload: results database "
                                             "127.0.0.1:1/x unreachable after 1 attempts"):
        seed_sources(_query(), url="postgresql://u:p@127.0.0.1:1/x", attempts=1)
