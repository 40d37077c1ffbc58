"""Where things live. Every location can be moved with an environment variable."""

from __future__ import annotations

import re
from pathlib import Path

from llmd_bench.model.settings import located, settings

PROJECT_HOME = settings().home


def home() -> Path:
    return settings().home


def campaigns_dir() -> Path:
    return located(settings().campaigns)


def catalog_file() -> Path:
    return located(settings().catalog)


def results_root() -> Path:
    return located(settings().results)


def reports_root() -> Path:
    return located(settings().reports)


def tokenizer_dir() -> Path:
    return settings().tokenizer_dir


def model_short_name(model: str) -> str:
    """`Qwen/Qwen3-8B` -> `Qwen3-8B` (the name used in folders, CSVs and reports)."""
    return model.rstrip("/").rsplit("/", 1)[-1]


_UNSAFE = re.compile(r"[/\\\x00]+")


def run_dir(run_id: str) -> Path:
    return results_root() / safe_component(run_id)


def cell_dir(run_id: str, model: str, config: str, variant: str = "") -> Path:
    """results/<run>/<model>/<config>[__<factor values>]/"""
    return run_dir(run_id) / safe_component(model_short_name(model)) / safe_component(
        f"{config}__{variant}" if variant else config)


# A report folder's metadata (campaign, run id, runtime): the UI plugin authorises readers by its campaign.
REPORT_META = "report.json"

def safe_component(value: str) -> str:
    """A path component that cannot escape its parent (run ids come from users); otherwise verbatim,
    so `results/<dag_run_id>/` carries the run id a user sees in the Airflow UI."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    if not cleaned:
        raise ValueError(f"cannot turn {value!r} into a path component")
    return cleaned


def models_file() -> Path:
    return located(settings().models)
