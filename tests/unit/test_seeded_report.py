"""The report of a seeded sweep (#26): which levels were seeded from what, which were not run and why a full grid ran,
from typed rows (the cells' stored decisions as the sweep records them), in Markdown, HTML and the per-cell CSVs."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from llmd_bench.measure import seeded
from llmd_bench.measure.adaptive import LevelOutcome
from llmd_bench.measure.sweep_core import SeededDecisions
from llmd_bench.report import build, render_report, write
from llmd_bench.report.analysis import normalize_levels
from llmd_bench.report.data import CELL_COLUMNS, ReportInput

GRID = [1, 50, 100, 150, 300, 400]
AT = datetime(2026, 11, 30, 9, tzinfo=UTC)
OLD_STACK = seeded.StackFingerprint(images=("vllm@sha256:aa",), vllm_versions=("0.11.2",))
NEW_STACK = seeded.StackFingerprint(images=("vllm@sha256:aa",), vllm_versions=("0.12.0",))


def _rises_to(peak: int) -> dict[int, float]:
    """Output tok/s rising to `peak` streams, then falling 20 % per 100 streams."""
    return {c: 10.0 * c if c <= peak else 10.0 * peak * (1 - 0.2 * (c - peak) / 100) for c in range(1, 500)}


def _swept(decision: seeded.SeedDecision, curve: dict[int, float]) -> dict:
    """Drive a seeded sweep on `curve` the way the sweep core does; its trial-1 record as the store keeps it."""
    sweep = seeded.SeededSweep(list(GRID), decision, noise_floor_pct=5.0)
    runs = []
    while (wanted := sweep.next_levels()) is not None:
        runs.append(wanted)
        for c in wanted[0]:
            sweep.observe(LevelOutcome(c, curve[c]))
    return SeededDecisions.model_validate(sweep.summary(runs), strict=False).model_dump(mode="json")


def _past(run: str, peak: int, stack: seeded.StackFingerprint | None = None, mode: str = "bracket") -> seeded.PastSweep:
    return seeded.PastSweep(dag_run_id=run, llmd_version="v0.4.0", cell="Qwen3-8B / no-offload", at=AT, mode=mode,
                            peak=peak, stack=stack)


@pytest.fixture(scope="module")
def decided() -> dict[str, dict]:
    # moved system: seeded at 100, the peak now at 300; the bracket 50, 100, 150 widens up to 300 and 400
    bracket = seeded.decide_seed(seeded.SeedSources(same_cell=(_past("weekly-47", 100, mode="full-grid"),)), None, 4)
    # the same cell, but vLLM changed since its last run: the full grid
    full = seeded.decide_seed(seeded.SeedSources(same_cell=(_past("weekly-47", 100, OLD_STACK),)), NEW_STACK, 4)
    # nothing stored to seed from: adaptive from scratch, stopping past the peak at 100
    scratch = seeded.decide_seed(seeded.SeedSources(), None, 4)
    assert (bracket.mode, full.mode, scratch.mode) == ("bracket", "full-grid", "adaptive")
    return {"no-offload": _swept(bracket, _rises_to(300)), "llm-d-redis": _swept(full, _rises_to(100)),
            "llm-d-valkey": _swept(scratch, _rises_to(100))}


@pytest.fixture(scope="module")
def report(decided):
    curves = {"no-offload": _rises_to(300), "llm-d-redis": _rises_to(100), "llm-d-valkey": _rises_to(100)}
    levels = normalize_levels(pd.DataFrame([
        {"model": "Qwen3-8B", "config": config, "trial": 1, "concurrency": c, "output_tps_mean": curves[config][c],
         "ttft_mean_ms": 40.0, "tpot_mean_ms": 8.0, "requests_successful": 400, "requests_errored": 0, "valid": True}
        for config, s in decided.items() for c in s["run"]]))
    cells = pd.DataFrame([{"model": "Qwen3-8B", "full_model": "Qwen/Qwen3-8B", "config": config, "status": "ok",
                           "reason": None, "replicas": 1, "config_effect": "n/a", "config_effect_evidence": "",
                           "configuration": config, "factors": {}, "sweep": s} for config, s in decided.items()],
                         columns=CELL_COLUMNS)
    return build(ReportInput(campaign="c", run_id="weekly-48", runtime="local", levels=levels, cells=cells,
                             params={"concurrency": GRID, "sweep": "seeded"}))


def _row(section: str, config: str) -> list[str]:
    line = next(x for x in section.splitlines() if x.startswith(f"| Qwen3-8B | {config} |"))
    return [c.strip() for c in line.strip("|").split("|")]


HEADER = ["Model", "Config", "Mode", "Seeded from", "Bracket", "Widened", "Refined", "Measured", "Peak at", "Not run",
          "Why"]


def test_the_seeded_section_says_what_each_cell_was_seeded_from_what_it_skipped_and_why(decided, report):
    md, html = render_report(report, {})
    section = md.split("## Seeded sweeps")[1].split("\n## ")[0]
    assert "## Adaptive sweep" not in md  # a seeded sweep's cells, its adaptive-mode one too, are listed here only
    bracket = dict(zip(HEADER, _row(section, "no-offload"), strict=True))
    assert bracket["Mode"] == "bracket"
    assert bracket["Seeded from"] == ("this cell's last run: run weekly-47, llm-d v0.4.0, Qwen3-8B / no-offload, "
                                      "peak at 100")
    assert bracket["Bracket"] == "50, 100, 150"
    # the peak sat at the bracket's upper edge: widened up until a level fell (400), then refined as the peak moved
    assert bracket["Widened"] == "up: 300, 400" and bracket["Refined"] == "350"
    assert bracket["Peak at"] == "300 (moved from 100)"
    assert bracket["Not run"] == "1: not run (seeded bracket)"
    assert "bracket run 1 of 3, the full grid again in 3 run(s)" in bracket["Why"]

    full = dict(zip(HEADER, _row(section, "llm-d-redis"), strict=True))
    assert full["Mode"] == "full-grid" and full["Seeded from"] == "-" and full["Bracket"] == "-"
    assert full["Why"] == "the served stack changed since run weekly-47: vLLM version 0.11.2 -> 0.12.0"
    # every grid level and the refinement beside the peak; nothing left out
    assert full["Measured"] == "1, 50, 100, 125, 150, 300, 400" and full["Refined"] == "125" and full["Not run"] == "-"

    scratch = dict(zip(HEADER, _row(section, "llm-d-valkey"), strict=True))
    assert scratch["Mode"] == "adaptive" and scratch["Seeded from"] == "-"
    assert scratch["Not run"] == "300, 400: not run (past saturation)"
    assert scratch["Why"].startswith("no stored run of this cell") and "stopped after 150" in scratch["Why"]

    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert ("Seeded sweep: 1 cell(s) measured a bracket around their last peak, 1 the full grid, 1 an adaptive sweep "
            "(see Seeded sweeps).") in summary
    # the HTML report is built from the same document
    assert "Seeded sweeps</h2>" in html and "up: 300, 400" in html and "1: not run (seeded bracket)" in html
    assert "vLLM version 0.11.2 -&gt; 0.12.0" in html


def test_levels_a_seeded_sweep_did_not_run_have_rows_named_by_its_reason_and_no_number(report, tmp_path):
    write(report, tmp_path)
    bracket = pd.read_csv(tmp_path / "Qwen3-8B_no-offload_metrics.csv")
    skipped = bracket[bracket["concurrency"] == 1].iloc[0]
    assert skipped["invalid_reason"] == "not run (seeded bracket)" and not skipped["valid"]
    assert skipped[["output_tps_mean", "ttft_mean_ms", "requests_successful"]].isna().all()
    assert sorted(bracket["concurrency"]) == [1, 50, 100, 150, 300, 350, 400]  # every grid level, the refinement too
    scratch = pd.read_csv(tmp_path / "Qwen3-8B_llm-d-valkey_metrics.csv")
    past = scratch[scratch["concurrency"].isin([300, 400])]
    assert list(past["invalid_reason"]) == ["not run (past saturation)"] * 2 and past["output_tps_mean"].isna().all()
    full = pd.read_csv(tmp_path / "Qwen3-8B_llm-d-redis_metrics.csv")
    assert full["invalid_reason"].isna().all()  # a full grid leaves nothing out
    # the peaks come from measured levels only
    assert list(report.peaks["optimal_concurrency"]) == [300, 100, 100]


def test_a_run_without_sweep_seeded_has_no_seeded_summary_line(decided, report):
    plain = build(ReportInput(campaign="c", run_id="r", runtime="local", levels=report.data.levels,
                              cells=report.data.cells, params={"concurrency": GRID, "sweep": "grid"}))
    md, _ = render_report(plain, {})
    assert "Seeded sweep:" not in md.split("## Summary")[1].split("\n## ")[0]
