"""Where and beside what a cell ran (rows.Placement), stored with it in PostgreSQL: the noise history and the
previous-run comparison take only runs placed the same way (alone, shared lanes, lanes: auto), and the report says
which cells ran at the same time and on which nodes."""

from __future__ import annotations

from llmd_bench.report.document import DocumentBuilder
from llmd_bench.report.render import markdown
from llmd_bench.report.sections import _placement_section
from llmd_bench.store import db
from llmd_bench.store.read import read_stored_run, run_peaks, trial_peaks
from llmd_bench.store.rows import CellInfo, Placement, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1, "llmd_version": "v0.9.0"}


def _store(db_url, real_report, run_id: str, placements: dict[str, Placement]) -> None:
    run = RunInfo(campaign="weekly", dag_run_id=run_id, runtime="kubernetes", llmd_version="v0.9.0", vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate(PARAMS))

    def load(w: db.Writer) -> None:
        for config, placement in placements.items():
            cell = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config=config, trial=1, status="ok",
                            placement=placement, replicas=1, tensor_parallel_size=1)
            w.store_cell(run, cell, levels_at(real_report, {1: 100.0, 2: 180.0}))

    db.in_transaction(load, "test", db_url)


def _lane(slot: str, node: str, acquired: str, released: str) -> Placement:
    return Placement(kind="lane", lanes=4, slot=slot, node=node, gpus=2, acquired=acquired, released=released,
                     waited_s=0.0)


def test_the_noise_history_and_previous_runs_take_only_runs_placed_the_same_way(db_url, real_report):
    alone = {"no-offload": Placement(kind="alone", lanes=1)}
    lane = {"no-offload": _lane("gpu-0/0", "gpu-0", "2026-12-01T03:00:00.000000Z", "2026-12-01T04:00:00.000000Z")}
    _store(db_url, real_report, "alone-1", alone)
    _store(db_url, real_report, "lane-1", lane)
    _store(db_url, real_report, "alone-2", alone)
    _store(db_url, real_report, "lane-2", lane)
    engine = db.make_engine(db_url)
    try:
        for run_id, same in (("lane-2", "lane-1"), ("alone-2", "alone-1")):
            run = read_stored_run(run_id, url=db_url).run
            earlier = {r.dag_run_id for r in run_peaks(engine, run, 10) if not r.is_current}
            assert earlier == {same}, (run_id, earlier)
            assert {r.run_pk for r in trial_peaks(engine, run, 10)} == {read_stored_run(same, url=db_url).run.id}
    finally:
        engine.dispose()
    (cell,) = read_stored_run("lane-1", url=db_url).cells
    assert cell.cell.placement == lane["no-offload"]  # stored and read back typed


def _rendered(t) -> str:
    doc = DocumentBuilder("report")
    doc.h(1, "report")
    _placement_section(doc, t)
    return markdown.render(doc.document)


def test_the_report_says_which_cells_ran_at_the_same_time_and_on_which_nodes():
    import pandas as pd

    t = pd.DataFrame([
        {"model": "Qwen3-8B", "config": "no-offload",
         "placement": _lane("gpu-0/0", "gpu-0", "2026-12-01T03:00:00.000000Z", "2026-12-01T04:00:00.000000Z")},
        {"model": "Qwen3-8B", "config": "native-offload",
         "placement": _lane("gpu-1/0", "gpu-1", "2026-12-01T03:30:00.000000Z", "2026-12-01T04:30:00.000000Z")},
        {"model": "Qwen3-8B", "config": "llm-d-redis",
         "placement": _lane("gpu-0/0", "gpu-0", "2026-12-01T04:00:00.000000Z", "2026-12-01T05:00:00.000000Z")},
    ])
    text = _rendered(t)
    assert "## Cells side by side" in text and "each cell's model servers on its own GPUs of one node" in text
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| Qwen3-8B")}
    assert "gpu-0/0 (2 GPUs on gpu-0)" in rows["no-offload"]
    assert rows["no-offload"].rstrip(" |").endswith("Qwen3-8B / native-offload")  # redis took its lane as it left
    assert rows["native-offload"].rstrip(" |").endswith("Qwen3-8B / no-offload, Qwen3-8B / llm-d-redis")
    alone = pd.DataFrame([{"model": "Qwen3-8B", "config": "no-offload", "placement": Placement(kind="alone")}])
    assert "side by side" not in _rendered(alone)  # one cell at a time: nothing to say
