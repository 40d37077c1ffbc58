"""Bad input from users, across campaign files, run params, the version catalog, metrics CSVs, GuideLLM
reports and command arguments: each case ends with one clear message naming the file or field (and the
allowed values where there are some), no traceback, and nothing written."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench import cli


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:  # argparse: usage and exit 2
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, out + err


# -- run params -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, needles", [
    ({"trial_isolation": "sometimes"}, ["param `trial_isolation`", "allowed: ['redeploy', 'same-server']"]),
    ({"noise_floor_pct": -1}, ["param `noise_floor_pct`", "a percentage from 0 to 100"]),
    ({"trials": 0}, ["param `trials`"]),
    ({"replicas": 0}, ["param `replicas`"]),
    ({"tensor_parallel_size": "two"}, ["param `tensor_parallel_size`"]),
    ({"prefix_tokens": -1}, ["param `prefix_tokens`"]),
    ("{not json", ["--params", "JSON"]),
    ("[1, 2]", ["--params", "object"]),
])
def test_bad_run_params_stop_a_step_before_it_starts_anything(campaigns_dir, results_dir, capsys, params, needles):
    write_campaign(campaigns_dir, tiny_campaign())
    raw = params if isinstance(params, str) else json.dumps(params)
    rc, text = run_cli(capsys, "deploy", "--campaign", "tiny", "--run-id", "bad-params", "--model", "Qwen/Qwen3-0.6B",
                       "--config", "no-offload", "--params", raw)
    assert rc == 1
    for needle in needles:
        assert needle in text, text
    assert not results_dir.exists() or not any(results_dir.rglob("runtime.json"))  # nothing was started


# -- the version catalog ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, needles", [
    ("versions: [unclosed", ["not valid YAML"]),
    ("- v0.4.0\n", ["expected a mapping `versions:"]),
    ("versions:\n  v0.4.0:\n    vllm_version: '0.11.2'\n", ["entry v0.4.0", "images: missing ['vllm', 'epp'"]),
])
def test_a_bad_version_catalog_names_the_file_and_entry(tmp_path, campaigns_dir, capsys, monkeypatch, content, needles):
    catalog = tmp_path / "versions.yaml"
    catalog.write_text(content)
    monkeypatch.setenv("LLMD_BENCH_CATALOG", str(catalog))
    write_campaign(campaigns_dir, tiny_campaign())
    rc, text = run_cli(capsys, "render", "--campaign", "tiny", "--model", "Qwen/Qwen3-0.6B", "--config", "no-offload",
                       "--out", str(tmp_path / "out"))
    assert rc == 1 and str(catalog) in text
    for needle in needles:
        assert needle in text, text
    assert not (tmp_path / "out").exists()


# -- metrics CSVs for `report --from-csv` --------------------------------------------------------------------
HEADER = "model,config,concurrency,output_tps_mean,ttft_mean_ms,tpot_mean_ms,requests_successful,requests_errored\n"


@pytest.mark.parametrize("files, needles", [
    ({"M_no-offload_metrics.csv": "model,config,concurrency\nM,no-offload,1\n"}, ["missing column(s)", "output_tps_mean"]),
    ({"M_no-offload_metrics.csv": HEADER + "M,no-offload,lots,10,1,1,10,0\n"}, ["column `concurrency`", "integers >= 1"]),
    ({"M_no-offload_metrics.csv": HEADER}, ["no rows"]),
    ({"M_no-offload_metrics.csv": b"\x00\xff\xfe binary"}, ["M_no-offload_metrics.csv"]),
    ({"notes.txt": "nothing here"}, ["no <model>_<config>_metrics.csv files"]),
])
def test_bad_metrics_csvs_name_the_file_and_write_no_report(tmp_path, capsys, files, needles):
    src = tmp_path / "csv"
    src.mkdir()
    for name, content in files.items():
        (src / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, text = run_cli(capsys, "report", "--from-csv", str(src), "--out", str(tmp_path / "out"))
    assert rc == 1
    for needle in needles:
        assert needle in text, text
    assert not (tmp_path / "out").exists()


def test_impossible_csv_values_are_marked_invalid_with_the_reason(tmp_path):
    from llmd_bench import report as rpt
    from llmd_bench.report.data import from_csv_dir

    src = tmp_path / "csv"
    src.mkdir()
    (src / "M_no-offload_metrics.csv").write_text(HEADER + "M,no-offload,1,100,10,2,50,0\nM,no-offload,8,-700,10,2,50,0\n")
    data = from_csv_dir(src)
    bad = data.levels[data.levels["concurrency"] == 8].iloc[0]
    assert not bad["valid"] and bad["invalid_reason"] == "impossible negative values: output_tps_mean"
    peaks = rpt.build(data).peaks.set_index("config")
    assert peaks.loc["no-offload", "optimal_concurrency"] == 1  # never a peak from an impossible level


# -- GuideLLM reports: physically impossible levels are stored as invalid, with the reason --------------------
@pytest.mark.parametrize("breakage, reason", [
    (lambda b: b["metrics"]["request_totals"].update(successful=b["metrics"]["request_totals"]["total"] + 5),
     "impossible counts"),
    (lambda b: b.update(duration=b["duration"] + 60), "impossible window: a duration of"),
])
def test_impossible_guidellm_levels_are_invalid_with_the_reason(real_report, tmp_path, breakage, reason):
    from llmd_bench.measure.guidellm_report import parse_report_file

    doc = json.loads(real_report.read_text())
    breakage(doc["benchmarks"][0])
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    level = parse_report_file(path).levels[0]
    assert not level.valid and reason in level.invalid_reason


# -- command arguments -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, rc, needles", [
    (["report", "--from-csv", "x"], 2, ["--out"]),
    (["db", "frobnicate"], 2, ["invalid choice: 'frobnicate'", "start"]),
    (["preflight", "--skip", "gpus"], 2, ["invalid choice: 'gpus'", "nodes"]),
    (["import", "/nonexistent/report.json", "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
      "--llmd-version", "v0.4.0"], 1, ["/nonexistent/report.json: not found"]),
    (["import", str(REFERENCE), "--model", "Qwen/Qwen3-8B", "--config", "bogus", "--llmd-version", "v0.4.0"], 1,
     ["--config 'bogus' is not in the configuration catalog", "no-offload"]),
    (["render", "--model", "Qwen/Qwen3-70B", "--config", "no-offload", "--out", "/tmp/never-written-llmd"], 1,
     ["model 'Qwen/Qwen3-70B' is not in campaign llmd_kv_cache_eval", "allowed: ['Qwen/Qwen3-0.6B'"]),
    (["sweep", "--campaign", "no-such-campaign", "--run-id", "r", "--model", "M", "--config", "no-offload"], 1,
     ["campaign 'no-such-campaign' not found", "available:"]),
])
def test_bad_command_arguments_get_one_clear_message(capsys, results_dir, argv, rc, needles):
    got, text = run_cli(capsys, *argv)
    assert got == rc
    for needle in needles:
        assert needle in text, text


def test_the_campaign_files_shipped_are_valid(capsys):
    rc, text = run_cli(capsys, "validate-campaign", str(REFERENCE))
    assert rc == 0 and "16 cells" in text
    assert yaml.safe_load(REFERENCE.read_text())["dag_id"] in text
