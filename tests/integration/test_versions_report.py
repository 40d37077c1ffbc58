"""llm-d versions in the report, against PostgreSQL with levels made of a real GuideLLM 0.8.1 report: a version is
judged against OLDER versions only (newer ones are context, never a regression), the cross-version section's count
of regressions and the summary's agree (and what is stored for notify), each configuration's effect by llm-d version
with its changes judged against noise and the catalog's policy changes beside, and `llmd-bench compare-runs`."""

from __future__ import annotations

import json
import re

import pytest

from llmd_bench import cli
from llmd_bench.report import compare_runs
from llmd_bench.report.analysis import build
from llmd_bench.report.data import from_store
from llmd_bench.report.generate import generate_report
from llmd_bench.report.versions import effect_by_version
from llmd_bench.store import db
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams
from stored_levels import levels_at

PARAMS = {"concurrency": [1, 2], "duration_s": 2, "prompt_tokens": 64, "output_tokens": 32, "prefix_tokens": 256,
          "turns": 1, "tensor_parallel_size": 1, "replicas": 1}


def _store(db_url, real_report, run_id: str, version: str, peaks: dict[str, float], campaign: str = "weekly",
           runtime: str = "kubernetes", params: dict | None = None) -> None:
    """One run: a cell per configuration whose peak (at concurrency 1) is the given output tokens/s."""
    run = RunInfo(campaign=campaign, dag_run_id=run_id, runtime=runtime, llmd_version=version, vllm_version=None,
                  guidellm_version="0.8.1", llmd_bench_version="test", images={},
                  params=StoredRunParams.model_validate({**PARAMS, **(params or {}), "llmd_version": version}))

    def load(w: db.Writer) -> None:
        for config, tps in peaks.items():
            cell = CellInfo(model="Qwen/Qwen3-8B", short_model="Qwen3-8B", config=config, trial=1, status="ok",
                            replicas=1, tensor_parallel_size=1)
            w.store_cell(run, cell, levels_at(real_report, {1: tps, 2: tps * 0.6}))

    db.in_transaction(load, "test", db_url)


def _report(db_url, run_id: str, campaign: str = "weekly"):
    return build(db.with_engine(lambda engine: from_store(engine, run_id, campaign), "test", db_url))


# llm-d-redis: +30 % per release but v0.6.0, 30 % below v0.4.0 (a real regression against three older releases)
FIVE = {"v0.4.0": 100.0, "v0.5.0": 130.0, "v0.5.1": 160.0, "v0.6.0": 70.0, "v0.7.0": 200.0}


@pytest.fixture
def five_versions(db_url, real_report, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    for version, redis in FIVE.items():
        _store(db_url, real_report, f"run-{version}", version, {"no-offload": 100.0, "llm-d-redis": redis})
    return db_url


def _counts(md: str) -> tuple[str, str]:
    section = md.split("## Across llm-d versions", 1)[1].split("\n## ", 1)[0]
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    return section, summary


def test_an_older_version_calls_no_regression_against_newer_ones_and_the_counts_agree(five_versions, tmp_path):
    oldest = generate_report("run-v0.4.0", tmp_path / "old", campaign="weekly", store=True)
    cv = oldest.cross_version
    assert set(cv["relation"]) == {"newer"} and len(cv) == 8  # 2 cells x 4 newer versions
    assert "REGRESSION" not in set(cv["judgement"]) and oldest.regressions == []
    redis = cv[cv["config"] == "llm-d-redis"].set_index("other_version")
    assert redis.loc["v0.5.0", "judgement"] == "lower (context: newer version)"
    assert redis.loc["v0.6.0", "judgement"] == "higher (context: newer version)"  # v0.6.0 regressed, v0.4.0 did not
    md = (tmp_path / "old" / "report.md").read_text()
    section, summary = _counts(md)
    assert "No regression beyond noise against older versions." in section
    assert "No regression beyond noise against older llm-d versions or the previous run." in summary
    assert "REGRESSION" not in md.split("## Across llm-d versions", 1)[1].split("\n## Since", 1)[0].split("An OLDER")[1] \
        .split("\n", 1)[1]  # no row of the table says it
    assert db.stored_regressions("weekly", "run-v0.4.0", five_versions) == []

    # v0.6.0 is slower than the three releases before it (regressions) and than v0.7.0 (context)
    middle = generate_report("run-v0.6.0", tmp_path / "mid", campaign="weekly", store=True)
    redis = middle.cross_version[middle.cross_version["config"] == "llm-d-redis"].set_index("other_version")
    assert list(redis["judgement"]) == ["REGRESSION"] * 3 + ["lower (context: newer version)"]
    assert list(redis["relation"]) == ["older"] * 3 + ["newer"]
    assert redis.loc["v0.4.0", "change_pct"] == pytest.approx(-30)
    section, summary = _counts((tmp_path / "mid" / "report.md").read_text())
    assert "**3 regression(s) beyond noise against older versions.**" in section
    assert "**3 regression(s) beyond noise** (3 against older llm-d versions):" in summary
    assert len(db.stored_regressions("weekly", "run-v0.6.0", five_versions)) == 3  # what notify sends

    newest = generate_report("run-v0.7.0", tmp_path / "new", campaign="weekly")
    assert set(newest.cross_version["relation"]) == {"older"} and newest.regressions == []
    assert set(newest.cross_version[newest.cross_version["config"] == "llm-d-redis"]["judgement"]) == {"improvement"}


# The evaluation's own numbers: native offload on Qwen3-8B -6.5 % at v0.6.0, -39.9 % at v0.7.0 (then -43.3 % at v0.8.0,
# where vLLM 0.23 offloads prompt blocks only by default: include/versions.yaml offload_prompt_only)
EFFECTS = {"v0.6.0": {"no-offload": 200.0, "native-offload": 187.0, "llm-d-redis": 201.0},
           "v0.7.0": {"no-offload": 264.5, "native-offload": 158.9, "llm-d-redis": 265.0},
           "v0.8.0": {"no-offload": 264.5, "native-offload": 150.0, "llm-d-redis": 264.0}}


def test_effect_by_version_sets_each_configuration_s_effect_beside_every_stored_version(db_url, real_report, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    for version, peaks in EFFECTS.items():
        _store(db_url, real_report, f"run-{version}", version, peaks)
    report = generate_report("run-v0.8.0", tmp_path / "r", campaign="weekly")
    table = effect_by_version(report)
    assert table.columns == ("v0.6.0", "v0.7.0", "v0.8.0") and table.baseline == "no-offload"
    rows = {r.config: r for r in table.rows}
    assert list(rows) == ["native-offload", "llm-d-redis"]
    native = rows["native-offload"]
    assert [round(native.effects[v].pct, 2) for v in table.columns] == [-6.5, -39.92, -43.29]
    assert [round(rows["llm-d-redis"].effects[v].pct, 2) for v in table.columns] == [0.5, 0.19, -0.19]
    first, second = native.changes
    assert (first.before, first.after, round(first.change_pp, 2), first.verdict) == ("v0.6.0", "v0.7.0", -33.42,
                                                                                    "beyond noise")
    assert second.verdict == "within noise" and 3.3 < second.bound_pp < 15  # -3.4 pp: within its bound
    assert "95 % bound" in first.basis and "within-level spread" in first.basis  # single peaks: the weak basis
    assert first.policy == ()
    assert second.policy == ("policy changed between v0.7.0 and v0.8.0: offload_prompt_only absent (vLLM 0.19.1: "
                             "offloads every computed block (prompt and decode)) -> default true (vLLM 0.23.0: offloads "
                             "prompt blocks only)",)
    assert all(c.verdict == "within noise" and c.policy == () for c in rows["llm-d-redis"].changes)

    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    section = md.split("## Effect by llm-d version", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| Model"))
    assert "| v0.6.0 (vLLM 0.17.1) | v0.7.0 (vLLM 0.19.1) | v0.8.0 (vLLM 0.23.0; this run) |" in header
    native_line = next(line for line in section.splitlines() if line.startswith("| Qwen3-8B | native-offload |"))
    assert "| -6.5% | **-39.9%** | -43.3% |" in native_line
    assert "v0.6.0 -> v0.7.0: -33.4 pp (+/-" in native_line and "v0.7.0 -> v0.8.0: offload_prompt_only absent" in native_line
    assert "**1 change(s) of effect beyond noise.**" in section and "noise_floor_pct (5 %" in section
    assert "1 change(s) of a configuration's effect beyond noise between llm-d versions: Qwen3-8B/native-offload " \
           "v0.6.0 -> v0.7.0 -33.4 pp" in md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "<h2>Effect by llm-d version</h2>" in html and "<strong>-39.9%</strong>" in html
    png = tmp_path / "r" / "effect_by_version.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](effect_by_version.png)" in md


def test_one_stored_version_says_so(db_url, real_report, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    _store(db_url, real_report, "only", "v0.7.0", {"no-offload": 100.0, "native-offload": 90.0})
    generate_report("only", tmp_path / "r", campaign="weekly")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Only llm-d v0.7.0 is stored for campaign weekly" in md and not (tmp_path / "r" / "effect_by_version.png").exists()


def test_compare_runs_judges_two_versions_with_the_older_as_reference(db_url, real_report, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    monkeypatch.setenv("LLMD_BENCH_REPORTS", str(tmp_path / "reports"))
    _store(db_url, real_report, "week-1", "v0.6.0", EFFECTS["v0.6.0"])
    _store(db_url, real_report, "week-9", "v0.7.0", EFFECTS["v0.7.0"])
    # the newer run named first: the older version is still the reference
    assert cli.main(["compare-runs", "week-9", "week-1", "--campaign", "weekly"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reference week-1 (llm-d v0.6.0), compared week-9 (llm-d v0.7.0)")
    path = re.search(r"report written to (\S+report\.html) and (\S+report\.md)", out)
    assert path and path.group(1) == str(tmp_path / "reports" / "compare__week-9__vs__week-1" / "report.html")
    md = (tmp_path / "reports" / "compare__week-9__vs__week-1" / "report.md").read_text()
    peaks = md.split("## Peaks", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[2].strip(): line for line in peaks.splitlines() if line.startswith("| Qwen3-8B")}
    assert "| -15.0% | REGRESSION (weak: 1 trial, no history) |" in rows["native-offload"]  # 187 -> 158.9 tok/s
    assert "| +32.2% | improvement (weak" in rows["no-offload"] and "| +31.8% | improvement (weak" in rows["llm-d-redis"]
    assert "**1 regression(s) beyond noise** in week-9: Qwen3-8B/native-offload -15.0%." in md
    assert "llm-d v0.6.0 is older than v0.7.0: the older run is the reference" in md
    assert "| Model | Config | week-1 (llm-d v0.6.0) | week-9 (llm-d v0.7.0) |" in md
    assert "| Qwen3-8B | native-offload | -6.5% | **-39.9%** | week-1 -> week-9: -33.4 pp" in md
    assert "SIMULATED" not in md and "<h2>Peaks</h2>" in (path.group(1) and open(path.group(1)).read())
    meta = json.loads((tmp_path / "reports" / "compare__week-9__vs__week-1" / "report.json").read_text())
    assert meta["campaign"] == "weekly"  # the Airflow UI authorises readers by it
    assert "1 regression(s) beyond noise" in out

    # the same comparison the other way round: the same reference, the same verdicts
    c = compare_runs.compare(*compare_runs.read_pair("week-1", "week-9", "weekly", db_url))
    assert c.reference.label == "week-1" and [g["config"] for g in c.regressions] == ["native-offload"]


def test_compare_runs_refuses_what_it_cannot_compare(db_url, real_report, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    monkeypatch.setenv("LLMD_BENCH_REPORTS", str(tmp_path / "reports"))
    _store(db_url, real_report, "cluster", "v0.7.0", {"no-offload": 100.0})
    _store(db_url, real_report, "demo", "v0.7.0", {"no-offload": 100.0}, runtime="local")
    _store(db_url, real_report, "shared-id", "v0.7.0", {"no-offload": 100.0}, campaign="a")
    _store(db_url, real_report, "shared-id", "v0.7.0", {"no-offload": 100.0}, campaign="b")

    def error(*argv: str) -> str:
        assert cli.main(["compare-runs", *argv]) == 1
        return capsys.readouterr().err

    assert "RUN_B: run 'nope' is not in the results store" in error("cluster", "nope")
    ambiguous = error("shared-id", "cluster")
    assert "RUN_A: run id 'shared-id' exists in several campaigns ['a', 'b']: pass --campaign" in ambiguous
    simulated = error("demo", "cluster")
    assert "run demo ran on the simulated local runtime" in simulated and "are not compared" in simulated
    assert "the same stored run" in error("cluster", "cluster")
    assert not (tmp_path / "reports").exists()  # nothing written for a refusal


def test_compare_runs_of_simulated_runs_says_so_and_different_workloads_get_no_verdict(db_url, real_report, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    _store(db_url, real_report, "demo-1", "v0.7.0", {"no-offload": 100.0, "native-offload": 90.0}, runtime="local")
    _store(db_url, real_report, "demo-2", "v0.7.0", {"no-offload": 100.0, "native-offload": 50.0}, runtime="local",
           params={"duration_s": 60})
    c = compare_runs.compare(*compare_runs.read_pair("demo-1", "demo-2", url=db_url))
    assert c.differs == ["duration_s: 2 vs 60"] and c.regressions == []
    assert set(c.peaks["judgement"]) == {"no verdict"}
    assert all(ch.verdict == "no verdict" for r in c.effects.rows for ch in r.changes)
    compare_runs.write_comparison(c, tmp_path / "cmp")
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "**The serving layer of both runs was SIMULATED**" in md
    assert "**The runs measured different workloads**: duration_s: 2 vs 60." in md
    assert "both ran llm-d v0.7.0: the earlier run (demo-1" in md
