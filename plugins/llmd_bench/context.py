"""What a step knows about the cell it works on, and the cell's metadata record (cell.json)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from llmd_bench import __version__, catalog, paths
from llmd_bench.campaign import Campaign, Cell, ModelSpec, RunParams


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class StepContext:
    campaign: Campaign
    params: RunParams
    run_id: str
    runtime: str
    cell: Cell | None = None

    @property
    def model_spec(self) -> ModelSpec:
        assert self.cell is not None
        return self.campaign.model(self.cell.model)

    @property
    def levels(self) -> list[int]:
        return self.params.levels_for(self.model_spec)

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.run_id)

    @property
    def cell_dir(self) -> Path:
        assert self.cell is not None
        return paths.cell_dir(self.run_id, self.cell.model, self.cell.config)

    @property
    def record_path(self) -> Path:
        return self.cell_dir / "cell.json"

    def read_record(self) -> dict[str, Any]:
        return read_json(self.record_path)

    @contextlib.contextmanager
    def update_record(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write cell.json under a lock (load_results and collect_pcp may run together)."""
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cell_dir / ".cell.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = read_json(self.record_path) or self._new_record()
            yield record
            write_json_atomic(self.record_path, record)

    def _new_record(self) -> dict[str, Any]:
        assert self.cell is not None
        return {
            "campaign": self.campaign.dag_id,
            "campaign_file": self.campaign.source,
            "run_id": self.run_id,
            "model": self.cell.model,
            "short_model": self.cell.short_model,
            "config": self.cell.config,
            "runtime": self.runtime,
            "params": self.params.model_dump(),
            "levels": self.levels,
            "versions": tool_versions(self.params.llmd_version),
            "steps": {},
        }


def tool_versions(llmd_version: str) -> dict[str, Any]:
    entry = catalog.entry(llmd_version)
    return {
        "llmd": llmd_version,
        "vllm": entry.vllm_version,
        "images": dict(entry.images),
        "guidellm": _dist_version("guidellm"),
        "llmd_bench": __version__,
        "python": platform.python_version(),
    }


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


class StepTimer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)
