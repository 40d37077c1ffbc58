"""design: aba against PostgreSQL: load_results stores the baseline's repeat as the baseline's trials after the run's
`trials`, deploy's "already stored" check counts them, and the report built from the store keeps them out of the
peaks and shows the drift."""

from __future__ import annotations

import json

from conftest import tiny_campaign, write_campaign
from llmd_bench import report as rpt
from llmd_bench.model import catalog, design
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.report.data import from_store
from llmd_bench.stack.context import StepContext
from llmd_bench.steps import deploy, load_results
from llmd_bench.store import db
from llmd_bench.store.read import read_stored_run


def _measured(ctx: StepContext, report: dict) -> None:
    """What the cell's earlier steps leave for load_results: its record and its trial's GuideLLM report."""
    with ctx.update_record():
        pass
    path = ctx.folder.trial_report(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def test_the_repeat_is_stored_as_the_baselines_next_trial_and_the_report_shows_the_drift(
        db_url, real_report, campaigns_dir, results_dir, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)  # the steps' store: this test's database
    # the committed report's levels are 1 and 4 streams of 2 s
    campaign = load_campaign(write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload", "llm-d-redis"],
                                                                         design="aba")))
    params = resolve_params(campaign, {}, catalog.known_versions())
    first = json.loads(real_report.read_text())
    last = json.loads(real_report.read_text())
    for bench in last["benchmarks"]:  # the baseline 10 % slower when it runs again
        bench["metrics"]["output_tokens_per_second"]["successful"]["mean"] *= 0.9
    base, redis = Cell("Qwen/Qwen3-0.6B", "no-offload"), Cell("Qwen/Qwen3-0.6B", "llm-d-redis")
    contexts = {c: StepContext(campaign, params, "aba-1", "local", c)
                for c in (base, redis, design.repeat_of(base, params.baseline))}
    for cell, ctx in contexts.items():
        _measured(ctx, last if isinstance(cell, design.RepeatCell) else first)
    repeat_ctx = contexts[design.repeat_of(base, params.baseline)]
    load_results.run(contexts[base])
    # the baseline's first run is stored: the repeat still has to run
    assert not deploy.already_stored(repeat_ctx)
    load_results.run(contexts[redis])
    load_results.run(repeat_ctx)
    assert deploy.already_stored(repeat_ctx) and deploy.already_stored(contexts[base])

    stored = read_stored_run("aba-1", url=db_url)
    trials = sorted((c.cell.config, c.cell.trial, c.cell.report_path.split("/")[-3]) for c in stored.cells)
    assert trials == [("llm-d-redis", 1, "llm-d-redis"), ("no-offload", 1, "no-offload"),
                      ("no-offload", 2, "no-offload__repeat")]
    assert json.loads(repeat_ctx.record_path.read_text())["repeat"]["stored_as_trials"] == [2]

    engine = db.make_engine(db_url)
    try:
        r = rpt.build(from_store(engine, "aba-1", campaign.dag_id))
    finally:
        engine.dispose()
    peaks = r.peaks.set_index("config")
    assert peaks.loc["no-offload", "trials"] == 1  # the repeat is not a trial of this run's peak
    assert peaks.loc["no-offload", "peak_output_tps"] == peaks.loc["llm-d-redis", "peak_output_tps"]
    assert round(float(peaks.loc["no-offload", "drift_pct"]), 1) == -10.0
    md = rpt.render_report(r, {})[0]
    assert "-10.0 %: the floor for Qwen3-0.6B's comparisons is 5 % -> 15.0 %." in md
    assert r.comparisons.set_index("config").loc["llm-d-redis", "judgement"] == "within noise"
