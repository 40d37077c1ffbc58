"""The cell folder as a typed contract (cell_folder.py): every file's path, and models that fail loudly, naming the
file and the key, when a stored document lacks or renames a key our code reads."""

from __future__ import annotations

import copy
import json

import pytest

from llmd_bench.measure import cell_folder
from llmd_bench.measure.cell_folder import CellFolder, CellFolderError
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext

STEP = {"status": "ok", "started": "2026-11-27T10:00:00.000+00:00", "ended": "2026-11-27T10:05:00.000+00:00",
        "elapsed_s": 300.0, "summary": {}}
RECORD = {
    "campaign": "llmd_tiny", "campaign_file": "/c/tiny.yaml", "run_id": "r1", "model": "Qwen/Qwen3-0.6B",
    "short_model": "Qwen3-0.6B", "config": "llm-d-redis", "factors": {}, "runtime": "local",
    "params": {"tensor_parallel_size": 1, "replicas": 2, "warmup_requests": 2, "gpu_hour_cost": 2.5, "trials": 1},
    "levels": [1, 4],
    "versions": {"llmd": "v0.4.0", "vllm": None, "components": {}, "images": {}, "guidellm": "0.5", "llmd_bench": "0.1",
                 "python": "3.12", "kv_backend": {"redis": "6.2"}},
    "steps": {"deploy": STEP},
    "serving": {"replicas": 2, "endpoint": "http://127.0.0.1:1", "kv_backend": {"kind": "redis", "port": 2,
                                                                                "server_version": "6.2"},
                "simulated": True, "leftovers_found": []},
}


def _write(tmp_path, record) -> CellFolder:
    folder = CellFolder(tmp_path / "cell")
    folder.path.mkdir()
    folder.record.write_text(json.dumps(record))
    return folder


def test_paths_of_a_cell_folder_are_the_names_on_disk(tmp_path):
    f = CellFolder(tmp_path)
    assert f.record == tmp_path / "cell.json" and f.record_part("sweep") == tmp_path / "record" / "sweep.json"
    assert f.record_part(None) == tmp_path / "record" / "base.json"
    assert (f.levels.name, f.observations.name, f.runtime_state.name, f.existing_saved.name) == (
        "levels.json", "observations.json", "runtime.json", "existing-saved.json")
    assert f.trial_report(2) == tmp_path / "trial-2" / "guidellm_report.json"
    assert f.level_report(1, 8) == tmp_path / "trial-1" / "level-8" / "guidellm_report.json"
    assert f.guidellm_log(1) == tmp_path / "trial-1" / "guidellm.log"
    assert f.guidellm_log(1, 8) == tmp_path / "trial-1" / "guidellm-level-8.log"
    assert CellFolder.stalled_log(f.guidellm_log(1), 2) == tmp_path / "trial-1" / "guidellm.stalled-2.log"
    assert f.serving_samples(1) == tmp_path / "trial-1" / "serving_samples.jsonl"
    assert f.generator_cpu_samples(1) == tmp_path / "trial-1" / "generator_cpu.jsonl"
    assert f.log("router") == tmp_path / "logs" / "router.log" and f.pcp == tmp_path / "pcp"
    f.generator_pid(3).parent.mkdir()
    f.generator_pid(3).write_text("{}")
    assert f.generator_pid_files() == [tmp_path / "trial-3" / "guidellm.pid"]


def test_a_valid_record_reads_typed(tmp_path):
    record = cell_folder.read_record(_write(tmp_path, RECORD))
    assert record is not None and record.serving is not None and record.serving.kv_backend is not None
    assert record.serving.kv_backend.port == 2 and record.params.replicas == 2 and record.steps["deploy"].elapsed_s == 300
    assert record.params.model_extra == {"trials": 1}  # the rest of RunParams, kept as stored
    assert cell_folder.read_record(CellFolder(tmp_path / "none")) is None


@pytest.mark.parametrize("mangle, key", [
    (lambda r: r["serving"].update(endpoint_url=r["serving"].pop("endpoint")), "serving.endpoint"),
    (lambda r: r["steps"]["deploy"].pop("elapsed_s"), "steps.deploy.elapsed_s"),
    (lambda r: r["steps"]["deploy"].update(state=r["steps"]["deploy"].pop("status")), "steps.deploy.status"),
    (lambda r: r["params"].pop("replicas"), "params.replicas"),
    (lambda r: r.update(run=r.pop("run_id")), "run_id"),
    (lambda r: r.pop("serving"), "no 'serving'"),  # deploy is ok, so its section must be there
    (lambda r: r["versions"].pop("llmd"), "versions.llmd"),
])
def test_a_renamed_or_missing_key_fails_naming_the_file_and_the_key(tmp_path, mangle, key):
    record = copy.deepcopy(RECORD)
    mangle(record)
    folder = _write(tmp_path, record)
    with pytest.raises(CellFolderError) as err:
        cell_folder.read_record(folder)
    assert str(folder.record) in str(err.value) and key in str(err.value)


def test_a_record_part_with_a_key_that_is_not_the_records_fails(tmp_path):
    folder = _write(tmp_path, RECORD)
    folder.record_part("sweep").parent.mkdir()
    folder.record_part("sweep").write_text(json.dumps({"_written_at": 1, "swep": {"trials": []}}))
    with pytest.raises(CellFolderError, match=r"record/sweep\.json.*swep"):
        cell_folder.merged_record(folder)
    folder.record_part("sweep").write_text(json.dumps({"swep": {}}))  # and a part knows when it was written
    with pytest.raises(CellFolderError, match="_written_at"):
        cell_folder.merged_record(folder)


def test_a_step_writing_a_misnamed_key_fails_in_update_record_and_writes_nothing(tmp_path, monkeypatch):
    from conftest import REFERENCE

    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(tmp_path))
    campaign = load_campaign(REFERENCE)
    params = resolve_params(campaign, {}, catalog.known_versions())
    ctx = StepContext(campaign, params, "run-1", "local", Cell("Qwen/Qwen3-8B", "no-offload"), step="deploy")
    with pytest.raises(CellFolderError, match=r"serving\.endpoint"):
        with ctx.update_record() as record:
            record["serving"] = {"replicas": 1, "endpont": "http://x", "simulated": True}
    assert not ctx.folder.record_part("deploy").exists()
    assert ctx.record() is not None and ctx.record().serving is None


def test_levels_observations_and_runtime_state_fail_with_the_file_and_key(tmp_path):
    folder = CellFolder(tmp_path)
    folder.levels.write_text(json.dumps([{"trial": 1, "concurrency": 1, "is_valid": True}]))
    with pytest.raises(CellFolderError, match=r"levels\.json.*0\.valid"):
        cell_folder.read_levels(folder)
    folder.observations.write_text(json.dumps({"pcp": {}, "host_levels": [], "serving_metrics": {},
                                               "serving_levels": [], "kv_index": None,
                                               "config_effect": {"verdict": "confirmed"}}))
    with pytest.raises(CellFolderError, match=r"observations\.json.*config_effect\.evidence"):
        cell_folder.read_observations(folder)
    folder.runtime_state.write_text(json.dumps({"processes": [{"name": "router", "pid": 1, "port": 2, "cmd": []}]}))
    with pytest.raises(CellFolderError, match=r"runtime\.json.*processes\.0\.log"):
        cell_folder.read_runtime_state(folder)
    assert cell_folder.read_runtime_state(CellFolder(tmp_path / "none")).processes == []  # nothing started


def test_an_older_observations_file_without_the_generator_keys_still_loads(tmp_path):
    folder = CellFolder(tmp_path)
    folder.observations.write_text(json.dumps({"pcp": {"status": "not measured"}, "host_levels": [],
                                               "serving_metrics": {"available": False}, "serving_levels": [],
                                               "kv_index": None, "config_effect": {"verdict": "n/a", "evidence": ""}}))
    observed = cell_folder.read_observations(folder)
    assert observed is not None and observed.generator_host is None and observed.generator_host_levels == []


