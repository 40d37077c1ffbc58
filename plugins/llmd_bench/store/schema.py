"""Results schema (SQLAlchemy 2), private to store/ (the rest of the package reads store/rows.py). Migrations in
`migrations/` (Alembic) create and evolve it; table and column names never change without one.

runs 1-n cells 1-n level_results. Unique keys make every load an idempotent upsert:
runs (campaign, dag_run_id), cells (run, model, config, trial), level_results (cell, concurrency).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from llmd_bench.store.rows import CELL_STATUSES


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, float: Double}
    if TYPE_CHECKING:
        # every model here is mapped to a Table (DeclarativeBase types it as any FromClause): Core update() and COPY
        __table__: ClassVar[Table]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("campaign", "dag_run_id", name="uq_runs_campaign_dag_run"),
                      Index("ix_runs_campaign_version", "campaign", "llmd_version"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign: Mapped[str] = mapped_column(Text)
    dag_run_id: Mapped[str] = mapped_column(Text)
    runtime: Mapped[str] = mapped_column(Text)
    llmd_version: Mapped[str] = mapped_column(Text)
    vllm_version: Mapped[str | None] = mapped_column(Text)
    guidellm_version: Mapped[str | None] = mapped_column(Text)
    llmd_bench_version: Mapped[str | None] = mapped_column(Text)
    images: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text, default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    cells: Mapped[list[Cell]] = relationship(back_populates="run", cascade="all, delete-orphan")


class Cell(Base):
    __tablename__ = "cells"
    __table_args__ = (
        # one row per model x configuration x factor values x trial
        UniqueConstraint("run_id", "model", "config", "stack_factors", "config_factors", "trial",
                         name="uq_cells_run_model_config_factors_trial"),
        CheckConstraint(f"status IN {CELL_STATUSES}", name="ck_cells_status"),
        Index("ix_cells_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(Text)
    short_model: Mapped[str] = mapped_column(Text)
    config: Mapped[str] = mapped_column(Text)
    # the campaign's factor values for this cell (campaign.Cell): stack factors ('replicas=2') are compared within,
    # configuration factors ('offload_size=20k') label the configuration; '' when the campaign has none
    stack_factors: Mapped[str] = mapped_column(Text, default="", server_default="")
    config_factors: Mapped[str] = mapped_column(Text, default="", server_default="")
    factors: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # an adaptive sweep's decisions (adaptive.AdaptiveSweep.summary); {} for a grid sweep
    sweep: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # GPUs held and seconds per phase (gpu_time.py), written by compare once the cell's teardown has ended
    gpu_time: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # what ran (Runtime.stack_metadata, captured by deploy): images and digests, vLLM version and args, EPP config
    # hash, replicas, GPUs per node; {} for cells stored before it was captured or imported
    stack: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # what the servers showed they serve (served.ServedHistory: every check, pod and key, proven / differs / not
    # provable with why); {} for cells stored before the proof or imported
    served: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # where and beside what the cell ran (rows.Placement: kind lane / shared / alone, lane slot, node, GPUs, times)
    placement: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    trial: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    replicas: Mapped[int | None] = mapped_column(Integer)
    tensor_parallel_size: Mapped[int | None] = mapped_column(Integer)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str | None] = mapped_column(Text)
    report_sha256: Mapped[str | None] = mapped_column(Text)
    config_effect: Mapped[dict[str, Any]] = mapped_column(default=dict)
    observability: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())

    run: Mapped[Run] = relationship(back_populates="cells")
    levels: Mapped[list[LevelResult]] = relationship(back_populates="cell", cascade="all, delete-orphan")


class LevelResult(Base):
    __tablename__ = "level_results"
    __table_args__ = (
        UniqueConstraint("cell_id", "concurrency", name="uq_level_results_cell_concurrency"),
        Index("ix_level_results_cell_valid_tps", "cell_id", "valid", "output_tps_mean"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"))
    concurrency: Mapped[int] = mapped_column(Integer)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    # set when the load generator (or, on the local runtime, the shared host) was saturated: no verdict
    suspect_reason: Mapped[str | None] = mapped_column(Text)
    requests_successful: Mapped[int] = mapped_column(Integer)
    requests_errored: Mapped[int] = mapped_column(Integer)
    requests_incomplete: Mapped[int] = mapped_column(Integer)
    level_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float]
    output_tps_std: Mapped[float | None]
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)

    output_tps_mean: Mapped[float | None]
    output_tps_median: Mapped[float | None]
    output_tps_p90: Mapped[float | None]
    output_tps_p99: Mapped[float | None]
    requests_per_s_mean: Mapped[float | None]
    requests_per_s_median: Mapped[float | None]
    requests_per_s_p90: Mapped[float | None]
    requests_per_s_p99: Mapped[float | None]
    ttft_ms_mean: Mapped[float | None]
    ttft_ms_median: Mapped[float | None]
    ttft_ms_p90: Mapped[float | None]
    ttft_ms_p99: Mapped[float | None]
    tpot_ms_mean: Mapped[float | None]
    tpot_ms_median: Mapped[float | None]
    tpot_ms_p90: Mapped[float | None]
    tpot_ms_p99: Mapped[float | None]
    itl_ms_mean: Mapped[float | None]
    itl_ms_median: Mapped[float | None]
    itl_ms_p90: Mapped[float | None]
    itl_ms_p99: Mapped[float | None]
    request_latency_s_mean: Mapped[float | None]
    request_latency_s_median: Mapped[float | None]
    request_latency_s_p90: Mapped[float | None]
    request_latency_s_p99: Mapped[float | None]

    cell: Mapped[Cell] = relationship(back_populates="levels")


class StoredReport(Base):
    """The comparison report of a run, as generated (one per run; regenerating replaces it)."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("campaign", "dag_run_id", name="uq_reports_campaign_dag_run"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign: Mapped[str] = mapped_column(Text)
    dag_run_id: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    markdown: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    peak_table: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Regressions beyond noise the report found (against other llm-d versions and against the previous run
    # of the same version): a list of {kind, model, config, version, other, change_pct, ...}.
    regressions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)


class LevelObservation(Base):
    """Evidence per cell x level: host metrics from PCP (source `pcp`), model-server metrics (`vllm`).
    Only measured values are stored; what could not be measured is said in cells.observability."""

    __tablename__ = "level_observations"
    __table_args__ = (UniqueConstraint("cell_id", "concurrency", "source", "metric", name="uq_level_observations"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"))
    concurrency: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(Text)
    value: Mapped[float]
