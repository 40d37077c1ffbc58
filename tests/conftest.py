"""Test session set-up: a private AIRFLOW_HOME (set before Airflow is imported) and small campaigns."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "include" / "campaigns" / "kv_cache_eval.yaml"
ARTIFACTS = ROOT / "test-artifacts"

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="llmd-test-airflow-")
os.environ.update({
    "AIRFLOW_HOME": _AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "LLMD_BENCH_HOME": str(ROOT),
    "LLMD_BENCH_RUNTIME": "local",
    "HF_HUB_OFFLINE": "1",
})
os.environ.pop("LLMD_BENCH_CAMPAIGNS", None)
os.environ.pop("LLMD_BENCH_GUIDELLM", None)

BIN = Path(sys.executable).parent


def tiny_campaign(**overrides) -> dict:
    """A small campaign derived from the reference one: 1 model, a few configs, 2 short levels."""
    doc = yaml.safe_load(REFERENCE.read_text())
    doc.update({
        "dag_id": "llmd_tiny",
        "schedule": None,
        "models": [{"name": "Qwen/Qwen3-0.6B", "size_gb": 1.5}],
        "configs": ["no-offload", "llm-d-redis"],
        "workload": {"concurrency": [1, 4], "duration_s": 2, "prompt_tokens": 32, "output_tokens": 16,
                     "prefix_tokens": 64, "turns": 1, "seed": 889, "warmup_requests": 2},
    })
    doc.update(overrides)
    return doc


@pytest.fixture
def campaigns_dir(tmp_path, monkeypatch):
    d = tmp_path / "campaigns"
    d.mkdir()
    monkeypatch.setenv("LLMD_BENCH_CAMPAIGNS", str(d))
    return d


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    d = tmp_path / "results"
    monkeypatch.setenv("LLMD_BENCH_RESULTS", str(d))
    return d


def write_campaign(directory: Path, doc: dict, name: str = "tiny") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata database for in-process DAG runs (SQLite in the private AIRFLOW_HOME)."""
    out = subprocess.run([str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
