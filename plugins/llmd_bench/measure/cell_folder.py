"""The cell folder as a typed contract: every path inside `results/<run>/<model>/<config>[__<factors>]/` and the
models of the JSON documents kept there. Every reader and writer of these files goes through this module, so a
renamed or missing key fails loudly (the file and the key named) instead of reading `None`.

    cell.json                  the cell's record (CellRecord), merged from the steps' parts below
    record/<step>.json         one step's part of the record (RecordPart; merged by write order)
    .cell.lock                 the lock update_record holds while it writes a part
    levels.json                load_results' parsed levels (LevelRow list)
    observations.json          collect_pcp's evidence (Observations)
    runtime.json               the local runtime's processes (RuntimeState)
    existing-saved.json        existing mode: a copy of the objects deploy saved (ExistingSaved)
    logs/<name>.log            logs of the processes the runtime started
    pcp/, pcp-generator/       PCP archives (serving hosts, the load generator's node)
    trial-<n>/guidellm_report.json              the trial's GuideLLM report (per-level runs merged into it)
    trial-<n>/level-<c>/guidellm_report.json    one level's run (runs: per-level)
    trial-<n>/guidellm.log, guidellm-level-<c>.log, *.stalled-<k>.log
    trial-<n>/guidellm.pid     the running load generator (found and stopped by later attempts, teardown, cleanup)
    trial-<n>/serving_samples.jsonl, generator_cpu.jsonl   samples taken during the trial

On-disk format: the JSON keys are the ones written before this module existed; models dump with the same keys.

Models are strict on the keys our code reads (required where every writer writes them). `extra="allow"` is set
only where a stored file written by an older (or newer) version may carry keys this version does not know; it is
said at each such model. Free-form upstream documents (a GuideLLM summary, stack metadata, sizing plans, PCP
summaries) are typed `dict[str, Any]`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from llmd_bench.measure.served import ServedHistory
from llmd_bench.model.errors import LlmdBenchError

# -- file and folder names (relative to the cell folder) ------------------------------------------------------------

RECORD_FILE = "cell.json"
RECORD_PARTS_DIR = "record"
LOCK_FILE = ".cell.lock"
LEVELS_FILE = "levels.json"
OBSERVATIONS_FILE = "observations.json"
RUNTIME_STATE_FILE = "runtime.json"
EXISTING_SAVED_FILE = "existing-saved.json"
LOGS_DIR = "logs"
PCP_DIR = "pcp"
PCP_GENERATOR_DIR = "pcp-generator"
TRIAL_REPORT = "guidellm_report.json"
GUIDELLM_LOG = "guidellm.log"
GENERATOR_PID_FILE = "guidellm.pid"
# sweep: seeded: how the cell is swept and from what, decided once from the store (a retried sweep reads it back)
SEED_FILE = "seed.json"
SERVING_SAMPLES_FILE = "serving_samples.jsonl"
GENERATOR_CPU_FILE = "generator_cpu.jsonl"
# the run folder (results/<run>/) holds compare's summary beside the cells
RUN_SUMMARY_FILE = "summary.json"
# what compare reads of each cell (storage.pull_run): the records and the parsed levels, not reports or archives
RUN_SUMMARY_FILES = (RECORD_FILE, LEVELS_FILE, RUN_SUMMARY_FILE)
# a record part's write time (ns): parts merge in this order
WRITTEN_AT = "_written_at"


def trial_dir_name(trial: int) -> str:
    return f"trial-{trial}"


def report_name(trial: int, level: int | None = None) -> str:
    """A run's report relative to the cell folder: the trial's, or one level's run (runs: per-level)."""
    if level is None:
        return f"{trial_dir_name(trial)}/{TRIAL_REPORT}"
    return f"{trial_dir_name(trial)}/level-{level}/{TRIAL_REPORT}"


class CellFolder:
    """The paths of one cell folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CellFolder({str(self.path)!r})"

    @property
    def record(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def record_parts(self) -> Path:
        return self.path / RECORD_PARTS_DIR

    def record_part(self, step: str | None) -> Path:
        return self.record_parts / f"{step or 'base'}.json"

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def levels(self) -> Path:
        return self.path / LEVELS_FILE

    @property
    def observations(self) -> Path:
        return self.path / OBSERVATIONS_FILE

    @property
    def runtime_state(self) -> Path:
        return self.path / RUNTIME_STATE_FILE

    @property
    def existing_saved(self) -> Path:
        return self.path / EXISTING_SAVED_FILE

    @property
    def logs(self) -> Path:
        return self.path / LOGS_DIR

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    @property
    def pcp(self) -> Path:
        return self.path / PCP_DIR

    @property
    def pcp_generator(self) -> Path:
        return self.path / PCP_GENERATOR_DIR

    def trial(self, trial: int) -> Path:
        return self.path / trial_dir_name(trial)

    def trial_report(self, trial: int) -> Path:
        return self.path / report_name(trial)

    def level_report(self, trial: int, level: int) -> Path:
        return self.path / report_name(trial, level)

    def guidellm_log(self, trial: int, level: int | None = None) -> Path:
        """The whole trial's GuideLLM log, or one level run's."""
        return self.trial(trial) / (GUIDELLM_LOG if level is None else f"guidellm-level-{level}.log")

    @staticmethod
    def stalled_log(log: Path, attempt: int) -> Path:
        return log.with_name(f"{log.stem}.stalled-{attempt}.log")

    def generator_pid(self, trial: int) -> Path:
        return self.trial(trial) / GENERATOR_PID_FILE

    def generator_pid_files(self) -> list[Path]:
        return sorted(self.path.glob(f"trial-*/{GENERATOR_PID_FILE}"))

    def serving_samples(self, trial: int) -> Path:
        return self.trial(trial) / SERVING_SAMPLES_FILE

    def generator_cpu_samples(self, trial: int) -> Path:
        return self.trial(trial) / GENERATOR_CPU_FILE

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.path))


# -- JSON I/O -------------------------------------------------------------------------------------------------------

def read_json(path: Path) -> Any:
    """A JSON file, {} when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


class CellFolderError(LlmdBenchError):
    """A file of a cell folder does not have the shape this version reads (the file and the keys named)."""


M = TypeVar("M")


def parse(model: Any, data: Any, source: Path | str) -> Any:
    """`data` as `model` (a BaseModel class or a TypeAdapter), or CellFolderError naming `source` and every bad key."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in exc.errors())
        raise CellFolderError(f"{source}: not the shape this version reads ({problems})") from None


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as its file's JSON object: the keys that were set, in the order of the model's fields."""
    return model.model_dump(mode="json", exclude_unset=True, by_alias=True)


# -- models ---------------------------------------------------------------------------------------------------------

class Strict(BaseModel):
    """Documents only this version writes and reads in one run: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Stored(BaseModel):
    # Stored across versions (results folders and object storage outlive the code that wrote them): a key an older
    # or newer version wrote is kept, not refused. The keys our code reads are still declared, and required where
    # every writer writes them, so a renamed key fails.
    model_config = ConfigDict(extra="allow")


class StepRecord(Strict):
    """cell.json steps.<step>: what the step runner (cli.run_cell_step) recorded."""

    status: Literal["ok", "failed"]
    started: str
    ended: str
    elapsed_s: float
    summary: dict[str, Any] | None = None  # the step's own summary (its run() result), on success
    error: str | None = None  # the first line of the failure, on failure

    @model_validator(mode="after")
    def _outcome(self) -> StepRecord:
        if self.status == "ok" and self.summary is None:
            raise ValueError("a step with status ok records its summary")
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed step records its error")
        return self


class StoredParams(Stored):
    """The run's params (params.RunParams, whose fields change between versions) plus warmup_requests and
    gpu_hour_cost; what our code reads of them is declared."""

    tensor_parallel_size: int
    replicas: int
    warmup_requests: int | None = None
    gpu_hour_cost: float | None = None


class Versions(Stored):
    """context.tool_versions, plus what the steps add (the KV server's, the image digests, the report's GuideLLM)."""

    llmd: str
    vllm: str | None = None
    components: dict[str, Any] = Field(default_factory=dict)
    images: dict[str, Any] = Field(default_factory=dict)
    guidellm: str | None = None
    llmd_bench: str | None = None
    python: str | None = None
    kv_backend: dict[str, str | None] | None = None
    image_digests: list[str] | None = None
    guidellm_report: str | None = None


class KvBackend(Stored):
    """The Redis/Valkey index a cell runs (local: kind, port, server_version; Kubernetes adds host and image)."""

    kind: str
    port: int | None = None
    server_version: str | None = None
    host: str | None = None


class Serving(Strict):
    """cell.json serving: what deploy brought up."""

    replicas: int
    endpoint: str
    kv_backend: KvBackend | None = None
    simulated: bool
    leftovers_found: list[str] = Field(default_factory=list)


class LevelWindow(Strict):
    trial: int
    concurrency: int
    start: float | None
    end: float | None


class LevelRun(Stored):
    # A run of one or more levels of a trial (runs: per-level). After a restart or a reset it carries that
    # isolation's timings and the reset's own checks (level_reset.reset_between_levels, free-form): allowed extras.
    levels: list[int]
    report: str
    resumed: bool = False
    argv: list[str] | None = None
    guidellm_wall_s: float | None = None
    isolation: str | None = None
    redeploy_s: float | None = None
    warmup_s: float | None = None


class Trial(Stored):
    # One trial of the sweep. Isolation results (redeploy) are spliced in and may grow: allowed extras.
    trial: int
    report: str
    level_windows: list[LevelWindow]
    resumed: bool = False
    target: str | None = None
    isolation: str | None = None
    redeploy_s: float | None = None
    warmup_s: float | None = None
    guidellm_version: str | None = None
    guidellm_wall_s: float | None = None
    benchmark_s: float | None = None
    runs: list[LevelRun] | None = None
    argv: list[str] | None = None
    adaptive: dict[str, Any] | None = None  # the adaptive sweep's decisions (adaptive.AdaptiveSweep.summary)
    seeded: dict[str, Any] | None = None  # the seeded sweep's decisions (sweep_core.SeededDecisions)


class Sweep(Strict):
    """cell.json sweep."""

    target: str
    levels: list[int]
    trials: list[Trial]
    pcp: dict[str, Any] | None = None  # Kubernetes: the per-node PCP recordings of the sweep pod


class Results(Strict):
    """cell.json results: what load_results stored."""

    levels: int
    invalid_levels: int
    stored: bool


class ConfigEffect(Strict):
    """observe/verdict.judge: whether the configuration took effect."""

    verdict: str
    evidence: str


class ExistingRecord(Stored):
    # cell.json existing: what existing mode (runtime/existing.py) changed and restored; teardown may record only
    # `restored`, so nothing is required. Existing mode's record grows with the installations it meets.
    namespace: str | None = None
    read_only: bool | None = None
    config_hash: str | None = None
    index_emptied: bool | None = None
    changed: list[Any] | None = None
    restored: list[dict[str, Any]] | None = None


class CellRecord(Stored):
    """cell.json: a cell's record, merged from the steps' parts."""

    campaign: str
    campaign_file: str | None
    run_id: str
    model: str
    short_model: str
    config: str
    factors: dict[str, Any]
    runtime: str
    params: StoredParams
    levels: list[int]
    versions: Versions
    steps: dict[str, StepRecord]
    serving: Serving | None = None
    stack: dict[str, Any] | None = None  # runtime/stack_metadata.py: what ran (free-form per platform)
    served: ServedHistory | None = None  # served.py: what the servers showed they serve, every check of the cell
    memory_plan: dict[str, Any] | None = None  # sizing's plan of the cell's GPU memory (Kubernetes)
    placement: dict[str, Any] | None = None  # lanes: auto: the cell's lane, node, GPUs, acquired/released (stack/lanes.py)
    existing: ExistingRecord | None = None
    sweep: Sweep | None = None
    pcp: dict[str, Any] | None = None
    serving_metrics: dict[str, Any] | None = None
    kv_index: dict[str, Any] | None = None
    config_effect: ConfigEffect | None = None
    results: Results | None = None

    @model_validator(mode="after")
    def _done_steps_left_their_sections(self) -> CellRecord:
        """A step that finished recorded its section: its absence means a renamed or lost key."""
        for step, section in (("deploy", "serving"), ("sweep", "sweep"), ("collect_pcp", "config_effect"),
                              ("load_results", "results")):
            done = self.steps.get(step)
            if done is not None and done.status == "ok" and getattr(self, section) is None:
                raise ValueError(f"steps.{step} is ok but the record has no {section!r}")
        return self


RECORD_KEYS = frozenset(CellRecord.model_fields)


class RecordPart(BaseModel):
    """record/<step>.json: the record keys one step changed (dict values: only the changed sub-keys, merged one
    level deep) and when it wrote them. The values are partial, the keys are the record's."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    written_at: int = Field(alias=WRITTEN_AT)

    @model_validator(mode="after")
    def _record_keys(self) -> RecordPart:
        unknown = sorted(set(self.model_extra or {}) - RECORD_KEYS)
        if unknown:
            raise ValueError(f"keys {unknown} are not keys of cell.json ({sorted(RECORD_KEYS)})")
        return self

    @property
    def changes(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LevelRow(Strict):
    """levels.json: one row per trial and level (load_results.level_rows)."""

    trial: int
    concurrency: int
    valid: bool
    invalid_reason: str | None
    requests_successful: int | None
    requests_errored: int | None
    requests_incomplete: int | None
    start: float | None
    end: float | None
    duration_s: float | None
    metrics: dict[str, Any]
    guidellm_version: str | None


LEVELS = TypeAdapter(list[LevelRow])


class Observations(Stored):
    # observations.json: collect_pcp's evidence. The generator_* keys came later than the others: a stored file
    # from before them reads as "not measured" (their defaults); further keys a newer version adds are kept.
    pcp: dict[str, Any]
    host_levels: list[dict[str, Any]]
    serving_metrics: dict[str, Any]
    serving_levels: list[dict[str, Any]]
    epp_levels: list[dict[str, Any]] = Field(default_factory=list)
    kv_index: dict[str, Any] | None
    config_effect: ConfigEffect
    generator_levels: list[dict[str, Any]] = Field(default_factory=list)
    generator_host: dict[str, Any] | None = None
    generator_host_levels: list[dict[str, Any]] = Field(default_factory=list)


class ProcessEntry(Strict):
    """runtime/processes.ManagedProcess as saved."""

    name: str
    pid: int
    port: int
    cmd: list[str]
    log: str


class StoppedProcess(Strict):
    name: str
    pid: int
    port: int


class RuntimeState(Stored):
    """runtime.json: the local runtime's processes, saved after each start so teardown can always clean up.
    Stored: `make stop` (cleanup_leftovers) reads the runtime.json of every earlier run, whatever wrote it."""

    processes: list[ProcessEntry] = Field(default_factory=list)
    replicas: list[str] = Field(default_factory=list)
    endpoint: str | None = None
    kv_backend: KvBackend | None = None
    pcp: dict[str, Any] | None = None  # the cell's pmlogger (archive, metrics, pid) or why it is unavailable
    stopped: list[StoppedProcess] | None = None
    leftovers: list[str] | None = None


class ExistingSaved(Strict):
    """existing-saved.json: a copy of the saved-state ConfigMap existing mode writes before its first patch."""

    state: str
    namespace: str
    run_id: str
    campaign: str
    cell: str
    saved_at: str
    objects: list[dict[str, Any]]


# -- reading and writing --------------------------------------------------------------------------------------------

def _folder(cell: CellFolder | Path) -> CellFolder:
    return cell if isinstance(cell, CellFolder) else CellFolder(cell)


def read_part(path: Path) -> RecordPart:
    return parse(RecordPart, read_json(path), path)


def merged_record(cell: CellFolder | Path) -> dict[str, Any]:
    """cell.json, then every step's part from the oldest write to the newest, so the latest value of a key
    wins whichever step wrote it (dict values merge one level deep; the record only grows). Raw: not validated
    as a whole (read_record does that); each part's keys are."""
    folder = _folder(cell)
    record = read_json(folder.record)
    parts = [read_part(f) for f in folder.record_parts.glob("*.json")]
    for part in sorted(parts, key=lambda part: part.written_at):
        for key, value in part.changes.items():
            if isinstance(value, dict) and isinstance(record.get(key), dict):
                record[key] = {**record[key], **value}
            else:
                record[key] = value
    return record


def validate_record(record: dict[str, Any], cell: CellFolder | Path) -> CellRecord:
    folder = _folder(cell)
    return parse(CellRecord, record, f"{folder.record} (merged with {folder.record_parts}/)")


def read_record(cell: CellFolder | Path) -> CellRecord | None:
    """The cell's record, validated; None when no step has written one."""
    record = merged_record(cell)
    return validate_record(record, cell) if record else None


def read_levels(cell: CellFolder | Path) -> list[LevelRow] | None:
    path = _folder(cell).levels
    if not path.exists():
        return None
    return parse(LEVELS, json.loads(path.read_text()), path)


def write_levels(cell: CellFolder | Path, rows: list[dict[str, Any]]) -> list[LevelRow]:
    path = _folder(cell).levels
    parsed = parse(LEVELS, rows, path)
    write_json_atomic(path, rows)  # as given (validated): the stored bytes stay what they were
    return parsed


def read_observations(cell: CellFolder | Path) -> Observations | None:
    path = _folder(cell).observations
    if not path.exists():
        return None
    return parse(Observations, json.loads(path.read_text()), path)


def write_observations(cell: CellFolder | Path, observations: dict[str, Any]) -> Observations:
    path = _folder(cell).observations
    parsed = parse(Observations, observations, path)
    write_json_atomic(path, observations)  # as given (validated)
    return parsed


def read_runtime_state(cell: CellFolder | Path) -> RuntimeState:
    """runtime.json, empty when the local runtime never started anything here."""
    path = _folder(cell).runtime_state
    return parse(RuntimeState, read_json(path), path)


def write_runtime_state(cell: CellFolder | Path, state: RuntimeState) -> None:
    write_json_atomic(_folder(cell).runtime_state, dump(state))


def read_existing_saved(cell: CellFolder | Path) -> ExistingSaved | None:
    path = _folder(cell).existing_saved
    if not path.exists():
        return None
    return parse(ExistingSaved, json.loads(path.read_text()), path)
