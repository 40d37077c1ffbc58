"""Apply airflow_settings.yaml (connections, pools, variables) through the Airflow CLI, idempotently.

The commands are the `airflow` CLI's own (its parser and command functions, airflow/cli/cli_parser.py at
apache-airflow 3.3.2), run in this one process: each `airflow` process costs 3-4 s of start-up, and the six of them
were 23 s of every `make airflow` on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
from pathlib import Path
from typing import Any

from airflow.cli import cli_parser

from llmd_bench.model import yaml_text


def _expand(value: str) -> str:
    return os.path.expandvars(value)


def commands(doc: dict[str, Any]) -> list[tuple[list[str], str | None]]:
    """The CLI commands that apply the settings document, each with what it applied (None: may fail, e.g. a
    delete of a connection that does not exist yet)."""
    cfg = doc.get("airflow") or {}
    out: list[tuple[list[str], str | None]] = []
    for c in cfg.get("connections") or []:
        out.append((["connections", "delete", c["conn_id"]], None))
        args = ["connections", "add", c["conn_id"]]
        if c.get("conn_uri"):
            args += ["--conn-uri", _expand(c["conn_uri"])]
        else:
            args += ["--conn-type", c["conn_type"]]
        if c.get("conn_extra"):
            args += ["--conn-extra", _expand(c["conn_extra"])]
        if c.get("description"):
            args += ["--conn-description", c["description"]]
        out.append((args, f"connection {c['conn_id']}"))
    for p in cfg.get("pools") or []:
        out.append((["pools", "set", p["pool_name"], str(p["pool_slot"]), p.get("pool_description", "")],
                    f"pool {p['pool_name']}"))
    for v in cfg.get("variables") or []:
        out.append((["variables", "set", v["variable_name"], _expand(str(v["variable_value"]))],
                    f"variable {v['variable_name']}"))
    return out


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return cli_parser.get_parser()


def run_cli(args: list[str]) -> str | None:
    """One `airflow <args>` in this process: None when it succeeded, else its error output."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            ns = _parser().parse_args(args)
            ns.func(ns)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return (err.getvalue() + (exc.code if isinstance(exc.code, str) else "")).strip()
    except Exception as exc:  # noqa: BLE001 - reported with the command that raised it, as the CLI would
        return f"{err.getvalue()}{type(exc).__name__}: {exc}".strip()
    return None


def apply(path: Path) -> list[str]:
    doc = yaml_text.load(path.read_text()) or {}
    done = []
    for args, applied in commands(doc):
        error = run_cli(args)
        if applied is None:
            continue
        if error is not None:
            raise SystemExit(f"airflow {' '.join(args[:3])} failed: {error[-500:]}")
        done.append(applied)
    return done


if __name__ == "__main__":
    print("applied: " + ", ".join(apply(Path(sys.argv[1]))))
