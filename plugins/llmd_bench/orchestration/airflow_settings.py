"""Apply airflow_settings.yaml (connections, pools, variables) through the Airflow CLI, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def _expand(value: str) -> str:
    return os.path.expandvars(value)


def apply(path: Path, airflow: str) -> list[str]:
    doc = yaml.safe_load(path.read_text()) or {}
    cfg = doc.get("airflow") or {}
    done = []

    def run(*args: str) -> None:
        out = subprocess.run([airflow, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"airflow {' '.join(args[:3])} failed: {out.stderr.strip()[-500:]}")

    for c in cfg.get("connections") or []:
        subprocess.run([airflow, "connections", "delete", c["conn_id"]], capture_output=True)
        args = ["connections", "add", c["conn_id"]]
        if c.get("conn_uri"):
            args += ["--conn-uri", _expand(c["conn_uri"])]
        else:
            args += ["--conn-type", c["conn_type"]]
        if c.get("conn_extra"):
            args += ["--conn-extra", _expand(c["conn_extra"])]
        if c.get("description"):
            args += ["--conn-description", c["description"]]
        run(*args)
        done.append(f"connection {c['conn_id']}")
    for p in cfg.get("pools") or []:
        run("pools", "set", p["pool_name"], str(p["pool_slot"]), p.get("pool_description", ""))
        done.append(f"pool {p['pool_name']}")
    for v in cfg.get("variables") or []:
        run("variables", "set", v["variable_name"], _expand(str(v["variable_value"])))
        done.append(f"variable {v['variable_name']}")
    return done


if __name__ == "__main__":
    print("applied: " + ", ".join(apply(Path(sys.argv[1]), sys.argv[2])))
