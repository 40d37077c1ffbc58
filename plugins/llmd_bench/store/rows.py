"""The results store's rows as the rest of the package sees them: frozen, typed, free of SQLAlchemy.

Readers (store/read.py) return these; writers (store/db.py Writer) take RunInfo, CellInfo and the parsed levels.
The report, MLflow, the Benchmark Report export, plan, notify and compare consume them and never see a table.

- RunRow: a run (campaign x Airflow run id) with its params as stored (StoredRunParams) and whether its serving
  layer was simulated (decided by runtime/, from the stored runtime name).
- CellRow: one model x configuration x factor values x trial of a run; LevelRow: one concurrency level of it, with
  GuideLLM's successful-request statistics under one name each (`<metric>_<stat>`, LEVEL_METRICS x LEVEL_STATS);
  ObservationRow: a measured value of a level (PCP, vLLM metrics, the load generator).
- StoredRun: a run with its cells, their levels and observations, and its stored report.
- GpuTime: a cell's GPU time per phase (gpu_time.py), GpuTimeHistoryRow: a measured cell as plan's estimate reads it.
- PeakRow, RunPeakRow, TrialPeakRow: the peaks the report compares a run with (other llm-d versions, earlier runs,
  the noise model's history), aggregated in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from llmd_bench.model.runtimes import simulated_runtime

CELL_STATUSES = ("ok", "invalid", "failed", "skipped")
# GuideLLM's successful-request statistics stored per level: column `<metric>_<stat>` (level_results)
LEVEL_METRICS = ("output_tps", "requests_per_s", "ttft_ms", "tpot_ms", "itl_ms", "request_latency_s")
LEVEL_STATS = ("mean", "median", "p90", "p99")


def metric_column(metric: str, stat: str) -> str:
    """The one name of a level statistic: `<metric>_<stat>` (ttft_ms_mean), as stored and as MLflow logs it."""
    return f"{metric}_{stat}"


def factors_suffix(factors: str) -> str:
    return f" [{factors}]" if factors else ""


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class _Labelled(_Row):
    """A row of one cell (or of the same cell over runs): its model, configuration and factor values."""

    short_model: str
    stack_factors: str
    config: str
    config_factors: str

    @property
    def model_label(self) -> str:
        """The model as the report names it: stack factors go with the model ('Qwen3-8B [replicas=2]'), so every
        configuration is compared with the baseline under the same replicas, TP and memory regime."""
        return self.short_model + factors_suffix(self.stack_factors)

    @property
    def config_label(self) -> str:
        """The configuration as the report names it, with its configuration factors ('native-offload [offload_size=20k]')."""
        return self.config + factors_suffix(self.config_factors)

    @property
    def factors_label(self) -> str:
        return ",".join(f for f in (self.stack_factors, self.config_factors) if f)


class StoredRunParams(BaseModel):
    """A run's params as stored with it: params.RunParams of the version that ran it plus warmup_requests and
    gpu_hour_cost (context.stored_params); an import's imported_from and the GuideLLM spec it read. Every field is
    optional (runs stored by older versions lack later ones) and keys this version does not declare are kept:
    as_stored() is the stored JSON unchanged (numbers keep their JSON type: `int | float`, never 60 read as 60.0)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    models: list[str] | None = None
    configs: list[str] | None = None
    concurrency: list[int] | None = None
    duration_s: int | float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    prefix_tokens: int | None = None
    prefix_count: int | str | None = None
    turns: int | None = None
    seed: int | None = None
    max_requests: int | str | None = None
    runs: str | None = None
    level_isolation: str | None = None
    trial_isolation: str | None = None
    trials: int | None = None
    sweep: str | None = None
    baseline: str | None = None
    noise_floor_pct: int | float | None = None
    tensor_parallel_size: int | None = None
    replicas: int | None = None
    llmd_version: str | None = None
    factors: dict[str, list[Any]] | None = None
    warmup_requests: int | None = None
    gpu_hour_cost: int | float | None = None
    # a campaign's hardware label (MLflow's experiment), when it sets one
    hardware: str | None = None
    # latency targets for goodput (campaign.Slo as its JSON: metric -> percentile -> ms, unset ones null; read into
    # campaign.Slo by the report, which names a value it cannot read) and the run's design (campaign.Design)
    slo: dict[str, Any] | None = None
    design: str | None = None
    imported_from: list[str] | None = None
    guidellm_spec: dict[str, Any] | None = None

    def as_stored(self) -> dict[str, Any]:
        """The params exactly as stored (the keys that were there, with their values)."""
        return self.model_dump(mode="json", exclude_unset=True)


class RunRow(_Row):
    id: int
    campaign: str
    dag_run_id: str
    runtime: str
    llmd_version: str
    vllm_version: str | None
    guidellm_version: str | None
    llmd_bench_version: str | None
    images: dict[str, Any]
    params: StoredRunParams
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def simulated(self) -> bool:
        """The run's serving layer was simulated (runtime/__init__.py decides it from the runtime's name)."""
        return simulated_runtime(self.runtime)


class GpuTime(BaseModel):
    """A cell's GPU time (gpu_time.phases), written by compare once its teardown ended; empty when not measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int | None = None
    wall_s: float | None = None
    seconds: dict[str, float] = {}
    gpu_hours: dict[str, float] = {}
    gpu_hours_total: float | None = None
    complete: bool = False

    def as_stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


PlacementKind = Literal["alone", "shared", "lane"]
PLACEMENT_KINDS: tuple[str, ...] = ("alone", "shared", "lane")


class Placement(BaseModel):
    """Where and beside what a cell ran. kind: alone (lanes: 1, one cell at a time), shared (lanes: N > 1: cells at
    once on the same GPUs pool, or this host), lane (lanes: auto: its own GPUs on one node, stack/lanes.py). A lane
    also has its slot, node, GPUs and the lease's acquired and released times (ISO 8601, UTC) and seconds waited.
    The noise history compares a cell only with runs of the same kind. Keys a lane records beyond these are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: PlacementKind = "alone"
    lanes: int | None = None
    slot: str | None = None
    node: str | None = None
    gpus: int | None = None
    acquired: str | None = None
    released: str | None = None
    waited_s: float | None = None

    def as_stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class CellRow(_Labelled):
    id: int
    run_id: int
    model: str
    factors: dict[str, Any]
    sweep: dict[str, Any]
    gpu_time: GpuTime
    stack: dict[str, Any]
    served: dict[str, Any]
    trial: int
    status: str
    reason: str | None
    replicas: int | None
    tensor_parallel_size: int | None
    versions: dict[str, Any]
    report_path: str | None
    report_sha256: str | None
    config_effect: dict[str, Any]
    observability: dict[str, Any]
    placement: Placement = Placement()


class LevelRow(_Row):
    cell_id: int
    concurrency: int
    valid: bool
    invalid_reason: str | None
    # set when the load generator (or, on the local runtime, the shared host) was saturated: no verdict
    suspect_reason: str | None
    requests_successful: int
    requests_errored: int
    requests_incomplete: int
    level_start: datetime
    level_end: datetime
    duration_s: float
    output_tps_std: float | None
    # the standard deviation of the successful requests' latency (from GuideLLM's summary)
    request_latency_s_std: float | None
    # GuideLLM's whole summary of the level; None when the reader was asked to leave it out
    summary: dict[str, Any] | None

    output_tps_mean: float | None
    output_tps_median: float | None
    output_tps_p90: float | None
    output_tps_p99: float | None
    requests_per_s_mean: float | None
    requests_per_s_median: float | None
    requests_per_s_p90: float | None
    requests_per_s_p99: float | None
    ttft_ms_mean: float | None
    ttft_ms_median: float | None
    ttft_ms_p90: float | None
    ttft_ms_p99: float | None
    tpot_ms_mean: float | None
    tpot_ms_median: float | None
    tpot_ms_p90: float | None
    tpot_ms_p99: float | None
    itl_ms_mean: float | None
    itl_ms_median: float | None
    itl_ms_p90: float | None
    itl_ms_p99: float | None
    request_latency_s_mean: float | None
    request_latency_s_median: float | None
    request_latency_s_p90: float | None
    request_latency_s_p99: float | None

    def statistic(self, metric: str, stat: str) -> float | None:
        value = getattr(self, metric_column(metric, stat))
        assert value is None or isinstance(value, float)
        return value


class ObservationRow(_Row):
    """A measured value of a level: host metrics from PCP (`pcp`), model-server metrics (`vllm`), the load
    generator's (`generator`)."""

    cell_id: int
    concurrency: int
    source: str
    metric: str
    value: float


class StoredCell(_Row):
    cell: CellRow
    levels: tuple[LevelRow, ...]
    observations: tuple[ObservationRow, ...]

    def observations_at(self, concurrency: int) -> list[ObservationRow]:
        return [o for o in self.observations if o.concurrency == concurrency]


class StoredReportRow(_Row):
    """The comparison report of a run as compare stored it."""

    markdown: str
    html: str


class StoredRun(_Row):
    """A run as stored: its cells (ordered by model, config, factors, trial) with their levels (by concurrency)
    and observations, and its stored report."""

    run: RunRow
    cells: tuple[StoredCell, ...]
    report: StoredReportRow | None


class PeakRow(_Labelled):
    """Per llm-d version x cell (model x configuration x factors, over runs and trials): the mean peak output
    tokens/s of the campaign's runs, its spread and the mean single-run standard error."""

    llmd_version: str
    samples: int
    runs: int
    peak_output_tps: float
    peak_std: float | None
    within_level_se: float | None


class RunPeakRow(_Labelled):
    """Per run x cell: this run (is_current) or an earlier run that measured the same thing, its peaks over trials."""

    run_pk: int
    dag_run_id: str
    t: datetime
    is_current: bool
    samples: int
    peak_output_tps: float
    peak_std: float | None
    within_level_se: float | None


class TrialPeakRow(_Labelled):
    """One trial's peak of an earlier run that measured the same thing (the noise model's history)."""

    t: datetime
    run_pk: int
    trial: int
    peak_output_tps: float


class LatestPeakRow(_Row):
    """Per cell of a campaign's latest run: the valid level with the highest mean output tokens/s (none: nulls)."""

    model: str
    short_model: str
    config: str
    trial: int
    status: str
    optimal_concurrency: int | None
    peak_output_tps: float | None
    ttft_ms_mean: float | None
    tpot_ms_mean: float | None
    output_tps_std: float | None


class GpuTimeHistoryRow(_Row):
    """A measured cell x trial with GPU time, as plan's estimate reads it: the run's runtime, version and params, and
    the number of levels the trial ran."""

    run_pk: int
    runtime: str
    llmd_version: str
    params: StoredRunParams
    model: str
    config: str
    stack_factors: str = ""
    config_factors: str = ""
    trial: int
    status: str
    tensor_parallel_size: int | None
    gpu_time: GpuTime
    levels: int


class RunInfo(_Row):
    """A run as a writer stores it (upserted on campaign x dag_run_id)."""

    campaign: str
    dag_run_id: str
    runtime: str
    llmd_version: str
    vllm_version: str | None
    guidellm_version: str | None
    llmd_bench_version: str | None
    images: dict[str, Any]
    params: StoredRunParams


class CellInfo(_Row):
    """A cell x trial as a writer stores it (upserted on run x model x config x factors x trial)."""

    model: str
    short_model: str
    config: str
    trial: int
    status: str
    reason: str | None = None
    stack_factors: str = ""
    config_factors: str = ""
    factors: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    replicas: int | None = None
    tensor_parallel_size: int | None = None
    versions: dict[str, Any] | None = None
    report_path: str | None = None
    report_sha256: str | None = None
    config_effect: dict[str, Any] | None = None
    observability: dict[str, Any] | None = None
    stack: dict[str, Any] | None = None
    served: dict[str, Any] | None = None
    placement: Placement | None = None
