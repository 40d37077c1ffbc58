"""Server time series per level: what the observe step collected while each cell's sweep ran, drawn over the sweep
with the level windows marked, one plot per cell, and where a series was not collected the plot says why.

Sources, as the sweep and collect_pcp leave them:
- the sampler's file of each trial (measure/observe/sampler.py: trial-<n>/serving_samples.jsonl in the cell folder,
  one line per replica every 2 s): vLLM's /metrics (KV-cache usage, running and waiting requests, the prefix-cache
  and external (KV-connector, offload) prefix-cache counters) and the Redis/Valkey index's key count;
- the results store: the level windows (level_results.level_start / level_end), each level's means of the same vLLM
  metrics and PCP's host CPU (level_observations), and what collect_pcp recorded as not measured with its reason
  (cells.observability: serving_metrics, kv_index, pcp).

The sampler's files stay in the cell folder where the sweep ran; where they are not on this machine (a sweep in a
pod, results removed) the vLLM series are drawn from the stored level means, across each level's window, and the plot
says so. Counters become rates between successive samples (summed over replicas; a drop is a restart, as PromQL's
rate), gauges are averaged (KV-cache usage) or summed (requests) over replicas at each sample.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from llmd_bench.measure.cell_folder import CellFolder, trial_dir_name
from llmd_bench.model import paths
from llmd_bench.report import figures
from llmd_bench.report.document import DocumentBuilder
from llmd_bench.store.rows import StoredCell, StoredRun

if TYPE_CHECKING:
    from llmd_bench.report.analysis import Report

HEADING = "Server time series"


@dataclass(frozen=True)
class Window:
    trial: int
    concurrency: int
    start: float  # epoch seconds
    end: float


@dataclass(frozen=True)
class CellServer:
    """What the observe step left of one cell (its trials together), as the report reads it."""

    model: str
    config: str
    windows: tuple[Window, ...]
    samples: tuple[dict[str, Any], ...] = ()
    samples_missing: str | None = None  # why the sampler's files could not be read here (None: read)
    serving_metrics: dict[str, Any] = field(default_factory=dict)
    kv_index: dict[str, Any] | None = None
    pcp: dict[str, Any] = field(default_factory=dict)
    simulated: bool = False  # the local runtime's simulated servers (stack/runtime/prefix_cache_sim.py)


# -- reading (the edge) ------------------------------------------------------------------------------------------
def collect(stored: StoredRun) -> list[CellServer]:
    """Each measured cell's level windows and collect_pcp's record from the store, and the sampler's samples from its
    cell folder when that is on this machine."""
    groups: dict[tuple[str, str], list[StoredCell]] = {}
    for entry in stored.cells:
        groups.setdefault((entry.cell.model_label, entry.cell.config_label), []).append(entry)
    out = []
    for (model, config), trials in groups.items():
        windows = tuple(sorted((Window(t.cell.trial, lv.concurrency, lv.level_start.timestamp(), lv.level_end.timestamp())
                                for t in trials for lv in t.levels), key=lambda w: (w.start, w.trial)))
        if not windows:
            continue
        samples: list[dict[str, Any]] = []
        missing: list[str] = []
        for t in sorted(trials, key=lambda t: t.cell.trial):
            found, why = _trial_samples(stored.run.dag_run_id, t)
            samples += found
            if why:
                missing.append(why)
        info = trials[0].cell.observability or {}
        out.append(CellServer(model, config, windows, tuple(samples), "; ".join(missing) or None,
                              info.get("serving_metrics") or {}, info.get("kv_index"), info.get("pcp") or {},
                              stored.run.simulated))
    return out


def cell_folder(run_id: str, entry: StoredCell) -> CellFolder:
    """Where the cell's files are: beside its trial's GuideLLM report (cells.report_path), else results/<run>/..."""
    cell = entry.cell
    if cell.report_path:
        path = Path(cell.report_path)
        for parent in path.parents:
            if parent.name == trial_dir_name(cell.trial):
                return CellFolder(parent.parent)
    variant = "_".join(f"{k}-{v}" for k, v in (cell.factors or {}).items())
    return CellFolder(paths.cell_dir(run_id, cell.model, cell.config, variant))


def _trial_samples(run_id: str, entry: StoredCell) -> tuple[list[dict[str, Any]], str | None]:
    path = cell_folder(run_id, entry).serving_samples(entry.cell.trial)
    try:
        text = path.read_text()
    except OSError:
        return [], f"the sampler's file of trial {entry.cell.trial} ({path}) is not on this machine"
    samples = []
    for line in text.splitlines():
        try:
            sample = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed sweep
        if isinstance(sample, dict) and isinstance(sample.get("time"), (int, float)):
            samples.append(sample)
    return samples, None


# -- the series (pure) -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    key: str
    label: str
    panel: str
    points: tuple[tuple[float, float], ...] = ()  # (epoch seconds, value)
    per_level: tuple[tuple[Window, float], ...] = ()  # level means across each level's window (no samples here)
    why: str | None = None  # why nothing is drawn (None: something is)

    @property
    def drawn(self) -> bool:
        return bool(self.points or self.per_level)


# panel -> y label
PANELS = {"kv": "KV-cache usage %", "requests": "requests", "hits": "prefix-cache hit rate %", "index": "index keys",
          "host": "host CPU %"}
PERCENT_PANELS = ("kv", "hits", "host")
# the vLLM series: key -> (label, panel, vLLM metric(s), the stored per-level metric)
GAUGES = {"kv_cache_usage": ("KV-cache usage", "kv", "vllm:kv_cache_usage_perc", "kv_cache_usage_perc"),
          "requests_running": ("running", "requests", "vllm:num_requests_running", "requests_running"),
          "requests_waiting": ("waiting", "requests", "vllm:num_requests_waiting", "requests_waiting")}
RATES = {"prefix_hit_rate": ("prefix-cache hit rate", "hits", "vllm:prefix_cache_hits_total",
                             "vllm:prefix_cache_queries_total", ("prefix_cache_hits", "prefix_cache_queries")),
         "external_hit_rate": ("offload / external hit rate", "hits", "vllm:external_prefix_cache_hits_total",
                               "vllm:external_prefix_cache_queries_total",
                               ("external_prefix_cache_hits", "external_prefix_cache_queries"))}


# what the local runtime's simulated server reports as a constant (stack/runtime/prefix_cache_sim.py metrics())
SIMULATED_ZERO = {"kv_cache_usage": "the local runtime's simulated server reports no KV-cache usage",
                  "requests_waiting": "the local runtime's simulated server reports no queue (its router queues)"}


def series(cell: CellServer, observations: pd.DataFrame | None = None) -> list[Series]:
    """Every series of the cell's plot, drawn or with why not. observations: the run's stored per-level values
    (data.OBSERVATION_COLUMNS), the fallback for the vLLM series and the source of host CPU."""
    obs = _cell_observations(cell, observations)
    vllm = [s for s in cell.samples if s.get("source") == "vllm" and isinstance(s.get("values"), dict)]
    out: list[Series] = []
    for key, (label, panel, metric, stored) in GAUGES.items():
        if vllm:
            points = _gauge(vllm, metric, mean=key == "kv_cache_usage", scale=100.0 if key == "kv_cache_usage" else 1.0)
            out.append(Series(key, label, panel, points=points) if points else
                       Series(key, label, panel, why=f"the servers' /metrics had no {metric}"))
            continue
        levels = _level_values(cell, obs, "vllm", stored, 100.0 if key == "kv_cache_usage" else 1.0)
        out.append(Series(key, label, panel, per_level=levels) if levels else
                   Series(key, label, panel, why=_no_vllm(cell)))
    for key, (label, panel, hits, queries, (stored_hits, stored_queries)) in RATES.items():
        if vllm:
            if not any(queries in s["values"] for s in vllm):
                out.append(Series(key, label, panel, why=f"the servers' /metrics had no {queries}"))
                continue
            points = _rate(vllm, hits, queries)
            out.append(Series(key, label, panel, points=points) if points else
                       Series(key, label, panel, why=f"{queries} did not move: no lookup during the sweep"))
            continue
        h = dict(_level_values(cell, obs, "vllm", stored_hits, 1.0))
        q = dict(_level_values(cell, obs, "vllm", stored_queries, 1.0))
        levels = tuple((w, 100.0 * h[w] / q[w]) for w in q if q[w] and w in h)
        if levels:
            out.append(Series(key, label, panel, per_level=levels))
        elif q or h:
            out.append(Series(key, label, panel, why=f"{queries} did not move: no lookup during the sweep"))
        else:
            out.append(Series(key, label, panel, why=_no_vllm(cell) if not _has_stored_vllm(obs) else
                              f"no {queries} was stored for the levels"))
    out.append(_index_keys(cell))
    host = _level_values(cell, obs, "pcp", "cpu_util_pct", 1.0)
    out.append(Series("host_cpu", "host CPU (PCP)", "host", per_level=host) if host else
               Series("host_cpu", "host CPU (PCP)", "host", why="PCP: " + _pcp_why(cell)))
    return out


def _cell_observations(cell: CellServer, observations: pd.DataFrame | None) -> pd.DataFrame:
    if observations is None or observations.empty:
        return pd.DataFrame(columns=["concurrency", "source", "metric", "value"])
    return observations[(observations["model"] == cell.model) & (observations["config"] == cell.config)]


def _has_stored_vllm(obs: pd.DataFrame) -> bool:
    return not obs.empty and bool((obs["source"] == "vllm").any())


def _no_vllm(cell: CellServer) -> str:
    """Why no vLLM series: what collect_pcp recorded, and that the samples are not here when that is why."""
    serving = cell.serving_metrics
    if serving.get("available") is False:
        return str(serving.get("reason") or "not available")
    if not serving:
        return "not measured (collect_pcp recorded no serving metrics for this cell)"
    return cell.samples_missing or "no vLLM sample was taken"


def _pcp_why(cell: CellServer) -> str:
    status = cell.pcp.get("status") or "not measured"
    reason = cell.pcp.get("reason") or ("recorded, but no CPU value per level was stored" if status == "recorded" else
                                         "collect_pcp recorded nothing for this cell")
    return f"{status} ({reason})"


def _index_keys(cell: CellServer) -> Series:
    label, panel = "index keys", "index"
    kv = cell.kv_index
    if not kv:
        return Series("index_keys", label, panel, why="no Redis/Valkey KV index in this configuration")
    rows = [s for s in cell.samples if s.get("source") == "kv_index"]
    points = tuple((float(s["time"]), float(s["keys"])) for s in rows if isinstance(s.get("keys"), (int, float)))
    if points:
        return Series("index_keys", label, panel, points=points)
    errors = [str(s["error"]) for s in rows if s.get("error")]
    if errors:
        return Series("index_keys", label, panel, why=f"the index could not be read: {errors[-1]}")
    if cell.samples_missing:
        return Series("index_keys", label, panel, why=f"sampled only into the sampler's file: {cell.samples_missing}; "
                                                      f"the index held at most {kv.get('max_keys')} keys")
    return Series("index_keys", label, panel, why="no key count was sampled")


def _by_time(samples: Iterable[dict[str, Any]]) -> dict[float, list[dict[str, Any]]]:
    """The sampler takes every replica at one `time` per pass."""
    out: dict[float, list[dict[str, Any]]] = {}
    for s in samples:
        out.setdefault(float(s["time"]), []).append(s)
    return dict(sorted(out.items()))


def _gauge(samples: list[dict[str, Any]], metric: str, mean: bool, scale: float) -> tuple[tuple[float, float], ...]:
    points = []
    for t, group in _by_time(samples).items():
        values = [float(s["values"][metric]) for s in group if metric in s["values"]]
        if values:
            points.append((t, scale * (sum(values) / len(values) if mean else sum(values))))
    return tuple(points)


def _rate(samples: list[dict[str, Any]], hits: str, queries: str) -> tuple[tuple[float, float], ...]:
    """hits / queries (%) between successive samples, summed over replicas; intervals without a query are left out."""
    by_replica: dict[str, list[tuple[float, float, float]]] = {}
    for s in samples:
        if queries in s["values"]:
            by_replica.setdefault(str(s.get("replica")), []).append(
                (float(s["time"]), float(s["values"].get(hits, 0.0)), float(s["values"][queries])))
    deltas: dict[float, list[float]] = {}
    for series_ in by_replica.values():
        series_.sort()
        for (_, h0, q0), (t1, h1, q1) in zip(series_, series_[1:]):
            dh, dq = (h1 - h0 if h1 >= h0 else h1), (q1 - q0 if q1 >= q0 else q1)  # a drop: the server restarted
            acc = deltas.setdefault(t1, [0.0, 0.0])
            acc[0] += dh
            acc[1] += dq
    return tuple((t, 100.0 * dh / dq) for t, (dh, dq) in sorted(deltas.items()) if dq > 0)


def _level_values(cell: CellServer, obs: pd.DataFrame, source: str, metric: str,
                  scale: float) -> tuple[tuple[Window, float], ...]:
    if obs.empty:
        return ()
    found = obs[(obs["source"] == source) & (obs["metric"] == metric)]
    by_level = {int(c): float(v) * scale for c, v in zip(found["concurrency"], found["value"]) if pd.notna(v)}
    return tuple((w, by_level[w.concurrency]) for w in cell.windows if w.concurrency in by_level)


# -- the plot --------------------------------------------------------------------------------------------------------
def plot_name(cell: CellServer) -> str:
    return "server_timeseries_" + re.sub(r"[^A-Za-z0-9.-]+", "_", f"{cell.model}_{cell.config}").strip("_") + ".png"


def figure(cell: CellServer, drawn: list[Series]) -> Any:
    """The cell's panels over the sweep (seconds from its first level), level windows shaded and named; a panel's
    series that was not collected says why inside the panel."""
    import matplotlib  # deferred: loads matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib

    t0 = cell.windows[0].start
    trials = len({w.trial for w in cell.windows}) > 1
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 1.9 * len(PANELS) + 0.6), sharex=True, squeeze=False)
    for ax, (panel, ylabel) in zip(axes[:, 0], PANELS.items(), strict=True):
        for i, w in enumerate(cell.windows):
            ax.axvspan(w.start - t0, w.end - t0, color="#999999", alpha=0.10 if i % 2 else 0.18, linewidth=0)
            ax.axvline(w.start - t0, color="#777777", linewidth=0.6)
            ax.axvline(w.end - t0, color="#777777", linewidth=0.6, linestyle=":")
        missing, notes = [], []
        for s in (s for s in drawn if s.panel == panel):
            if s.points:
                ax.plot([t - t0 for t, _ in s.points], [v for _, v in s.points], marker=".", markersize=3,
                        linewidth=1, label=s.label)
            elif s.per_level:
                line = None
                for w, v in s.per_level:
                    line, = ax.plot([w.start - t0, w.end - t0], [v, v], linewidth=2.2,
                                    color=line.get_color() if line is not None else None,
                                    label=f"{s.label} (level mean)" if line is None else None)
            else:
                missing.append(f"{s.label}: not collected: {_short(s.why)}")
            zero = s.drawn and not any(v for _, v in s.points + s.per_level)
            if zero and cell.simulated and s.key in SIMULATED_ZERO:
                notes.append(f"{s.label}: 0 throughout: {SIMULATED_ZERO[s.key]}")
            elif zero and s.key == "index_keys":
                notes.append(f"{s.label}: 0 throughout: nothing published KV events to the index")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        drawn_here = any(s.drawn for s in drawn if s.panel == panel)
        if drawn_here:
            ax.legend(fontsize=7, loc="upper left")
            if panel in PERCENT_PANELS:
                ax.set_ylim(0, 105)
            else:  # counts: from 0, at least to 1
                ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        else:
            ax.set_yticks([])
        said = [(m, "#b22222") for m in missing] + [(n, "#555555") for n in notes]
        if said:
            ax.text(0.5, 0.06 if drawn_here else 0.5, "\n".join(textwrap.fill(m, 120) for m, _ in said),
                    transform=ax.transAxes, ha="center", va="bottom" if drawn_here else "center", fontsize=7,
                    color=said[0][1], bbox={"facecolor": "white", "edgecolor": said[0][1], "alpha": 0.9})
    top = axes[0][0]
    for w in cell.windows:
        top.annotate(f"{'t' + str(w.trial) + ' ' if trials else ''}c={w.concurrency}",
                     ((w.start + w.end) / 2 - t0, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                     textcoords="offset points", ha="center", va="bottom", fontsize=7)
    axes[-1][0].set_xlabel("seconds since the first level started (levels shaded, c = concurrency)")
    fig.suptitle(f"{cell.model} / {cell.config}: the servers over the sweep", fontsize=10)
    return fig


def _short(why: str | None) -> str:
    """collect_pcp's reasons start 'not available: '; in a panel headed 'not collected' that says it twice."""
    return (why or "").removeprefix("not available: ")


def plots(cells: list[CellServer] | None, observations: pd.DataFrame | None) -> dict[str, bytes]:
    """A PNG per cell."""
    return {plot_name(c): figures.png(figure(c, series(c, observations)), dpi=80) for c in cells or []}


# -- the section -------------------------------------------------------------------------------------------------------
def section(doc: DocumentBuilder, cells: list[CellServer] | None, observations: pd.DataFrame | None,
            images: dict[str, bytes], unavailable: str | None = None) -> None:
    doc.h(2, HEADING)
    if cells is None:
        doc.p(f"Not available: {unavailable or 'the report was not made from the results store'}.")
        return
    if not cells:
        doc.p("No cell measured a level.")
        return
    doc.p("Per cell, what the servers did over the sweep, each level's window shaded and named by its concurrency: "
          "vLLM's KV-cache usage (mean over replicas), running and waiting requests (summed), the prefix-cache and the "
          "offload / external (KV-connector) prefix-cache hit rates between successive samples (every 2 s), the "
          "Redis/Valkey index's keys and the host's CPU (PCP, per level). Lines are samples; a thick segment across a "
          "level is the stored level mean, drawn where the sampler's files are not on this machine. A series that "
          "was not collected is named in its panel with why.")
    for cell in cells:
        found = series(cell, observations)
        missing = [f"{s.label}: {s.why}" for s in found if not s.drawn]
        source = ("samples" if cell.samples else "stored level means" if any(s.per_level for s in found) else "nothing")
        doc.p(f"**{cell.model}/{cell.config}** ({len(cell.windows)} level(s); drawn from {source}"
              + (f"; {cell.samples_missing}" if cell.samples_missing and not cell.samples else "") + ")")
        doc.ul([f"Not collected: {m}" for m in missing])
        name = plot_name(cell)
        if name in images:
            doc.img(name, images[name], f"{cell.model}/{cell.config}: the servers over the sweep, levels marked")


# -- a run's report --------------------------------------------------------------------------------------------------
def report_plots(report: Report) -> dict[str, bytes]:
    return plots(report.data.server, report.data.observations)


def report_section(doc: DocumentBuilder, report: Report, images: dict[str, bytes]) -> None:
    section(doc, report.data.server, report.data.observations, images,
            unavailable=f"this report was made from {report.data.source}, not from the results store")
