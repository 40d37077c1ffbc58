"""The progress watch of one GuideLLM run: a run that makes no progress for a bounded time past what its current
phase needs is stopped as stalled (steps/sweep.py stops it with its workers and runs it again), long before the
fixed deadline of the whole run.

The signal is GuideLLM's own progress log, which it writes on every runtime into the run's log:
- guidellm/benchmark/entrypoints.py @v0.8.1 (benchmark_generative_text) always adds a
  GenerativeLoggingBenchmarkerProgress; --disable-progress only leaves out the interactive console display.
- guidellm/benchmark/progress.py @v0.8.1 (GenerativeLoggingBenchmarkerProgress._log_update) logs at INFO
  "Benchmark {index} ({strategy}): {status} | elapsed={s}s | successful={n} errored={n} incomplete={n} | ...":
  `started` when a level starts (before its worker processes are created), then at most every 10 s (`interval`)
  and only while request updates arrive (`pending`, `warmup`, `active`, `cooldown`), `compile` when its requests
  have ended and `completed` when its results are built.
- guidellm/benchmark/benchmarker.py @v0.8.1 logs "All benchmarks finalized" after the last level.
- guidellm/logger.py @v0.8.1: these go to stderr at GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL (default INFO), which
  the sweep sets to INFO for its runs (`LOG_LEVEL_ENV`).

What each phase needs comes from the workload: a level takes the start-up of its worker processes (GuideLLM runs
min(concurrency, max_worker_processes) of them: guidellm/scheduler/worker_group.py @v0.8.1 create_processes,
guidellm/scheduler/strategies.py @v0.8.1 ConcurrentStrategy.processes_limit, guidellm/settings.py @v0.8.1
max_worker_processes = 10), its duration, and the drain of the requests in flight at its end.

`ProgressWatch` does no I/O: it is fed the run's log lines with the time they were read and says, for a given
time, whether the run may go on and, if not, why. `LogTail` is the I/O half: the lines a log file gained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# guidellm/settings.py @v0.8.1: LoggingSettings.console_log_level, read from the environment when GuideLLM starts
LOG_LEVEL_ENV = "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL"
# guidellm/settings.py @v0.8.1: Settings.max_worker_processes (GUIDELLM__MAX_WORKER_PROCESSES), default 10
MAX_WORKERS_ENV = "GUIDELLM__MAX_WORKER_PROCESSES"
DEFAULT_MAX_WORKERS = 10

# guidellm/benchmark/progress.py @v0.8.1, GenerativeLoggingBenchmarkerProgress._log_update's message
_LEVEL_LINE = re.compile(r"Benchmark (?P<index>\d+) \((?P<strategy>[^)]*)\): (?P<status>[a-z]+) \| "
                         r"elapsed=[\d.]+s \| successful=(?P<successful>\d+) ")
_FINALIZED = "All benchmarks finalized"  # guidellm/benchmark/benchmarker.py @v0.8.1
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REQUESTS_FLOWING = ("pending", "warmup", "active", "cooldown")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Allowances(_Frozen):
    """Seconds each phase of a GuideLLM run may take, before the grace; measured on 2 idle cores with the mock
    server: a level's workers were up 5 s (1 worker) to 16 s (10 workers) after `started`, its `compile` line came
    within 2 s of its end and `completed` within 1 s of `compile`, the next level's `started` at once."""

    setup_s: float = 60.0       # from launch, or a set-up line, to the next (imports, backend check, tokenizer, data)
    spawn_base_s: float = 10.0  # a level's multiprocessing manager, queues and first worker
    spawn_per_worker_s: float = 2.5  # each worker process (spawned: a new interpreter importing GuideLLM)
    drain_s: float = 10.0       # from a level's end to its `compile` line (requests in flight are cancelled)
    compile_s: float = 60.0     # from `compile` to `completed` (statistics over the level's requests)
    between_s: float = 10.0     # from a level's `completed` to the next level's `started`
    finish_s: float = 120.0     # from the last level's `completed` to exit (the report written)
    log_interval_s: float = 10.0  # progress.py @v0.8.1: GenerativeLoggingBenchmarkerProgress(interval=10.0)


class WatchPlan(_Frozen):
    """What one GuideLLM run was asked to do, and how long past each phase's allowance it may be silent."""

    levels: list[int] = Field(min_length=1)
    duration_s: float = Field(gt=0)
    grace_s: float = Field(gt=0)
    max_workers: int = Field(default=DEFAULT_MAX_WORKERS, gt=0)
    allowances: Allowances = Allowances()

    def workers(self, level: int) -> int:
        return min(level, self.max_workers)

    def level_allowance_s(self, level: int) -> float:
        """From a level's `started` line to its `compile` line: its workers' start-up, its duration, the drain."""
        a = self.allowances
        return a.spawn_base_s + a.spawn_per_worker_s * self.workers(level) + self.duration_s + a.drain_s


class ProgressLine(_Frozen):
    """One line of GuideLLM's log, as far as progress goes."""

    kind: Literal["level", "finalized", "other"]
    index: int | None = None  # 1-based level index within the run
    status: str | None = None
    successful: int | None = None


def parse_line(line: str) -> ProgressLine:
    text = _ANSI.sub("", line)
    found = _LEVEL_LINE.search(text)
    if found:
        return ProgressLine(kind="level", index=int(found["index"]), status=found["status"],
                            successful=int(found["successful"]))
    if _FINALIZED in text:
        return ProgressLine(kind="finalized")
    return ProgressLine(kind="other")


class Verdict(_Frozen):
    stop: bool
    phase: str  # what the run was doing, e.g. "at the start of level 1 (concurrency 1)"
    silent_s: float  # seconds since the last progress
    reason: str = ""  # why it is stopped: what was due by when


class ProgressWatch:
    """Decides from the progress lines of one run, and the plan, whether the run may go on.

    Each progress line sets when the next one is due (`_due`); a run whose next progress is more than the grace
    overdue is stopped. Set-up lines count until the first level starts, any line after the last level's
    `completed`; in between only GuideLLM's progress lines do (a run that only prints warnings is not moving)."""

    def __init__(self, plan: WatchPlan, launched_at: float) -> None:
        self.plan = plan
        self.last_progress = launched_at
        self._phase = "setting up (before its first level)"
        self._due = launched_at + plan.allowances.setup_s
        self._why_due = f"{plan.allowances.setup_s:g} s for set-up"
        self._level: int | None = None  # 1-based index of the level running
        self._flowing_since: float | None = None  # when this level's requests were first seen moving
        self._finishing = False

    @property
    def due_at(self) -> float:
        """When the next progress is due (the run is stopped `grace_s` later)."""
        return self._due

    @property
    def phase(self) -> str:
        return self._phase

    def observe(self, line: str, at: float) -> None:
        parsed = parse_line(line)
        a = self.plan.allowances
        if parsed.kind == "level" and parsed.index is not None:
            self._level_line(parsed.index, parsed.status or "", at)
        elif parsed.kind == "finalized" or self._finishing:
            self._finishing = True
            self._progress(at, "finishing (after its last level)", a.finish_s, "to write the report and exit")
        elif self._level is None:
            self._progress(at, "setting up (before its first level)", a.setup_s, "for set-up")

    def _level_line(self, index: int, status: str, at: float) -> None:
        a, plan = self.plan.allowances, self.plan
        concurrency = plan.levels[index - 1] if index <= len(plan.levels) else None
        name = f"level {index} (concurrency {concurrency})" if concurrency is not None else f"level {index}"
        if status == "started":
            self._level, self._flowing_since = index, None
            level = concurrency or max(plan.levels)
            self._progress(at, f"at the start of {name}", plan.level_allowance_s(level),
                           f"for the level ({a.spawn_base_s:g} s + {a.spawn_per_worker_s:g} s per worker x "
                           f"{plan.workers(level)} to start its workers, {plan.duration_s:g} s of level, "
                           f"{a.drain_s:g} s to drain)")
        elif status in REQUESTS_FLOWING:
            if self._flowing_since is None:
                self._flowing_since = at
            # the level ends `duration_s` after its requests started; until then, a line at most every interval
            ends = max(self._flowing_since + plan.duration_s, at + a.log_interval_s)
            self._progress(at, f"during {name}", ends - at + a.drain_s,
                           "for the rest of the level and its drain")
        elif status == "compile":
            self._progress(at, f"compiling the results of {name}", a.compile_s, "to compile the level's results")
        elif status == "completed":
            if index >= len(plan.levels):
                self._finishing = True
                self._progress(at, "finishing (after its last level)", a.finish_s, "to write the report and exit")
            else:
                self._progress(at, f"after {name}, before the next level", a.between_s,
                               "to start the next level")

    def _progress(self, at: float, phase: str, allowance_s: float, why: str) -> None:
        self.last_progress = at
        self._phase = phase
        self._due = at + allowance_s
        self._why_due = f"{allowance_s:.0f} s {why}"

    def decide(self, now: float) -> Verdict:
        silent = max(0.0, now - self.last_progress)
        if now - self._due <= self.plan.grace_s:
            return Verdict(stop=False, phase=self._phase, silent_s=silent)
        return Verdict(stop=True, phase=self._phase, silent_s=silent,
                       reason=f"its next progress was due within {self._why_due}, and {self.plan.grace_s:g} s more "
                              f"passed")


def progress_logging_env(env: dict[str, str]) -> dict[str, str]:
    """GuideLLM's environment with its console log level showing INFO (the progress lines): a level that already
    does (TRACE, DEBUG, INFO) is kept, anything else (WARNING, empty: off) becomes INFO."""
    if env.get(LOG_LEVEL_ENV, "").strip().upper() in ("TRACE", "DEBUG", "INFO"):
        return env
    return {**env, LOG_LEVEL_ENV: "INFO"}


class LogTail:
    """The complete lines a growing log file gained since the last call (I/O; a partial last line waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = re.split(rb"[\r\n]", data)
        return [line.decode(errors="replace") for line in lines if line.strip()]
