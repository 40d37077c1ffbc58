"""sweep: the GuideLLM concurrent sweep, one JSON report per trial.

What to do next (isolate, run levels, refine, resume, complete a trial, stop) is decided by the pure sweep core
(sweep_core.next_action); this step executes its actions (redeploys, resets, GuideLLM under the stall watch, merging
and recording) and feeds back what happened. A trial whose report is already complete is not run again, so a retried
or cleared sweep resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmd_bench.measure import adaptive, cell_folder, guidellm_watch, level_reset, processes, seeded, sweep_core
from llmd_bench.measure.cell_folder import GENERATOR_PID_FILE, CellFolder
from llmd_bench.measure.guidellm_report import parse_report_file
from llmd_bench.measure.observe import generator
from llmd_bench.measure.observe.sampler import Sampler
from llmd_bench.model import catalog, configurations
from llmd_bench.model.errors import LlmdBenchError, ReportError, RuntimeStepError
from llmd_bench.model.settings import SettingsError, settings
from llmd_bench.plan import method, seeding
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime.local import guidellm_bin
from llmd_bench.steps import endpoint_for, observation_targets, warmup
from llmd_bench.steps.deploy import prove_served
from llmd_bench.store import history

# GuideLLM can stall between levels and never exit (vllm-project/guidellm issues 431 and 1152). Each level
# may take its duration plus the drain of requests in flight; start-up loads the tokenizer and data.
LEVEL_ALLOWANCE_FACTOR = 2.0
LEVEL_ALLOWANCE_S = 60.0
STARTUP_ALLOWANCE_S = 300.0
DEADLINE_ENV = "LLMD_BENCH_SWEEP_TIMEOUT_S"
# A stall is intermittent (a re-run completes), so a stalled trial is run again this many times by default.
STALL_RETRIES_ENV = "LLMD_BENCH_SWEEP_STALL_RETRIES"
DEFAULT_STALL_RETRIES = 1
# Before the deadline, the progress watch (guidellm_watch) stops a run silent this long past what its phase needs.
STALL_GRACE_ENV = "LLMD_BENCH_SWEEP_STALL_GRACE_S"
WATCH_POLL_S = 1.0
STALL_ALLOWANCES = guidellm_watch.Allowances()


class GuidellmStalled(RuntimeStepError):
    """GuideLLM made no progress for too long (`by`: "watch") or ran past its deadline ("deadline"), and was
    stopped; `silent_s` is how long it had been silent, `after_s` how long it had run."""

    def __init__(self, message: str, by: str = "deadline", silent_s: float = 0.0, after_s: float = 0.0) -> None:
        super().__init__(message)
        self.by, self.silent_s, self.after_s = by, silent_s, after_s


class TrialStalled(RuntimeStepError):
    """Every attempt of a GuideLLM run stalled; `stalled` lists them as the trial records them."""

    def __init__(self, message: str, stalled: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.stalled = stalled


def report_path(ctx: StepContext, trial: int) -> Path:
    return ctx.folder.trial_report(trial)


def tokenizer_spec(ctx: StepContext) -> str:
    """Local runtime: the offline tokenizer made by set-up. Kubernetes: the model's own tokenizer."""
    return ctx.stack.tokenizer_spec()


def guidellm_command(ctx: StepContext, guidellm: str, target: str, output: Path, trial: int,
                     levels: list[int] | None = None, adaptive: bool | None = None) -> list[str]:
    assert ctx.cell is not None
    return method.guidellm_argv(guidellm=guidellm, campaign=ctx.campaign, params=ctx.params, cell=ctx.cell,
                                levels=levels or ctx.levels, run_id=ctx.run_id, trial=trial, target=target, output=output,
                                tokenizer=tokenizer_spec(ctx), adaptive=adaptive)


def complete_report(ctx: StepContext, path: Path, levels: list[int] | None = None) -> bool:
    if not path.exists():
        return False
    try:
        report = parse_report_file(path)
    except ReportError:
        return False
    return sorted(lv.concurrency for lv in report.levels) == (levels or ctx.levels)


def host_recording(ctx: StepContext) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
    """Kubernetes: record, from this pod, each model-server node's PCP for the sweep, and this pod's own
    node (the load generator's) under `generator`. The local runtime's pmlogger runs from deploy to
    collect_pcp instead, on the one host that serves and generates."""
    return ctx.stack.host_recording()


def trial_deadline_s(ctx: StepContext, levels: int | None = None) -> float:
    """How long one GuideLLM run (of `levels` levels, default all) may take before it is taken as hung:
    LLMD_BENCH_SWEEP_TIMEOUT_S when set, else every level's duration doubled plus 60 s, plus 300 s of start-up."""
    try:
        override = settings().sweep_timeout_s  # DEADLINE_ENV
    except SettingsError as exc:
        raise RuntimeStepError(str(exc)) from None
    if override is not None:
        return override
    per_level = ctx.params.duration_s * LEVEL_ALLOWANCE_FACTOR + LEVEL_ALLOWANCE_S
    return STARTUP_ALLOWANCE_S + per_level * (len(ctx.levels) if levels is None else levels)


def stall_retries() -> int:
    try:
        return settings().sweep_stall_retries  # STALL_RETRIES_ENV, default DEFAULT_STALL_RETRIES
    except SettingsError as exc:
        raise RuntimeStepError(str(exc)) from None


def watch_plan(ctx: StepContext, levels: list[int], env: dict[str, str] | None) -> guidellm_watch.WatchPlan | None:
    """The progress watch of one GuideLLM run over `levels` (None: LLMD_BENCH_SWEEP_STALL_GRACE_S is 0, only the
    deadline applies). GuideLLM's worker count follows GUIDELLM__MAX_WORKER_PROCESSES of the run's environment."""
    try:
        grace = settings().sweep_stall_grace_s  # STALL_GRACE_ENV
    except SettingsError as exc:
        raise RuntimeStepError(str(exc)) from None
    if grace == 0:
        return None
    workers = (os.environ if env is None else env).get(guidellm_watch.MAX_WORKERS_ENV, "").strip()
    return guidellm_watch.WatchPlan(levels=list(levels), duration_s=float(ctx.params.duration_s), grace_s=grace,
                                    max_workers=int(workers) if workers.isdigit() and int(workers) > 0
                                    else guidellm_watch.DEFAULT_MAX_WORKERS, allowances=STALL_ALLOWANCES)


TERMINATED = "the sweep was terminated; GuideLLM was stopped"


def run_guidellm(cmd: list[str], log_path: Path, env: dict[str, str] | None, deadline_s: float,
                 cpu_samples: Path | None = None, watch: guidellm_watch.WatchPlan | None = None) -> int:
    """GuideLLM in its own process group, stopped with its workers when its progress log shows no progress for
    longer than `watch` allows, when it runs past the deadline, when the step fails, or when the step is terminated
    (Airflow killing the task, Kubernetes deleting the pod). A stalled run's log ends with its processes' stacks
    when py-spy is installed."""
    previous = signal.getsignal(signal.SIGTERM)
    proc: subprocess.Popen[bytes] | None = None
    stopping = False

    def terminated(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if proc is not None:  # GuideLLM runs: stop waiting for it (the finally below stops its group)
            raise RuntimeStepError(TERMINATED)

    # the handler is in place before GuideLLM starts: a SIGTERM while it starts would otherwise end the step at once
    # and leave GuideLLM, in a session of its own, running (seen with 4 test workers on 2 cores)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, terminated)
    pid_file = log_path.with_name(GENERATOR_PID_FILE)  # beside the log: trial-<n>/guidellm.pid
    try:
        with open(log_path, "w") as log:
            started = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
            processes.record_group(pid_file, proc.pid, cmd)
            if stopping:  # terminated while GuideLLM was starting
                raise RuntimeStepError(TERMINATED)
            try:
                with (generator.CpuSampler(cpu_samples, proc.pid) if cpu_samples else contextlib.nullcontext()):
                    return _wait(proc, log_path, started, deadline_s, watch)
            except GuidellmStalled:
                _dump_stacks(proc.pid, log)
                raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if proc is not None:
            stop_process_group(proc)
            pid_file.unlink(missing_ok=True)


def _wait(proc: subprocess.Popen, log_path: Path, started: float, deadline_s: float,
          plan: guidellm_watch.WatchPlan | None) -> int:
    """The exit code of GuideLLM; GuidellmStalled when the watch or the deadline gives up on it."""
    watch = guidellm_watch.ProgressWatch(plan, started) if plan is not None else None
    tail = guidellm_watch.LogTail(log_path)
    deadline = started + deadline_s
    while True:
        try:
            return proc.wait(timeout=max(0.0, min(WATCH_POLL_S, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if watch is not None:
            for line in tail.new_lines():
                watch.observe(line, now)
            verdict = watch.decide(now)
            if verdict.stop:
                raise GuidellmStalled(f"guidellm made no progress for {verdict.silent_s:.0f} s {verdict.phase} and "
                                      f"was stopped after {now - started:.0f} s ({verdict.reason})", by="watch",
                                      silent_s=verdict.silent_s, after_s=now - started)
        if now >= deadline:
            silent = now - watch.last_progress if watch is not None else now - started
            raise GuidellmStalled(f"guidellm did not finish within {deadline_s:g} s and was stopped "
                                  f"(GuideLLM can stall between levels)", by="deadline", silent_s=silent,
                                  after_s=now - started)


def _dump_stacks(pgid: int, log: Any) -> None:
    """Append every process of a stalled GuideLLM's group, and its Python stacks (py-spy dump, when installed and
    allowed to attach), to the run's log: what it was waiting for is the cause of the stall."""
    spy = Path(sys.executable).with_name("py-spy")
    spy_bin = str(spy) if spy.exists() else shutil.which("py-spy")
    out = [f"\n---- llmd-bench: the stalled GuideLLM's processes (group {pgid}) ----\n"]
    for pid in processes.group_members(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append(f"== pid {pid}: {cmdline[:300]}\n")
        if spy_bin:
            try:
                dump = subprocess.run([spy_bin, "dump", "--pid", str(pid)], capture_output=True, text=True,
                                      timeout=30)
                failed = (dump.stderr.strip().splitlines() or ["no output"])[0]
                out.append(dump.stdout if dump.returncode == 0 else f"py-spy dump: {failed}\n")
            except (OSError, subprocess.TimeoutExpired) as exc:
                out.append(f"py-spy dump failed: {exc}\n")
    if not spy_bin:
        out.append("(py-spy is not installed: no stacks)\n")
    try:
        log.flush()
        os.write(log.fileno(), "".join(out).encode())
    except OSError:
        pass



def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the whole group, SIGKILL to whatever is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so the group can empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.poll()


def redeploy(ctx: StepContext) -> dict[str, Any]:
    """trial_isolation: redeploy. The serving stack is stopped and started again and warmed up before the
    trial, so the trials' spread includes what a new deployment changes (caches, placement, start-up)."""

    started = time.monotonic()
    ctx.stack.redeploy()
    prove_served(ctx, "redeploy")  # a fresh stack proves again what it serves, or the sweep stops
    deployed = time.monotonic()
    warm = warmup.run(ctx)
    return {"isolation": "redeployed", "redeploy_s": round(deployed - started, 3),
            "warmup_s": round(time.monotonic() - deployed, 3), "warmup_requests": warm.get("requests")}


def reset_targets(ctx: StepContext) -> level_reset.ResetTargets:
    """What level_isolation: reset empties for this cell, refused (naming why) where it cannot be shown to."""

    assert ctx.cell is not None
    contract = catalog.entry(ctx.params.llmd_version).contract
    why = configurations.cache_reset_refusals(ctx.configuration, contract, ctx.campaign.serving.backend, ctx.params.llmd_version)
    why += ctx.stack.reset_refusals()
    if why:
        raise level_reset.NotEquivalent(f"level_isolation: reset refused for {ctx.cell}: {'; '.join(why)}; "
                                        "use level_isolation: restart")
    targets = observation_targets(ctx)
    return level_reset.ResetTargets(replicas=targets.replicas, model=ctx.cell.model, kv=targets.kv,
                                    restart_router=ctx.stack.restart_router(),
                                    query_params=contract.prefix_cache_reset.query_params)


def reset_caches(ctx: StepContext, targets: level_reset.ResetTargets, level: int) -> dict[str, Any]:
    """level_isolation: reset. Caches and index emptied and checked, then the warm-up a restarted server gets."""

    done = level_reset.reset_between_levels(targets, level)
    prove_served(ctx, f"reset (level {level})")  # the servers (and a restarted router) prove again what they serve
    started = time.monotonic()
    warm = warmup.run(ctx)
    return {**done, "warmup_s": round(time.monotonic() - started, 3), "warmup_requests": warm.get("requests")}


def stop_earlier_generators(cell_dir: Path) -> list[str]:
    """A sweep killed with SIGKILL (an OOM kill, `kill -9`, a lost worker) leaves its GuideLLM running
    against the server; the next attempt must not measure alongside it."""
    stopped = processes.stop_recorded_groups(CellFolder(cell_dir).generator_pid_files())
    for what in stopped:
        print(f"stopped {what}, left running by an earlier attempt of this sweep", flush=True)
    return stopped


def run(ctx: StepContext) -> dict[str, Any]:
    stop_earlier_generators(ctx.cell_dir)
    target = endpoint_for(ctx)
    with host_recording(ctx) as pcp_state:
        trials = run_trials(ctx, target)
    with ctx.update_record() as record:
        record["sweep"] = {"target": target, "levels": ctx.levels, "trials": trials}
        if pcp_state is not None:
            record["sweep"]["pcp"] = pcp_state
        if trials and trials[-1].get("guidellm_version"):
            record["versions"]["guidellm_report"] = trials[-1]["guidellm_version"]
    return {"trials": len(trials), "levels": ctx.levels}


def sweep_plan(ctx: StepContext) -> sweep_core.SweepPlan:
    """The cell's sweep as the pure core plans it, from the run's params and the cell's model."""
    return sweep_core.SweepPlan(
        sweep=ctx.params.sweep, levels=tuple(ctx.levels), trials=ctx.params.trials,
        trial_isolation=ctx.params.trial_isolation, level_isolation=ctx.params.level_isolation,
        one_run_per_level=method.one_run_per_level(ctx.params), noise_floor_pct=float(ctx.params.noise_floor_pct),
        adaptive=ctx.campaign.adaptive, seed=seed_decision(ctx) if ctx.params.sweep == "seeded" else None)


def seed_decision(ctx: StepContext) -> seeded.SeedDecision:
    """sweep: seeded: how this cell is swept (bracket, full grid or adaptive) and from what, decided from the store's
    history and the stack deploy captured, once: a retried sweep reads it back from the cell folder (seed.json)."""
    path = ctx.cell_dir / cell_folder.SEED_FILE
    if path.exists():
        return seeded.SeedDecision.model_validate_json(path.read_text())
    assert ctx.cell is not None
    record = ctx.record()
    full_every = ctx.campaign.seeded.full_grid_every
    query = seeding.seed_query(ctx.campaign, ctx.params, ctx.cell, runtime=ctx.runtime, run_id=ctx.run_id)
    try:
        sources = history.seed_sources(query)
    except LlmdBenchError as exc:  # the store down or unreadable: measure from scratch rather than not at all
        decision = seeded.SeedDecision(mode="adaptive", reason=f"the results store's history could not be read ({exc}): "
                                       "an adaptive sweep from scratch", full_grid_every=full_every)
    else:
        decision = seeded.decide_seed(sources, seeded.StackFingerprint.of(record.stack if record else None), full_every)
    cell_folder.write_json_atomic(path, decision.model_dump(mode="json"))
    print(f"seeded sweep: {decision.mode}: {decision.reason}", flush=True)
    return decision


def found_reports(ctx: StepContext, plan: sweep_core.SweepPlan) -> list[sweep_core.ReportFound]:
    """The reports of the plan's trials an earlier attempt left that parse, with their levels: what may be resumed."""
    found = []
    for trial in range(1, plan.trials + 1):
        folder = ctx.folder.trial(trial)
        for path in [folder / cell_folder.TRIAL_REPORT, *sorted(folder.glob(f"level-*/{cell_folder.TRIAL_REPORT}"))]:
            if not path.exists():
                continue
            try:
                report = parse_report_file(path)
            except ReportError:
                continue
            found.append(sweep_core.ReportFound(report=str(path.relative_to(ctx.cell_dir)),
                                                levels=tuple(sorted(lv.concurrency for lv in report.levels))))
    return found


@dataclasses.dataclass
class _TrialRuns:
    """What the step keeps of the trial being measured until it is recorded."""

    trial: int
    started: float
    isolation: dict[str, Any]
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # as cell.json keeps them (LevelRun)
    before_next: dict[str, Any] = dataclasses.field(default_factory=dict)  # the restart or reset before the next run
    reset_to: level_reset.ResetTargets | None = None  # level_isolation: reset, from the trial's first reset


def run_trials(ctx: StepContext, target: str) -> list[dict[str, Any]]:
    """Execute the sweep core's actions (sweep_core.next_action) until it stops; the trials as cell.json keeps them."""
    plan = sweep_plan(ctx)
    # a seeded cell without history sweeps adaptively: GuideLLM's over-saturation stop as for sweep: adaptive
    adaptive_mode = plan.sweep == "adaptive" or (plan.seed is not None and plan.seed.mode == "adaptive")
    observations: list[sweep_core.Observation] = list(found_reports(ctx, plan))
    trials: list[dict[str, Any]] = []
    current: _TrialRuns | None = None
    while not isinstance(action := sweep_core.next_action(plan, observations), sweep_core.Stop):
        if isinstance(action, sweep_core.ResumeTrial):
            trials.append(resumed_trial(ctx, action))
            observations.append(sweep_core.TrialDone(trial=action.trial, levels=action.levels))
            continue
        if current is None or current.trial != action.trial:
            ctx.folder.trial(action.trial).mkdir(parents=True, exist_ok=True)
            current = _TrialRuns(action.trial, time.monotonic(),
                                 {"isolation": "first" if action.trial == 1 else "same-server"})
        if isinstance(action, sweep_core.Isolate):
            target = isolate(ctx, action, current, target)
            observations.append(sweep_core.Isolated(isolation=action.isolation, trial=action.trial,
                                                    before_level=action.before_level))
        elif isinstance(action, sweep_core.Resume | sweep_core.RunLevels):
            run_out = ctx.cell_dir / action.report
            if isinstance(action, sweep_core.Resume):
                print(f"trial {action.trial}: level {action.levels[0]} already measured at {run_out}; not run again",
                      flush=True)
                current.runs.append({"levels": list(action.levels), "report": action.report, "resumed": True})
            else:
                run_out.parent.mkdir(parents=True, exist_ok=True)
                current.runs.append({"levels": list(action.levels), "report": action.report,
                                     **execute_run(ctx, action.trial, list(action.levels), target, run_out,
                                                   adaptive=adaptive_mode),
                                     **current.before_next})
                current.before_next = {}
            observations.append(sweep_core.Measured(
                trial=action.trial, levels=action.levels, report=action.report,
                resumed=isinstance(action, sweep_core.Resume),
                results=level_outcomes(ctx, run_out) if action.observe else ()))
        elif isinstance(action, sweep_core.CompleteTrial):
            trials.append(complete_trial(ctx, action, current, target))
            observations.append(sweep_core.TrialDone(trial=action.trial, levels=action.levels))
    return trials


def resumed_trial(ctx: StepContext, action: sweep_core.ResumeTrial) -> dict[str, Any]:
    out = ctx.cell_dir / action.report
    print(f"trial {action.trial}: complete report already at {out}; not run again")
    done = parse_report_file(out)
    # its level windows still place the host and serving samples of that trial
    return {"trial": action.trial, "report": action.report, "resumed": True, "guidellm_version": done.guidellm_version,
            "level_windows": [{"trial": action.trial, "concurrency": lv.concurrency, "start": lv.start, "end": lv.end}
                              for lv in done.levels]}


def isolate(ctx: StepContext, action: sweep_core.Isolate, current: _TrialRuns, target: str) -> str:
    """Redeploy before a trial, restart or reset before a level; the target the next run talks to."""
    trial, level = action.trial, action.before_level
    if action.isolation == "redeploy":
        print(f"trial {trial}: redeploying the cell (trial_isolation: redeploy)", flush=True)
        current.isolation = redeploy(ctx)
        current.started = time.monotonic()  # the trial's GuideLLM wall time starts after its redeploy
        return endpoint_for(ctx)
    if action.isolation == "restart":
        print(f"trial {trial}: restarting the cell before level {level} (level_isolation: restart)", flush=True)
        current.before_next = redeploy(ctx)
        return endpoint_for(ctx)
    assert level is not None
    reference = None
    if current.reset_to is None:
        current.reset_to = reset_targets(ctx)
    if action.reference:
        reference = level_reset.fresh_reference(current.reset_to)
    print(f"trial {trial}: resetting caches and index before level {level} (level_isolation: reset)", flush=True)
    current.before_next = reset_caches(ctx, current.reset_to, level)
    if reference is not None:
        current.before_next["reference"] = reference
    return target


def complete_trial(ctx: StepContext, action: sweep_core.CompleteTrial, current: _TrialRuns,
                   target: str) -> dict[str, Any]:
    """The trial's report (its per-level reports merged), checked to hold the levels measured, as cell.json keeps it."""
    trial, out = action.trial, ctx.cell_dir / action.report
    if action.merge:
        merge_level_reports([ctx.cell_dir / r for r in action.merge], out)
    wall = time.monotonic() - current.started
    report = parse_report_file(out, expected_duration_s=ctx.params.expected_level_s)
    got = sorted(lv.concurrency for lv in report.levels)
    if got != list(action.levels):
        raise RuntimeStepError(f"trial {trial}: report has levels {got}, asked for {list(action.levels)}")
    if action.decisions is not None and (said := action.decisions.describe()):
        print(f"trial {trial}: {said}", flush=True)
    record = {
        "trial": trial,
        "report": action.report,
        "target": target,
        **current.isolation,
        "guidellm_version": report.guidellm_version,
        "guidellm_wall_s": round(wall, 3),
        "benchmark_s": round(sum(lv.duration_s for lv in report.levels), 3),
        "level_windows": [{"trial": trial, "concurrency": lv.concurrency, "start": lv.start, "end": lv.end}
                          for lv in report.levels],
    }
    if method.one_run_per_level(ctx.params) or action.merge:  # runs of their own reports, merged into the trial's
        record["runs"] = current.runs  # each with its argv (or resumed) and, after a restart, its redeploy timings
    else:
        record["argv"] = current.runs[0]["argv"]  # the command as run (llmd-bench plan shows the same, with placeholders)
        if current.runs[0].get("stalled"):
            record["stalled"] = current.runs[0]["stalled"]  # attempts stopped as stalled before the one measured
    if action.decisions is not None:
        record[ctx.params.sweep] = action.decisions.model_dump()  # adaptive: the levels decided and why
    return record


def level_outcomes(ctx: StepContext, report: Path) -> tuple[sweep_core.LevelResult, ...]:
    """What a deciding policy needs from each level of a run's report: its throughput, whether it is valid, and
    whether GuideLLM's over-saturation constraint stopped it."""
    doc = json.loads(report.read_text())
    parsed = parse_report_file(report, expected_duration_s=ctx.params.expected_level_s)
    benches = [b for b in doc.get("benchmarks", []) if isinstance(b, dict)]
    out = []
    positional = len(benches) == len(parsed.levels)  # the parser keeps GuideLLM's benchmark order, one per level
    for i, level in enumerate(parsed.levels):
        fired = (adaptive.over_saturation_fired(benches[i]) if positional
                 else any(adaptive.over_saturation_fired(b) for b in benches) and len(parsed.levels) == 1)
        out.append(sweep_core.LevelResult(concurrency=level.concurrency, valid=level.valid,
                                          output_tps=level.value("output_tps"), over_saturated=fired))
    return tuple(out)


def execute_run(ctx: StepContext, trial: int, levels: list[int], target: str, out: Path,
                adaptive: bool | None = None) -> dict[str, Any]:
    """One GuideLLM run, restarted when it stalls; the serving samples of all runs go to the trial's files."""

    cmd = guidellm_command(ctx, guidellm_bin(), target, out, trial, levels, adaptive)
    print("running:", " ".join(cmd), flush=True)
    # the progress watch reads GuideLLM's INFO progress lines (guidellm_watch.LOG_LEVEL_ENV)
    env = guidellm_watch.progress_logging_env(ctx.stack.guidellm_env() or dict(os.environ))
    folder = ctx.folder
    # logs and the pid file stay in the trial folder, where teardown and cleanup look for running GuideLLMs
    log_path = folder.guidellm_log(trial, None if len(levels) == len(ctx.levels) and ctx.params.runs == "per-cell"
                                   else levels[0])
    targets = observation_targets(ctx)
    deadline_s, retries = trial_deadline_s(ctx, len(levels)), stall_retries()
    watch = watch_plan(ctx, levels, env)
    started = time.monotonic()
    stalled: list[dict[str, Any]] = []  # the stopped attempts: how, after how long, how long silent, their log
    for attempt in range(1, retries + 2):
        try:
            with Sampler(folder.serving_samples(trial), targets.replicas, targets.kv,
                         epp_metrics=targets.epp_metrics) as sampler:
                returncode = run_guidellm(cmd, log_path, env, deadline_s, folder.generator_cpu_samples(trial), watch)
            break
        except GuidellmStalled as exc:
            kept = CellFolder.stalled_log(log_path, attempt)
            log_path.replace(kept)
            stalled.append({"attempt": attempt, "by": exc.by, "after_s": round(exc.after_s, 1),
                            "silent_s": round(exc.silent_s, 1), "log": str(kept.relative_to(ctx.cell_dir))})
            if attempt > retries:
                longer = (f"raise {STALL_GRACE_ENV} (0 turns the progress watch off)" if exc.by == "watch"
                          else f"set {DEADLINE_ENV}")
                raise TrialStalled(
                    f"trial {trial}: {exc}, {attempt} time(s); logs: {kept.parent}/guidellm.stalled-*.log. "
                    f"Clear the sweep task to run it again (completed trials are kept), or {longer} "
                    f"if the levels really take longer.", stalled) from None
            print(f"trial {trial}: {exc}; log kept at {kept}; running the trial again "
                  f"(retry {attempt} of {retries})", flush=True)
    for url, why in sampler.unavailable.items():
        print(f"serving metrics of {url}: {why}")
    print(log_path.read_text(errors="replace")[-6000:], flush=True)
    if returncode != 0:
        raise RuntimeStepError(f"guidellm exited with {returncode} in trial {trial}; log: {log_path}")
    return {"argv": cmd, "guidellm_wall_s": round(time.monotonic() - started, 3), **({"stalled": stalled} if stalled else {})}


def merge_level_reports(parts: list[Path], out: Path) -> None:
    """The per-level reports of a trial as one GuideLLM report (the first's metadata, every level's benchmark),
    written atomically, so parsing, loading and resuming read one report per trial in both methods."""
    docs = [json.loads(p.read_text()) for p in parts]
    merged = dict(docs[0])
    merged["benchmarks"] = [b for d in docs for b in d.get("benchmarks", [])]
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(merged))
    os.replace(tmp, out)
