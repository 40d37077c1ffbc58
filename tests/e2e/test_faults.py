"""Faults with real processes on the local runtime: each step killed with SIGKILL (no clean-up runs, as when
a worker is OOM-killed or a task is killed hard), then run again as Airflow's clear/retry would; the
results server restarted in the middle of a load."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import tiny_campaign, write_campaign
from llmd_bench.measure import processes
from llmd_bench.measure.cell_folder import CellFolder
from llmd_bench.model import paths
from llmd_bench.store import db
from llmd_bench.store.schema import Cell, LevelResult, Run
from llmd_bench.store.server import server_at

MODEL, CONFIG, RUN_ID = "Qwen/Qwen3-0.6B", "llm-d-redis", "faults-1"


def _start(step: str, campaign: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmd_bench", step, "--campaign", str(campaign), "--run-id", RUN_ID,
                             "--model", MODEL, "--config", CONFIG],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(step: str, campaign: Path) -> str:
    proc = _start(step, campaign)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{step} failed after the fault:\n{out[-4000:]}"
    return out


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 120.0) -> None:
    """SIGKILL the step once `ready()` holds (the fault lands mid-step, not before or after it)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the step ended before the fault could land:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "the step never reached the point of the fault"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _state(cell: Path) -> dict:
    try:
        return json.loads((cell / "runtime.json").read_text())
    except (OSError, ValueError):
        return {}


def _rows(url: str) -> tuple[int, int, int]:
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            return tuple(s.execute(select(func.count()).select_from(t)).scalar_one() for t in (Run, Cell, LevelResult))
    finally:
        engine.dispose()


def test_every_step_killed_with_sigkill_then_run_again_leaves_nothing_behind_and_no_duplicates(
        campaigns_dir, results_dir, db_url, monkeypatch, fake_guidellm):
    from llmd_bench.stack.runtime.local import cleanup_leftovers

    monkeypatch.setenv("LLMD_BENCH_DB_URL", db_url)
    try:
        _kill_every_step(campaigns_dir, results_dir, db_url)
    finally:
        cleanup_leftovers(results_dir)  # a failure above must not leave servers running into the next tests


def _kill_every_step(campaigns_dir, results_dir, db_url):
    doc = tiny_campaign(configs=[CONFIG], trials=2, trial_isolation="same-server")
    doc["workload"].update(concurrency=[1, 2], duration_s=2)
    campaign = write_campaign(campaigns_dir, doc)
    cell = paths.cell_dir(RUN_ID, MODEL, CONFIG)
    seen: dict[int, int] = {}  # every process the cell ever ran: pid -> port

    def note_processes() -> None:
        seen.update({p["pid"]: p["port"] for p in _state(cell).get("processes", [])})

    # deploy: killed once the first server is up and recorded; the next attempt stops the orphans first
    _kill_when(_start("deploy", campaign), lambda: len(_state(cell).get("processes", [])) >= 1)
    note_processes()
    orphans = set(seen)
    assert orphans and all(processes.pid_alive(pid) for pid in orphans)
    _run("deploy", campaign)
    note_processes()
    assert not any(processes.pid_alive(pid) for pid in orphans)

    # warm-up: killed once it has asked the server for its models, before its requests complete
    served = cell / "logs" / "mock-server-0.log"
    _kill_when(_start("warmup", campaign), lambda: "/v1/models" in served.read_text(errors="replace"))
    _run("warmup", campaign)

    # sweep: killed while trial 2's GuideLLM runs; that GuideLLM outlives the step (own session) and must not
    # load the server during the next attempt, which keeps trial 1
    sweep = _start("sweep", campaign)
    trial_2_pid = CellFolder(cell).generator_pid(2)
    _kill_when(sweep, lambda: trial_2_pid.exists(), timeout_s=300)
    generator = json.loads(trial_2_pid.read_text())["pid"]
    assert processes.pid_alive(generator), "the killed sweep's GuideLLM should still be running (the fault)"
    trial_1 = (cell / "trial-1" / "guidellm_report.json").stat().st_mtime_ns
    out = _run("sweep", campaign)
    assert f"(pid {generator}), left running by an earlier attempt of this sweep" in out
    assert not processes.pid_alive(generator)
    assert (cell / "trial-1" / "guidellm_report.json").stat().st_mtime_ns == trial_1
    trials = json.loads((cell / "cell.json").read_text())["sweep"]["trials"]
    assert [t.get("resumed", False) for t in trials] == [True, False]

    # collect_pcp: killed once it has stopped the cell's pmlogger, while it reads and compresses the archive
    # (without PCP on this machine: once it has run for 2 s)
    pmlogger = [p["pid"] for p in _state(cell)["processes"] if p["name"] == "pmlogger"]
    started = time.monotonic()
    _kill_when(_start("collect_pcp", campaign),
               lambda: not processes.pid_alive(pmlogger[0]) if pmlogger else time.monotonic() - started > 2)
    _run("collect_pcp", campaign)
    if pmlogger:
        host = json.loads((cell / "observations.json").read_text())["pcp"]
        assert host["status"] == "recorded", host
    _run("teardown", campaign)

    # load_results: killed inside its transaction (held there by a lock the test takes on the runs table),
    # run again, then a third time (a cleared task): one row per level, no duplicate
    engine = db.make_engine(db_url)
    db.migrate(engine)
    engine.dispose()
    blocker = psycopg2.connect(db_url)
    try:
        blocker.cursor().execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        _kill_when(_start("load_results", campaign), lambda: _waiting_on_lock(blocker))
    finally:
        blocker.rollback()
        blocker.close()
    assert _rows(db_url) == (0, 0, 0)
    _run("load_results", campaign)
    _run("load_results", campaign)
    assert _rows(db_url) == (1, 2, 4)  # a run, a cell per trial, two levels per trial

    note_processes()
    alive = [pid for pid in seen if processes.pid_alive(pid)]
    bound = [port for port in seen.values() if port and not processes.port_is_free(port)]
    assert alive == [] and bound == [], f"left running: {alive}; ports still bound: {bound}"
    assert CellFolder(cell).generator_pid_files() == []
    leftover_cmds = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(cell) not in leftover_cmds, "a process still writes into the cell's folder"


def test_results_server_restarted_in_the_middle_of_a_load_loses_nothing(tmp_path, real_report, monkeypatch):
    from llmd_bench.integrations.importer import import_reports

    server = server_at(tmp_path / "pg-restart", processes.free_port())
    url = server.start()
    monkeypatch.setenv("LLMD_BENCH_DB_RETRY_DELAY_S", "0.5")
    monkeypatch.setenv("LLMD_BENCH_DB_ATTEMPTS", "8")
    try:
        engine = db.make_engine(url)
        db.migrate(engine)
        engine.dispose()
        # hold the runs table so the load is inside its transaction, waiting, when the server goes away
        blocker = psycopg2.connect(url)
        blocker.cursor().execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(
            import_reports([real_report], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="restart", url=url)))
        load.start()
        deadline = time.monotonic() + 30
        while not _waiting_on_lock(blocker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _waiting_on_lock(blocker), "the load never reached its transaction"
        server.stop(mode="immediate")
        server.start()
        load.join(timeout=120)
        assert result.get("levels") == 2
        assert _rows(url) == (1, 1, 2)
    finally:
        server.stop(mode="immediate")
        import shutil
        shutil.rmtree(server.base, ignore_errors=True)


def _waiting_on_lock(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cur.fetchone()[0] > 0
