"""sweep: the GuideLLM concurrent sweep, one JSON report per trial.

A trial whose report is already complete is not run again, so a retried or cleared sweep resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from llmd_bench import paths
from llmd_bench.context import StepContext
from llmd_bench.errors import ReportError, RuntimeStepError
from llmd_bench.guidellm_report import parse_report_file
from llmd_bench.observe.sampler import Sampler
from llmd_bench.steps import endpoint_for, observation_targets

REPORT_NAME = "guidellm_report.json"
SAMPLES_FILE = "serving_samples.jsonl"


def report_path(ctx: StepContext, trial: int) -> Path:
    return ctx.cell_dir / f"trial-{trial}" / REPORT_NAME


def tokenizer_spec(ctx: StepContext) -> str:
    """Local runtime: the offline tokenizer made by set-up. Kubernetes: the model's own tokenizer."""
    if ctx.runtime == "local":
        directory = paths.tokenizer_dir()
        if not (directory / "tokenizer.json").exists():
            raise RuntimeStepError(f"no offline tokenizer at {directory}: run `make setup` "
                                   "(or `llmd-bench make-tokenizer --out DIR`)")
        return f"kind=hf_auto,model={directory}"
    assert ctx.cell is not None
    return f"kind=hf_auto,model={ctx.cell.model}"


def guidellm_command(ctx: StepContext, guidellm: str, target: str, output: Path, trial: int) -> list[str]:
    assert ctx.cell is not None
    p = ctx.params
    data = (f"kind=synthetic_text,prompt_tokens={p.prompt_tokens},output_tokens={p.output_tokens},"
            f"prefix_tokens={p.prefix_tokens},prefix_count=1,turns={p.turns}")
    return [
        guidellm, "run",
        "--backend", f"kind=openai_http,target={target},model={ctx.cell.model}",
        "--profile", json.dumps({"kind": "concurrent", "streams": ctx.levels}),
        "--constraint", f"kind=max_duration,seconds={p.duration_s:g}",
        "--seed", f"kind=static,value={p.seed}",
        "--data", data,
        "--tokenizer", tokenizer_spec(ctx),
        "--output", f"kind=json,path={output}",
        "--label", f"campaign={ctx.campaign.dag_id}",
        "--label", f"run_id={ctx.run_id}",
        "--label", f"cell={ctx.cell.group_id}",
        "--label", f"trial={trial}",
        "--disable-progress",
    ]


def complete_report(ctx: StepContext, path: Path) -> bool:
    if not path.exists():
        return False
    try:
        report = parse_report_file(path)
    except ReportError:
        return False
    return sorted(lv.concurrency for lv in report.levels) == ctx.levels


def host_recording(ctx: StepContext) -> Any:
    """Kubernetes: record each model-server node's PCP for the sweep, from this pod. The local runtime's
    pmlogger runs from deploy to collect_pcp instead."""
    if ctx.runtime == "local":
        return contextlib.nullcontext(None)
    from llmd_bench.observe import pcp
    from llmd_bench.runtime.kubernetes import pcp_hosts

    return pcp.recording(pcp_hosts(ctx), ctx.cell_dir / "pcp", ctx.cell_dir)


def run(ctx: StepContext) -> dict[str, Any]:
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


def run_trials(ctx: StepContext, target: str) -> list[dict[str, Any]]:
    from llmd_bench.runtime.local import guidellm_bin

    trials = []
    for trial in range(1, ctx.params.trials + 1):
        out = report_path(ctx, trial)
        if complete_report(ctx, out):
            print(f"trial {trial}: complete report already at {out}; not run again")
            trials.append({"trial": trial, "report": str(out.relative_to(ctx.cell_dir)), "resumed": True})
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = guidellm_command(ctx, guidellm_bin(), target, out, trial)
        print("running:", " ".join(cmd), flush=True)
        started = time.monotonic()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"} if ctx.runtime == "local" else None
        log_path = out.parent / "guidellm.log"
        targets = observation_targets(ctx)
        with open(log_path, "w") as log, Sampler(out.parent / SAMPLES_FILE, targets.replicas, targets.kv,
                                                 epp_metrics=targets.epp_metrics) as sampler:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        for url, why in sampler.unavailable.items():
            print(f"serving metrics of {url}: {why}")
        wall = time.monotonic() - started
        print(log_path.read_text(errors="replace")[-6000:], flush=True)
        if proc.returncode != 0:
            raise RuntimeStepError(f"guidellm exited with {proc.returncode} in trial {trial}; log: {log_path}")
        report = parse_report_file(out, expected_duration_s=ctx.params.duration_s)
        got = sorted(lv.concurrency for lv in report.levels)
        if got != ctx.levels:
            raise RuntimeStepError(f"trial {trial}: report has levels {got}, asked for {ctx.levels}")
        trials.append({
            "trial": trial,
            "report": str(out.relative_to(ctx.cell_dir)),
            "guidellm_version": report.guidellm_version,
            "guidellm_wall_s": round(wall, 3),
            "benchmark_s": round(sum(lv.duration_s for lv in report.levels), 3),
            "level_windows": [{"trial": trial, "concurrency": lv.concurrency, "start": lv.start, "end": lv.end}
                              for lv in report.levels],
        })
    return trials
