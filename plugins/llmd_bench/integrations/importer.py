"""`llmd-bench import`: bring existing GuideLLM reports (past campaigns) into the results store."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llmd_bench import __version__
from llmd_bench.measure import guidellm_layouts
from llmd_bench.measure.guidellm_levels import Report
from llmd_bench.measure.guidellm_report import load_json, parse_report
from llmd_bench.model import catalog, configurations, paths
from llmd_bench.model.campaign import CONFIG_FACTORS, FACTORS, STACK_FACTORS, check_model_id, factor_label
from llmd_bench.model.campaign_files import campaign_configurations
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.store.results import cell_status, sha256
from llmd_bench.store.rows import CellInfo, RunInfo, StoredRunParams


def _expected_duration(doc: Any) -> float | None:
    # each report layout records the max-seconds setting in its own place (guidellm_layouts/v0_*.py)
    return guidellm_layouts.expected_duration(doc)


def parse_factors(text: str | None) -> dict[str, Any]:
    """`replicas=2,memory_regime=pressure` for imported reports: any factor of campaign.FACTORS, any value (a past
    study's values need not be in a campaign file); replicas and tensor_parallel_size are integers."""

    found: dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        if not sep or name not in FACTORS or not value:
            raise LlmdBenchError(f"--factors {text!r}: {item!r} is not factor=value; factors: {list(FACTORS)}")
        if name in ("replicas", "tensor_parallel_size"):
            if not value.isdigit() or int(value) < 1:
                raise LlmdBenchError(f"--factors: {name}={value} must be an integer >= 1")
            found[name] = int(value)
        else:
            found[name] = value
    return {name: found[name] for name in FACTORS if name in found}


def import_reports(files: list[Path], model: str, config: str, llmd_version: str, run_id: str | None = None,
                   campaign: str = "imported", url: str | None = None,
                   factors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Store GuideLLM reports (one trial each) as one run of `model` x `config` at `llmd_version`. A model id that
    is not a Hugging Face one, an llm-d version not in the catalog, an unknown configuration or a report that cannot
    be read or holds impossible numbers is refused with the reason, before anything is written."""
    from llmd_bench.store import db  # deferred: loads sqlalchemy

    # every argument is checked before any report is read, and every report before anything is stored
    try:
        check_model_id(model)
    except ValueError as exc:
        raise LlmdBenchError(f"--model: {exc}") from None
    known = catalog.known_versions()
    if llmd_version not in known:
        raise LlmdBenchError(f"--llmd-version {llmd_version[:100]!r} is not in the version catalog "
                             f"({paths.catalog_file()}); allowed: {known}")
    entry = catalog.entry(llmd_version)
    own = campaign_configurations(campaign)
    if configurations.lookup(config, own) is None:
        raise LlmdBenchError(f"--config {config!r} is not in the configuration catalog (include/configurations.yaml)"
                             + (f" nor in campaign {campaign}'s configurations" if own else "")
                             + f"; allowed: {configurations.known_names(own)}")
    if not files:
        raise LlmdBenchError("no report files given")
    parsed: list[tuple[Path, Report, str]] = []
    for f in files:
        doc = load_json(f)
        parsed.append((f, parse_report(doc, source=str(f), expected_duration_s=_expected_duration(doc)), sha256(f)))
    run_id = run_id or "import__" + hashlib.sha256("".join(h for _, _, h in parsed).encode()).hexdigest()[:12]
    first = parsed[0][1]
    run = RunInfo(campaign=campaign, dag_run_id=run_id, runtime="imported", llmd_version=llmd_version,
                  vllm_version=entry.vllm_version, guidellm_version=first.guidellm_version,
                  llmd_bench_version=__version__, images=dict(entry.images),
                  params=StoredRunParams(imported_from=[str(f) for f, _, _ in parsed], guidellm_spec=first.spec))

    factors = dict(factors or {})

    def load(writer: db.Writer) -> None:
        for trial, (f, report, digest) in enumerate(parsed, start=1):
            status, reason = cell_status(report)
            writer.store_cell(run, CellInfo(
                model=model, short_model=paths.model_short_name(model), config=config, trial=trial,
                stack_factors=factor_label(factors, STACK_FACTORS), config_factors=factor_label(factors, CONFIG_FACTORS),
                factors=factors, replicas=factors.get("replicas"), tensor_parallel_size=factors.get("tensor_parallel_size"),
                status=status, reason=reason, versions={"guidellm_report": report.guidellm_version, "llmd": llmd_version},
                report_path=str(f.resolve()), report_sha256=digest), report.levels)
        writer.finish_run(campaign, run_id, "ok")

    db.in_transaction(load, "importing reports", url)
    return {"run_id": run_id, "campaign": campaign, "trials": len(parsed),
            "levels": sum(len(r.levels) for _, r, _ in parsed),
            "invalid_levels": sum(not lv.valid for _, r, _ in parsed for lv in r.levels)}
