"""Connecting to the results store, migrating it, and idempotent loads (one transaction per cell).

Writers take store/rows.py's RunInfo and CellInfo and GuideLLM's parsed levels; code outside store/ writes through a
Writer handed to it by in_transaction and never sees a session."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine, create_engine, delete, func, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from llmd_bench.measure.guidellm_levels import LevelResult as ParsedLevel
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.settings import results_store_url, settings
from llmd_bench.store.rows import LEVEL_METRICS, LEVEL_STATS, CellInfo, GpuTime, RunInfo, metric_column
from llmd_bench.store.schema import Cell, LevelObservation, LevelResult, Run, StoredReport
from llmd_bench.store.server import start_local_server

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


class DatabaseUnavailable(LlmdBenchError):
    pass


def configured_or_local_url() -> str:
    """The configured results store (settings.results_store_url), else the project's local server, which this
    starts when it is not running: the local runtime's default."""

    return results_store_url() or start_local_server()


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def make_engine(url: str | None = None) -> Engine:
    url = url or configured_or_local_url()
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}, json_serializer=_json_dumps)


def _json_dumps(obj: Any) -> str:
    # msgspec (a GuideLLM dependency) encodes level summaries ~5x faster than json; same JSON out.
    try:
        import msgspec  # deferred: optional (a GuideLLM dependency; plain json without it)
    except ImportError:
        return json.dumps(obj)
    return msgspec.json.encode(obj).decode()


def with_retries(fn: Callable[[], T], what: str, url: str, attempts: int | None = None, first_delay_s: float | None = None) -> T:
    """Retry on connection errors with exponential back-off, then fail with a message a user can act on."""
    attempts = attempts or settings().db_attempts
    delay = first_delay_s if first_delay_s is not None else settings().db_retry_delay_s
    last: Exception | None = None
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            last = exc
            msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            print(f"results database {redacted(url)} unavailable ({msg}); attempt {i + 1}/{attempts}", flush=True)
            if i + 1 < attempts:
                time.sleep(delay)
                delay *= 2
    raise DatabaseUnavailable(f"{what}: results database {redacted(url)} unreachable after {attempts} attempts: "
                              f"{str(getattr(last, 'orig', last)).strip().splitlines()[0]}") from None


def with_engine(fn: Callable[[Engine], T], what: str, url: str | None = None) -> T:
    """Run fn(engine) against the results store, retrying while it is unreachable; the engine is disposed."""
    url = url or configured_or_local_url()
    engine = make_engine(url)
    try:
        return with_retries(lambda: fn(engine), what, url)
    finally:
        engine.dispose()


def in_transaction(fn: Callable[[Writer], T], what: str, url: str | None = None) -> T:
    """Migrate the schema to head, then run fn(writer) in one transaction: all of it lands or none."""
    def run(engine: Engine) -> T:
        migrate(engine)
        with Session(engine) as session, session.begin():
            return fn(Writer(session))
    return with_engine(run, what, url)


def migrate(engine: Engine) -> None:
    from alembic import command  # deferred: loads alembic
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        # One migrator at a time when several cells load together.
        conn.execute(text("SELECT pg_advisory_xact_lock(727271)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def upsert_run(session: Session, info: RunInfo) -> int:
    values = info.model_dump(exclude={"params"}) | {"params": info.params.as_stored()}
    stmt = pg_insert(Run).values(**values)
    upsert = stmt.on_conflict_do_update(
        constraint="uq_runs_campaign_dag_run",
        set_={k: stmt.excluded[k] for k in ("runtime", "llmd_version", "vllm_version", "guidellm_version",
                                            "llmd_bench_version", "images", "params")},
    ).returning(Run.id)
    return session.execute(upsert).scalar_one()


def upsert_cell(session: Session, run_id: int, info: CellInfo) -> int:
    values = dict(info.model_dump(), run_id=run_id, versions=info.versions or {}, config_effect=info.config_effect or {},
                  observability=info.observability or {}, factors=info.factors or {}, sweep=info.sweep or {},
                  stack=info.stack or {}, served=info.served or {},
                  placement=info.placement.as_stored() if info.placement else {})
    key = ("run_id", "model", "config", "stack_factors", "config_factors", "trial")
    stmt = pg_insert(Cell).values(**values)
    upsert = stmt.on_conflict_do_update(
        constraint="uq_cells_run_model_config_factors_trial",
        set_={k: stmt.excluded[k] for k in values if k not in key} | {"loaded_at": func.now()},
    ).returning(Cell.id)
    return session.execute(upsert).scalar_one()


def level_row(cell_id: int, lv: ParsedLevel, suspect_reason: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell_id": cell_id, "concurrency": lv.concurrency, "valid": lv.valid, "invalid_reason": lv.invalid_reason,
        "suspect_reason": suspect_reason,
        "requests_successful": lv.requests_successful, "requests_errored": lv.requests_errored,
        "requests_incomplete": lv.requests_incomplete, "level_start": _ts(lv.start), "level_end": _ts(lv.end),
        "duration_s": lv.duration_s, "output_tps_std": lv.value("output_tps", "std_dev"), "summary": lv.summary,
    }
    for metric in LEVEL_METRICS:
        for stat in LEVEL_STATS:
            row[metric_column(metric, stat)] = lv.value(metric, stat)
    return row


def copy_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows with COPY in the session's transaction. A 16-cell campaign with long sweeps loads
    10,000 level rows of ~7 KiB JSONB each; multi-row INSERTs spent ~7 s quoting them as SQL literals.
    The rows are encoded while the server parses the previous chunk (the two run on different cores)."""
    if not rows:
        return
    columns = list(rows[0])
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise ValueError(f"{table.name}: no column(s) {unknown}")
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSONB)}
    lines = ("\t".join([_copy_field(row[c], c in json_columns) for c in columns]) + "\n" for row in rows)
    driver = session.connection().connection.driver_connection
    assert driver is not None  # None only for a connection the pool has invalidated, not one checked out
    cursor = driver.cursor()
    try:
        cursor.copy_expert(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN", _LineReader(lines),
                           size=1 << 16)
    finally:
        cursor.close()


class _LineReader:
    """The file object psycopg2's copy_expert reads from, filled from a generator of lines on demand."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines, self.pending = lines, ""

    def read(self, size: int = -1) -> str:
        parts, have = [self.pending], len(self.pending)
        for line in self.lines:
            parts.append(line)
            have += len(line)
            if 0 <= size <= have:
                break
        data = "".join(parts)
        if size < 0:
            self.pending = ""
            return data
        self.pending = data[size:]
        return data[:size]


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any, as_json: bool) -> str:
    # COPY's text format: \N is NULL; backslash, tab, newline and carriage return are escaped.
    if as_json:
        value = _json_dumps(value)
    elif value is None:
        return "\\N"
    elif isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, float) and not math.isfinite(value):
        value = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text_value = str(value)
    if "\\" in text_value or "\t" in text_value or "\n" in text_value or "\r" in text_value:
        return text_value.translate(_COPY_ESCAPES)
    return text_value


def store_cell(session: Session, run: RunInfo, cell: CellInfo, levels: list[ParsedLevel],
               observations: Sequence[tuple[int, str, str, float]] = (),
               suspects: dict[int, str] | None = None) -> int:
    """Replace the cell's rows with these (run upserted too). The caller owns the transaction.
    observations: (concurrency, source, metric, value) measured values only; suspects: concurrency -> why
    the level measured the load generator or the machine rather than the server."""
    run_pk = upsert_run(session, run)
    cell_pk = upsert_cell(session, run_pk, cell)
    session.execute(delete(LevelResult).where(LevelResult.cell_id == cell_pk))
    session.execute(delete(LevelObservation).where(LevelObservation.cell_id == cell_pk))
    if levels:
        copy_rows(session, LevelResult.__table__, [level_row(cell_pk, lv, (suspects or {}).get(lv.concurrency))
                                                   for lv in levels])
    if observations:
        session.execute(insert(LevelObservation), [
            {"cell_id": cell_pk, "concurrency": c, "source": src, "metric": m, "value": v} for c, src, m, v in observations])
    return cell_pk


def cell_stored(campaign: str, dag_run_id: str, model: str, config: str, trials: int, stack_factors: str = "",
                config_factors: str = "", url: str | None = None) -> bool:
    """True when every trial of the cell is stored with status ok (a cleared run must not redo it). Asked once,
    without retries or migrations: a caller treats an error (a down server, no schema yet) as "not stored"."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            n = session.execute(
                select(func.count()).select_from(Cell).join(Run)
                .where(Run.campaign == campaign, Run.dag_run_id == dag_run_id, Cell.model == model,
                       Cell.config == config, Cell.stack_factors == stack_factors,
                       Cell.config_factors == config_factors, Cell.status == "ok", Cell.trial <= trials)
            ).scalar_one()
    finally:
        engine.dispose()
    return n >= trials


def set_gpu_time(session: Session, run_pk: int, model: str, config: str, stack_factors: str, config_factors: str,
                 gpu_time: GpuTime) -> None:
    """A cell's GPU time (gpu_time.py), known once its teardown has ended: on every trial's row."""
    session.execute(Cell.__table__.update().where(
        Cell.run_id == run_pk, Cell.model == model, Cell.config == config, Cell.stack_factors == stack_factors,
        Cell.config_factors == config_factors).values(gpu_time=gpu_time.as_stored()))


def finish_run(session: Session, campaign: str, dag_run_id: str, status: str) -> None:
    session.execute(
        Run.__table__.update().where(Run.campaign == campaign, Run.dag_run_id == dag_run_id)
        .values(status=status, ended_at=func.now(),
                started_at=select(func.min(LevelResult.level_start)).join(Cell).where(Cell.run_id == Run.id).scalar_subquery())
    )


def store_report(session: Session, campaign: str, dag_run_id: str, markdown: str, html: str,
                 peak_table: list[dict[str, Any]], regressions: list[dict[str, Any]] | None = None) -> None:
    stmt = pg_insert(StoredReport).values(campaign=campaign, dag_run_id=dag_run_id, markdown=markdown, html=html,
                                          peak_table={"cells": peak_table}, regressions=regressions or [])
    session.execute(stmt.on_conflict_do_update(
        constraint="uq_reports_campaign_dag_run",
        set_={"markdown": stmt.excluded.markdown, "html": stmt.excluded.html, "peak_table": stmt.excluded.peak_table,
              "regressions": stmt.excluded.regressions, "created_at": func.now()}))


def stored_regressions(campaign: str, dag_run_id: str, url: str) -> list[dict[str, Any]] | None:
    """The regressions the run's stored report found; None when the run has no stored report. Asked once, without
    retries or migrations (a notification must not wait for the store)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            row = session.execute(select(StoredReport.regressions).where(
                StoredReport.campaign == campaign, StoredReport.dag_run_id == dag_run_id)).first()
    finally:
        engine.dispose()
    return None if row is None else list(row[0] or [])


class Writer:
    """Writes into one transaction of the results store (in_transaction hands one out): the run, its cells with their
    levels and observations, GPU times, the run's end and its report."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def upsert_run(self, run: RunInfo) -> int:
        """The run's row (created or updated); its key."""
        return upsert_run(self._session, run)

    def upsert_cell(self, run_pk: int, cell: CellInfo) -> int:
        """A cell row without levels (a failed or skipped cell); its key."""
        return upsert_cell(self._session, run_pk, cell)

    def store_cell(self, run: RunInfo, cell: CellInfo, levels: list[ParsedLevel],
                   observations: Sequence[tuple[int, str, str, float]] = (),
                   suspects: dict[int, str] | None = None) -> int:
        return store_cell(self._session, run, cell, levels, observations, suspects)

    def set_gpu_time(self, run_pk: int, model: str, config: str, stack_factors: str, config_factors: str,
                     gpu_time: GpuTime) -> None:
        set_gpu_time(self._session, run_pk, model, config, stack_factors, config_factors, gpu_time)

    def finish_run(self, campaign: str, dag_run_id: str, status: str) -> None:
        finish_run(self._session, campaign, dag_run_id, status)

    def store_report(self, campaign: str, dag_run_id: str, markdown: str, html: str, peak_table: list[dict[str, Any]],
                     regressions: list[dict[str, Any]] | None = None) -> None:
        store_report(self._session, campaign, dag_run_id, markdown, html, peak_table, regressions)
