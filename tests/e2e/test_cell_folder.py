"""The cell folder as a typed contract (cell_folder.py): every file's path, and models that fail loudly, naming the
file and the key, when a stored document lacks or renames a key our code reads.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_cell_folder.py.
"""

from __future__ import annotations

import json

from conftest import tiny_campaign, write_campaign
from llmd_bench import cli
from llmd_bench.measure import cell_folder, gpu_time
from llmd_bench.measure.cell_folder import CellFolder, CellRecord


def test_a_cell_folder_written_by_the_steps_parses_through_the_models(campaigns_dir, results_dir, db_url, monkeypatch,
                                                                      tmp_path, fake_guidellm):
    """A real local cell, every step through the step runner: each file the steps wrote reads through its model, and
    the files' keys are the ones written before the contract (byte-compatible)."""
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    doc = tiny_campaign(configs=["llm-d-redis"])
    doc["workload"].update(concurrency=[1], duration_s=1.5)
    write_campaign(campaigns_dir, doc)
    args = ["--campaign", "tiny", "--run-id", "folder-1", "--model", "Qwen/Qwen3-0.6B", "--config", "llm-d-redis"]
    try:
        for step in ("deploy", "warmup", "sweep", "collect_pcp"):
            assert cli.main([step, *args]) == 0
    finally:
        assert cli.main(["teardown", *args]) == 0
    assert cli.main(["load_results", *args]) == 0
    folder = CellFolder(results_dir / "folder-1" / "Qwen3-0.6B" / "llm-d-redis")

    record = cell_folder.read_record(folder)
    assert isinstance(record, CellRecord)
    assert set(record.steps) == {"deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"}
    assert all(s.status == "ok" for s in record.steps.values())
    assert record.serving is not None and record.serving.kv_backend is not None and record.serving.kv_backend.kind == "redis"
    assert record.sweep is not None and [t.report for t in record.sweep.trials] == ["trial-1/guidellm_report.json"]
    assert record.results is not None and record.results.stored and record.config_effect is not None
    assert gpu_time.phases(record)["complete"] is True
    # the stored cell.json is the merge of the parts, with the keys as before
    stored = json.loads(folder.record.read_text())
    assert set(stored) == {"campaign", "campaign_file", "run_id", "model", "short_model", "config", "factors", "runtime",
                           "params", "levels", "versions", "steps", "serving", "stack", "served", "sweep", "pcp",
                           "serving_metrics", "kv_index", "config_effect", "results"}
    # the simulated servers showed what the configuration demands, key by key; stored and shown in the report
    assert record.served is not None and record.served.status == "proven", record.served
    from llmd_bench.report.generate import generate_report

    generate_report("folder-1", tmp_path / "report", campaign="llmd_tiny")
    md = (tmp_path / "report" / "report.md").read_text()
    section = md.split("### Served configuration per cell", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| Qwen3-0.6B/llm-d-redis"))
    assert row.split("|")[2].strip() == "proven" and "kv_events.publisher" in row and "block_size" in row
    for part in folder.record_parts.glob("*.json"):
        cell_folder.read_part(part)

    levels = cell_folder.read_levels(folder)
    assert levels is not None and [lv.concurrency for lv in levels] == [1]
    observed = cell_folder.read_observations(folder)
    assert observed is not None and observed.config_effect.verdict == record.config_effect.verdict
    state = cell_folder.read_runtime_state(folder)
    assert state.processes == [] and state.stopped and state.endpoint and state.leftovers == []
    assert set(json.loads(folder.runtime_state.read_text())) == {"processes", "replicas", "endpoint", "kv_backend",
                                                                   "pcp", "stopped", "leftovers"}
    assert folder.trial_report(1).exists() and folder.guidellm_log(1).exists() and folder.serving_samples(1).exists()
    assert folder.generator_pid_files() == []  # the sweep's GuideLLM is gone
