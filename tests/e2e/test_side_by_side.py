"""Side by side on one machine: two campaigns' DAG runs at the same time, a second campaign reusing a run id,
and `make demo` in two clones at once. Nothing may be shared by accident: ports, folders, database keys,
pmloggers, results servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, ROOT, fake_guidellm_command, tiny_campaign, write_campaign
from llmd_bench import cli
from llmd_bench.measure.processes import pid_alive, port_is_free

pytestmark = pytest.mark.e2e

RUN_DAG = """
import json, sys
from llmd_bench.orchestration.airflow_dag import build_dag
from llmd_bench.model.campaign_files import load_campaign
dr = build_dag(load_campaign(sys.argv[1]), runtime="local").test(run_conf=json.loads(sys.argv[2]))
print("RESULT " + json.dumps({"run_id": dr.run_id, "state": str(dr.state)}))
"""


def _cells(results_dir: Path, run_id: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (results_dir / run_id).glob("*/*/cell.json")}


def test_two_campaigns_run_at_the_same_time_without_sharing_anything(airflow_db, campaigns_dir, results_dir, db_url,
                                                                     tmp_path, monkeypatch, fake_guidellm):
    from sqlalchemy import text

    from llmd_bench.store.db import make_engine

    conf = {"concurrency": [2, 4], "duration_s": 3, "design": "single"}  # no baseline repeat: two cells per run
    files = [write_campaign(campaigns_dir, tiny_campaign(dag_id=f"llmd_side_{x}", configs=["no-offload", "llm-d-redis"]),
                            name=f"side_{x}") for x in "ab"]
    procs = []
    for i, path in enumerate(files):
        home = tmp_path / f"airflow-{i}"  # each process its own copy of the migrated metadata DB (SQLite)
        home.mkdir()
        shutil.copy(Path(airflow_db) / "airflow.db", home / "airflow.db")
        env = {**os.environ, "AIRFLOW_HOME": str(home), "LLMD_BENCH_DB_URL": db_url}
        procs.append(subprocess.Popen([sys.executable, "-c", RUN_DAG, str(path), json.dumps(conf)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        assert line, out[-4000:]
        results.append(json.loads(line.removeprefix("RESULT ")))
    assert [r["state"] for r in results] == ["success", "success"], results
    run_a, run_b = (r["run_id"] for r in results)
    assert run_a != run_b
    cells_a, cells_b = _cells(results_dir, run_a), _cells(results_dir, run_b)
    assert set(cells_a) == set(cells_b) == {"no-offload", "llm-d-redis"}
    assert {c["campaign"] for c in cells_a.values()} == {"llmd_side_a"}
    assert {c["campaign"] for c in cells_b.values()} == {"llmd_side_b"}

    # they really overlapped in time: some sweep of one ran while a sweep of the other ran
    def window(c):
        s = c["steps"]["sweep"]
        return s["started"], s["ended"]
    assert any(window(a)[0] < window(b)[1] and window(b)[0] < window(a)[1]
               for a in cells_a.values() for b in cells_b.values()), "the two runs did not overlap"
    # cells that were up at the same time had their own ports (servers, router, index), and each cell
    # recorded its own PCP archive in its own folder
    def alive(c):
        return c["steps"]["deploy"]["started"], c["steps"]["teardown"]["ended"]

    def ports(run, config):
        state = json.loads((results_dir / run / "Qwen3-0.6B" / config / "runtime.json").read_text())
        return {p["port"] for p in state["stopped"] if p["port"]}
    for ca, a in cells_a.items():
        for cb, b in cells_b.items():
            if alive(a)[0] < alive(b)[1] and alive(b)[0] < alive(a)[1]:
                assert not ports(run_a, ca) & ports(run_b, cb), (ca, cb)
    statuses = {c["pcp"]["status"] for c in [*cells_a.values(), *cells_b.values()]}
    assert statuses in ({"recorded"}, {"not measured"}), statuses  # all or none (PCP not installed)
    # nothing left running, and both reports exist, each with its own run
    for run in (run_a, run_b):
        for state in (results_dir / run).glob("*/*/runtime.json"):
            doc = json.loads(state.read_text())
            assert doc["processes"] == [] and all(not pid_alive(p["pid"]) for p in doc["stopped"])
            assert all(port_is_free(p["port"]) for p in doc["stopped"] if p["port"])
        assert json.loads((results_dir.parent / "reports" / run / "report.json").read_text())["run_id"] == run
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = sorted(tuple(r) for r in conn.execute(text(
                "SELECT r.campaign, count(DISTINCT c.id), count(l.id) FROM runs r JOIN cells c ON c.run_id = r.id "
                "JOIN level_results l ON l.cell_id = c.id GROUP BY r.campaign")))
    finally:
        engine.dispose()
    assert rows == [("llmd_side_a", 2, 4), ("llmd_side_b", 2, 4)]


def test_a_second_campaign_with_the_same_run_id_is_refused_before_it_touches_anything(campaigns_dir, results_dir,
                                                                                      capsys):
    """Backfills of two campaigns over the same dates both get backfill__<date>: the second is refused,
    with the way out, instead of overwriting the first one's results."""
    from llmd_bench.model import catalog
    from llmd_bench.model.campaign import Cell
    from llmd_bench.model.campaign_files import load_campaign
    from llmd_bench.model.params import resolve_params
    from llmd_bench.stack.context import StepContext

    run_id = "backfill__2026-10-04T00:00:00+00:00"
    first = load_campaign(write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_first"), name="first"))
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_second"), name="second")
    ctx = StepContext(first, resolve_params(first, {}, catalog.known_versions()), run_id, "local",
                      Cell("Qwen/Qwen3-0.6B", "no-offload"))
    with ctx.update_record() as record:  # the first campaign's cell has run a step
        record["steps"]["warmup"] = {"status": "ok", "started": "2026-10-04T00:01:00+00:00",
                                     "ended": "2026-10-04T00:01:02+00:00", "elapsed_s": 2.0, "summary": {"requests": 2}}
    before = {p: p.read_bytes() for p in ctx.cell_dir.rglob("*") if p.is_file()}
    rc = cli.main(["deploy", "--campaign", "second", "--run-id", run_id, "--model", "Qwen/Qwen3-0.6B",
                   "--config", "no-offload"])
    err = capsys.readouterr().err
    assert rc == 1 and "campaign 'llmd_first'" in err and "campaign 'llmd_second'" in err and "own run id" in err
    assert {p: p.read_bytes() for p in ctx.cell_dir.rglob("*") if p.is_file()} == before
    assert not (ctx.cell_dir / "runtime.json").exists()
    # the run's report folder is guarded the same way
    report = results_dir.parent / "reports" / run_id
    report.mkdir(parents=True)
    (report / "report.json").write_text(json.dumps({"campaign": "llmd_first", "run_id": run_id}))
    rc = cli.main(["compare", "--campaign", "second", "--run-id", run_id])
    err = capsys.readouterr().err
    assert rc == 1 and "holds the report of campaign 'llmd_first'" in err


@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists(), reason="needs the project's set-up .venv")
def test_make_demo_in_two_clones_at_once(tmp_path, airflow_db):
    """Each clone gets its own results server (a free port recorded with its data), Airflow home, results and
    reports. To keep the test short the clones share this checkout's .venv (a symlink; its stamp is refreshed so
    `make` does not rebuild it), start from a copy of a migrated Airflow metadata database (the demo's `airflow db
    migrate` then checks it; migrating from scratch is the airflow_db fixture's), and run a one-cell demo
    (DEMO_CONF)."""
    small = json.dumps({"models": ["Qwen/Qwen3-0.6B"], "configs": ["llm-d-redis"], "concurrency": [2],
                        "duration_s": 2, "prompt_tokens": 32, "output_tokens": 16, "prefix_tokens": 64, "turns": 1})
    clones = []
    for name in ("one", "two"):
        clone = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        (clone / ".venv").symlink_to(ROOT / ".venv")
        shutil.copytree(ROOT / ".cache" / "tokenizer", clone / ".cache" / "tokenizer")
        (clone / ".airflow").mkdir()
        shutil.copy(Path(airflow_db) / "airflow.db", clone / ".airflow" / "airflow.db")
        clones.append(clone)
    (ROOT / ".venv" / ".installed").touch()  # newer than the clones' requirements: make does not rebuild
    for clone in clones:
        (clone / ".cache" / "tokenizer" / "tokenizer.json").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LLMD_BENCH"))}
    env["DEMO_CONF"] = small
    # what the clones share or not is the point here, not GuideLLM (test_e2e runs the demo's DAG with the real one)
    env["LLMD_BENCH_GUIDELLM"] = fake_guidellm_command(tmp_path)
    procs = [subprocess.Popen(["make", "demo"], cwd=c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in clones]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
        for clone, out, proc in zip(clones, outs, procs):
            assert proc.returncode == 0, out[-4000:]
            assert "the serving layer was SIMULATED" in out
            assert (clone / "reports" / "latest" / "report.md").exists()
        servers = set()
        for clone in clones:  # each clone's own server, on its own port, serving its own data directory
            status = subprocess.run([str(BIN / "llmd-bench"), "db", "status"], cwd=clone,
                                    env={**env, "LLMD_BENCH_HOME": str(clone)}, capture_output=True, text=True)
            assert status.returncode == 0 and status.stdout.startswith("running on 127.0.0.1:"), status.stdout
            servers.add(status.stdout.strip())
        assert len(servers) == 2 and len({s.split(" (data")[0] for s in servers}) == 2, servers
    finally:
        for clone in clones:
            subprocess.run([str(BIN / "llmd-bench"), "db", "stop"], cwd=clone, env={**env, "LLMD_BENCH_HOME": str(clone)},
                           capture_output=True)
