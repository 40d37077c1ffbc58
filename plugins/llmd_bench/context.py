"""What a step knows about the cell it works on, and the cell's metadata record (cell.json)."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmd_bench import __version__, catalog, paths
from llmd_bench.campaign import Campaign, Cell, ModelSpec, RunParams
from llmd_bench.configurations import Configuration
from llmd_bench.errors import RunFolderTaken

if TYPE_CHECKING:
    from llmd_bench.runtime.base import Runtime


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StepContext:
    campaign: Campaign
    params: RunParams
    run_id: str
    runtime: str
    cell: Cell | None = None
    step: str | None = None

    def __post_init__(self) -> None:
        # a cell's replicas and tensor_parallel_size factors are its params (steps read ctx.params)
        self.params = self.params.for_cell(self.cell)

    @functools.cached_property
    def stack(self) -> Runtime:
        """The Runtime that runs this cell's serving stack (runtime/base.py), chosen once."""
        from llmd_bench.runtime import bind

        return bind(self)

    @property
    def model_spec(self) -> ModelSpec:
        assert self.cell is not None
        return self.campaign.model(self.cell.model)

    @property
    def configuration(self) -> Configuration:
        assert self.cell is not None
        return self.campaign.cell_configuration(self.cell)

    @property
    def levels(self) -> list[int]:
        return self.params.levels_for(self.model_spec)

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.run_id)

    @property
    def cell_dir(self) -> Path:
        assert self.cell is not None
        return paths.cell_dir(self.run_id, self.cell.model, self.cell.config, self.cell.variant)

    @property
    def record_path(self) -> Path:
        return self.cell_dir / "cell.json"

    @property
    def record_parts_dir(self) -> Path:
        return self.cell_dir / "record"

    def check_owner(self, folder: Path | None = None) -> None:
        """Refuse a cell, run or report folder that another campaign's run with the same run id is using: run
        ids are unique only within one DAG (two campaigns backfilled over the same dates get backfill__<date>)."""
        folder = folder or self.cell_dir
        owner = next((c for name in ("cell.json", "summary.json", paths.REPORT_META)
                      if (c := read_json(folder / name).get("campaign"))), None)
        if owner and owner != self.campaign.dag_id:
            held = (f"the report of campaign {owner!r}'s run {self.run_id!r}" if (folder / paths.REPORT_META).exists()
                    else f"run {self.run_id!r} of campaign {owner!r}")
            raise RunFolderTaken(
                f"{folder} holds {held}; this is campaign {self.campaign.dag_id!r}'s run with the same run id, and "
                f"it would overwrite those results. Trigger it with its own run id (the trigger form's or "
                f"`airflow dags trigger --run-id`), or move the other run's folder away")

    def read_record(self) -> dict[str, Any]:
        """cell.json merged with every step's own part (record/<step>.json); the parts are authoritative,
        so a step that ran at the same time in another pod cannot erase what this one recorded."""
        return merged_record(self.cell_dir)

    @contextlib.contextmanager
    def update_record(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write this step's part of the record under a lock, and refresh cell.json."""
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cell_dir / ".cell.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = merged_record(self.cell_dir)
            if not record:
                record = self._new_record()
                write_json_atomic(self.record_path, record)
            before = copy.deepcopy(record)
            yield record
            part_path = self.record_parts_dir / f"{self.step or 'base'}.json"
            part = read_json(part_path)
            for key, value in record.items():
                if value == before.get(key):
                    continue
                if isinstance(value, dict) and isinstance(before.get(key), dict):
                    changed = {k: v for k, v in value.items() if before[key].get(k) != v}
                    part[key] = {**part.get(key, {}), **changed}
                else:
                    part[key] = value
            part[WRITTEN_AT] = time.time_ns()
            write_json_atomic(part_path, part)
            write_json_atomic(self.record_path, merged_record(self.cell_dir))

    def stored_params(self) -> dict[str, Any]:
        """The run's params as stored with the run, plus the campaign settings the report states that are not
        params (the warm-up, the GPU-hour cost)."""
        return {**self.params.model_dump(), "warmup_requests": self.campaign.workload.warmup_requests,
                "gpu_hour_cost": self.campaign.gpu_hour_cost}

    def _new_record(self) -> dict[str, Any]:
        assert self.cell is not None
        return {
            "campaign": self.campaign.dag_id,
            "campaign_file": self.campaign.source,
            "run_id": self.run_id,
            "model": self.cell.model,
            "short_model": self.cell.short_model,
            "config": self.cell.config,
            "factors": dict(self.cell.factors),
            "runtime": self.runtime,
            "params": self.stored_params(),
            "levels": self.levels,
            "versions": tool_versions(self.params.llmd_version),
            "steps": {},
        }


WRITTEN_AT = "_written_at"


def merged_record(cell_dir: Path) -> dict[str, Any]:
    """cell.json, then every step's part from the oldest write to the newest, so the latest value of a key
    wins whichever step wrote it (dict values merge one level deep; the record only grows)."""
    record = read_json(cell_dir / "cell.json")
    parts = [read_json(f) for f in (cell_dir / "record").glob("*.json")]
    for part in sorted(parts, key=lambda part: part.get(WRITTEN_AT, 0)):
        for key, value in part.items():
            if key == WRITTEN_AT:
                continue
            if isinstance(value, dict) and isinstance(record.get(key), dict):
                record[key] = {**record[key], **value}
            else:
                record[key] = value
    return record


def tool_versions(llmd_version: str) -> dict[str, Any]:
    entry = catalog.entry(llmd_version)
    return {
        "llmd": llmd_version,
        "vllm": entry.vllm_version,
        "components": dict(entry.components),
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
