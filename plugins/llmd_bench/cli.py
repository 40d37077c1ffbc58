"""`llmd-bench`: every pipeline step as a command, the same in a pod and in a local process.

Exit codes: 0 done, 1 failed (the message says why), 2 usage error, 99 cell not selected (skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from llmd_bench.integrations import benchmark_report, mlflow_log, storage
from llmd_bench.integrations.importer import import_reports, parse_factors
from llmd_bench.model import catalog, design, paths
from llmd_bench.model.campaign import Cell, parse_factors_arg
from llmd_bench.model.campaign_files import campaign_files, campaign_set_errors, find_campaign, load_campaign
from llmd_bench.model.errors import SKIP_EXIT_CODE, CampaignError, LlmdBenchError, NotSelected
from llmd_bench.model.params import resolve_params
from llmd_bench.model.settings import results_store_url, settings
from llmd_bench.orchestration import preflight
from llmd_bench.plan import method
from llmd_bench.plan.plan_estimate import History, read_history
from llmd_bench.plan.seeding import SeedHistory, read_seed_history
from llmd_bench.stack.context import StepContext, StepTimer, utc_now
from llmd_bench.stack.runtime import selected_runtime
from llmd_bench.stack.runtime.existing import render_role, restore_run
from llmd_bench.stack.tokenizer import make_tokenizer
from llmd_bench.steps import CELL_STEPS
from llmd_bench.store.server import default_server


def _step_module(name: str):
    return importlib.import_module(f"llmd_bench.steps.{name}")


def _campaign_and_params(args: argparse.Namespace):
    """--campaign and --params, resolved and validated against the campaign and the version catalog."""

    campaign = find_campaign(args.campaign)
    try:
        conf = json.loads(args.params) if args.params else {}
    except ValueError as exc:
        raise LlmdBenchError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise LlmdBenchError(f"--params must be a JSON object of param names to values, got {type(conf).__name__}: "
                             f"{args.params[:100]}")
    return campaign, resolve_params(campaign, conf, catalog.known_versions())


def _context(args: argparse.Namespace, with_cell: bool):

    campaign, params = _campaign_and_params(args)
    cell = None
    if with_cell:
        cell = campaign_cell(campaign, args)
        if getattr(args, "repeat", False):  # design: aba's second run of the baseline cell (model/design.py)
            cell = design.repeat_of(cell, params.baseline)
    runtime = args.runtime or selected_runtime()
    campaign.check_runtime(runtime)  # serving.mode existing: a cluster's installed stack, never simulated
    return StepContext(campaign, params, args.run_id, runtime, cell)


def campaign_cell(campaign, args: argparse.Namespace):
    """The cell named by --model, --config and --factors; refused unless it is one of the campaign's cells."""

    if args.config not in campaign.configs:
        raise LlmdBenchError(f"--config {args.config!r} is not in campaign {campaign.dag_id}; "
                             f"allowed: {list(campaign.configs)}")
    cell = Cell(campaign.model(args.model).name, args.config, parse_factors_arg(campaign, getattr(args, "factors", None)))
    cells = campaign.cells()
    if cell not in cells:
        choices = sorted({c.factors_arg for c in cells if (c.model, c.config) == (cell.model, cell.config)})
        raise LlmdBenchError(f"--factors {cell.factors_arg or '(none)'!r} does not name a cell of campaign "
                             f"{campaign.dag_id} for {cell.short_model}/{cell.config}; its cells have --factors "
                             f"{[c or '(none)' for c in choices]}")
    return cell


def run_cell_step(step: str, args: argparse.Namespace) -> int:

    ctx = _context(args, with_cell=True)
    ctx.step = step
    timer, started = StepTimer(), utc_now()
    print(f"[llmd-bench] {step} {ctx.cell} run={ctx.run_id} runtime={ctx.runtime}", flush=True)
    # In a pod the cell's folder comes from object storage and goes back there, also when the step fails.
    snapshot = storage.pull_cell(ctx.cell_dir)
    ctx.check_owner()  # before anything is written or pushed
    try:
        try:
            summary = _step_module(step).run(ctx)
        except NotSelected:
            raise
        except BaseException as exc:
            with ctx.update_record() as record:
                record["steps"][step] = {"status": "failed", "started": started, "ended": utc_now(),
                                         "elapsed_s": timer.elapsed,
                                         "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            raise
        with ctx.update_record() as record:
            record["steps"][step] = {"status": "ok", "started": started, "ended": utc_now(),
                                     "elapsed_s": timer.elapsed, "summary": summary}
    except BaseException:
        _push_keeping_the_error(snapshot)
        raise
    storage.push(snapshot)
    print(f"[llmd-bench] {step} done in {timer.elapsed:.1f} s: {json.dumps(summary, default=str)}", flush=True)
    return 0


def _push_keeping_the_error(snapshot) -> None:
    """After a failed step, push what it wrote, but let the step's own error be the one reported."""

    try:
        storage.push(snapshot)
    except Exception as exc:  # noqa: BLE001 - the step's own error is the one to report
        print(f"[llmd-bench] could not push the step's files after it failed: {exc}", file=sys.stderr, flush=True)


def run_compare(args: argparse.Namespace) -> int:

    ctx = _context(args, with_cell=False)
    snapshot = storage.pull_run(ctx.run_dir)
    try:
        summary = _step_module("compare").run(ctx)
    except BaseException:
        _push_keeping_the_error(snapshot)
        raise
    storage.push(snapshot)
    print(f"[llmd-bench] compare: {json.dumps(summary, default=str)}")
    return 0


def cmd_validate_campaign(args: argparse.Namespace) -> int:


    files = [Path(f) for f in args.files] or campaign_files()
    checked = [(f, load_campaign(f)) for f in files]
    # the files given are checked against the campaigns already in the folder, which keep their place
    given = {f.resolve() for f in files}
    others = []
    for f in campaign_files() if args.files else []:
        if f.resolve() not in given:
            with contextlib.suppress(CampaignError):  # a broken neighbour is its own file's problem
                others.append((f, load_campaign(f)))
    clashes = campaign_set_errors(others + checked)
    for f, c in checked:
        if f in clashes:
            raise CampaignError(clashes[f])
        print(f"{f}: ok (dag {c.dag_id}, {len(c.cells())} cells)")
    return 0


def cmd_make_tokenizer(args: argparse.Namespace) -> int:


    out = make_tokenizer(Path(args.out))
    print(f"offline tokenizer written to {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:

    fmt = getattr(args, "format", "guidellm")
    given = [opt for opt, value in (("--model", args.model), ("--config", args.config),
                                    ("--llmd-version", args.llmd_version)) if value is not None]
    if fmt == "benchmark-report":
        if args.factors:
            given.append("--factors")
        if given:
            raise LlmdBenchError(f"{', '.join(given)}: not used with --format benchmark-report (each report names its "
                                 "model, configuration and llm-d version)")

        summary = benchmark_report.import_reports([Path(f) for f in args.files], run_id=args.run_id,
                                                  campaign=args.campaign)
        print(json.dumps(summary))
        return 0
    if len(given) < 3:
        args.import_parser.error("the following arguments are required with --format guidellm: "
                                 + ", ".join(o for o in ("--model", "--config", "--llmd-version") if o not in given))

    summary = import_reports([Path(f) for f in args.files], args.model, args.config, args.llmd_version,
                             run_id=args.run_id, campaign=args.campaign, factors=parse_factors(args.factors))
    print(json.dumps(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:


    summary = benchmark_report.export_run(args.run_id, Path(args.out), campaign=args.campaign,
                                          note=lambda line: print(f"[llmd-bench] {line}", flush=True))
    print(json.dumps(summary))
    return 0


def cmd_mlflow_log(args: argparse.Namespace) -> int:

    target = mlflow_log.tracking_target(airflow=True)
    if target is None:
        raise LlmdBenchError(f"MLflow logging is off: define the Airflow connection {mlflow_log.CONN_ID} or set "
                             f"{mlflow_log.URI_ENV} to the tracking server's URI")
    result = mlflow_log.log_run(None, args.run_id, campaign=args.campaign, tracking_uri=target)
    print(result.line())
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    from llmd_bench import report as rpt  # deferred: loads numpy, pandas

    out = Path(args.out)
    if args.from_csv:
        from llmd_bench.report.data import from_csv_dir  # deferred: loads numpy, pandas
        report = rpt.build(from_csv_dir(Path(args.from_csv)))
        rpt.write(report, out)
    else:
        from llmd_bench.report.generate import generate_report  # deferred: loads numpy, pandas, sqlalchemy
        report = generate_report(args.run_id, out, campaign=args.campaign)
    print(rpt.peak_table_text(report))
    print(f"report written to {out / 'report.html'}")
    return 0


def cmd_compare_runs(args: argparse.Namespace) -> int:
    """Two stored runs' judgements as a report of its own, in the reports folder (the Airflow UI lists it)."""
    from llmd_bench.report import compare_runs  # deferred: loads numpy, pandas, sqlalchemy

    pair = compare_runs.read_pair(args.run_a, args.run_b, args.campaign)
    comparison = compare_runs.compare(*pair)
    out = paths.reports_root() / paths.safe_component(f"compare__{args.run_a}__vs__{args.run_b}")
    written = compare_runs.write_comparison(comparison, out)
    for line in compare_runs.summary_lines(comparison):
        print(line)
    print(f"report written to {written['report.html']} and {written['report.md']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:

    campaign, params = _campaign_and_params(args)
    try:
        runtime = selected_runtime()
    except ValueError as exc:
        raise LlmdBenchError(str(exc)) from None

    history = History(status="history not read (--no-history): defaults only")
    if not args.no_history:
        # the store's measured GPU time of these models, when a store URL is configured and answers at once;
        # never the local server (which resolving the URL would start), never an error: defaults instead

        history = read_history(sorted({c.model for c in campaign.cells() if params.selects(c)}), runtime)
    seeds = None
    if params.sweep == "seeded":
        # each cell's mode as the sweep will decide it, from the configured store (never the local server)
        seeds = (SeedHistory(status="seed history not read (--no-history): seeded cells undecided, counted at their "
                             "bound") if args.no_history else read_seed_history(campaign, params, runtime))
    found = method.plan(campaign, params, runtime, history=history, seeds=seeds)
    print(json.dumps(found, indent=2) if args.json else method.format_plan(found), flush=True)
    return 0


def cmd_render(args: argparse.Namespace) -> int:

    from llmd_bench.stack import manifests, pcp_manifests  # deferred: loads jinja2

    campaign = find_campaign(args.campaign)
    conf = {"llmd_version": args.llmd_version, "replicas": args.replicas}
    params = resolve_params(campaign, {k: v for k, v in conf.items() if v is not None}, catalog.known_versions())
    cell = campaign_cell(campaign, args)
    out = Path(args.out)
    objects = manifests.render_cell(campaign, params.for_cell(cell), cell, args.run_id, args.namespace)
    cell_files = manifests.write(objects, out)
    secrets = [spec.name for spec in preflight.secret_specs(campaign)]
    manifests.write(manifests.render_namespace(args.namespace, secrets), out / "namespace")
    # optional: lets preflight read the nodes' allocatable GPUs and memory (cluster-scoped, read-only)
    manifests.write(preflight.node_reader_manifests(args.namespace), out / "preflight")
    manifests.write(pcp_manifests.render_pcp(), out / "pcp")
    if campaign.serving.mode == "existing" and campaign.serving.existing is not None:
        # the Role in the installed stack's namespace, bound to the step pods' service account

        manifests.write(render_role(campaign.serving.existing.namespace, args.namespace,
                                    settings().service_account),
                        out / "namespace", prefix="existing-rbac-")
    print(f"{len(cell_files)} cell manifests in {out}; apply once, as an admin: namespace set-up in "
          f"{out / 'namespace'}, the PCP DaemonSet for the GPU nodes in {out / 'pcp'}, and optionally the "
          f"read-only node access for `llmd-bench preflight` in {out / 'preflight'}")
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:

    if args.node_reader_manifest:
        print(yaml.safe_dump_all(preflight.node_reader_manifests(args.namespace), sort_keys=False), end="")
        return 0
    if not args.campaign:
        raise LlmdBenchError("preflight needs --campaign (or --node-reader-manifest)")
    campaign, params = _campaign_and_params(args)
    report = preflight.run(campaign, params, args.namespace, run_id=args.run_id, skip=tuple(args.skip or ()))
    if args.json:
        print(report.as_json(), flush=True)
    else:
        for line in report.lines():
            print(line, flush=True)
        print(report.summary(), flush=True)
    if not report.ok:
        raise preflight.PreflightFailed(report.summary())
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put an installed stack (serving.mode existing) back as a run's deploy found it."""

    namespace = args.namespace
    if namespace is None:
        if args.campaign:
            campaign = find_campaign(args.campaign)
            if campaign.serving.existing is None:
                raise LlmdBenchError(f"campaign {campaign.dag_id} is not in serving.mode existing: nothing of it is "
                                     "restored (its teardown deletes its own stack)")
            namespace = campaign.serving.existing.namespace
        else:
            spaces = set()
            for f in campaign_files():
                with contextlib.suppress(LlmdBenchError):
                    c = load_campaign(f)
                    if c.serving.existing is not None:
                        spaces.add(c.serving.existing.namespace)
            if len(spaces) != 1:
                raise LlmdBenchError("restore needs --campaign (or --namespace): the campaign files in existing mode "
                                     f"name {sorted(spaces) or 'no'} namespace(s)")
            namespace = spaces.pop()
    restored = restore_run(args.run_id, namespace, note=lambda line: print(f"[llmd-bench] {line}", flush=True))
    print(json.dumps({"namespace": namespace, "run_id": args.run_id, "restored": restored}), flush=True)
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from llmd_bench.stack.runtime.local import cleanup_leftovers  # deferred: loads jinja2

    stopped = cleanup_leftovers(paths.results_root())
    for line in stopped:
        print(f"stopped leftover {line}")
    print(f"{len(stopped)} leftover process(es) stopped")
    return 0


def cmd_db(args: argparse.Namespace) -> int:

    server = default_server()
    if args.action == "start":
        url = server.start()
        print(f"PostgreSQL running on 127.0.0.1:{server.port} (data: {server.data})")
        print(f"connection: {url}" if args.show_url else "connection URL: llmd-bench db url")
    elif args.action == "stop":
        server.stop()
        print("PostgreSQL stopped")
    elif args.action == "status":
        print(f"{'running' if server.running() else 'stopped'} on 127.0.0.1:{server.port} (data: {server.data})")
        return 0 if server.running() else 3
    elif args.action == "url":
        print(server.url() if server.password_file.exists() else "")
    elif args.action == "migrate":
        from llmd_bench.store import db  # deferred: loads sqlalchemy
        url = results_store_url() or server.start()
        db.with_engine(db.migrate, "migrating", url)
        print(f"results schema at head in {db.redacted(url)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmd-bench", description="llm-d KV-cache evaluation steps")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--campaign", required=True, help="campaign file stem, dag id or path")
        p.add_argument("--run-id", required=True, help="the Airflow dag_run id")
        p.add_argument("--params", default="", help="run params as JSON (defaults from the campaign)")
        p.add_argument("--runtime", choices=["local", "kubernetes"], default=None,
                       help="default: LLMD_BENCH_RUNTIME, else local")

    for step in CELL_STEPS:
        p = sub.add_parser(step, aliases=[step.replace("_", "-")] if "_" in step else [],
                           help=(_doc(step)))
        run_args(p)
        p.add_argument("--model", required=True)
        p.add_argument("--config", required=True)
        p.add_argument("--factors", default=None, help="the cell's factor values, e.g. replicas=2,memory_regime=pressure "
                       "(campaigns with factors)")
        p.add_argument("--repeat", action="store_true", help="design: aba: the baseline cell's run after the others "
                       "(its own folder <config>__repeat; stored as the baseline's trials after the run's trials)")
        p.set_defaults(func=lambda a, s=step: run_cell_step(s, a))
    p = sub.add_parser("compare", help="per-cell verdict of a run")
    run_args(p)
    p.set_defaults(func=run_compare)
    p = sub.add_parser("validate-campaign", help="validate campaign files (default: include/campaigns/*.yaml)")
    p.add_argument("files", nargs="*")
    p.set_defaults(func=cmd_validate_campaign)
    p = sub.add_parser("report", help="write the comparison report of a stored run, or of a folder of metrics CSVs")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="a run in the results store (the Airflow dag_run id)")
    src.add_argument("--from-csv", metavar="DIR", help="a folder of <model>_<config>_metrics.csv files")
    p.add_argument("--campaign", default=None, help="the campaign's dag id, when the run id is ambiguous")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "compare-runs", help="judge two stored runs against each other (another week, llm-d version or cluster) and "
                             "write the comparison as a report",
        description="Compare two runs of the results store cell by cell, with the report's noise rules: each cell's "
                    "peak in the newer run against the reference's, and each configuration's % vs the baseline in "
                    "both. The reference is the run at the older llm-d version (at the same version, the earlier "
                    "run); a REGRESSION is the newer run's peak lower beyond noise. A simulated run (local runtime) "
                    "is compared only with simulated runs; runs that measured different workloads are shown without "
                    "verdicts. Writes report.md, report.html, comparison.csv and the effect plot to "
                    "<reports>/compare__RUN_A__vs__RUN_B/ (LLMD_BENCH_REPORTS) and prints the path.")
    p.add_argument("run_a", metavar="RUN_A", help="a run in the results store (the Airflow dag_run id)")
    p.add_argument("run_b", metavar="RUN_B", help="another run in the results store")
    p.add_argument("--campaign", default=None, metavar="C",
                   help="the campaign (dag id) both runs belong to, when a run id is in several campaigns")
    p.set_defaults(func=cmd_compare_runs)
    p = sub.add_parser("mlflow-log", help="log a stored run to the MLflow tracking server (connection llmd_mlflow or "
                                          "LLMD_BENCH_MLFLOW_URI): one MLflow run per cell x trial x level, updated on re-runs")
    p.add_argument("--run-id", required=True, help="a run in the results store (the Airflow dag_run id)")
    p.add_argument("--campaign", default=None, help="the campaign's dag id, when the run id is ambiguous")
    p.set_defaults(func=cmd_mlflow_log)
    p = sub.add_parser("plan", help="show, without running anything, every cell of a run: configuration, levels, "
                                    "the exact GuideLLM command of each run, model loads, seconds of measurement and "
                                    "the estimated GPU-hours per phase (and cost)")
    p.add_argument("--campaign", required=True, help="campaign file stem, dag id or path")
    p.add_argument("--params", default="", help="run params as JSON, as in the trigger form (defaults from the campaign)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-history", action="store_true",
                   help="estimate GPU time from the documented defaults only, without reading the results store's "
                        "measured cells or, with sweep: seeded, the cells' seed history (read only when "
                        "LLMD_BENCH_DB_URL or AIRFLOW_CONN_LLMD_RESULTS is set)")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("render", help="write a cell's Kubernetes manifests as YAML files")
    p.add_argument("--model", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--factors", default=None, help="the cell's factor values, e.g. replicas=2 (campaigns with factors)")
    p.add_argument("--llmd-version", default=None, help="default: the campaign's")
    p.add_argument("--replicas", type=int, default=None, help="default: the campaign's")
    p.add_argument("--campaign", default="kv_cache_eval")
    p.add_argument("--namespace", default=settings().namespace)
    p.add_argument("--run-id", default="manual", help="labels the objects with this run")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("import", help="load existing GuideLLM report files (one trial each) into the results store")
    p.add_argument("files", nargs="+", metavar="PATH")
    # --model, --config and --llmd-version are required with --format guidellm (cmd_import says so as argparse would)
    p.add_argument("--model", default=None, help="Hugging Face model id (owner/name), e.g. Qwen/Qwen3-8B")
    p.add_argument("--config", default=None, help="a configuration of include/configurations.yaml (or of the "
                   "--campaign's own configurations), e.g. no-offload, native-offload, llm-d-redis, llm-d-valkey")
    p.add_argument("--llmd-version", default=None, help="the llm-d release the reports were measured on: a release of "
                   "the version catalog (include/versions.yaml), e.g. v0.4.0")
    p.add_argument("--run-id", default=None, help="default: import__<hash of the files>")
    p.add_argument("--campaign", default="imported")
    p.add_argument("--factors", default=None, help="the study's factor values for these reports, e.g. replicas=2 or "
                   "memory_regime=pressure,offload_size=20k (GuideLLM reports; one cell per model, config and factors)")
    p.add_argument("--format", choices=["guidellm", "benchmark-report"], default="guidellm",
                   help="guidellm: GuideLLM report files (needs --model, --config, --llmd-version); benchmark-report: "
                   "llm-d Benchmark Report v0.2 files written by `llmd-bench export` (they name the cell)")
    p.set_defaults(func=cmd_import, import_parser=p)
    p = sub.add_parser("export", help="write a stored run as files of another format: one llm-d Benchmark Report "
                                      "v0.2 per cell x trial x level")
    p.add_argument("--run-id", required=True, help="a run in the results store (the Airflow dag_run id)")
    p.add_argument("--campaign", default=None, help="the campaign's dag id, when the run id is ambiguous")
    p.add_argument("--format", choices=["benchmark-report"], default="benchmark-report")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("preflight", help="check the cluster (CRDs, permissions, secrets, GPUs, quota, object store) "
                                         "before a kubernetes run; exit 1 when something is missing")
    p.add_argument("--campaign", default=None, help="campaign file stem, dag id or path")
    p.add_argument("--params", default="", help="run params as JSON (defaults from the campaign)")
    p.add_argument("--run-id", default="preflight", help="the Airflow dag_run id (labels of the rendered cells)")
    p.add_argument("--namespace", default=settings().namespace)
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   choices=["namespace", "crds", "permissions", "secrets", "model_cache", "nodes", "quota", "store"],
                   help="leave a check out (repeatable): namespace, crds, permissions, secrets, model_cache, nodes, "
                   "quota, store")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--node-reader-manifest", action="store_true",
                   help="print the optional read-only ClusterRole (+ binding) the nodes check needs, and exit")
    p.set_defaults(func=cmd_preflight)
    p = sub.add_parser("restore", help="serving.mode existing: put the installed stack back as a run's deploy saved it "
                                       "(after a teardown that never ran or was killed); then the next run may start")
    p.add_argument("--run-id", required=True, help="the run whose saved state to restore (deploy's refusal names it)")
    p.add_argument("--campaign", default=None, help="campaign file stem, dag id or path: its serving.existing.namespace")
    p.add_argument("--namespace", default=None, help="the installed stack's namespace, instead of --campaign's")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("cleanup", help="stop servers that local cells left running when their teardown never ran")
    p.set_defaults(func=cmd_cleanup)
    p = sub.add_parser("db", help="the local PostgreSQL results server (start|stop|status|url|migrate)")
    p.add_argument("action", choices=["start", "stop", "status", "url", "migrate"])
    p.add_argument("--show-url", action="store_true", help="print the connection URL (with its password) on start")
    p.set_defaults(func=cmd_db)
    p = sub.add_parser("make-tokenizer", help="write the offline tokenizer for local GuideLLM runs")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_make_tokenizer)
    return parser


def _doc(step: str) -> str:
    return {"deploy": "bring the cell's serving stack up", "warmup": "check the model is served and warm it",
            "sweep": "run the GuideLLM concurrency sweep", "collect_pcp": "collect PCP archives",
            "teardown": "stop everything the cell started", "load_results": "validate and store results"}[step]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        return func(args)
    except NotSelected as exc:
        print(f"[llmd-bench] skipped: {exc}", flush=True)
        return SKIP_EXIT_CODE
    except LlmdBenchError as exc:
        print(f"[llmd-bench] error: {exc}", file=sys.stderr, flush=True)
        return 1
    except BrokenPipeError:
        # the reader stopped early (`llmd-bench plan | head`): not an error; no flush into the closed pipe at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # noqa: BLE001 - a bug, not bad input: keep the traceback
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
