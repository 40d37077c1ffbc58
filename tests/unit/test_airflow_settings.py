"""`make airflow` applies airflow_settings.yaml with the Airflow CLI's own commands, in one process."""

from __future__ import annotations

import yaml
from airflow.cli import cli_parser

from conftest import ROOT
from llmd_bench.orchestration import airflow_settings


def test_the_shipped_settings_become_the_cli_commands_with_the_environment_filled_in(monkeypatch):
    monkeypatch.setenv("LLMD_RESULTS_URL", "postgresql://llmd:secret@127.0.0.1:5499/llmd_results")
    doc = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    cmds = airflow_settings.commands(doc)
    applied = [what for _, what in cmds if what]
    assert applied == ["connection llmd_results", "connection kubernetes_default", "pool llmd_sweeps",
                       "variable llmd_bench_runtime"]
    args = [a for a, _ in cmds]
    # a connection is deleted first (idempotent: a changed URL replaces the stored one), and its delete may fail
    assert args[0] == ["connections", "delete", "llmd_results"] and cmds[0][1] is None
    add = args[1]
    assert add[:3] == ["connections", "add", "llmd_results"]
    assert add[add.index("--conn-uri") + 1] == "postgresql://llmd:secret@127.0.0.1:5499/llmd_results"
    assert ["pools", "set", "llmd_sweeps", "1"] == args[4][:4]
    assert args[5] == ["variables", "set", "llmd_bench_runtime", "local"]
    # every command is one the pinned Airflow's CLI parses
    parser = cli_parser.get_parser()
    for a in args:
        assert parser.parse_args(a).func


def test_a_command_the_cli_refuses_comes_back_as_its_error_not_an_exit():
    error = airflow_settings.run_cli(["pools", "set", "llmd_sweeps", "one", "slots"])
    assert error is not None and "invalid int value: 'one'" in error
