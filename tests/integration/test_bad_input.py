"""Bad input from users, across campaign files, run params, the version catalog, metrics CSVs, GuideLLM
reports and command arguments: each case ends with one clear message naming the file or field (and the
allowed values where there are some), no traceback, and nothing written.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_bad_input.py.
"""

from __future__ import annotations

import json

import pytest

from conftest import tiny_campaign, write_campaign
from unit.test_bad_input import run_cli


# -- campaign files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mutate, needles", [
    (lambda d: d.update(trials=0), ["field `trials`", "greater than 0"]),
    (lambda d: d.update(trial_isolation="sometimes"), ["field `trial_isolation`", "'redeploy' or 'same-server'"]),
    (lambda d: d.update(noise_floor_pct=150), ["field `noise_floor_pct`", "less than or equal to 100"]),
    (lambda d: d["serving"].update(gpu_memory_utilization=1.5), ["field `serving.gpu_memory_utilization`"]),
    (lambda d: d["serving"].update(block_size=0), ["field `serving.block_size`", "greater than 0"]),
    (lambda d: d["serving"].update(memory_headroom_pct=500), ["field `serving.memory_headroom_pct`"]),
    (lambda d: d["serving"].update(registry_mirrors="ghcr.io"), ["field `serving.registry_mirrors`"]),
    (lambda d: d.update(configs=["no-offload", "no-offload"]), ["field `configs`", "configs must be unique"]),
    (lambda d: d.update(models=[{"name": "Qwen/Qwen3-8B"}, {"name": "Qwen/Qwen3-8B"}]), ["must be unique"]),
    (lambda d: d.update(models=[]), ["field `models`", "at least 1 item"]),
    (lambda d: d["workload"].update(turns=0), ["field `workload.turns`", "greater than 0"]),
    (lambda d: d.update(schedule="every tuesday-ish"), ["field `schedule`", "not a schedule", "@weekly"]),
])
def test_a_bad_campaign_file_names_the_file_and_field(tmp_path, capsys, mutate, needles):
    doc = tiny_campaign()
    mutate(doc)
    path = write_campaign(tmp_path, doc)
    rc, text = run_cli(capsys, "validate-campaign", str(path))
    assert rc == 1 and str(path) in text
    for needle in needles:
        assert needle in text


# -- `import`: a model id that is not a Hugging Face one, an llm-d release not in the catalog, a report with numbers
# GuideLLM cannot have written: one clear message, and the results store exactly as it was -------------------------
def _store_contents(url):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from llmd_bench.store import db
    from llmd_bench.store.schema import Cell, LevelResult, Run

    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            return (sorted((r.campaign, r.dag_run_id, r.llmd_version) for r in s.execute(select(Run)).scalars()),
                    sorted((c.model, c.config, c.trial) for c in s.execute(select(Cell)).scalars()),
                    len(s.execute(select(LevelResult)).scalars().all()))
    finally:
        engine.dispose()


def _edited_report(real_report, tmp_path, edit):
    """The real report with its level at concurrency 4 edited in place by `edit`."""
    doc = json.loads(real_report.read_text())
    assert doc["benchmarks"][1]["config"]["strategy"]["streams"] == 4
    edit(doc["benchmarks"][1])
    path = tmp_path / "edited.json"
    # JSON has no Infinity, but a number past the float range reads as one: 1e308 is written 1e999
    path.write_text(json.dumps(doc).replace("1e+308", "1e999"))
    return path


def _tps(bench):
    return bench["metrics"]["output_tokens_per_second"]["successful"]


def _ttft_p95_past_the_float_range(bench):
    bench["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"]["p95"] = 1e308


@pytest.mark.parametrize("model, llmd_version, edit, needles", [
    ("x'; DROP TABLE runs;--", "v0.4.0", None,
     ["--model: \"x'; DROP TABLE runs;--\" is not a Hugging Face model id: owner/name (e.g. Qwen/Qwen3-8B)"]),
    ("Qwen3-8B", "v0.4.0", None, ["--model: 'Qwen3-8B' is not a Hugging Face model id: owner/name"]),
    ("Qwen/Qwen3--8B", "v0.4.0", None, ["'Qwen/Qwen3--8B' is not a Hugging Face model id", "no '--' or '..'"]),
    ("Qwen/Qwen3-8B", "v0.3.1", None,
     ["--llmd-version 'v0.3.1' is not in the version catalog", "versions.yaml", "allowed: ['v0.4.0', 'v0.5.0'"]),
    ("Qwen/Qwen3-8B", "v0.4.0", lambda b: _tps(b).update(mean=-700.0),
     ["(level at concurrency 4): `benchmarks[1].metrics.output_tokens_per_second.successful.mean` is -700.0; "
      "impossible: output_tokens_per_second is never negative"]),
    ("Qwen/Qwen3-8B", "v0.4.0", lambda b: _tps(b)["percentiles"].update(p50=_tps(b)["percentiles"]["p99"] + 1),
     ["(level at concurrency 4): `benchmarks[1].metrics.output_tokens_per_second.successful.percentiles.p50` is ",
      "percentiles out of order"]),
    ("Qwen/Qwen3-8B", "v0.4.0", lambda b: b["metrics"]["request_totals"].update(successful=-3),
     ["(level at concurrency 4): `benchmarks[1].metrics.request_totals.successful` is -3, expected a count >= 0"]),
    ("Qwen/Qwen3-8B", "v0.4.0", _ttft_p95_past_the_float_range,
     ["(level at concurrency 4): `benchmarks[1].metrics.time_to_first_token_ms.successful.percentiles.p95` is not "
      "finite (inf)"]),
], ids=["sql-in-model-id", "model-without-owner", "model-with-double-dash", "llmd-version-not-in-catalog",
        "negative-output-rate", "p50-above-p99", "negative-successful-count", "non-finite-latency"])
def test_import_refuses_bad_input_and_leaves_the_store_as_it_was(real_report, tmp_path, capsys, monkeypatch, db_url,
                                                                  model, llmd_version, edit, needles):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    assert run_cli(capsys, "import", str(real_report), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                   "--llmd-version", "v0.4.0", "--run-id", "before")[0] == 0
    before = _store_contents(db_url)
    files = [str(real_report)]  # a good report first: nothing of it may be stored either
    if edit is not None:
        files.append(str(_edited_report(real_report, tmp_path, edit)))
    rc, text = run_cli(capsys, "import", *files, "--model", model, "--config", "no-offload", "--llmd-version",
                       llmd_version, "--run-id", "bad")
    assert rc == 1, text
    for needle in needles:
        assert needle in text, text
    if edit is not None:
        assert f"GuideLLM report {files[-1]} (level at concurrency 4): " in text
    assert _store_contents(db_url) == before
