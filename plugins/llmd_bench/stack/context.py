"""What a step knows about the cell it works on, and the cell's metadata record (cell.json)."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmd_bench import __version__
from llmd_bench.measure.cell_folder import (
    RECORD_FILE,
    RUN_SUMMARY_FILE,
    WRITTEN_AT,
    CellFolder,
    CellRecord,
    merged_record,
    read_json,
    validate_record,
    write_json_atomic,
)
from llmd_bench.model import catalog, design, paths
from llmd_bench.model.campaign import Campaign, Cell, ModelSpec
from llmd_bench.model.configurations import Configuration
from llmd_bench.model.errors import RunFolderTaken
from llmd_bench.model.params import RunParams, stored_params
from llmd_bench.stack.runtime import bind

if TYPE_CHECKING:
    from llmd_bench.stack.runtime.base import Runtime


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
    def folder(self) -> CellFolder:
        """Every path inside the cell's folder (cell_folder.py)."""
        return CellFolder(self.cell_dir)

    @property
    def record_path(self) -> Path:
        return self.folder.record

    @property
    def record_parts_dir(self) -> Path:
        return self.folder.record_parts

    def check_owner(self, folder: Path | None = None) -> None:
        """Refuse a cell, run or report folder that another campaign's run with the same run id is using: run
        ids are unique only within one DAG (two campaigns backfilled over the same dates get backfill__<date>)."""
        folder = folder or self.cell_dir
        owner = next((c for name in (RECORD_FILE, RUN_SUMMARY_FILE, paths.REPORT_META)
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
        so a step that ran at the same time in another pod cannot erase what this one recorded. Validated as a
        CellRecord (a renamed or missing key fails naming the file and the key); {} when there is none yet."""
        record = merged_record(self.folder)
        if record:
            validate_record(record, self.folder)
        return record

    def record(self) -> CellRecord | None:
        """The cell's record, typed; None when no step has written one."""
        record = merged_record(self.folder)
        return validate_record(record, self.folder) if record else None

    @contextlib.contextmanager
    def update_record(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write this step's part of the record under a lock, and refresh cell.json."""
        folder = self.folder
        folder.path.mkdir(parents=True, exist_ok=True)
        with open(folder.lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = merged_record(folder)
            if not record:
                record = self._new_record()
                validate_record(record, folder)
                write_json_atomic(folder.record, record)
            before = copy.deepcopy(record)
            yield record
            # what this step leaves must still be a record this version reads (a misnamed key fails here)
            validate_record(record, folder)
            part_path = folder.record_part(self.step)
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
            write_json_atomic(folder.record, merged_record(folder))

    def stored_params(self) -> dict[str, Any]:
        """The run's params as stored with the run, plus the campaign settings the report states that are not
        params (the warm-up, the GPU-hour cost)."""
        return stored_params(self.campaign, self.params)

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
            **design.record_fields(self.cell, self.params.trials),  # design: aba's repeat says so
        }


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


class StepTimer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)
