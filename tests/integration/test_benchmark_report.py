"""Export to llm-d's Benchmark Report v0.2 and import back, against a real PostgreSQL results store: every file
validates against the JSON Schema in include/schemas/, its numbers are the store's in the schema's units, invalid
levels are left out with a note, a round trip keeps every key metric, and foreign files are refused by name."""

from __future__ import annotations

import copy
import json
from datetime import datetime

import jsonschema
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import ROOT
from llmd_bench import cli
from llmd_bench.integrations import benchmark_report as br
from llmd_bench.integrations.importer import import_reports
from llmd_bench.measure.guidellm_report import parse_report_file
from llmd_bench.store import db
from llmd_bench.store.rows import LEVEL_METRICS, LEVEL_STATS
from llmd_bench.store.schema import Cell, LevelObservation, LevelResult, Run

SCHEMA = ROOT / "include" / "schemas" / "benchmark_report_v0.2.json"
# upstream's own published file, when the shared folder carries it (optional second check)
PUBLISHED = ROOT.parent / "shared" / "schemas" / "br_v0_2_json_schema.json"
GIB = float(1 << 30)
PARAMS = {"models": ["Qwen/Qwen3-0.6B"], "configs": ["no-offload", "llm-d-redis"], "concurrency": [1, 4, 8],
          "duration_s": 2.0, "prompt_tokens": 32, "output_tokens": 16, "prefix_tokens": 64, "turns": 1, "seed": 889,
          "tensor_parallel_size": 1, "replicas": 2, "llmd_version": "v0.4.0", "trials": 2, "prefix_count": "2x",
          "max_requests": None, "runs": "per-level", "level_isolation": "none", "factors": {}}
VERSIONS = {"llmd": "v0.4.0", "vllm": "0.11.2", "guidellm": "0.8.1", "llmd_bench": "0.1.0",
            "components": {"inference_scheduler": "v0.4.0", "kv_cache": "v0.4.0"},
            "images": {"vllm": "ghcr.io/llm-d/llm-d-cuda:v0.4.0", "redis": "docker.io/library/redis:7.4.2"}}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:  # argparse: usage and exit 2
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, out, err


def validator(path=SCHEMA):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def stored_levels(url, run_id):
    """(model, config, stack_factors, trial, concurrency) -> the level row's columns, for one stored run."""
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            rows = s.execute(select(Cell, LevelResult).join(LevelResult, LevelResult.cell_id == Cell.id).join(Run)
                             .where(Run.dag_run_id == run_id)).all()
            return {(c.model, c.config, c.stack_factors, c.trial, lv.concurrency):
                    ({k.name: getattr(lv, k.key) for k in LevelResult.__table__.columns},
                     {k.name: getattr(c, k.key) for k in Cell.__table__.columns}) for c, lv in rows}
    finally:
        engine.dispose()


def stored_observations(url, run_id):
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            rows = s.execute(select(Cell.config, Cell.trial, LevelObservation).join(Cell).join(Run)
                             .where(Run.dag_run_id == run_id)).all()
            return sorted((cfg, trial, o.concurrency, o.source, o.metric, o.value) for cfg, trial, o in rows)
    finally:
        engine.dispose()


@pytest.fixture
def stored_run(db_url, real_report, monkeypatch):
    """A Kubernetes-like run of two configurations (one with two trials) from a real GuideLLM report's levels, plus
    an invalid level, a suspect level and observations."""
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    report = parse_report_file(real_report)
    good = report.levels
    assert [lv.concurrency for lv in good] == [1, 4] and all(lv.valid for lv in good)
    bad = copy.deepcopy(good[1])
    bad.concurrency, bad.invalid_reason = 8, "error ratio 50.0% > 5%"
    run = db.RunInfo(campaign="llmd_tiny", dag_run_id="manual__bench", runtime="kubernetes", llmd_version="v0.4.0",
                     vllm_version="0.11.2", guidellm_version="0.8.1", llmd_bench_version="0.1.0",
                     images=VERSIONS["images"], params=PARAMS)
    observations = [(1, "vllm", "kv_cache_usage_perc", 0.25), (1, "vllm", "prefix_cache_hit_rate", 0.5),
                    (1, "vllm", "requests_running", 1.0), (1, "pcp", "gpu_mem_used_bytes", 3 * GIB),
                    (1, "pcp", "gpu_busy_pct", 61.5), (1, "epp", "index_lookups", 12.0), (4, "generator", "start_lag_pct", 9.5)]
    engine = db.make_engine(db_url)
    db.migrate(engine)
    try:
        with Session(engine) as s, s.begin():
            db.store_cell(s, run, db.CellInfo(
                model="Qwen/Qwen3-0.6B", short_model="Qwen3-0.6B", config="no-offload", trial=1, status="ok",
                stack_factors="replicas=2", factors={"replicas": 2}, replicas=2, tensor_parallel_size=1,
                versions=VERSIONS, config_effect={"verdict": "not applicable"}), good + [bad], observations,
                suspects={4: "the load generator fell 9.5% behind its schedule"})
            for trial in (1, 2):
                db.store_cell(s, run, db.CellInfo(
                    model="Qwen/Qwen3-0.6B", short_model="Qwen3-0.6B", config="llm-d-redis", trial=trial, status="ok",
                    stack_factors="replicas=2", factors={"replicas": 2}, replicas=2, tensor_parallel_size=1,
                    versions={**VERSIONS, "kv_backend": {"redis": "7.4.2"}}), good)
            db.finish_run(s, "llmd_tiny", "manual__bench", "ok")
    finally:
        engine.dispose()
    return db_url


def export(capsys, tmp_path, run_id="manual__bench", *extra):
    out = tmp_path / "br"
    rc, stdout, err = run_cli(capsys, "export", "--run-id", run_id, "--format", "benchmark-report", "--out", str(out),
                              *extra)
    assert rc == 0, stdout + err
    return out, stdout


def by_label(doc, label):
    return next(c for c in doc["scenario"]["stack"] if c["metadata"]["label"] == label)


def test_every_exported_file_validates_and_holds_the_stores_numbers(stored_run, capsys, tmp_path):
    out, stdout = export(capsys, tmp_path)
    files = sorted(out.glob("*.json"))
    # 2 valid levels x (no-offload trial 1, llm-d-redis trials 1 and 2); the invalid level is left out
    assert [f.name for f in files] == [f"Qwen--Qwen3-0.6B__{cell}__c{c}.json"
                                       for cell in ("llm-d-redis__replicas-2__trial1", "llm-d-redis__replicas-2__trial2",
                                                    "no-offload__replicas-2__trial1") for c in (1, 4)]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["files"] == 6 and summary["skipped_invalid_levels"] == 1 and summary["schema_version"] == "0.2"
    ours = validator()
    published = validator(PUBLISHED) if PUBLISHED.exists() else None
    store = stored_levels(stored_run, "manual__bench")
    uids = set()
    for f in files:
        doc = json.loads(f.read_text())
        assert list(ours.iter_errors(doc)) == [], f.name
        if published is not None:
            assert list(published.iter_errors(doc)) == [], f.name
        me = by_label(doc, "llmd-bench")["standardized"]
        level, cell = store[(me["model"], me["config"], me["stack_factors"], me["trial"], me["level"]["concurrency"])]
        agg = doc["results"]["request_performance"]["aggregate"]
        tput, lat, req = agg["throughput"], agg["latency"], agg["requests"]
        assert tput["output_token_rate"]["units"] == "tokens/s"
        assert tput["output_token_rate"]["mean"] == level["output_tps_mean"]
        assert tput["output_token_rate"]["p50"] == level["output_tps_median"]
        assert tput["output_token_rate"]["p99"] == level["output_tps_p99"]
        assert tput["output_token_rate"]["stddev"] == level["output_tps_std"]
        assert tput["request_rate"] == {**tput["request_rate"], "units": "queries/s", "mean": level["requests_per_s_mean"]}
        assert lat["time_to_first_token"]["units"] == "ms"
        assert lat["time_to_first_token"]["mean"] == level["ttft_ms_mean"]
        assert lat["time_to_first_token"]["p90"] == level["ttft_ms_p90"]
        assert lat["time_per_output_token"]["units"] == "ms/token"
        assert lat["time_per_output_token"]["mean"] == level["tpot_ms_mean"]
        assert lat["inter_token_latency"]["units"] == "ms/token"
        assert lat["inter_token_latency"]["mean"] == level["itl_ms_mean"]
        # seconds, as stored (GuideLLM's request_latency): not converted to ms
        assert lat["request_latency"]["units"] == "s"
        assert lat["request_latency"]["mean"] == level["request_latency_s_mean"] < 10
        assert req["total"] == level["requests_successful"] + level["requests_errored"] + level["requests_incomplete"]
        assert (req["failures"], req["incomplete"]) == (level["requests_errored"], level["requests_incomplete"])
        assert req["output_length"]["units"] == "count" and req["output_length"]["mean"] > 0
        assert datetime.fromisoformat(doc["run"]["time"]["start"]) == level["level_start"]
        assert datetime.fromisoformat(doc["run"]["time"]["end"]) == level["level_end"]
        assert br.parse_iso_duration(doc["run"]["time"]["duration"]) == pytest.approx(level["duration_s"], abs=1e-6)
        # the stack: the engine with its model, replicas and TP; llm-d with the configuration and what it sets
        engine = by_label(doc, "model-server")["standardized"]
        assert (engine["kind"], engine["tool"], engine["tool_version"]) == ("inference_engine", "vllm", "0.11.2")
        assert (engine["model"]["name"], engine["replicas"], engine["accelerator"]["parallelism"]["tp"]) == \
            ("Qwen/Qwen3-0.6B", 2, 1)
        assert engine["accelerator"]["model"] == ""  # not recorded: not made up
        llmd = by_label(doc, "llm-d")
        assert (llmd["standardized"]["tool_version"], llmd["standardized"]["configuration"]) == ("v0.4.0", cell["config"])
        assert llmd["standardized"]["factors"] == {"replicas": 2}
        assert llmd["native"]["config"]["images"]["vllm"] == "ghcr.io/llm-d/llm-d-cuda:v0.4.0"
        if cell["config"] == "llm-d-redis":
            assert llmd["native"]["config"]["configuration"]["router"] == {
                "prefix_scorer": "precise", "index": "redis", "weights": {"queue": 2, "kv_cache_utilization": 2, "prefix": 3}}
            assert by_label(doc, "kv-store")["standardized"]["tool_version"] == "7.4.2"
        # the load: GuideLLM at this level's concurrency, 2x prefix count resolved at the level
        load = doc["scenario"]["load"]["standardized"]
        c = me["level"]["concurrency"]
        assert (load["tool"], load["tool_version"], load["concurrency"], load["source"]) == ("guidellm", "0.8.1", c, "random")
        assert load["input_seq_len"] == {"distribution": "fixed", "value": 32}
        assert load["output_seq_len"]["value"] == 16 and "multi_turn" not in load
        assert load["prefix"]["prefix_len"]["value"] == 64 and load["prefix"]["num_prefixes"] == 2 * c
        assert doc["scenario"]["load"]["native"]["config"]["llmd_bench_params"]["seed"] == 889
        assert "llmd_tiny" in doc["run"]["description"] and "manual__bench" in doc["run"]["description"]
        uids.add(doc["run"]["uid"])
    assert len(uids) == len(files)
    # exporting again writes the same files, byte for byte
    first = {f.name: f.read_bytes() for f in files}
    out2, _ = export(capsys, tmp_path / "again")
    assert {f.name: f.read_bytes() for f in sorted(out2.glob("*.json"))} == first


def test_observations_go_where_the_schema_has_a_place_for_them(stored_run, capsys, tmp_path):
    out, _ = export(capsys, tmp_path)
    doc = json.loads((out / "Qwen--Qwen3-0.6B__no-offload__replicas-2__trial1__c1.json").read_text())
    obs = doc["results"]["observability"]
    agg = obs["components"][0]["aggregate"]
    assert obs["components"][0]["component_label"] == "model-server"
    assert agg["kv_cache_usage"] == {"units": "fraction", "mean": 0.25}
    assert agg["cache_hit_rate"] == {"units": "fraction", "mean": 0.5}
    assert agg["running_requests"] == {"units": "count", "mean": 1.0}
    assert agg["gpu_memory_usage"] == {"units": "GiB", "mean": 3.0}
    assert agg["gpu_utilization"] == {"units": "percent", "mean": 61.5}
    assert {"source": "epp", "metric": "index_lookups", "value": 12.0} in obs["llmd_bench_observations"]
    other = json.loads((out / "Qwen--Qwen3-0.6B__llm-d-redis__replicas-2__trial1__c1.json").read_text())
    assert "observability" not in other["results"]  # nothing measured: nothing written


def test_an_invalid_level_is_left_out_with_a_note_and_a_suspect_one_is_marked(stored_run, capsys, tmp_path):
    out, stdout = export(capsys, tmp_path)
    assert not list(out.glob("*__c8.json"))
    assert ("Qwen3-0.6B/no-offload [replicas=2] trial 1 concurrency 8: not exported, invalid level "
            "(error ratio 50.0% > 5%)") in stdout
    doc = json.loads((out / "Qwen--Qwen3-0.6B__no-offload__replicas-2__trial1__c4.json").read_text())
    assert "SUSPECT" in doc["run"]["description"] and "fell 9.5% behind" in doc["run"]["description"]
    assert by_label(doc, "llmd-bench")["standardized"]["level"]["suspect_reason"].startswith("the load generator")


def test_round_trip_under_another_run_id_keeps_every_key_metric(stored_run, capsys, tmp_path):
    out, _ = export(capsys, tmp_path)
    files = sorted(str(f) for f in out.glob("*.json"))
    rc, stdout, err = run_cli(capsys, "import", "--format", "benchmark-report", *files, "--run-id", "copy-1",
                              "--campaign", "llmd_tiny_copy")
    assert rc == 0, stdout + err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["run_id"], summary["cells"], summary["levels"], summary["files"]) == ("copy-1", 3, 6, 6)
    before, after = stored_levels(stored_run, "manual__bench"), stored_levels(stored_run, "copy-1")
    assert set(after) == {k for k, (lv, _) in before.items() if lv["valid"]}
    for key, (lv, cell) in after.items():
        orig, orig_cell = before[key]
        for metric in LEVEL_METRICS:
            for stat in LEVEL_STATS:
                assert lv[f"{metric}_{stat}"] == orig[f"{metric}_{stat}"], (key, metric, stat)
        for col in ("output_tps_std", "requests_successful", "requests_errored", "requests_incomplete", "valid",
                    "suspect_reason", "level_start", "level_end"):
            assert lv[col] == orig[col], (key, col)
        assert lv["duration_s"] == pytest.approx(orig["duration_s"], abs=1e-6)
        # the request-latency spread the report's peak table reads from the summary
        assert lv["summary"]["metrics"]["request_latency"]["successful"]["std_dev"] == \
            orig["summary"]["metrics"]["request_latency"]["successful"]["std_dev"]
        for col in ("short_model", "config_factors", "factors", "replicas", "tensor_parallel_size", "status", "versions",
                    "config_effect"):
            assert cell[col] == orig_cell[col], (key, col)
    assert stored_observations(stored_run, "copy-1") == stored_observations(stored_run, "manual__bench")
    engine = db.make_engine(stored_run)
    try:
        with Session(engine) as s:
            copied = s.execute(select(Run).where(Run.dag_run_id == "copy-1")).scalar_one()
            assert (copied.campaign, copied.runtime, copied.llmd_version, copied.vllm_version, copied.guidellm_version) == \
                ("llmd_tiny_copy", "kubernetes", "v0.4.0", "0.11.2", "0.8.1")
            assert copied.params["prefix_count"] == "2x" and len(copied.params["imported_from"]) == 6
            assert copied.images == VERSIONS["images"]
    finally:
        engine.dispose()
    # importing the same files again replaces, never duplicates
    rc, _, _ = run_cli(capsys, "import", "--format", "benchmark-report", *files, "--run-id", "copy-1",
                       "--campaign", "llmd_tiny_copy")
    assert rc == 0 and len(stored_levels(stored_run, "copy-1")) == 6


def test_an_imported_guidellm_run_exports_without_guessing_what_was_not_recorded(db_url, real_report, capsys, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    import_reports([real_report], "Qwen/Qwen3-8B", "native-offload", "v0.4.0", run_id="past-1", url=db_url)
    out, _ = export(capsys, tmp_path, "past-1", "--campaign", "imported")
    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == ["Qwen--Qwen3-8B__native-offload__trial1__c1.json",
                                       "Qwen--Qwen3-8B__native-offload__trial1__c4.json"]
    ours = validator()
    for f in files:
        doc = json.loads(f.read_text())
        assert list(ours.iter_errors(doc)) == []
        engine = by_label(doc, "model-server")["standardized"]
        # replicas and TP were not recorded for an imported report: no inference_engine with invented ones
        assert engine["kind"] == "generic" and "replicas" not in engine and engine["tool_version"] == "0.11.2"
        load = doc["scenario"]["load"]["standardized"]  # from the GuideLLM spec the report carried
        assert (load["input_seq_len"]["value"], load["output_seq_len"]["value"], load["prefix"]["num_prefixes"]) == (32, 16, 1)
        assert by_label(doc, "llm-d")["native"]["config"]["configuration"]["model_server"]["kv_offload"]


def test_command_line_errors_are_one_clear_line(stored_run, capsys, tmp_path, real_report):
    rc, _, err = run_cli(capsys, "export", "--run-id", "no-such-run", "--out", str(tmp_path / "x"))
    assert rc == 1 and "run 'no-such-run' is not in the results store" in err
    rc, _, err = run_cli(capsys, "export", "--run-id", "manual__bench", "--format", "csv", "--out", str(tmp_path / "x"))
    assert rc == 2 and "invalid choice: 'csv'" in err
    rc, _, err = run_cli(capsys, "import", "--format", "benchmark-report", str(tmp_path / "missing.json"))
    assert rc == 1 and f"{tmp_path / 'missing.json'}: not found" in err
    rc, _, err = run_cli(capsys, "import", "--format", "benchmark-report", str(real_report), "--model", "Qwen/Qwen3-8B")
    assert rc == 1 and "--model: not used with --format benchmark-report" in err
    # the GuideLLM format still needs its three options, refused as argparse refuses a missing option
    rc, _, err = run_cli(capsys, "import", str(real_report), "--model", "Qwen/Qwen3-8B")
    assert rc == 2 and "the following arguments are required with --format guidellm: --config, --llmd-version" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda doc: by_label(doc, "llmd-bench")["standardized"].update(cell_reason=5),
     "the llmd-bench component's `cell_reason`: Input should be a valid string (got 5)"),
    (lambda doc: by_label(doc, "llmd-bench")["standardized"].update(factors=["replicas=2"]),
     "the llmd-bench component's `factors`: Input should be a valid dictionary (got ['replicas=2'])"),
    (lambda doc: doc["scenario"]["load"]["native"]["config"]["llmd_bench_params"].update(tensor_parallel_size="two"),
     "scenario.load.native.config.llmd_bench_params: `tensor_parallel_size`: Input should be a valid integer"),
], ids=["cell-reason-not-text", "factors-not-a-mapping", "params-of-the-wrong-type"])
def test_import_refuses_a_value_the_store_cannot_hold_naming_the_file_and_field(stored_run, capsys, tmp_path, edit,
                                                                                 needle):
    """The store's rows are typed: a value of the wrong type is refused before anything is written, never stored as
    whatever the database makes of it (a number stored as a reason's text, a list as a cell's factor values)."""
    out, _ = export(capsys, tmp_path)
    files = sorted(out.glob("*.json"))
    doc = json.loads(files[0].read_text())
    edit(doc)
    assert list(validator().iter_errors(doc)) == []  # a valid v0.2 report: only the store's types refuse it
    files[0].write_text(json.dumps(doc))
    before = _store_rows(stored_run)
    rc, stdout, err = run_cli(capsys, "import", "--format", "benchmark-report", *map(str, files), "--run-id", "typed",
                              "--campaign", "llmd_tiny_copy")
    assert rc == 1 and err.count("\n") == 1, stdout + err
    assert f"Benchmark Report {files[0]}: {needle}" in err, err
    assert _store_rows(stored_run) == before


def _store_rows(url):
    """Every run, cell and level row in the store (what a refused import must leave as it was)."""
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            return (sorted((r.campaign, r.dag_run_id, r.llmd_version) for r in s.execute(select(Run)).scalars()),
                    sorted((c.model, c.config, c.trial) for c in s.execute(select(Cell)).scalars()),
                    len(s.execute(select(LevelResult)).scalars().all()))
    finally:
        engine.dispose()


@pytest.mark.parametrize("edit, needles", [
    (lambda doc: by_label(doc, "llmd-bench")["standardized"].update(model="x'; DROP TABLE runs;--"),
     ["the llmd-bench component's `model`: \"x'; DROP TABLE runs;--\" is not a Hugging Face model id: owner/name"]),
    (lambda doc: by_label(doc, "llmd-bench")["standardized"].update(model="Qwen3-0.6B"),
     ["the llmd-bench component's `model`: 'Qwen3-0.6B' is not a Hugging Face model id"]),
    (lambda doc: by_label(doc, "llm-d")["standardized"].update(tool_version="v0.3.1"),
     ["llm-d version 'v0.3.1' (the `llm-d` stack component's tool_version, else the llmd-bench component's "
      "versions.llmd) is not in the version catalog", "versions.yaml",
      "allowed: ['v0.4.0', 'v0.5.0'"]),
    (lambda doc: (by_label(doc, "llm-d")["standardized"].update(tool_version=""),
                  by_label(doc, "llmd-bench")["standardized"]["versions"].pop("llmd")),
     ["no llm-d version (the `llm-d` stack component's tool_version", "allowed: ['v0.4.0'"]),
], ids=["sql-in-model-id", "model-without-owner", "llmd-version-not-in-catalog", "no-llmd-version"])
def test_import_refuses_a_bad_model_id_or_llmd_version_naming_the_file_and_stores_nothing(
        stored_run, capsys, tmp_path, edit, needles):
    out, _ = export(capsys, tmp_path)
    files = sorted(out.glob("*.json"))
    doc = json.loads(files[-1].read_text())
    edit(doc)
    assert list(validator().iter_errors(doc)) == []  # a valid v0.2 report: only our check can refuse it
    files[-1].write_text(json.dumps(doc))
    before = _store_rows(stored_run)
    rc, stdout, err = run_cli(capsys, "import", "--format", "benchmark-report", *map(str, files), "--run-id", "bad",
                              "--campaign", "llmd_tiny_copy")
    assert rc == 1 and err.count("\n") == 1, stdout + err
    assert f"Benchmark Report {files[-1]}: " in err, err
    for needle in needles:
        assert needle in err, err
    assert _store_rows(stored_run) == before  # the good files before it are not stored either
